"""study/records.py: a run record is self-contained; records of another plan, or no record at all, are refused by name."""

from __future__ import annotations

import json

import pytest

from globalmask.dataset import load_dataset
from globalmask.study import (
    RecordError,
    StudyConfig,
    load_records,
    run_study,
)

from .conftest import QUIET, TINY_PLAN, _records


@pytest.mark.slow
def test_records_are_self_contained(three_ways, study_cohort):
    base, single, _, _ = three_ways
    rec = next(iter(_records(base / "single").values()))
    split = json.loads((study_cohort / "splits.json").read_text(encoding="utf-8"))
    assert rec["plan"]["split"] == {k: split[k] for k in ("train", "validation", "test")}
    assert rec["plan"]["plan_hash"] == rec["plan_hash"] == single.plan.hash
    assert set(rec["machine"]) >= {"host", "torch", "monai", "python", "device", "threads"} and rec["machine"]["threads"] == 1
    assert rec["train_config"]["recipe"] == rec["run"]["recipe"] and rec["max_steps"] == rec["run"]["steps"]
    assert rec["converged"] in (True, False) and 1 <= rec["best_step"] <= rec["steps"] <= rec["max_steps"]
    test_rows = [m for m in rec["metrics"] if m["subset"] == "test"]
    assert {m["case"] for m in test_rows} == set(split["test"]) and {m["shift"] for m in test_rows} == {"none", "shifted"}


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
        run_study(load_dataset(json.loads((base / "single" / "plan.json").read_text(encoding="utf-8"))["dataset_root"]), base / "single",
                  StudyConfig(**{**TINY_PLAN, "lr": 1e-3}), **QUIET)
    # a file that is not a record is named
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RecordError, match="not a globalmask run record"):
        load_records([bad])
