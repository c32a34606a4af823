"""study/plan.py: stable run ids and plan hash, shards, and the paired sweep/ablation runs of a plan."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from globalmask.io import read_volume, write_volume
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
    cfg = SimpleNamespace(
        modes=["ct", "gbm", "ct+gbm"], train_sizes=[1, 2, "all"], draws=2, full_draws=1, seed=10, steps=5, recipe="auto"
    )
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
    assert by_key == {
        ("1", 0): {(1, 10)},
        ("1", 1): {(1, 11)},
        ("2", 0): {(2, 10)},
        ("2", 1): {(2, 11)},
        ("all", 0): {(6, 10)},
    }
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
    from globalmask.training import DataConfig, prepare_data
    from globalmask.training_data import auto_patch_size

    def trained_patch(spacing, budget):  # what train() computes from the prepared training and validation cases
        data = prepare_data(study_cohort, DataConfig(spacing=spacing, window=(-1000, 1000)), progress=False)
        return int(np.prod(auto_patch_size([pc.shape for pc in data.cases.values()], NetConfig().divisor, budget)))

    ds = load_dataset(study_cohort)
    plan = make_plan(ds, StudyConfig(**{**TINY_PLAN, "max_patch_voxels": 96**3, "net": {}}))
    voxels = patch_voxels(plan, ds)
    # the median spacing of the training split, as training derives it
    assert voxels == trained_patch(None, 96**3) < 96**3
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


# ----------------------------------------------------------------------------------------------
# issue 29: plan identity, every input that changes results and none that does not

#: A changed value of every setting that changes what a run computes or records: each changes the
#: plan hash and the id of every run.
RESULT_SETTINGS = {
    "seed": 1, "spacing": [2.0, 2.0, 2.0], "window": [-500.0, 500.0], "steps": {"1": 5, "all": 7},
    "val_every": 3, "patience": 3, "min_delta": 0.01, "batch_size": 1, "lr": 1e-3, "weight_decay": 0.0,
    "optimizer": "sgd", "schedule": "cosine", "warmup_steps": 1, "bf16": True, "patch_size": [16, 16, 16],
    "max_patch_voxels": 30000,
    "net": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "shifts": [{"name": "shifted", "offset": 40.0, "scale": 1.1, "noise": 20.0, "blur_mm": 1.0}],
    "shift_sizes": [1], "shifts_on_external": True, "recipe_rule": "robust",
}
#: Settings that change which runs the plan holds (its hash), not what a run of the same spec computes
#: (the sweep's recipe: the ablation's run of another recipe stays the same run).
PLAN_SHAPE = {
    "modes": ["ct"],
    "train_sizes": ["all"],
    "recipe": "threshold:-500",
    "draws": 2,
    "full_draws": 2,
    "ablation_recipes": ["body"],
    "ablation_draws": 2,
}
#: Where and how the plan is executed and reported: never part of its identity.
EXECUTION = {"device": "cuda", "overlays": 5, "reference": "brain", "reference_structure": "brainstem"}
#: Inputs tested by content below (a split file, external test sets).
BY_CONTENT = {"split", "external_test"}


def _ids(plan) -> dict:
    return {(r.mode, r.size_label, r.draw, r.recipe): plan.run_id(r) for r in plan.all_runs(plan.fixed_recipe)}


def test_every_study_setting_is_classified_for_the_plan_identity():
    from dataclasses import fields

    from globalmask.study.config import EXECUTION_ONLY

    names = {f.name for f in fields(StudyConfig)}
    assert set(RESULT_SETTINGS) | set(PLAN_SHAPE) | set(EXECUTION) | BY_CONTENT == names
    assert set(EXECUTION) == set(EXECUTION_ONLY)


@pytest.mark.parametrize("key", list(RESULT_SETTINGS))
def test_a_setting_that_changes_results_changes_the_plan_and_every_run_id(study_cohort, key):
    base = make_plan(study_cohort, StudyConfig(**TINY_PLAN))
    other = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, key: RESULT_SETTINGS[key]}))
    assert other.hash != base.hash
    before, after = _ids(base), _ids(other)
    assert not set(before.values()) & set(after.values()), key  # no run of the old plan is reused


@pytest.mark.parametrize("key", list(PLAN_SHAPE))
def test_a_setting_that_changes_which_runs_exist_changes_the_plan(study_cohort, key):
    base = make_plan(study_cohort, StudyConfig(**TINY_PLAN))
    other = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, key: PLAN_SHAPE[key]}))
    assert other.hash != base.hash
    before, after = _ids(base), _ids(other)
    for spec in before.keys() & after.keys():  # a run of the same spec computes the same: one id, trained once
        assert before[spec] == after[spec]


def test_execution_only_settings_change_neither_the_plan_nor_a_run_id(study_cohort):
    base = make_plan(study_cohort, StudyConfig(**TINY_PLAN))
    other = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, **EXECUTION}))
    assert other.hash == base.hash and _ids(other) == _ids(base)


@pytest.fixture()
def cohort_copy(study_cohort, tmp_path):
    return Path(shutil.copytree(study_cohort, tmp_path / study_cohort.name))


def test_the_split_the_data_and_the_labels_change_the_plan_and_every_run_id(study_cohort, cohort_copy, tmp_path):
    base = make_plan(study_cohort, StudyConfig(**TINY_PLAN))
    assert make_plan(cohort_copy, StudyConfig(**TINY_PLAN)).hash == base.hash  # where the data lie is not part of it
    variants = {}
    split = json.loads((study_cohort / "splits.json").read_text(encoding="utf-8"))
    split["train"][0], split["test"][0] = split["test"][0], split["train"][0]  # one case swapped between train and test
    (tmp_path / "swapped.json").write_text(json.dumps(split), encoding="utf-8")
    variants["split"] = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, "split": str(tmp_path / "swapped.json")}))
    case = sorted((cohort_copy / "labelsTr").iterdir())[0]  # one voxel of one label map
    lab = read_volume(case)
    arr = np.asarray(lab.array).copy()
    arr[0, 0, 0] = 1 - min(int(arr[0, 0, 0]), 1)
    write_volume(lab.with_array(arr), case)
    variants["data"] = make_plan(cohort_copy, StudyConfig(**TINY_PLAN))
    relabelled = Path(shutil.copytree(study_cohort, tmp_path / "relabelled" / study_cohort.name))
    meta = json.loads((relabelled / "dataset.json").read_text(encoding="utf-8"))
    # a structure renamed
    meta["labels"] = {("lungs" if i == 1 else k): v for i, (k, v) in enumerate(meta["labels"].items())}
    (relabelled / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    variants["labels"] = make_plan(relabelled, StudyConfig(**TINY_PLAN))
    ext = Path(shutil.copytree(study_cohort, tmp_path / "Dataset901_External"))
    (ext / "splits.json").unlink()
    variants["external"] = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, "external_test": [str(ext)]}))
    # found beside the dataset
    beside = make_plan(cohort_copy, StudyConfig(**{**TINY_PLAN, "external_test": [ext.name]}))
    by_path = make_plan(cohort_copy, StudyConfig(**{**TINY_PLAN, "external_test": [str(ext)]}))
    assert (
        beside.external[0].root == str(ext.resolve()) and beside.hash == by_path.hash and _ids(beside) == _ids(by_path)
    )
    before = set(_ids(base).values())
    for what, plan in variants.items():
        assert plan.hash != base.hash, what
        assert not before & set(_ids(plan).values()), what


def test_the_same_split_read_from_another_path_is_the_same_plan(study_cohort, tmp_path):
    a, b = tmp_path / "a" / "split.json", tmp_path / "b" / "split.json"
    for p in (a, b):
        p.parent.mkdir()
        shutil.copy(study_cohort / "splits.json", p)
    pa = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, "split": str(a)}))
    pb = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, "split": str(b)}))
    assert _ids(pa) == _ids(pb)  # holds: run ids hash the split's content
    assert pa.hash == pb.hash


def test_a_plan_travels_in_its_records_unchanged(study_cohort, tmp_path):
    """Plan.info() is stored in every record; Plan.from_info gives back the same plan (external sets,
    split, data root included), and the sweep runs carry the plan's recipe."""
    from globalmask.study.plan import ExternalSet, Plan

    ext = Path(shutil.copytree(study_cohort, tmp_path / "Dataset902_External"))
    plan = make_plan(study_cohort, StudyConfig(**{**TINY_PLAN, "external_test": [str(ext)]}))
    back = Plan.from_info(json.loads(json.dumps(plan.info())))
    assert back == plan and back.hash == plan.hash and back.dataset_root == str(study_cohort.resolve())
    assert back.external[0].fingerprint == plan.external[0].fingerprint != ""
    assert ExternalSet.from_dict({"name": "X", "cases": ["a"], "fingerprint": "f"}).root == ""
    sweep = [r for r in plan.all_runs(plan.fixed_recipe) if r.kind == "sweep"]
    assert sweep and {r.recipe for r in sweep} == {plan.fixed_recipe}
