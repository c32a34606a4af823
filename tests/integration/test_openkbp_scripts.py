"""The OpenKBP benchmark scripts on hand-built inputs: targets.py (issue 8's verdicts from a
results.json) and compare_runs.py (two runs paired over test cases from a per_case.csv)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

from globalmask.errors import GlobalmaskError

SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp"


def _load(name: str = "targets"):
    spec = importlib.util.spec_from_file_location(f"openkbp_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(mode, structure, dice, com=2.0, missed=0, recipe="bone:level=250"):
    return {"recipe": recipe, "mode": mode, "size": "all", "subset": "test", "shift": "none", "structure": structure,
            "dice_mean": dice, "dice_std": 0.05, "com_mm_mean": com, "com_mm_std": 1.0, "missed": missed}


def _run(mode, draw, converged=True):
    return {"mode": mode, "size_label": "all", "recipe": "bone:level=250", "draw": draw, "converged": converged,
            "name": f"bone_level250/{mode}/nall-d{draw}"}


def test_verdicts_need_every_draw_and_use_the_sweep_recipe():
    results = {
        "plan_hash": "abc", "sweep_recipe": "bone:level=250", "n_test": 10, "config": {"draws": 3, "full_draws": 3},
        "pending": ["gbm-nall-d2"],
        "summary": [
            _summary("ct", "all", 0.76),
            _summary("ct", "spinal_cord", 0.69, missed=1),
            _summary("ct", "all", 0.99, recipe="body:level=-500"),
            _summary("gbm", "brainstem", 0.80, com=2.5),
            _summary("gbm", "all", 0.75),
        ],
        "runs": [_run("ct", d) for d in range(3)] + [_run("gbm", 0), _run("gbm", 1, converged=False)],
        "comparisons": [{"a": "ct+gbm", "b": "ct", "size": "1", "structure": "all", "n_draws": 3, "dice_a": 0.5,
                         "dice_b": 0.4, "relative_improvement_pct": 25.0, "wilcoxon_p": 0.0123}],
    }
    lines = _load().targets(results)
    verdict = {
        line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[1].rstrip(" |")
        for line in lines
        if line.startswith("| ")
    }
    assert verdict["CT-only, 26 cases: mean Dice >= 0.75"] == "met"  # 0.76 from the sweep recipe, not body's 0.99
    assert verdict["CT-only, 26 cases: spinal cord Dice >= 0.70"] == "**not met**"
    assert verdict["CT-only, 26 cases: 0 missed"] == "met"  # the structure 'all' row counts 0 missed
    assert verdict["GBM-only, 26 cases: brainstem Dice >= 0.77"] == "pending"  # 2 of 3 draws
    assert verdict["models converged"] == "pending"
    assert any("bone_level250/gbm/nall-d1" in line for line in lines)  # the unconverged run is named
    assert "| 1 | 3 | 0.500 | 0.400 | +25.0% | 0.0123 |" in lines


def _rows(run_id, dice_by_case, shift="none", subset="test"):
    rows = []
    for case, (d1, d2) in dice_by_case.items():
        for structure, d in (("brainstem", d1), ("cord", d2)):
            rows.append({"run_id": run_id, "subset": subset, "shift": shift, "case": case, "structure": structure,
                         "dice": d, "status": "ok" if d > 0 else "missed"})
    return rows


def test_pairs_cases_counts_misses_and_ignores_shifted_rows(tmp_path):
    m = _load("compare_runs")
    a = {f"c{i}": (0.5, 0.0 if i == 0 else 0.5) for i in range(6)}  # case c0 misses the cord
    b = {f"c{i}": (0.6, 0.6) for i in range(6)}
    rows = (
        _rows("A", a)
        + _rows("B", b)
        + _rows("B", {"c0": (0.0, 0.0)}, shift="severe")
        + _rows("B", {"v0": (0.1, 0.1)}, subset="validation")
    )
    path = tmp_path / "per_case.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = {r["structure"]: r for r in m.compare(m.unshifted_test_rows(path, "A"), m.unshifted_test_rows(path, "B"))}
    assert out["brainstem"]["dice_a"] == pytest.approx(0.5) and out["brainstem"]["dice_b"] == pytest.approx(0.6)
    assert (
        out["cord"]["dice_a"] == pytest.approx(2.5 / 6)
        and out["cord"]["missed_a"] == 1
        and out["cord"]["missed_b"] == 0
    )
    assert out["all"]["b_better"] == "6/6"
    # 6 cases, all better: the smallest two-sided Wilcoxon p, 2 / 2^6
    assert out["brainstem"]["wilcoxon_p"] == pytest.approx(2 / 2**6)


def test_a_run_without_test_rows_is_named(tmp_path):
    m = _load("compare_runs")
    path = tmp_path / "per_case.csv"
    pd.DataFrame(_rows("A", {"c0": (0.5, 0.5)})).to_csv(path, index=False)
    with pytest.raises(ValueError, match=re.escape("per_case.csv: no unshifted test rows for run 'Z'")):
        m.unshifted_test_rows(path, "Z")


def test_runs_tested_on_different_cases_are_refused(tmp_path):
    m = _load("compare_runs")
    path = tmp_path / "per_case.csv"
    pd.DataFrame(_rows("A", {"c0": (0.5, 0.5)}) + _rows("B", {"c1": (0.5, 0.5)})).to_csv(path, index=False)
    with pytest.raises(GlobalmaskError, match="not paired"):
        m.compare(m.unshifted_test_rows(path, "A"), m.unshifted_test_rows(path, "B"))
