"""benchmarks/openkbp/compare_runs.py: two runs paired over test cases, on a hand-built per_case.csv."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp" / "compare_runs.py"


def _load():
    spec = importlib.util.spec_from_file_location("openkbp_compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(run_id, dice_by_case, shift="none", subset="test"):
    rows = []
    for case, (d1, d2) in dice_by_case.items():
        for structure, d in (("brainstem", d1), ("cord", d2)):
            rows.append({"run_id": run_id, "subset": subset, "shift": shift, "case": case, "structure": structure,
                         "dice": d, "status": "ok" if d > 0 else "missed"})
    return rows


def test_pairs_cases_counts_misses_and_ignores_shifted_rows(tmp_path):
    m = _load()
    a = {f"c{i}": (0.5, 0.0 if i == 0 else 0.5) for i in range(6)}  # case c0 misses the cord
    b = {f"c{i}": (0.6, 0.6) for i in range(6)}
    rows = _rows("A", a) + _rows("B", b) + _rows("B", {"c0": (0.0, 0.0)}, shift="severe") + _rows("B", {"v0": (0.1, 0.1)}, subset="validation")
    path = tmp_path / "per_case.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = {r["structure"]: r for r in m.compare(m.unshifted_test_rows(path, "A"), m.unshifted_test_rows(path, "B"))}
    assert out["brainstem"]["dice_a"] == pytest.approx(0.5) and out["brainstem"]["dice_b"] == pytest.approx(0.6)
    assert out["cord"]["dice_a"] == pytest.approx(2.5 / 6) and out["cord"]["missed_a"] == 1 and out["cord"]["missed_b"] == 0
    assert out["all"]["b_better"] == "6/6"
    # 6 cases, all better: the smallest two-sided Wilcoxon p, 2 / 2^6
    assert out["brainstem"]["wilcoxon_p"] == pytest.approx(2 / 2**6)


def test_a_run_without_test_rows_is_named(tmp_path):
    m = _load()
    path = tmp_path / "per_case.csv"
    pd.DataFrame(_rows("A", {"c0": (0.5, 0.5)})).to_csv(path, index=False)
    with pytest.raises(ValueError, match=re.escape("per_case.csv: no unshifted test rows for run 'Z'")):
        m.unshifted_test_rows(path, "Z")


def test_runs_tested_on_different_cases_are_refused(tmp_path):
    m = _load()
    path = tmp_path / "per_case.csv"
    pd.DataFrame(_rows("A", {"c0": (0.5, 0.5)}) + _rows("B", {"c1": (0.5, 0.5)})).to_csv(path, index=False)
    with pytest.raises(ValueError, match="different cases"):
        m.compare(m.unshifted_test_rows(path, "A"), m.unshifted_test_rows(path, "B"))
