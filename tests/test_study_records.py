"""Studies as plans of runs: stable ids, shards, run records, merging, refusal, and the Ray backend.

Equivalence is the point: one unsharded run, two shards run in separate folders (two machines)
and merged, and the Ray backend must give the same records and the same report tables.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from globalmask.cli import main
from globalmask.dataset import load_dataset, make_split, save_split
from globalmask.phantom import make_phantom_dataset
from globalmask.study import (
    ALL,
    RECORDS_DIR,
    RecordError,
    StudyConfig,
    load_records,
    make_plan,
    parse_shard,
    report_from_records,
    run_study,
    shard_runs,
)

TINY = dict(
    modes=["ct", "gbm"],
    train_sizes=[1, ALL],
    draws=1,
    steps={"1": 4, "all": 6},
    val_every=2,
    net={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    shifts=[{"name": "shifted", "offset": 80.0, "scale": 1.1, "noise": 20.0, "blur_mm": 1.0}],
    recipe="threshold:-300",
    ablation_recipes=[],
    overlays=0,
    device="cpu",
)
QUIET = dict(progress=False, echo=lambda *_: None, threads=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = make_phantom_dataset(tmp_path_factory.mktemp("sr") / "thorax", kind="thorax", cases=8, seed=2, shape=(32, 32, 32))
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(3, 2, 3)), root / "splits.json")
    return root


def test_plan_ids_are_stable_and_depend_only_on_what_runs_compute(cohort):
    cfg = StudyConfig(**TINY)
    a, b = make_plan(cohort, cfg), make_plan(cohort, cfg)
    runs = a.all_runs(a.fixed_recipe)
    # 2 ablation recipes (threshold:-300, the default bone); the sweep shares gbm/all/threshold with stage 1
    assert len(runs) == 1 + 2 * 2
    assert a.hash == b.hash and [a.run_id(r) for r in runs] == [b.run_id(r) for r in runs]
    assert len({a.run_id(r) for r in runs}) == len(runs)
    # where and how it runs is not part of the plan ...
    assert make_plan(cohort, replace(cfg, device="cuda", overlays=3)).hash == a.hash
    # ... what it computes is
    other = make_plan(cohort, replace(cfg, lr=1e-3))
    assert other.hash != a.hash and all(other.run_id(r) != a.run_id(r) for r in runs)


def test_shards_partition_the_plan(cohort):
    plan = make_plan(cohort, StudyConfig(**TINY))
    runs = plan.all_runs(plan.fixed_recipe)
    for n in (1, 2, 3, 7):
        parts = [shard_runs(runs, (i, n)) for i in range(n)]
        assert sorted(r.name for p in parts for r in p) == sorted(r.name for r in runs)  # each run in exactly one shard
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/4", "1/0", "a/b", "2"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


@pytest.fixture(scope="module")
def three_ways(cohort, tmp_path_factory):
    """The same plan executed unsharded, as two shards in two folders, and on a local Ray."""
    base = tmp_path_factory.mktemp("ways")
    cfg = StudyConfig(**TINY)
    single = run_study(cohort, base / "single", cfg, **QUIET)
    assert single is not None and single.complete
    # shard 0 alone cannot finish the plan: no report, records of its slice only
    assert run_study(cohort, base / "machine0", cfg, shard=(0, 2), **QUIET) is None
    assert run_study(cohort, base / "machine1", cfg, shard=(1, 2), **QUIET) is None
    merged = report_from_records([base / "machine0", base / "machine1"], base / "merged")
    ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'globalmask[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = run_study(cohort, base / "ray", cfg, backend="ray", **QUIET)
    finally:
        ray.shutdown()
    return base, single, merged, on_ray


def _tables(report) -> list[list[str]]:
    """The markdown tables of a report, without the ones that hold wall times."""
    tables, cur = [], []
    for line in [*report.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return [t for t in tables if "minutes" not in t[0]]


def _records(folder):
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / RECORDS_DIR).glob("*.json"))}


def _assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for rid in a:
        ma, mb = pd.DataFrame(a[rid]["metrics"]), pd.DataFrame(b[rid]["metrics"])
        pd.testing.assert_frame_equal(ma, mb, check_exact=False, atol=1e-6)
        for key in ("train_ids", "steps", "best_step", "converged", "plan_hash"):
            assert a[rid][key] == b[rid][key], (rid, key)


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
def test_records_are_self_contained(three_ways, cohort):
    base, single, _, _ = three_ways
    rec = next(iter(_records(base / "single").values()))
    split = json.loads((cohort / "splits.json").read_text(encoding="utf-8"))
    assert rec["plan"]["split"] == {k: split[k] for k in ("train", "validation", "test")}
    assert rec["plan"]["plan_hash"] == rec["plan_hash"] == single.plan.hash
    assert set(rec["machine"]) >= {"host", "torch", "monai", "python", "device", "threads"} and rec["machine"]["threads"] == 1
    assert rec["train_config"]["recipe"] == rec["run"]["recipe"] and rec["max_steps"] == rec["run"]["steps"]
    assert rec["converged"] in (True, False) and 1 <= rec["best_step"] <= rec["steps"] <= rec["max_steps"]
    test_rows = [m for m in rec["metrics"] if m["subset"] == "test"]
    assert {m["case"] for m in test_rows} == set(split["test"]) and {m["shift"] for m in test_rows} == {"none", "shifted"}


@pytest.mark.slow
def test_a_partial_merge_reports_pending_runs_and_only_complete_pairs(three_ways, tmp_path):
    base, single, _, _ = three_ways
    partial = report_from_records([base / "machine0"], tmp_path / "partial")
    missing = set(_records(base / "machine1"))
    assert set(partial.pending) == missing and not partial.complete
    report = (tmp_path / "partial" / "report.md").read_text(encoding="utf-8")
    assert "Incomplete" in report and all(rid in report for rid in missing)
    done = {(r.mode, r.size_label) for r in partial.runs if r.role == "sweep"}
    for c in partial.comparisons.to_dict(orient="records"):  # a comparison only where both modes finished the size
        assert (c["a"], c["size"]) in done and (c["b"], c["size"]) in done


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
                  StudyConfig(**{**TINY, "lr": 1e-3}), **QUIET)
    # a file that is not a record is named
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RecordError, match="not a globalmask run record"):
        load_records([bad])


@pytest.mark.slow
def test_cli_plan_and_report(three_ways, cohort, tmp_path, capsys):
    base, single, *_ = three_ways
    cfg = tmp_path / "study.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    assert main(["study", "plan", str(cfg), str(cohort), "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert single.plan.hash in out and all(r.run_id in out for r in single.runs)
    assert main(["study", "report", str(base / "machine0"), str(base / "machine1"), "--out", str(tmp_path / "rep")]) == 0
    assert "complete" in capsys.readouterr().out and (tmp_path / "rep" / "report.md").exists()
    assert main(["study", "report", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "rep2")]) == 2
    shutil.rmtree(tmp_path / "rep")
    np.testing.assert_equal(main(["study", "run", str(cohort), "--config", str(cfg), "--out", str(base / "single"), "--shard", "5/2"]), 2)
