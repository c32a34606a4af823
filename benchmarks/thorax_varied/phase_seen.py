"""Do the thorax-varied models fail on a contrast phase their training cases did not have?

The thorax-varied cohort draws a contrast phase per case (unenhanced, venous, arterial: the blood
pool at ~40, ~160 or ~330 HU before the tube voltage), so a model trained on 1-4 cases often meets
a test case in a phase none of its training cases had. That is the situation the paper's premise is
about: an intensity-driven model should suffer on the unseen phase, a shape-and-position model not.
This splits every test score of the study's sweep (clean scans, the sweep's GBM recipe) by whether
the test case's phase was among its model's training phases, per mode and training size, pooled
over draws; the modes share each draw's training cases, so "unseen" is the same (draw, case) pairs
for every mode at a size.

    python benchmarks/thorax_varied/phase_seen.py benchmarks/thorax_varied/records data/phantom_thorax_varied

The phases come from the cohort's ``dataset.json`` (``acquisition``; regenerate the cohort with
``globalmask phantom --kind thorax-varied --cases 20 --seed 0 --split 12:3:5 --out data/phantom_thorax_varied``).
Prints one markdown table, one row per training size where some test case's phase was unseen: mean
Dice over the five structures and of the heart (whose blood pool the phase changes) on test cases in
a seen and an unseen phase, with the number of (draw, case) pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from globalmask.study import load_records

MODES = ("ct", "gbm", "ct+gbm")


def phase_table(records_dir: Path, dataset: Path) -> pd.DataFrame:
    """Per (size, mode, seen): mean Dice (all structures, heart) and the (draw, case) pairs counted."""
    acquisitions = json.loads((dataset / "dataset.json").read_text())["acquisition"]
    phases = {case: acq["phase"] for case, acq in acquisitions.items()}
    _, records = load_records([records_dir])
    # the sweep, and the ablation's full-size GBM-only run of the sweep's recipe (the sweep reuses it)
    sweep = [r for r in records.values() if r.run.kind == "sweep" or (r.run.mode, r.run.size_label) == ("gbm", "all")]
    recipes = {r.run.recipe for r in sweep if r.run.kind == "sweep" and r.run.mode != "ct"}
    if len(recipes) != 1:
        sys.exit(f"{records_dir}: expected one sweep GBM recipe, found {sorted(recipes)}")
    (recipe,) = recipes
    rows = []
    for r in sweep:
        if r.run.mode != "ct" and r.run.recipe != recipe:
            continue
        seen_phases = {phases[c] for c in r.train_ids}
        df = r.per_case()
        df = df[(df["subset"] == "test") & (df["shift"] == "none")]
        df = df.assign(seen=df["case"].map(lambda c: phases[c] in seen_phases), dice=df["dice"].fillna(0.0))
        rows.append(df)
    per_case = pd.concat(rows, ignore_index=True)
    out = []
    for (size, mode, seen), g in per_case.groupby(["size", "mode", "seen"]):
        out.append({
            "size": size, "mode": mode, "seen": seen, "pairs": g[["draw", "case"]].drop_duplicates().shape[0],
            "dice": g["dice"].mean(), "heart": g.loc[g["structure"] == "heart", "dice"].mean(),
        })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> list[str]:
    """One row per training size where some test case's phase was unseen: per mode, Dice (heart) on seen | unseen."""
    unseen = table.loc[~table["seen"], "size"].unique()
    sizes = sorted(unseen, key=lambda s: (s == "all", int(s) if s != "all" else 0))
    lines = ["| training cases | (draw, case) pairs seen / unseen | "
             + " | ".join(f"{m}: seen | {m}: unseen" for m in MODES) + " |",
             "|---|---|" + "---|---|" * len(MODES)]
    for size in sizes:
        t = table[table["size"] == size].set_index(["mode", "seen"])
        counts = [int(t.loc[("ct", s), "pairs"]) if ("ct", s) in t.index else 0 for s in (True, False)]
        cells = []
        for mode in MODES:
            for s in (True, False):
                cells.append(f"{t.loc[(mode, s), 'dice']:.3f} ({t.loc[(mode, s), 'heart']:.3f})"
                             if (mode, s) in t.index else "n/a")
        lines.append(f"| {size} | {counts[0]} / {counts[1]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", type=Path, help="the study's records folder")
    ap.add_argument("dataset", type=Path, help="the thorax-varied cohort (its dataset.json lists each case's phase)")
    args = ap.parse_args(argv)
    print("Mean test Dice over the 5 structures (heart's in brackets), clean scans, by whether the test case's "
          "contrast phase was among its model's training cases' phases.\n")
    print("\n".join(markdown(phase_table(args.records, args.dataset))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
