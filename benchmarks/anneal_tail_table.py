"""The table of what the plateau stop left, from the histories ``benchmarks/anneal_tail.py`` wrote.

    python benchmarks/anneal_tail_table.py            # every run in benchmarks/anneal_tail/
    python benchmarks/anneal_tail_table.py n1 n8      # only the runs at 1 and 8 training cases

A best over many checks beats a best over few by chance alone, so beside best-against-best the table
gives the mean level of the validation curve from the study's best to its stop and after the stop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {"ct": "CT only", "gbm": "GBM only", "ct_gbm": "CT+GBM"}


def row(tail: dict, label: str) -> tuple[str, float, float]:
    """One markdown row; with the best's gain and the mean level's gain (after the stop against before)."""
    stop = tail["stopped"]
    curve = tail["validation_curve"]
    before = [d for s, d in curve if stop["best_step"] <= s <= stop["steps"]]
    after = [d for s, d in curve if s > stop["steps"]]
    gain = tail["tail"]["best_val_dice"] - stop["best_val_dice"]
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    bold = "**" if gain > 0.01 else ""
    text = (
        f"| {label} | {stop['best_val_dice']:.3f} at {stop['best_step']} ({stop['steps']}) | {mean_before:.3f} "
        f"({len(before)} checks) | {tail['tail']['best_val_dice']:.3f} at {tail['tail']['best_step']} "
        f"({bold}{gain:+.3f}{bold}) | {mean_after:.3f} ({len(after)}; {mean_after - mean_before:+.3f}) | "
        f"{curve[-1][1]:.3f} |"
    )
    return text, gain, mean_after - mean_before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", help="size labels to keep, e.g. n1 nall (default: every file)")
    ap.add_argument("--folder", type=Path, default=HERE / "anneal_tail")
    args = ap.parse_args()
    print(
        "| run | stopped: best validation Dice, at step (stopped at) | mean of the checks from the best to the "
        "stop | continued to the maximum: best, at step | mean of the checks after the stop (change) | last check |"
    )
    print("|---|---|---|---|---|---|")
    for f in sorted(args.folder.glob("*.json")):
        mode, size, draw = f.stem.rsplit("-", 2)
        if args.sizes and size not in args.sizes:
            continue
        text, _, _ = row(json.loads(f.read_text(encoding="utf-8")), f"{MODES[mode]}, {size[1:]} cases, draw {draw[1:]}")
        print(text)


if __name__ == "__main__":
    main()
