"""Dice drop under the variation suite with every test set pooled: each mode's drop and its paired
excess over CT only's, per family, level and training size.

A study report judges the robustness target per test set (10 test patients, 60 external ones); this
pools the patients of every test set a study scored under the variations (never validation), so a
paired excess of 0.005 is told from noise. Same definitions as the report
(:func:`globalmask.study.stats.family_drops`): the drop is clean minus varied mean Dice over the same
draws, patients and structures; the excess is paired by patient, with its standard error.

    python benchmarks/robustness/pooled_drops.py benchmarks/openkbp_suite6mm/records

prints one markdown table (drop of CT only; drop and excess ± SE of GBM only and CT+GBM) and a tally:
in how many cells a GBM mode lost more than CT only by over twice the standard error, and in how many
it lost less by as much. Records may be plain or gzip-compressed; where a recipe ablation ran beside
the sweep, the sweep's recipe is the one compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from globalmask.study import load_records
from globalmask.study.stats import family_drops, shift_families

REFERENCE, OTHERS = "ct", ("gbm", "ct+gbm")
NAMES = {"ct": "CT only", "gbm": "GBM only", "ct+gbm": "CT+GBM"}


def pooled(records_dir: Path) -> tuple[pd.DataFrame, int, list[str]]:
    """The drops of every test set pooled: (drops, patients, names of the sets pooled)."""
    plan, records = load_records([records_dir])
    per_case = pd.concat([r.per_case() for r in records.values()], ignore_index=True)
    families = shift_families(plan.config.shifts)
    varied = per_case[per_case["shift"].isin(list(families))]
    sets = [s for s in varied["subset"].unique() if s != "validation"]
    sel = per_case[per_case["subset"].isin(sets)].assign(subset="pooled")
    recipes = sel.loc[sel["mode"] != REFERENCE, "recipe"].unique()
    if len(recipes) > 1:  # a recipe ablation beside the sweep (its GBM-only runs): the sweep's recipe is the study's
        sweep = [r.run for r in records.values() if r.run.kind == "sweep" and r.run.mode != REFERENCE]
        recipes = list(dict.fromkeys(run.recipe for run in sweep))
    if len(recipes) != 1:
        sys.exit(f"{records_dir}: expected one GBM recipe among the scored runs, found {list(recipes)}")
    drops = family_drops(sel, str(recipes[0]), families, ["pooled"])
    patients = int(sel[["subset", "case"]].drop_duplicates().shape[0])
    return drops, patients, sets


def _cell(row: pd.Series | None, with_excess: bool) -> str:
    if row is None:
        return "n/a"
    text = f"{row['dice_drop']:+.3f}"
    if with_excess and row["n_paired"]:
        text += f" ({row['excess_vs_ref']:+.3f} ± {row['excess_se']:.3f})"
    return text


def table(drops: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """Markdown rows (one per family, level and size) and the tally of clear excesses either way."""
    lines = [
        "| family | level | training cases | CT only | GBM only (excess ± SE) | CT+GBM (excess ± SE) |",
        "|---|---|---|---|---|---|",
    ]
    tally = {"cells": 0, "worse": 0, "better": 0}
    idx = drops.set_index(["shift", "size", "mode"])
    for (shift, size), g in drops.groupby(["shift", "size"], sort=False):
        first = g.iloc[0]
        cells = []
        for mode in (REFERENCE, *OTHERS):
            row = idx.loc[(shift, size, mode)] if (shift, size, mode) in idx.index else None
            cells.append(_cell(row, mode != REFERENCE))
            if mode != REFERENCE and row is not None and row["n_paired"]:
                tally["cells"] += 1
                if row["excess_vs_ref"] > 2 * row["excess_se"]:
                    tally["worse"] += 1
                elif row["excess_vs_ref"] < -2 * row["excess_se"]:
                    tally["better"] += 1
        size_name = "all" if str(size) == "all" else str(size)
        lines.append(f"| {first['family']} | {first['level']} | {size_name} | " + " | ".join(cells) + " |")
    return lines, tally


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", type=Path, help="a study's records folder (or study folder)")
    args = ap.parse_args(argv)
    drops, patients, sets = pooled(args.records)
    if drops.empty:
        sys.exit(f"{args.records}: no scores under a variation family on a test set")
    lines, tally = table(drops)
    print(f"Pooled: {', '.join(sets)} ({patients} patients); drop = clean - varied mean Dice (positive = worse).\n")
    print("\n".join(lines))
    print(
        f"\nGBM only and CT+GBM against CT only, {tally['cells']} cells: lost more by over twice the standard "
        f"error in {tally['worse']}, less by as much in {tally['better']}, within it in "
        f"{tally['cells'] - tally['worse'] - tally['better']}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
