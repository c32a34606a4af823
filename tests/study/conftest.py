"""Shared by the study tests: one tiny plan executed three ways (unsharded, two shards merged, on Ray), computed
once."""

from __future__ import annotations

import json
import signal

import pandas as pd
import pytest

from globalmask.dataset import load_dataset, make_split, save_split
from globalmask.phantom import make_phantom_dataset
from globalmask.study import ALL, RECORDS_DIR, StudyConfig, report_from_records, run_study

TINY_PLAN = dict(
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


@pytest.fixture(scope="package")
def study_cohort(tmp_path_factory):
    root = make_phantom_dataset(
        tmp_path_factory.mktemp("sr") / "thorax", kind="thorax", cases=8, seed=2, shape=(32, 32, 32)
    )
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(3, 2, 3)), root / "splits.json")
    return root


@pytest.fixture(scope="package")
def three_ways(study_cohort, tmp_path_factory):
    """The same plan executed unsharded, as two shards in two folders, and on a local Ray."""
    base = tmp_path_factory.mktemp("ways")
    cfg = StudyConfig(**TINY_PLAN)
    single = run_study(study_cohort, base / "single", cfg, **QUIET)
    assert single is not None and single.complete
    # shard 0 alone cannot finish the plan: no report, records of its slice only
    assert run_study(study_cohort, base / "machine0", cfg, shard=(0, 2), **QUIET) is None
    assert run_study(study_cohort, base / "machine1", cfg, shard=(1, 2), **QUIET) is None
    merged = report_from_records([base / "machine0", base / "machine1"], base / "merged")
    ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'globalmask[ray]'")
    # ray.init installs its own SIGINT/SIGTERM handlers in this process and leaves them after shutdown:
    # later tests (and the processes they start, which inherit an ignored signal) would not see the defaults
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = run_study(study_cohort, base / "ray", cfg, backend="ray", **QUIET)
    finally:
        ray.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return base, single, merged, on_ray


def _tables(report) -> list[list[str]]:
    """The markdown tables of a report, without the ones that hold wall times (minutes, compute hours)."""
    tables, cur = [], []
    for line in [*report.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return [t for t in tables if "minutes" not in t[0] and "hours" not in t[0]]


def _records(folder):
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / RECORDS_DIR).glob("*.json"))}


def _assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for rid in a:
        ma, mb = pd.DataFrame(a[rid]["metrics"]), pd.DataFrame(b[rid]["metrics"])
        pd.testing.assert_frame_equal(ma, mb, check_exact=False, atol=1e-6)
        for key in ("train_ids", "steps", "best_step", "converged", "plan_hash"):
            assert a[rid][key] == b[rid][key], (rid, key)
