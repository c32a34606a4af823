"""study/plan.py: stable run ids and plan hash, shards, and the paired sweep/ablation runs of a plan."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from globalmask.study import (
    StudyConfig,
    make_plan,
    parse_shard,
    plan_ablation,
    plan_sweep,
    shard_runs,
    training_subsets,
)

from .conftest import TINY_PLAN


def duck_config(**kw):
    """The attributes plan_sweep reads from a study configuration."""
    cfg = SimpleNamespace(modes=["ct", "gbm", "ct+gbm"], train_sizes=[1, 2, "all"], draws=2, full_draws=1, seed=10, steps=5)
    cfg.__dict__.update(kw)
    cfg.steps_for = lambda label: cfg.steps
    return cfg


def test_every_mode_trains_on_the_same_cases():
    train_ids = [f"case_{i:02d}" for i in range(6)]
    sweep = plan_sweep(duck_config(), len(train_ids), "bone")
    # sizes 1 and 2 with 2 draws, the full size with 1 draw, 3 modes each
    assert len(sweep) == (2 + 2 + 1) * 3
    assert {r.mode for r in sweep} == {"ct", "gbm", "ct+gbm"}
    by_key: dict[tuple, set] = {}
    for r in sweep:
        by_key.setdefault((r.size_label, r.draw), set()).add((r.n_cases, r.seed))
    assert by_key == {("1", 0): {(1, 10)}, ("1", 1): {(1, 11)}, ("2", 0): {(2, 10)}, ("2", 1): {(2, 11)}, ("all", 0): {(6, 10)}}
    subsets = training_subsets(sweep, train_ids)
    assert sorted(subsets) == ["n1-d0", "n1-d1", "n2-d0", "n2-d1", "nall-d0"]
    assert subsets["nall-d0"] == train_ids
    for key, ids in subsets.items():
        n = 6 if key.startswith("nall") else int(key[1])
        assert len(ids) == n and len(set(ids)) == n and set(ids) <= set(train_ids)
    # the subsets do not depend on the order the ids are listed in, nor on the modes planned
    assert training_subsets(plan_sweep(duck_config(modes=["gbm"]), 6, "bone"), train_ids[::-1]) == subsets


def test_the_ablation_plans_one_full_size_gbm_model_per_recipe_and_draw():
    cfg = duck_config(ablation_draws=2, steps=7)
    cfg.candidate_recipes = lambda: ["bone:level=250", "body:level=-500"]
    runs = plan_ablation(cfg, 5)
    assert [(r.kind, r.mode, r.size_label, r.n_cases, r.draw, r.seed, r.recipe, r.steps) for r in runs] == [
        ("ablation", "gbm", "all", 5, 0, 10, "bone:level=250", 7),
        ("ablation", "gbm", "all", 5, 1, 11, "bone:level=250", 7),
        ("ablation", "gbm", "all", 5, 0, 10, "body:level=-500", 7),
        ("ablation", "gbm", "all", 5, 1, 11, "body:level=-500", 7),
    ]
    assert all(r.kind == "sweep" and r.recipe == "bone:level=250" for r in plan_sweep(duck_config(), 5, "bone"))


def test_a_size_at_or_above_the_training_split_is_the_full_size():
    sweep = plan_sweep(duck_config(train_sizes=[2, 8, "all"], modes=["ct"], draws=1), 4, "bone")
    assert [(r.size_label, r.n_cases) for r in sweep] == [("2", 2), ("all", 4)]  # 8 and 'all' are one run


def test_plan_ids_are_stable_and_depend_only_on_what_runs_compute(study_cohort):
    cfg = StudyConfig(**TINY_PLAN)
    a, b = make_plan(study_cohort, cfg), make_plan(study_cohort, cfg)
    runs = a.all_runs(a.fixed_recipe)
    # 2 ablation recipes (threshold:-300, the default bone); the sweep shares gbm/all/threshold with stage 1
    assert len(runs) == 1 + 2 * 2
    assert a.hash == b.hash and [a.run_id(r) for r in runs] == [b.run_id(r) for r in runs]
    assert len({a.run_id(r) for r in runs}) == len(runs)
    # where and how it runs is not part of the plan ...
    assert make_plan(study_cohort, replace(cfg, device="cuda", overlays=3)).hash == a.hash
    # ... what it computes is
    other = make_plan(study_cohort, replace(cfg, lr=1e-3))
    assert other.hash != a.hash and all(other.run_id(r) != a.run_id(r) for r in runs)


def test_shards_partition_the_plan(study_cohort):
    plan = make_plan(study_cohort, StudyConfig(**TINY_PLAN))
    runs = plan.all_runs(plan.fixed_recipe)
    for n in (1, 2, 3, 7):
        parts = [shard_runs(runs, (i, n)) for i in range(n)]
        assert sorted(r.name for p in parts for r in p) == sorted(r.name for r in runs)  # each run in exactly one shard
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/4", "1/0", "a/b", "2"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_the_time_estimate_prices_the_patch_training_would_use(study_cohort):
    """32^3 phantom volumes fit a 96^3 budget whole: the estimate must price 32^3 voxels per
    sample, not the budget (the thorax study was priced 3.4x too high that way)."""
    from globalmask.dataset import load_dataset
    from globalmask.io import read_affine, voxel_spacing
    from globalmask.study.plan import REF_STEP_VOXELS, SECONDS_PER_STEP_REF, patch_voxels

    ds = load_dataset(study_cohort)
    plan = make_plan(ds, StudyConfig(**{**TINY_PLAN, "max_patch_voxels": 96**3, "net": {}}))
    assert patch_voxels(plan, ds) == 32**3
    runs = plan.all_runs(plan.fixed_recipe)
    steps = sum(r.steps for r in runs)
    expected = steps * SECONDS_PER_STEP_REF * plan.config.batch_size * 32**3 / REF_STEP_VOXELS
    assert plan.estimate_seconds(runs, patch_voxels=patch_voxels(plan, ds)) == pytest.approx(expected)
    assert plan.estimate_seconds(runs) == pytest.approx(expected * 96**3 / 32**3)  # without the headers: the budget
    assert plan.estimate_seconds(runs, seconds_per_step=2.0) == pytest.approx(2.0 * steps)
    # at twice the (largest) voxel size the grid halves: 32 -> at most 16 voxels a side, one U-Net divisor
    spacings = [voxel_spacing(read_affine(ds.cases[c].image)) for c in (*plan.split.train, *plan.split.validation)]
    spacing = [2 * float(v) for v in np.max(spacings, axis=0)]
    coarse = make_plan(ds, StudyConfig(**{**TINY_PLAN, "spacing": spacing, "net": {}}))
    assert patch_voxels(coarse, ds) == 16**3
    # a budget smaller than the volume shrinks the patch as training does
    small = make_plan(ds, StudyConfig(**{**TINY_PLAN, "max_patch_voxels": 32 * 32 * 16, "net": {}}))
    assert patch_voxels(small, ds) == 32 * 32 * 16
