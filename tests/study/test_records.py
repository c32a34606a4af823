"""study/records.py: a run record is self-contained; records of another plan, or no record at all, are refused
by name."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from globalmask.dataset import load_dataset
from globalmask.study import (
    RecordError,
    StudyConfig,
    load_records,
    run_study,
)
from globalmask.study.plan import RunSpec
from globalmask.study.records import (
    RECORD_FORMAT,
    RECORDS_DIR,
    RunRecord,
    existing_record,
    machine_info,
    read_record,
    record_files,
    record_path,
    write_record,
)
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


# ----------------------------------------------------------------------------------------------
# records on disk without running a study (fast): the committed thorax plan as the records' plan

REPO = Path(__file__).resolve().parents[2]


def _plan_info() -> dict:
    info = json.loads((REPO / "benchmarks" / "thorax" / "plan.json").read_text(encoding="utf-8"))
    info.pop("command", None)
    return info


def _on_plan(rec: RunRecord, info: dict, run_id: str) -> RunRecord:
    rec.plan, rec.run_id = info, run_id
    return rec


def test_a_record_written_and_read_back_is_the_same_record(tmp_path):
    rec = _on_plan(_record("gbm", 1, 0.75, 2.5), _plan_info(), "gbm-n1-d1")
    path = write_record(tmp_path / "records", rec)
    assert path == tmp_path / "records" / "gbm-n1-d1.json" == record_path(tmp_path / "records", "gbm-n1-d1")
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["format"] == RECORD_FORMAT and stored["plan_hash"] == "d96bb1cfdecd90a4"
    assert stored["run"]["mode"] == "gbm" and stored["metrics"][0]["dice"] == 0.75
    assert read_record(path) == rec


def test_records_of_several_folders_merge_with_each_run_once(tmp_path):
    info = _plan_info()
    a = _on_plan(_record("ct", 0, 0.5, 3.0), info, "run-a")
    b = _on_plan(_record("gbm", 0, 0.6, 2.0), info, "run-b")
    write_record(tmp_path / "m0" / RECORDS_DIR, a)  # a study folder: its records/ sub-folder is read
    write_record(tmp_path / "m1", a)  # a plain records folder holding a copy of run-a
    write_record(tmp_path / "m1", b)
    plan, records = load_records([tmp_path / "m0", tmp_path / "m1"])
    assert plan.hash == "d96bb1cfdecd90a4" and plan.dataset_name == info["dataset_name"]
    assert sorted(records) == ["run-a", "run-b"] and records["run-a"] == a and records["run-b"] == b
    assert record_files([tmp_path / "m0", tmp_path / "m1"]) == [
        tmp_path / "m0" / RECORDS_DIR / "run-a.json", tmp_path / "m1" / "run-a.json", tmp_path / "m1" / "run-b.json"
    ]
    # the same run with another result: refused, naming both files
    write_record(tmp_path / "m2", _on_plan(_record("ct", 0, 0.9, 3.0), info, "run-a"))
    with pytest.raises(RecordError, match="two different results for run run-a") as err:
        load_records([tmp_path / "m0", tmp_path / "m2"])
    assert str(tmp_path / "m0" / RECORDS_DIR / "run-a.json") in str(err.value)
    assert err.value.path == tmp_path / "m2" / "run-a.json"


def test_a_gzip_compressed_record_reads_and_merges_as_the_plain_one(tmp_path):
    """Large records (per-case metrics under the variation suite) are committed as .json.gz."""
    info = _plan_info()
    a = _on_plan(_record("ct", 0, 0.5, 3.0), info, "run-a")
    b = _on_plan(_record("gbm", 0, 0.6, 2.0), info, "run-b")
    plain = write_record(tmp_path / "plain", a)
    packed = tmp_path / "packed" / "run-b.json.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(write_record(tmp_path / "tmp", b).read_bytes()))
    assert read_record(packed) == b
    assert existing_record(tmp_path / "packed", "run-b") == packed
    assert existing_record(tmp_path / "packed", "run-a") is None
    assert existing_record(tmp_path / "plain", "run-a") == plain
    _, records = load_records([tmp_path / "plain", tmp_path / "packed"])
    assert records == {"run-a": a, "run-b": b}
    # the same run plain and compressed in one folder is one run
    (tmp_path / "plain" / "run-a.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
    assert len(record_files([tmp_path / "plain"])) == 2 and load_records([tmp_path / "plain"])[1] == {"run-a": a}
    # a truncated download is refused naming the file
    broken = tmp_path / "broken" / "run-c.json.gz"
    broken.parent.mkdir()
    broken.write_bytes(packed.read_bytes()[:40])
    with pytest.raises(RecordError, match=r"cannot read run record .*gzip") as err:
        load_records([tmp_path / "broken"])
    assert err.value.path == broken


def test_a_record_of_another_plan_is_refused_naming_both_hashes_and_its_file(tmp_path):
    info = _plan_info()
    write_record(tmp_path / "r", _on_plan(_record("ct", 0, 0.5, 3.0), info, "run-a"))
    write_record(tmp_path / "r", _on_plan(_record("ct", 1, 0.5, 3.0), {**info, "plan_hash": "f" * 16}, "run-b"))
    with pytest.raises(RecordError, match=f"another study plan \\(hash {'f' * 16}, expected d96bb1cfdecd90a4") as err:
        load_records([tmp_path / "r"])
    assert err.value.path == tmp_path / "r" / "run-b.json"
    with pytest.raises(RecordError, match="hash d96bb1cfdecd90a4, expected 0123") as err:
        load_records([tmp_path / "r"], plan_hash="0123")
    assert err.value.path == tmp_path / "r" / "run-a.json"


def test_missing_empty_unreadable_and_malformed_records_are_refused_by_name(tmp_path):
    with pytest.raises(RecordError, match="records folder not found") as err:
        load_records([tmp_path / "nowhere"])
    assert err.value.path == tmp_path / "nowhere"
    for name in ("empty", "r"):
        (tmp_path / name).mkdir()
    expected = f"no run records found in {tmp_path / 'empty'}, {tmp_path / 'r'}"
    with pytest.raises(RecordError, match=re.escape(expected) + "$"):
        load_records([tmp_path / "empty", tmp_path / "r"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(RecordError, match="cannot read run record") as err:
        read_record(bad)
    assert err.value.path == bad
    stored = _on_plan(_record("ct", 0, 0.5, 3.0), _plan_info(), "run-a").to_dict()
    del stored["steps"]
    bad.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(RecordError, match="malformed run record") as err:
        read_record(bad)
    assert err.value.path == bad


def test_machine_info_names_the_versions_the_device_and_the_threads():
    import globalmask

    info = machine_info("cpu", None)
    assert info["globalmask"] == globalmask.__version__ and info["torch"] == torch.__version__
    assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert machine_info("cuda:1", 3)["device"] == "cuda:1" and machine_info("cuda:1", 3)["threads"] == 3
