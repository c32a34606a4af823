"""study/records.py: a run record is self-contained; records of another plan, or no record at all, are refused
by name."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from globalmask.dataset import load_dataset
from globalmask.study import (
    RecordError,
    StudyConfig,
    load_records,
    run_study,
)
from globalmask.study.plan import RunSpec
from globalmask.study.records import RunRecord
from globalmask.study.report import plot_learning_curves

from .conftest import QUIET, TINY_PLAN, _records


@pytest.mark.slow
def test_records_are_self_contained(three_ways, study_cohort):
    base, single, _, _ = three_ways
    rec = next(iter(_records(base / "single").values()))
    split = json.loads((study_cohort / "splits.json").read_text(encoding="utf-8"))
    assert rec["plan"]["split"] == {k: split[k] for k in ("train", "validation", "test")}
    assert rec["plan"]["plan_hash"] == rec["plan_hash"] == single.plan.hash
    assert (
        set(rec["machine"]) >= {"host", "torch", "monai", "python", "device", "threads"}
        and rec["machine"]["threads"] == 1
    )
    assert rec["train_config"]["recipe"] == rec["run"]["recipe"] and rec["max_steps"] == rec["run"]["steps"]
    assert rec["converged"] in (True, False) and 1 <= rec["best_step"] <= rec["steps"] <= rec["max_steps"]
    test_rows = [m for m in rec["metrics"] if m["subset"] == "test"]
    assert {m["case"] for m in test_rows} == set(split["test"])
    assert {m["shift"] for m in test_rows} == {"none", "shifted"}


@pytest.mark.slow
def test_records_of_another_plan_are_refused(three_ways, tmp_path):
    base, *_ = three_ways
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    rid, rec = next(iter(_records(base / "machine1").items()))
    rec["plan_hash"] = rec["plan"]["plan_hash"] = "0123456789abcdef"
    (foreign / f"{rid}.json").write_text(json.dumps(rec), encoding="utf-8")
    with pytest.raises(RecordError, match="another study plan") as err:
        load_records([base / "machine0", foreign])
    assert str(foreign / f"{rid}.json") in str(err.value)
    # a study folder refuses to continue with another plan
    with pytest.raises(Exception, match="another study plan"):
        run_study(
            load_dataset(json.loads((base / "single" / "plan.json").read_text(encoding="utf-8"))["dataset_root"]),
            base / "single",
            StudyConfig(**{**TINY_PLAN, "lr": 1e-3}),
            **QUIET,
        )
    # a file that is not a record is named
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RecordError, match="not a globalmask run record"):
        load_records([bad])


def _record(mode: str, draw: int, dice: float | None, com: float | None) -> RunRecord:
    """A record as read back from JSON: a missed structure's distances are null."""
    run = RunSpec(
        kind="sweep", mode=mode, size_label="1", n_cases=1, draw=draw, seed=draw, recipe="bone:level=250", steps=10
    )
    metrics = [
        {
            "subset": "test",
            "shift": "none",
            "case": case,
            "structure": s,
            "label": i + 1,
            "dice": dice,
            "com_mm": com,
            "hd95_mm": com,
            "msd_mm": com,
            "pred_ml": 0.0 if com is None else 1.0,
            "ref_ml": 1.0,
            "status": "missed" if com is None else "ok",
        }
        for case in ("c0", "c1")
        for i, s in enumerate(("a", "b"))
    ]
    return RunRecord(
        plan={"plan_hash": "0" * 16},
        run_id=f"{mode}-d{draw}",
        run=run,
        train_config={},
        train_ids=["t0"],
        steps=10,
        max_steps=10,
        best_step=10,
        best_val_dice=0.0,
        converged=False,
        stop_reason="max_steps",
        train_seconds=1.0,
        total_seconds=1.0,
        machine={},
        metrics=metrics,
    )


def test_a_run_that_missed_everything_keeps_numeric_columns_and_the_figures_draw(tmp_path):
    # every structure missed: whole columns of nulls, which must not turn the merged frame into objects
    per_case = pd.concat(
        [_record("ct", 0, 0.0, None).per_case(), _record("ct", 1, 0.5, 4.0).per_case()], ignore_index=True
    )
    for column in ("dice", "com_mm", "hd95_mm", "msd_mm", "pred_ml", "ref_ml"):
        assert per_case[column].dtype == float, column
    assert per_case["com_mm"].mean() == 4.0 and per_case["com_mm"].isna().sum() == 4
    assert plot_learning_curves(per_case, 1, tmp_path, "bone:level=250") == ["dice_vs_n.png", "com_vs_n.png"]
    assert (tmp_path / "com_vs_n.png").stat().st_size > 0
