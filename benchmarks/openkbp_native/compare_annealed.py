"""The re-measurement beside the study: each full-size run stopped by the plateau rule, and the same run
continued to its step maximum (``study_annealed.yaml``), read from the committed records only.

    python benchmarks/openkbp_native/compare_annealed.py

prints the table in ``annealed/README.md``: per run the best validation Dice and where it came (the
study's best and stop in brackets), then the mean Dice over every (patient, structure) on the test
split (10) and the external set (60), the study's figure in brackets, and per mode the pooled 70
patients' mean over the draws present in both. A missed structure is in the records as Dice 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODE_NAMES = {"ct": "CT only", "gbm": "GBM only", "ct+gbm": "CT+GBM"}
RECIPE = "bone:level=250"


def full_size_records(folder: Path) -> dict[tuple[str, int], dict]:
    """Full-size records of the default recipe by (mode, draw)."""
    out = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text(encoding="utf-8"))
        run = r["run"]
        if run["size_label"] == "all" and run["recipe"] == RECIPE:
            out[(run["mode"], int(run["draw"]))] = r
    return out


def _mean(record: dict, subsets: set[str]) -> float:
    d = [m["dice"] for m in record["metrics"] if m["subset"] in subsets and m["shift"] == "none"]
    return sum(d) / len(d)


def table(annealed: dict[tuple[str, int], dict], study: dict[tuple[str, int], dict]) -> list[str]:
    """Markdown lines: one row per re-measured run, then one per mode over the pooled 70 patients."""
    lines = ["| run | best validation Dice (the study's best, stop) | test (10) | external (60) |", "|---|---|---|---|"]
    ext = None
    for key in sorted(annealed, key=lambda k: (list(MODE_NAMES).index(k[0]), k[1])):
        a, s = annealed[key], study[key]
        ext = ext or {m["subset"] for m in a["metrics"]} - {"test", "validation"}
        lines.append(
            f"| {MODE_NAMES[key[0]]}, draw {key[1]} | {a['best_val_dice']:.3f} at step {a['best_step']} of "
            f"{a['max_steps']} ({s['best_val_dice']:.3f} at {s['best_step']}, stopped at {s['steps']}) | "
            f"{_mean(a, {'test'}):.3f} ({_mean(s, {'test'}):.3f}) | {_mean(a, ext):.3f} ({_mean(s, ext):.3f}) |"
        )
    lines += ["", "| mode | draws | pooled 70: continued | the study's | change |", "|---|---|---|---|---|"]
    for mode, name in MODE_NAMES.items():
        keys = [k for k in annealed if k[0] == mode]
        if not keys:
            continue
        pool = {"test", *(ext or set())}
        a = sum(_mean(annealed[k], pool) for k in keys) / len(keys)
        s = sum(_mean(study[k], pool) for k in keys) / len(keys)
        lines.append(f"| {name} | {', '.join(str(k[1]) for k in sorted(keys))} | {a:.3f} | {s:.3f} | {a - s:+.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annealed", type=Path, default=HERE / "annealed" / "records")
    ap.add_argument("--study", type=Path, default=HERE / "records")
    args = ap.parse_args()
    print("\n".join(table(full_size_records(args.annealed), full_size_records(args.study))))


if __name__ == "__main__":
    main()
