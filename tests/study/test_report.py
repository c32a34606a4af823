"""report.py: the smallest attainable Wilcoxon p-value quoted in the report, checked against scipy;
measured values printed beside a target with enough decimals to tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon


@pytest.mark.parametrize("n", [3, 5, 6, 8])
def test_wilcoxon_floor_is_the_smallest_attainable_p(n):
    """All n differences positive is the most extreme outcome; its exact p is the floor the report quotes."""
    from globalmask.study.report import wilcoxon_floor

    assert wilcoxon(np.arange(1, n + 1)).pvalue == pytest.approx(wilcoxon_floor(n))
    assert (wilcoxon_floor(n) < 0.05) == (n >= 6)


@pytest.mark.parametrize("value, target, digits, text", [
    (0.8497, 0.85, 3, "0.8497"),    # rounds to the target at 3 decimals: one more tells them apart
    (0.84996, 0.85, 3, "0.84996"),
    (0.8612, 0.85, 3, "0.861"),     # clearly apart: the usual precision
    (0.85, 0.85, 3, "0.850"),       # equal: reached, nothing to tell apart
    (2.504, 2.5, 2, "2.504"),
])
def test_a_value_beside_its_target_shows_the_decimal_that_decides(value, target, digits, text):
    from globalmask.study.report import against_target

    assert against_target(value, target, digits) == text


def test_the_draw_spread_table_lists_each_draw_in_order_and_its_range():
    from globalmask.study.report import draw_spread_table
    from globalmask.study.stats import RunSummary

    def run(mode, size, draw, dice, role="sweep", recipe="bone:level=250"):
        return RunSummary(f"{mode}-{size}-{draw}", "x", role, mode, recipe, size, draw, [], 10, 20, 5, 0.5, True, 1.0, 1.0, dice, "cpu")

    runs = [run("ct", "1", 2, 0.83), run("ct", "1", 0, 0.772), run("ct", "1", 1, 0.789),
            run("gbm", "1", 0, 0.6), run("gbm", "all", 0, 0.9, recipe="body:level=-500"),  # another recipe: not this table's
            run("ct", "all", 0, 0.5, role="ablation")]
    table = draw_spread_table(runs, "bone:level=250", ["1", "all"], ["ct", "gbm"], 26)
    assert table.to_dict(orient="records") == [
        {"training cases": "1", "ct": "0.772 / 0.789 / 0.830 (range 0.058)", "gbm": "0.600"},
        {"training cases": "all (26)", "ct": "n/a", "gbm": "n/a"},
    ]
    assert draw_spread_table(runs, "threshold:level=-300", ["1"], ["ct"], 26).empty


@pytest.mark.slow  # merges 47 records and draws the figures: about 20 s
@pytest.mark.parametrize("name", ["openkbp", "thorax"])
def test_a_committed_report_regenerates_from_its_records(name, tmp_path):
    """The committed tables and numbers come back from the committed records alone: per_case.csv and
    summary.csv byte for byte, and every table of report.md (sections added later may be new)."""
    from pathlib import Path

    from globalmask.study import report_from_records

    from .conftest import _tables

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / name
    report_from_records([bench / "records"], tmp_path / "rep")
    for f in ("per_case.csv", "summary.csv"):
        assert (tmp_path / "rep" / f).read_bytes() == (bench / f).read_bytes(), f
    new = _tables(tmp_path / "rep" / "report.md")
    missing = [t for t in _tables(bench / "report.md") if t not in new]
    assert not missing, missing[:1]
