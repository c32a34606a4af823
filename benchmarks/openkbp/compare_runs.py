"""Two models' test scores side by side, paired over the test cases (e.g. one model at 6 mm and 5 mm).

Why a script: the finer-grid runs are separate studies (their own plan), so the study report
cannot pair them with the 6 mm sweep; this reads both ``per_case.csv`` files and pairs the same
test cases the way the report does (each case's Dice averaged over structures, two-sided
Wilcoxon signed-rank test; a missed structure counts as Dice 0).

    python benchmarks/openkbp/compare_runs.py \\
        benchmarks/openkbp/per_case.csv ct-nall-d0-bone_level250-61a8f4ffb6 \\
        benchmarks/openkbp/ct_5mm/per_case.csv ct-nall-d0-bone_level250-39c42dd1bb
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy.stats import wilcoxon


def unshifted_test_rows(per_case: Path, run_id: str) -> pd.DataFrame:
    """Unshifted test-split rows of one run, or a ValueError naming the file and the run."""
    d = pd.read_csv(per_case)
    d = d[(d["run_id"] == run_id) & (d["subset"] == "test") & (d["shift"] == "none") & (d["status"] != "absent")]
    if d.empty:
        raise ValueError(f"{per_case}: no unshifted test rows for run {run_id!r}")
    return d


def compare(a: pd.DataFrame, b: pd.DataFrame) -> list[dict[str, object]]:
    """Per structure and over all structures: mean Dice of A and B, cases where B is better, p."""
    rows = []
    for structure in [*sorted(set(a["structure"])), "all"]:
        sa = a if structure == "all" else a[a["structure"] == structure]
        sb = b if structure == "all" else b[b["structure"] == structure]
        ca, cb = sa.groupby("case")["dice"].mean(), sb.groupby("case")["dice"].mean()
        if set(ca.index) != set(cb.index):
            raise ValueError(f"{structure}: the two runs were tested on different cases")
        cb = cb[ca.index]
        p = float(wilcoxon(cb, ca).pvalue) if (cb - ca).abs().sum() > 0 else 1.0
        rows.append({"structure": structure, "dice_a": sa["dice"].mean(), "dice_b": sb["dice"].mean(),
                     "b_better": f"{int((cb > ca).sum())}/{len(ca)}", "missed_a": int((sa["dice"] == 0).sum()),
                     "missed_b": int((sb["dice"] == 0).sum()), "wilcoxon_p": p})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("per_case_a", type=Path)
    ap.add_argument("run_a")
    ap.add_argument("per_case_b", type=Path)
    ap.add_argument("run_b")
    args = ap.parse_args()
    rows = compare(unshifted_test_rows(args.per_case_a, args.run_a), unshifted_test_rows(args.per_case_b, args.run_b))
    print(f"A = {args.run_a}, B = {args.run_b} (test split, unshifted; p pairs the test cases)\n")
    print("| structure | Dice A | Dice B | B better | missed A / B | Wilcoxon p |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['structure']} | {r['dice_a']:.3f} | {r['dice_b']:.3f} | {r['b_better']} | {r['missed_a']} / {r['missed_b']} | {r['wilcoxon_p']:.3g} |")


if __name__ == "__main__":
    main()
