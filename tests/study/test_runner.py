"""study/runner.py: two shards merged, and the Ray backend, give the same records and report tables as one unsharded run."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import _assert_same_metrics, _records, _tables


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
