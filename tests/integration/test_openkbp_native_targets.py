"""benchmarks/openkbp_native/targets.py on hand-built inputs: issue 24's verdicts pool the test split
with the external set, count a miss as Dice 0 (and outside the centre-of-mass mean), ignore varied
scans, other recipes and smaller sizes, and wait for every planned full-size draw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp_native" / "targets.py"
EXT = "Dataset503_X"


def _load():
    spec = importlib.util.spec_from_file_location("openkbp_native_targets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(mode, draw, subset, case, structure, dice, com=2.0, status="ok", shift="none", size="all",
         recipe="bone:level=250"):
    return {"mode": mode, "recipe": recipe, "size": size, "draw": draw, "subset": subset, "shift": shift, "case": case,
            "structure": structure, "dice": dice, "com_mm": com if status == "ok" else float("nan"), "status": status}


def _run(mode, draw, converged=True, train_s=3600.0, total_s=4000.0):
    return {"run_id": f"{mode}-{draw}", "name": f"{mode}/nall-d{draw}", "role": "sweep", "mode": mode,
            "recipe": "bone:level=250", "size_label": "all", "draw": draw, "train_ids": [], "steps": 10,
            "max_steps": 20, "best_step": 5, "best_val_dice": 0.7, "converged": converged, "train_seconds": train_s,
            "total_seconds": total_s, "test_dice_mean": 0.7, "device": "cpu", "threads": 1}


def _results(runs, pending=(), comparisons=()):
    return {"plan_hash": "abc", "sweep_recipe": "bone:level=250", "config": {"draws": 2, "full_draws": 2},
            "external_test": [{"name": EXT, "n": 1, "fingerprint": "f"}], "pending": list(pending), "runs": runs,
            "set_comparisons": list(comparisons)}


def _verdicts(lines):
    out = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4:
            out[cells[0]] = (cells[1], cells[3])
    return out


def test_full_size_targets_pool_the_test_split_with_the_external_set_and_count_misses():
    rows = []
    for draw in (0, 1):
        # CT: spinal cord 0.9 on the test patient, 0.7 on the external one -> pooled 0.8 (met at 0.78)
        rows += [_row("ct", draw, "test", "t1", "spinal_cord", 0.9), _row("ct", draw, EXT, "e1", "spinal_cord", 0.7),
                 _row("ct", draw, "test", "t1", "brainstem", 0.8), _row("ct", draw, EXT, "e1", "brainstem", 0.8)]
    # GBM, draw 0 only so far: brainstem found once (CoM 2.0 mm) and missed once (Dice 0, no CoM)
    rows += [_row("gbm", 0, "test", "t1", "brainstem", 0.9, com=2.0),
             _row("gbm", 0, EXT, "e1", "brainstem", 0.0, status="missed")]
    # rows that must not count: a varied scan, another recipe, a smaller size, the validation split
    rows += [_row("ct", 0, "test", "t1", "spinal_cord", 0.0, shift="pose-setup"),
             _row("ct", 0, "test", "t1", "spinal_cord", 0.0, recipe="body:level=-500"),
             _row("ct", 0, "test", "t1", "spinal_cord", 0.0, size="2"),
             _row("ct", 0, "validation", "v1", "spinal_cord", 0.0)]
    per_case = pd.DataFrame(rows)
    comparisons = [{"a": "ct+gbm", "b": "ct", "test_set": "pooled", "size": "2", "n_draws": 2, "n_patients": 70,
                    "dice_a": 0.66, "dice_b": 0.6, "relative_change_pct": 10.0, "ci_low_pct": 2.5,
                    "ci_high_pct": 17.25, "wilcoxon_p": 0.004, "verdict": "holds"},
                   {"a": "ct+gbm", "b": "ct", "test_set": "test", "size": "2", "n_draws": 2, "n_patients": 10,
                    "dice_a": 0.1, "dice_b": 0.2, "relative_change_pct": -50.0, "ci_low_pct": -60.0,
                    "ci_high_pct": -40.0, "wilcoxon_p": 0.01, "verdict": "reversed"}]
    runs = [_run("ct", 0), _run("ct", 1), _run("gbm", 0, converged=False)]
    lines = _load().targets(_results(runs, pending=["gbm-1"], comparisons=comparisons), per_case)
    v = _verdicts(lines)

    assert v["CT only, 26 cases: spinal cord Dice >= 0.78"] == ("0.800 ± 0.141", "met")
    assert v["CT only, 26 cases: mean Dice over the 5 structures >= 0.80"][1] == "met"  # (0.9+0.7+0.8+0.8)/4 = 0.8
    assert v["CT only, 26 cases: nothing missed"] == ("0 missed", "met")
    # GBM has 1 of 2 planned draws: measured, not judged
    assert v["GBM only, 26 cases: brainstem Dice >= 0.80"] == ("0.450 ± 0.636", "pending")
    assert v["GBM only, 26 cases: brainstem centre-of-mass error <= 3.0 mm"][0].startswith("2.00 ± nan mm (1 missed)")
    assert v["every model converged under the plateau rule"][1] == "pending"  # a run is pending
    # 3 models: 3 x 4000 s = 3.33 CPU-hours, under 40 but the study is unfinished
    assert v["whole study <= 40 CPU-hours"] == ("3.3 CPU-hours over 3 models", "pending")
    assert "70 test patients" not in lines[0] and "2 test patients" in lines[0]
    table = [line for line in lines if line.startswith("| 2 |")]
    assert table == ["| 2 | 2 | 70 | 0.660 | 0.600 | +10.0% (+2.5% to +17.2%) | 0.004 | holds |"]  # pooled only


def test_a_finished_study_is_judged_and_a_short_total_is_called_a_lower_bound():
    per_case = pd.DataFrame([_row(m, d, s, c, "brainstem", 0.85, com=3.5)
                             for m in ("ct", "gbm") for d in (0, 1) for s, c in (("test", "t1"), (EXT, "e1"))])
    runs = [_run("ct", 0), _run("ct", 1), _run("gbm", 0), _run("gbm", 1, converged=False, total_s=600.0)]
    v = _verdicts(_load().targets(_results(runs), per_case))
    assert v["GBM only, 26 cases: brainstem Dice >= 0.80"] == ("0.850 ± 0.000", "met")
    assert v["GBM only, 26 cases: brainstem centre-of-mass error <= 3.0 mm"] == ("3.50 ± 0.00 mm", "**not met**")
    assert v["every model converged under the plateau rule"] == ("3 of 4 (not: gbm/nall-d1)", "**not met**")
    measured, verdict = v["whole study <= 40 CPU-hours"]
    assert verdict == "met" and measured.startswith("4.3 CPU-hours over 4 models, a lower bound: 1 record(s)")
    # nothing at full size yet for a mode: pending with no number
    v = _verdicts(_load().targets(_results(runs), per_case[per_case["mode"] == "ct"]))
    assert v["GBM only, 26 cases: mean Dice over the 5 structures >= 0.75"] == ("-", "pending")


def test_runs_without_the_plateau_rule_count_as_settled_when_their_best_came_five_checks_before_the_end():
    per_case = pd.DataFrame([_row("ct", d, "test", "t1", "brainstem", 0.85) for d in (0, 1)])
    runs = [dict(_run("ct", 0, converged=None), max_steps=4000, best_step=3500),  # 5 checks of 100 before: settled
            dict(_run("ct", 1, converged=None), max_steps=4000, best_step=3600)]  # 4 checks before: still rising
    results = _results(runs)
    results["config"].update(patience=None, val_every=100)
    v = _verdicts(_load().targets(results, per_case))
    row = "every model's best validation >= 5 checks before its maximum (4000 steps, no early stop)"
    assert v[row] == ("1 of 2 (not: ct/nall-d1 (best at 3600))", "**not met**")
    assert "every model converged under the plateau rule" not in v


def test_continuations_count_the_prior_study_plus_the_time_they_added():
    per_case = pd.DataFrame([_row("ct", d, "test", "t1", "brainstem", 0.85) for d in (0, 1)])
    prior = _results([_run("ct", 0, total_s=3600.0), _run("ct", 1, total_s=7200.0), _run("gbm", 0, total_s=3600.0)])
    # draw 0 continued: its record now holds 3600 + 1800 s; draw 1 continued to 7200 + 3600 s
    runs = [_run("ct", 0, converged=None, total_s=5400.0), _run("ct", 1, converged=None, total_s=10800.0)]
    v = _verdicts(_load().targets(_results(runs), per_case, prior))
    # the study: 4 h; continuing added 0.5 + 1 h
    assert v["whole study <= 40 CPU-hours"] == (
        "4.0 (the study's 3 models) + 1.5 (continuing 2 of them) = 5.5 CPU-hours", "met")
