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
    """The attributes plan_sweep and plan_ablation read from a study configuration."""
    cfg = SimpleNamespace(modes=["ct", "gbm", "ct+gbm"], train_sizes=[1, 2, "all"], draws=2, full_draws=1, seed=10, steps=5, recipe="auto")
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


def test_the_sweep_runs_draw_by_draw_so_a_partial_study_spans_every_size():
    cfg = duck_config(modes=["ct", "gbm"], train_sizes=[1, 2, "all"], draws=2, full_draws=3)
    order = [(r.draw, r.size_label, r.mode) for r in plan_sweep(cfg, 6, "bone")]
    assert order == [
        (0, "1", "ct"), (0, "1", "gbm"), (0, "2", "ct"), (0, "2", "gbm"), (0, "all", "ct"), (0, "all", "gbm"),
        (1, "1", "ct"), (1, "1", "gbm"), (1, "2", "ct"), (1, "2", "gbm"), (1, "all", "ct"), (1, "all", "gbm"),
        (2, "all", "ct"), (2, "all", "gbm"),  # the full size's extra draw comes last
    ]


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
    """The estimate prices the patch training really uses (cropped, resampled volumes), not the
    budget: the thorax study was priced 3.6x too high that way."""
    from globalmask.dataset import load_dataset
    from globalmask.model import NetConfig
    from globalmask.study.plan import REF_STEP_VOXELS, SECONDS_PER_STEP_REF, patch_voxels
    from globalmask.train import DataConfig, prepare_data
    from globalmask.training_data import auto_patch_size

    def trained_patch(spacing, budget):  # what train() computes from the prepared training and validation cases
        data = prepare_data(study_cohort, DataConfig(spacing=spacing, window=(-1000, 1000)), progress=False)
        return int(np.prod(auto_patch_size([pc.shape for pc in data.cases.values()], NetConfig().divisor, budget)))

    ds = load_dataset(study_cohort)
    plan = make_plan(ds, StudyConfig(**{**TINY_PLAN, "max_patch_voxels": 96**3, "net": {}}))
    voxels = patch_voxels(plan, ds)
    assert voxels == trained_patch(None, 96**3) < 96**3  # the median spacing of the training split, as training derives it
    runs = plan.all_runs(plan.fixed_recipe)
    steps = sum(r.steps for r in runs)
    expected = steps * SECONDS_PER_STEP_REF * plan.config.batch_size * voxels / REF_STEP_VOXELS
    assert plan.estimate_seconds(runs, patch_voxels=voxels) == pytest.approx(expected)
    assert plan.estimate_seconds(runs) == pytest.approx(expected * 96**3 / voxels)  # without the images: the budget
    assert plan.estimate_seconds(runs, seconds_per_step=2.0) == pytest.approx(2.0 * steps)
    # a spacing given by the study, and a budget smaller than the volumes (the patch shrinks as training's does)
    coarse = make_plan(ds, StudyConfig(**{**TINY_PLAN, "spacing": [20.0, 20.0, 15.0], "net": {}}))
    assert patch_voxels(coarse, ds) == trained_patch((20.0, 20.0, 15.0), coarse.config.max_patch_voxels)
    small = make_plan(ds, StudyConfig(**{**TINY_PLAN, "max_patch_voxels": 32 * 32 * 16, "net": {}}))
    assert patch_voxels(small, ds) == trained_patch(None, 32 * 32 * 16) <= 32 * 32 * 16


@pytest.mark.parametrize("modes, recipe, expected", [
    (["ct"], "bone", []),                          # nothing reads a GBM and nothing is left to choose
    (["ct"], "auto", ["bone:level=250", "threshold:level=-300"]),  # auto still runs its ablation
    (["ct", "ct+gbm"], "bone", ["bone:level=250", "threshold:level=-300"]),
])
def test_a_ct_only_study_with_a_fixed_recipe_trains_no_gbm_only_model(modes, recipe, expected):
    cfg = StudyConfig(**{**TINY_PLAN, "modes": modes, "recipe": recipe, "ablation_recipes": ["threshold:-300"]})
    assert sorted({r.recipe for r in plan_ablation(cfg, 5)}) == expected
    assert all(r.mode == "gbm" for r in plan_ablation(cfg, 5))
