"""Issue 8's targets, read from a study report's ``results.json`` (test split, sweep recipe).

Why a script: the README's headline numbers must come from the committed records by a command
anyone can repeat, not be copied by hand from a long report.

    globalmask study report benchmarks/openkbp/records --out /tmp/openkbp-report
    python benchmarks/openkbp/targets.py /tmp/openkbp-report/results.json

Each line says met / not met, or pending while the runs it needs have no record yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from globalmask.study.report import against_target

FULL = "all"


def _row(results: dict[str, Any], mode: str, structure: str) -> dict[str, Any] | None:
    for s in results["summary"]:
        if (s["recipe"], s["mode"], s["size"], s["subset"], s["shift"], s["structure"]) == (
            results["sweep_recipe"], mode, FULL, "test", "none", structure
        ):
            return s
    return None


def _draws(results: dict[str, Any], mode: str) -> int:
    return sum(
        1
        for r in results["runs"]
        if r["mode"] == mode and r["size_label"] == FULL and r["recipe"] == results["sweep_recipe"]
    )


def _verdict(ok: bool | None) -> str:
    return "pending" if ok is None else ("met" if ok else "**not met**")


def targets(results: dict[str, Any]) -> list[str]:
    """Markdown lines: one table of the targets, then the CT+GBM vs CT comparisons."""
    planned = results["config"].get("full_draws") or results["config"]["draws"]
    lines = [
        f"Plan `{results['plan_hash']}`, recipe `{results['sweep_recipe']}`, test split ({results['n_test']} cases); "
        f"full-size figures are means over draws x cases (x structures), {len(results['pending'])} run(s) pending.",
        "",
        "| target | measured | draws | verdict |",
        "|---|---|---|---|",
    ]

    def add(name: str, mode: str, structure: str, text: Any, ok: Any) -> None:
        n = _draws(results, mode)
        row = _row(results, mode, structure)
        if row is None:
            lines.append(f"| {name} | - | 0 of {planned} | pending |")
            return
        done = n >= planned
        lines.append(f"| {name} | {text(row)} | {n} of {planned} | {_verdict(ok(row) if done else None)} |")

    add(
        "CT-only, 26 cases: mean Dice >= 0.75",
        "ct",
        "all",
        lambda r: f"{against_target(r['dice_mean'], 0.75, 3)} ± {r['dice_std']:.3f}",
        lambda r: r["dice_mean"] >= 0.75,
    )
    add(
        "CT-only, 26 cases: spinal cord Dice >= 0.70",
        "ct",
        "spinal_cord",
        lambda r: f"{against_target(r['dice_mean'], 0.70, 3)} ± {r['dice_std']:.3f}",
        lambda r: r["dice_mean"] >= 0.70,
    )
    add("CT-only, 26 cases: 0 missed", "ct", "all", lambda r: f"{r['missed']} missed", lambda r: r["missed"] == 0)
    add(
        "GBM-only, 26 cases: brainstem Dice >= 0.77",
        "gbm",
        "brainstem",
        lambda r: f"{against_target(r['dice_mean'], 0.77, 3)} ± {r['dice_std']:.3f}",
        lambda r: r["dice_mean"] >= 0.77,
    )
    add(
        "GBM-only, 26 cases: brainstem CoM <= 3.1 mm",
        "gbm",
        "brainstem",
        lambda r: f"{against_target(r['com_mm_mean'], 3.1, 2)} ± {r['com_mm_std']:.2f} mm",
        lambda r: r["com_mm_mean"] <= 3.1,
    )
    add(
        "GBM-only, 26 cases: mean Dice >= 0.72",
        "gbm",
        "all",
        lambda r: f"{against_target(r['dice_mean'], 0.72, 3)} ± {r['dice_std']:.3f}",
        lambda r: r["dice_mean"] >= 0.72,
    )

    runs = results["runs"]
    converged = sum(1 for r in runs if r["converged"])
    not_converged = ", ".join(r["name"] for r in runs if not r["converged"]) or "none"
    done = not results["pending"]
    lines.append(f"| models converged | {converged} of {len(runs)} (not: {not_converged}) | | "
                 f"{_verdict(converged == len(runs) if done else None)} |")

    lines += [
        "",
        "CT+GBM vs CT (mean Dice over the 5 structures, paired over test cases, draws averaged per case):",
        "",
        "| training cases | draws | CT+GBM | CT | relative change | p (Wilcoxon) |",
        "|---|---|---|---|---|---|",
    ]
    for c in results["comparisons"]:
        if (c["a"], c["b"], c["structure"]) == ("ct+gbm", "ct", "all"):
            lines.append(f"| {c['size']} | {c['n_draws']} | {c['dice_a']:.3f} | {c['dice_b']:.3f} | "
                         f"{c['relative_improvement_pct']:+.1f}% | {c['wilcoxon_p']:.3g} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json written by `globalmask study report`")
    print("\n".join(targets(json.loads(parser.parse_args().results.read_text()))))


if __name__ == "__main__":
    main()
