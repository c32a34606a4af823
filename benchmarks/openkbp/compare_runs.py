"""Two models' test scores side by side, paired over the test cases (e.g. one model at 6 mm and 5 mm).

Why a script: the finer-grid runs are separate studies (their own plan), so the study report
cannot pair them with the 6 mm sweep; this reads both ``per_case.csv`` files and hands them to the
report's own ``paired_comparison`` as two "modes" (each case's Dice averaged over structures,
two-sided Wilcoxon signed-rank test over the test cases; a missed structure counts as Dice 0).

    python benchmarks/openkbp/compare_runs.py \\
        benchmarks/openkbp/per_case.csv ct-nall-d0-bone_level250-61a8f4ffb6 \\
        benchmarks/openkbp/ct_5mm/per_case.csv ct-nall-d0-bone_level250-39c42dd1bb
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from globalmask.study.stats import paired_comparison


def unshifted_test_rows(per_case: Path, run_id: str) -> pd.DataFrame:
    """Unshifted test-split rows of one run, or a ValueError naming the file and the run."""
    d = pd.read_csv(per_case)
    d = d[(d["run_id"] == run_id) & (d["subset"] == "test") & (d["shift"] == "none") & (d["status"] != "absent")]
    if d.empty:
        raise ValueError(f"{per_case}: no unshifted test rows for run {run_id!r}")
    return d


def compare(a: pd.DataFrame, b: pd.DataFrame) -> list[dict[str, object]]:
    """Per structure and over all structures: mean Dice of A and B, cases where B is better, p.

    Raises :class:`globalmask.errors.GlobalmaskError` when the runs were tested on different cases.
    """
    both = pd.concat([a.assign(mode="A", draw=0, size="pair"), b.assign(mode="B", draw=0, size="pair")])
    rows = []
    for structure in [*sorted(set(a["structure"])), None]:
        c = paired_comparison(both, "B", "A", "pair", structure=structure)
        sa, sb = (x if structure is None else x[x["structure"] == structure] for x in (a, b))
        rows.append(
            {
                "structure": c["structure"],
                "dice_a": c["dice_b"],
                "dice_b": c["dice_a"],
                "b_better": f"{c['cases_a_better']}/{c['n_cases']}",
                "missed_a": int((sa["status"] == "missed").sum()),
                "missed_b": int((sb["status"] == "missed").sum()),
                "wilcoxon_p": c["wilcoxon_p"],
            }
        )
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
        print(
            f"| {r['structure']} | {r['dice_a']:.3f} | {r['dice_b']:.3f} | {r['b_better']}"
            f" | {r['missed_a']} / {r['missed_b']} | {r['wilcoxon_p']:.3g} |"
        )


if __name__ == "__main__":
    main()
