"""benchmarks/openkbp/targets.py: issue 8's verdicts read from a hand-built results.json."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp" / "targets.py"


def _load():
    spec = importlib.util.spec_from_file_location("openkbp_targets", SCRIPT)
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
            _summary("ct", "all", 0.76), _summary("ct", "spinal_cord", 0.69, missed=1), _summary("ct", "all", 0.99, recipe="body:level=-500"),
            _summary("gbm", "brainstem", 0.80, com=2.5), _summary("gbm", "all", 0.75),
        ],
        "runs": [_run("ct", d) for d in range(3)] + [_run("gbm", 0), _run("gbm", 1, converged=False)],
        "comparisons": [{"a": "ct+gbm", "b": "ct", "size": "1", "structure": "all", "n_draws": 3, "dice_a": 0.5,
                         "dice_b": 0.4, "relative_improvement_pct": 25.0, "wilcoxon_p": 0.0123}],
    }
    lines = _load().targets(results)
    verdict = {line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[1].rstrip(" |") for line in lines if line.startswith("| ")}
    assert verdict["CT-only, 26 cases: mean Dice >= 0.75"] == "met"  # 0.76 from the sweep recipe, not body's 0.99
    assert verdict["CT-only, 26 cases: spinal cord Dice >= 0.70"] == "**not met**"
    assert verdict["CT-only, 26 cases: 0 missed"] == "met"  # the structure 'all' row counts 0 missed
    assert verdict["GBM-only, 26 cases: brainstem Dice >= 0.77"] == "pending"  # 2 of 3 draws
    assert verdict["models converged"] == "pending"
    assert any("bone_level250/gbm/nall-d1" in line for line in lines)  # the unconverged run is named
    assert "| 1 | 3 | 0.500 | 0.400 | +25.0% | 0.0123 |" in lines
