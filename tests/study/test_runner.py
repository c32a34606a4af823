"""study/runner.py: two shards merged, and the Ray backend, give the same records and report tables as one
unsharded run."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest

from globalmask.errors import OutputError
from globalmask.study import ALL, RECORDS_DIR, StudyConfig, run_study
from globalmask.study.records import RecordError

from .conftest import QUIET, TINY_PLAN, _assert_same_metrics, _records, _tables


@pytest.mark.slow
def test_two_shards_merged_equal_one_unsharded_run(three_ways):
    base, single, merged, _ = three_ways
    shards = {**_records(base / "machine0"), **_records(base / "machine1")}
    assert set(_records(base / "machine0")).isdisjoint(_records(base / "machine1"))
    _assert_same_metrics(_records(base / "single"), shards)
    assert merged.complete and merged.sweep_recipe == single.sweep_recipe
    for name in ("summary.csv", "per_case.csv"):
        a = pd.read_csv(base / "single" / name)
        b = pd.read_csv(base / "merged" / name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)
    pd.testing.assert_frame_equal(single.comparisons, merged.comparisons)
    # the report's tables are the same text (wall-time columns aside: they measure the machine)
    assert _tables(base / "single" / "report.md") == _tables(base / "merged" / "report.md")


@pytest.mark.slow
def test_the_ray_backend_gives_the_same_records(three_ways):
    base, single, _, on_ray = three_ways
    _assert_same_metrics(_records(base / "single"), _records(base / "ray"))
    assert on_ray is not None and on_ray.complete
    pd.testing.assert_frame_equal(single.summary, on_ray.summary, check_exact=False, atol=1e-9)


@pytest.mark.slow
def test_a_new_folder_continues_from_copied_records(three_ways, study_cohort, tmp_path):
    """Half a study on one machine, the rest on another: copying the records in is all it takes,
    plain or gzip-compressed (as large records are committed)."""
    base, single, *_ = three_ways
    cfg = StudyConfig(**TINY_PLAN)
    new = tmp_path / "elsewhere"
    (new / RECORDS_DIR).mkdir(parents=True)
    shutil.copytree(base / "machine0" / RECORDS_DIR, new / RECORDS_DIR, dirs_exist_ok=True)
    packed = sorted((base / "machine1" / RECORDS_DIR).glob("*.json"))
    assert packed
    for f in packed:
        (new / RECORDS_DIR / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes(), mtime=0))
    before = {p.name: p.stat().st_mtime_ns for p in (new / RECORDS_DIR).iterdir()}
    results = run_study(study_cohort, new, cfg, **QUIET)
    assert results is not None and results.complete
    assert not (new / "runs").exists()  # nothing was trained again
    assert {p.name: p.stat().st_mtime_ns for p in (new / RECORDS_DIR).iterdir()} == before
    pd.testing.assert_frame_equal(single.summary, results.summary, check_exact=False, atol=1e-9)


@pytest.mark.slow
def test_a_copied_record_of_another_plan_is_refused_naming_it(three_ways, study_cohort, tmp_path):
    base, *_ = three_ways
    new = tmp_path / "mixed"
    (new / RECORDS_DIR).mkdir(parents=True)
    src = sorted((base / "machine0" / RECORDS_DIR).glob("*.json"))[0]
    d = json.loads(src.read_text(encoding="utf-8"))
    d["plan_hash"] = d["plan"]["plan_hash"] = "0123456789abcdef"  # as a record of another configuration carries it
    (new / RECORDS_DIR / src.name).write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(RecordError, match=r"another study plan \(hash 0123456789abcdef") as exc:
        run_study(study_cohort, new, StudyConfig(**TINY_PLAN), **QUIET)
    assert src.name in str(exc.value)
    assert not (new / "plan.json").exists()  # refused before anything was written


def test_a_folder_with_anything_but_records_is_still_refused(study_cohort, tmp_path):
    new = tmp_path / "notmine"
    (new / RECORDS_DIR).mkdir(parents=True)
    (new / "thesis.docx").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match=r"not empty \(thesis.docx, ...\) and is not a globalmask output"):
        run_study(study_cohort, new, StudyConfig(**TINY_PLAN), **QUIET)
    assert (new / "thesis.docx").read_text(encoding="utf-8") == "mine"


@pytest.mark.slow
def test_a_ct_only_study_with_a_fixed_recipe_runs_and_reports_without_an_ablation(study_cohort, tmp_path):
    cfg = StudyConfig(**{**TINY_PLAN, "modes": ["ct"], "train_sizes": [ALL], "shifts": []})
    results = run_study(study_cohort, tmp_path / "s", cfg, **QUIET)
    assert results is not None and results.complete
    assert [(r.role, r.mode, r.size_label) for r in results.runs] == [("sweep", "ct", ALL)]
    assert results.recipe_ablation.empty
    report = (tmp_path / "s" / "report.md").read_text(encoding="utf-8")
    assert (
        "0 of 1 models converged" in report
        and "## 2. Data scarcity" in report
        and "recipe ablation (GBM only" not in report
    )
    assert "Not part of this study (its input modes are ct)." in report


def test_a_varied_test_scan_is_computed_once_per_worker_and_is_the_same_scan():
    """Every model meets the same varied scan (seeded per case), so the runner keeps the test
    split's and computes each once; validation scans (the recipe ablation's only) are not kept."""
    import numpy as np

    from globalmask.dataset import Dataset
    from globalmask.io import Volume
    from globalmask.shift import ScannerShift
    from globalmask.study import runner

    calls: list[str] = []

    class Counting(ScannerShift):
        def apply_pair(self, ct, label, seed=0, case_id=""):
            calls.append(case_id)
            return super().apply_pair(ct, label, seed, case_id)

    shift = Counting("noisy", noise=30.0)
    ds = Dataset(Path("/nowhere/ds"), "ds", {"background": 0, "a": 1}, {})
    ct = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4))
    label = Volume(np.ones((4, 4, 4), np.uint8), np.eye(4))
    first = runner._varied(shift, ds, "c1", ct, label, seed=3, keep=True)
    again = runner._varied(shift, ds, "c1", ct, label, seed=3, keep=True)
    assert calls == ["c1"] and again is first and np.asarray(first[0].array).std() > 0
    fresh = shift.apply_pair(ct, label, seed=3, case_id="c1")
    np.testing.assert_array_equal(fresh[0].array, first[0].array)  # the kept scan is the one a recomputation gives
    runner._varied(shift, ds, "c2", ct, label, seed=3, keep=False)
    runner._varied(shift, ds, "c2", ct, label, seed=3, keep=False)
    assert calls == ["c1", "c1", "c2", "c2"]
    for key in [k for k in runner._WORKER_CACHE if k.startswith("varied:/nowhere")]:
        del runner._WORKER_CACHE[key]


# ----------------------------------------------------------------------------------------------
# run_plan itself, fast (issue 29): two 2-step GBM-only runs on the package's tiny cohort

FAST_PLAN = dict(
    TINY_PLAN, modes=["gbm"], train_sizes=[ALL], steps={"all": 2}, val_every=1, recipe="auto",
    ablation_recipes=["threshold:-300"], shifts=[],
)


def test_run_plan_runs_the_ablation_then_the_sweep_on_its_winner_and_records_each_run(study_cohort, tmp_path, capsys):
    """recipe auto: stage 1 trains one GBM-only model per candidate recipe, the validation winner is recorded,
    and stage 2 (the same single run) is already done; each run leaves one record, named in a status line."""
    from globalmask.study import make_plan
    from globalmask.study.records import read_record
    from globalmask.study.runner import run_plan

    plan = make_plan(study_cohort, StudyConfig(**FAST_PLAN))
    lines: list[str] = []
    state = run_plan(plan, tmp_path / "s", progress=False, echo=lines.append, threads=1)
    assert state.complete and not state.pending and len(state.executed) == 2
    files = sorted((tmp_path / "s" / RECORDS_DIR).glob("*.json"))
    assert sorted(f.stem for f in files) == sorted(state.executed)
    records = [read_record(f) for f in files]
    recipes = {"bone:level=250", "threshold:level=-300"}  # the default and the candidate, canonical
    assert {r.run.recipe for r in records} == recipes
    assert all(r.machine["threads"] == 1 and r.plan_hash == plan.hash for r in records)
    choice = json.loads((tmp_path / "s" / "recipe_choice.json").read_text(encoding="utf-8"))
    assert choice["sweep_recipe"] == choice["winner_on_validation"] in recipes
    assert lines[0].startswith("study stage 1/2 (GBM recipe ablation): 2 runs, 0 already done; 3/2/3")
    assert lines[1].startswith("study stage 2/2 (modes x training sizes x draws): 0 runs, 0 already done")
    done = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  done ")]
    assert sorted(line.split(":")[0] for line in done) == sorted(f"  done {r.run_id}" for r in records)
    for line, rec in zip(done, records if done[0].startswith(f"  done {records[0].run_id}") else records[::-1]):
        test = [m["dice"] for m in rec.metrics if m["subset"] == "test" and m["dice"] is not None]
        assert f"test Dice {sum(test) / len(test):.3f}, 2 steps (NOT converged)" in line
    # nothing is left to do: a second call (threads by default) executes nothing and finds every record
    again = run_plan(plan, tmp_path / "s", progress=False, echo=lines.append)
    assert again.complete and again.executed == []


@pytest.mark.parametrize("how", ["pool", "ray"])
def test_run_plan_in_worker_processes_and_on_ray_records_every_run_with_its_threads(study_cohort, tmp_path, how):
    """Two spawned workers (threads by default: the cores shared between them), or a local Ray (one thread asked):
    every run's record arrives in records/, trained with those threads."""
    from globalmask.study import make_plan
    from globalmask.study.records import read_record
    from globalmask.study.runner import run_plan

    if how == "ray":
        pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'globalmask[ray]'")
    plan = make_plan(study_cohort, StudyConfig(**FAST_PLAN))
    kwargs = dict(workers=2) if how == "pool" else dict(backend="ray", threads=1)
    threads = max(1, (os.cpu_count() or 1) // 2) if how == "pool" else 1
    # ray.init leaves its own SIGINT/SIGTERM handlers in this process (see conftest.three_ways): put ours back
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        state = run_plan(plan, tmp_path / how, progress=False, echo=lambda *_: None, **kwargs)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert state.complete and len(state.executed) == 2
    records = [read_record(f) for f in sorted((tmp_path / how / RECORDS_DIR).glob("*.json"))]
    ids = sorted(plan.run_id(r) for r in plan.ablation())
    assert sorted(r.run_id for r in records) == sorted(state.executed) == ids
    assert all(r.machine["threads"] == threads for r in records)
    assert all({m["subset"] for m in r.metrics} == {"test", "validation"} for r in records)


def test_a_study_folder_of_another_plan_is_refused_naming_both_plans(study_cohort, tmp_path):
    from globalmask.study import make_plan
    from globalmask.study.runner import check_study_folder, claim_study_folder

    plan = make_plan(study_cohort, StudyConfig(**FAST_PLAN))
    claim_study_folder(tmp_path / "s", plan, "globalmask study run")
    check_study_folder(tmp_path / "s", plan)  # its own folder: fine
    other = make_plan(study_cohort, StudyConfig(**{**FAST_PLAN, "lr": 1e-3}))
    expected = f"holds another study plan \\({plan.hash}, this one is {other.hash}\\)"
    with pytest.raises(OutputError, match=expected) as err:
        check_study_folder(tmp_path / "s", other)
    assert err.value.path == tmp_path / "s"



def test_on_ray_a_run_reserves_as_many_cpus_as_its_threads(study_cohort, tmp_path):
    """On a 2-CPU Ray cluster, runs of 2 threads each take the whole cluster: one runs after the other, never
    two at once (4 threads on 2 cores). Each run's files are all written after the other's record."""
    from globalmask.study import make_plan
    from globalmask.study.records import read_record
    from globalmask.study.runner import run_plan

    ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'globalmask[ray]'")
    plan = make_plan(study_cohort, StudyConfig(**FAST_PLAN))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        state = run_plan(plan, tmp_path / "s", progress=False, echo=lambda *_: None, backend="ray", threads=2)
    finally:
        ray.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert state.complete and len(state.executed) == 2
    spans = []
    for path in (tmp_path / "s" / RECORDS_DIR).glob("*.json"):
        rec = read_record(path)
        assert rec.machine["threads"] == 2
        files = [f for f in (tmp_path / "s" / "runs" / rec.run.name).rglob("*") if f.is_file()]
        spans.append((min(f.stat().st_mtime_ns for f in files), path.stat().st_mtime_ns))
    first, second = sorted(spans)
    assert second[0] >= first[1]  # the second run started after the first one's record was written


def test_a_resumed_runs_total_time_counts_its_earlier_training_and_this_process_scoring(study_cohort, tmp_path,
                                                                                      monkeypatch):
    """A run resumed after a crash trained partly in an earlier process: train() reports the summed training time,
    and the record's total is that plus this process's preparation and scoring, never less than its training."""
    import dataclasses
    import time

    from globalmask.study import make_plan, runner

    real_train = runner.train
    calls: list[float] = []

    def resumed_train(*args, **kwargs):
        t = time.perf_counter()
        result = real_train(*args, **kwargs)
        calls.append(time.perf_counter() - t)
        return dataclasses.replace(result, seconds=result.seconds + 1000.0)  # 1000 s in an earlier process

    monkeypatch.setattr(runner, "train", resumed_train)
    plan = make_plan(study_cohort, StudyConfig(**dict(FAST_PLAN, recipe="bone", ablation_recipes=[])))
    t0 = time.perf_counter()
    run = plan.sweep(plan.fixed_recipe)[0]
    rec = runner.execute_run(tmp_path / "s", str(study_cohort), plan.info(), run, threads=1, progress=False)
    wall = time.perf_counter() - t0
    assert rec.train_seconds >= 1000.0
    outside_training = rec.total_seconds - rec.train_seconds
    assert 0.0 < outside_training <= wall - calls[0] + 1e-6
