"""External test sets in a study: planned by content, scored after training only, kept apart in the
records, pooled in the report with bootstrap confidence intervals, and never part of any choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import globalmask.study.runner as runner_module
import globalmask.training_data as training_data_module
from globalmask.dataset import load_dataset, make_split, save_split
from globalmask.errors import GlobalmaskError
from globalmask.io import read_volume, write_volume
from globalmask.phantom import make_phantom_dataset
from globalmask.study import StudyConfig, make_plan, run_study
from globalmask.study.plan import ExternalSet, Plan
from globalmask.study.records import RunRecord, read_record, write_record
from globalmask.study.stats import bootstrap_relative_change, effect_verdict, recipe_ablation, set_comparison

from .conftest import QUIET, TINY_PLAN, _records

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# plan identity


@pytest.mark.parametrize("name", ["openkbp", "thorax"])
def test_committed_plans_keep_their_hash_and_run_ids(name):
    """The new settings are left out of the hash at their defaults: committed records still merge."""
    info = json.loads((REPO / "benchmarks" / name / "plan.json").read_text(encoding="utf-8"))
    plan = Plan.from_info(info)
    assert plan.hash == info["plan_hash"] and plan.external == ()
    rec = read_record(sorted((REPO / "benchmarks" / name / "records").glob("*.json"))[0])
    assert plan.run_id(rec.run) == rec.run_id


@pytest.mark.parametrize(
    "value, fragment",
    [("../x", "a list"), ([""], "a list"), ([3], "a list"), (["a", "a"], "each dataset once")],
)
def test_bad_external_test_settings_are_refused(value, fragment):
    with pytest.raises(GlobalmaskError, match="external_test") as err:
        StudyConfig(external_test=value)
    assert fragment in str(err.value)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A study dataset and, beside it (same parent folder, as in nnUNet_raw), an external one."""
    raw = tmp_path_factory.mktemp("raw")
    main = make_phantom_dataset(raw / "Dataset900_Main", kind="thorax", cases=8, seed=2, shape=(32, 32, 32))
    save_split(make_split(load_dataset(main).cases, seed=0, fractions=(3, 2, 3)), main / "splits.json")
    ext = make_phantom_dataset(raw / "Dataset901_Ext", kind="thorax", cases=4, seed=7, shape=(32, 32, 32))
    ids = sorted(load_dataset(ext).cases)
    # test only, like Dataset503
    (ext / "splits.json").write_text(json.dumps({"train": [], "validation": [], "test": ids}), encoding="utf-8")
    return main, ext


def test_an_external_set_is_found_beside_the_dataset_and_enters_the_plan_by_content(cohorts, tmp_path):
    main, ext = cohorts
    plain = make_plan(main, StudyConfig(**TINY_PLAN))
    by_name = make_plan(main, StudyConfig(**TINY_PLAN, external_test=[ext.name]))
    by_path = make_plan(main, StudyConfig(**TINY_PLAN, external_test=[str(ext.resolve())]))
    (e,) = by_name.external
    assert (
        e.name == "Dataset901_Ext"
        and e.case_ids == tuple(sorted(load_dataset(ext).cases))
        and e.root == str(ext.resolve())
    )
    # the same content by another path is the same plan; without it, another plan
    assert by_name.hash == by_path.hash != plain.hash
    run = by_name.ablation()[0]
    assert by_name.run_id(run) != plain.run_id(run)
    # a copy of the external data elsewhere, with one label changed, is another plan
    other = tmp_path / "Dataset901_Ext"
    shutil.copytree(ext, other)
    label = sorted((other / "labelsTr").glob("*.nii.gz"))[0]
    v = read_volume(label)
    arr = np.asarray(v.array).copy()
    arr[0, 0, 0] = 1
    write_volume(type(v)(arr, v.affine), label)
    assert make_plan(main, StudyConfig(**TINY_PLAN, external_test=[str(other)])).hash != by_name.hash
    # the plan travels in every record: from_info gives back the same plan
    assert Plan.from_info(json.loads(json.dumps(by_name.info()))).hash == by_name.hash


def test_missing_or_mismatched_external_sets_are_refused_naming_them(cohorts, tmp_path):
    main, ext = cohorts
    with pytest.raises(GlobalmaskError, match=r"not found.*beside the study's dataset"):
        make_plan(main, StudyConfig(**TINY_PLAN, external_test=["Dataset999_Nowhere"]))
    with pytest.raises(GlobalmaskError, match="another dataset than the study's own"):
        make_plan(main, StudyConfig(**TINY_PLAN, external_test=[main.name]))
    relabelled = tmp_path / "Dataset902_Relabelled"
    shutil.copytree(ext, relabelled)
    meta = json.loads((relabelled / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = dict(list(meta["labels"].items())[:-1])
    (relabelled / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(GlobalmaskError, match=r"labels .* differ from the study's") as err:
        make_plan(main, StudyConfig(**TINY_PLAN, external_test=[str(relabelled)]))
    assert "dataset.json" in str(err.value)


# ----------------------------------------------------------------------------------------------
# statistics


def test_bootstrap_ci_on_a_hand_computed_case():
    """Two patients, one draw: a resample holds patient 1 twice (p = 1/4), both (1/2) or patient 2
    twice (1/4), so the relative change takes 3 values and the 95% CI is the outer two."""
    a, b = np.array([[0.6, 0.9]]), np.array([[0.5, 0.6]])
    est, low, high = bootstrap_relative_change(a, b, n_boot=20_000, seed=3)
    assert est == pytest.approx((1.5 - 1.1) / 1.1 * 100)
    assert low == pytest.approx(20.0) and high == pytest.approx(50.0)
    assert effect_verdict(low, high) == "better"


def test_bootstrap_ci_is_a_point_when_every_patient_and_draw_agree_and_spans_zero_when_they_disagree():
    b = np.array([[0.5, 0.7, 0.4], [0.6, 0.8, 0.5]])
    est, low, high = bootstrap_relative_change(1.1 * b, b, n_boot=2000)
    assert est == pytest.approx(10.0) and low == pytest.approx(10.0) and high == pytest.approx(10.0)
    mixed = b + np.array([[0.1, -0.1, 0.1], [-0.1, 0.1, -0.1]])
    _, low, high = bootstrap_relative_change(mixed, b, n_boot=5000)
    assert low < 0 < high and effect_verdict(low, high) == "no difference shown"
    assert effect_verdict(-5.0, -1.0) == "worse"


def test_the_bootstrap_resamples_draws_too():
    """Patients agree within a draw but the draws disagree: a patients-only bootstrap would give a
    point; resampling draws gives the spread between them."""
    b = np.full((2, 4), 0.5)
    a = np.array([[0.55] * 4, [0.45] * 4])
    _, low, high = bootstrap_relative_change(a, b, n_boot=4000)
    assert low == pytest.approx(-10.0) and high == pytest.approx(10.0)


def test_bootstrap_refuses_unpaired_arrays():
    with pytest.raises(GlobalmaskError, match="paired"):
        bootstrap_relative_change(np.ones((1, 3)), np.ones((1, 4)))


def _rows(mode: str, subset: str, case: str, dice: float, draw: int = 0) -> list[dict]:
    return [
        {
            "recipe": "r",
            "mode": mode,
            "size": "1",
            "draw": draw,
            "subset": subset,
            "shift": "none",
            "case": case,
            "structure": s,
            "dice": dice,
            "status": "ok",
        }
        for s in ("heart", "lung")
    ]


def test_pooled_comparison_counts_a_case_id_of_two_sets_as_two_patients():
    rows = []
    for subset, case, a, b in [("test", "c1", 0.6, 0.5), ("test", "c2", 0.8, 0.8), ("ext", "c1", 0.9, 0.6)]:
        rows += _rows("ct+gbm", subset, case, a) + _rows("ct", subset, case, b)
    df = pd.DataFrame(rows)
    one = set_comparison(df, "ct+gbm", "ct", "1", ["test"], n_boot=500)
    pooled = set_comparison(df, "ct+gbm", "ct", "1", ["test", "ext"], n_boot=500)
    assert one["n_patients"] == 2 and one["test_set"] == "test"
    assert pooled["n_patients"] == 3 and pooled["test_set"] == "pooled" and pooled["patients_a_better"] == 2
    assert pooled["relative_change_pct"] == pytest.approx((2.3 - 1.9) / 1.9 * 100)
    assert pooled["dice_a"] == pytest.approx(2.3 / 3)


def test_the_recipe_choice_ignores_every_external_and_test_row():
    """Adversarial external rows (the loser made perfect) do not move the validation ranking."""

    def rows(recipe: str, subset: str, dice: float, com: float) -> list[dict]:
        return [
            {
                "recipe": recipe,
                "mode": "gbm",
                "size": "all",
                "draw": 0,
                "subset": subset,
                "shift": "none",
                "case": f"c{i}",
                "structure": "heart",
                "dice": dice,
                "com_mm": com,
                "status": "ok",
            }
            for i in range(3)
        ]

    base = pd.DataFrame(rows("good", "validation", 0.8, 2.0) + rows("bad", "validation", 0.6, 5.0))
    spiked = pd.concat(
        [base, pd.DataFrame(rows("bad", "Dataset503_X", 1.0, 0.0) + rows("good", "Dataset503_X", 0.0, 50.0))],
        ignore_index=True,
    )
    assert list(recipe_ablation(base)["recipe"]) == list(recipe_ablation(spiked)["recipe"]) == ["good", "bad"]
    pd.testing.assert_frame_equal(recipe_ablation(base)[["recipe", "validation_dice", "validation_com_mm"]],
                                  recipe_ablation(spiked)[["recipe", "validation_dice", "validation_com_mm"]])


def test_a_record_with_external_scores_round_trips(tmp_path, cohorts):
    main, ext = cohorts
    plan = make_plan(main, StudyConfig(**TINY_PLAN, external_test=[ext.name]))
    run = plan.ablation()[0]
    metrics = [
        {
            "subset": s,
            "shift": "none",
            "case": c,
            "structure": "heart",
            "dice": d,
            "com_mm": None,
            "hd95_mm": 1.0,
            "msd_mm": 0.5,
            "pred_ml": 1.0,
            "ref_ml": 1.0,
            "status": "ok",
        }
        for s, c, d in [("test", "a", 0.5), (ext.name, "a", 0.7)]
    ]
    rec = RunRecord(plan.info(), plan.run_id(run), run, {}, ["t"], 5, 6, 4, 0.5, True, "plateau", 1.0, 2.0, {}, metrics)
    back = read_record(write_record(tmp_path, rec))
    assert back == rec and Plan.from_info(back.plan).external == plan.external
    per_case = back.per_case()
    assert set(per_case["subset"]) == {"test", ext.name} and per_case["com_mm"].dtype == float
    assert isinstance(plan.external[0], ExternalSet) and plan.test_sets == ["test", ext.name]


# ----------------------------------------------------------------------------------------------
# end to end: the isolation spy


@pytest.mark.slow
def test_external_sets_are_read_only_after_training_and_change_no_choice(cohorts, tmp_path, monkeypatch):
    """Every image read is logged with what the study was doing. External files are read only
    after a model's training returned, and the runs (cases, steps, checkpoints, validation and
    test scores, recipe choice) are exactly those of the same study without the external set."""
    main, ext = cohorts
    ext_root = str(ext.resolve())
    phase = ["plan"]
    reads: list[tuple[str, str]] = []
    real_read, real_train = training_data_module.read_volume, runner_module.train
    real_prepared = runner_module._prepared

    def spy_read(path, *args, **kwargs):
        reads.append((phase[0], str(Path(path).resolve())))
        return real_read(path, *args, **kwargs)

    def in_phase(name, fn):
        def wrapped(*args, **kwargs):
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = "evaluate"  # what the runner does next: score the final model

        return wrapped

    monkeypatch.setattr(training_data_module, "read_volume", spy_read)
    # the training and validation cases
    monkeypatch.setattr(runner_module, "_prepared", in_phase("prepare", real_prepared))
    monkeypatch.setattr(runner_module, "train", in_phase("train", real_train))
    # recipe chosen on validation (stage 1: bone and threshold:-300), then CT+GBM against CT at 1 case
    # scored under an intensity shift and a pose change (which moves the reference), at size 1 only
    shifts = [
        TINY_PLAN["shifts"][0],
        {"family": "pose", "level": "unmasked", "rotation_deg": [10.0, 4.0, 4.0], "translation_mm": [4.0, 4.0, 4.0]},
    ]
    # (the robust recipe rule: stage-1 models are scored on validation under the variations too)
    cfg = dict(
        TINY_PLAN,
        modes=["ct", "ct+gbm"],
        train_sizes=[1],
        recipe="auto",
        recipe_rule="robust",
        ablation_recipes=["threshold:-300"],
        shifts=shifts,
        shift_sizes=[1],
    )
    with_ext = run_study(main, tmp_path / "with", StudyConfig(**cfg, external_test=[ext.name]), **QUIET)
    assert with_ext is not None and with_ext.complete
    ext_reads = [p for ph, p in reads if p.startswith(ext_root)]
    assert ext_reads, "the external set was never scored"
    assert all(ph == "evaluate" for ph, p in reads if p.startswith(ext_root))
    main_root = str(main.resolve())
    assert any(ph == "prepare" and p.startswith(main_root) for ph, p in reads)  # the spy saw the training data read

    without = run_study(main, tmp_path / "without", StudyConfig(**cfg), **QUIET)
    assert (
        without is not None
        and without.sweep_recipe == with_ext.sweep_recipe
        and without.recipe_winner == with_ext.recipe_winner
    )
    a, b = _records(tmp_path / "with"), _records(tmp_path / "without")
    # run ids differ by the plan
    key = lambda r: (r["run"]["mode"], r["run"]["size_label"], r["run"]["draw"], r["run"]["recipe"])
    a, b = {key(r): r for r in a.values()}, {key(r): r for r in b.values()}
    assert a.keys() == b.keys()
    for k in a:
        for field in ("train_ids", "steps", "best_step", "best_val_dice", "converged"):
            assert a[k][field] == b[k][field], (k, field)
        ma = pd.DataFrame(a[k]["metrics"])
        mb = pd.DataFrame(b[k]["metrics"])
        assert set(ma["subset"]) == set(mb["subset"]) | {ext.name}
        own = ma[ma["subset"] != ext.name].reset_index(drop=True)
        pd.testing.assert_frame_equal(own, mb, check_exact=False, atol=1e-6)
        test = ma[ma["subset"] == "test"]
        # shift_sizes: the size-1 models are scored under both variations, the full-size ones under none
        if k[1] == "1":
            assert set(test["shift"]) == {"none", "shifted", "pose-unmasked"}
            ref = {s: g.set_index(["case", "structure"])["ref_ml"] for s, g in test.groupby("shift")}
            pd.testing.assert_series_equal(ref["none"], ref["shifted"])  # an intensity shift leaves the reference alone
            # the patient moved: so did the reference
            assert not np.allclose(ref["none"].to_numpy(), ref["pose-unmasked"].to_numpy())
        else:
            assert set(test["shift"]) == {"none"}
        scored = ma[ma["subset"] == ext.name]
        # shifts_on_external is off
        assert set(scored["case"]) == set(load_dataset(ext).cases) and set(scored["shift"]) == {"none"}
    # the report pools the test split and the external set, with a CI per comparison
    by_set = with_ext.set_comparisons
    assert set(by_set["test_set"]) == {"test", ext.name, "pooled"}
    pooled = by_set[(by_set["test_set"] == "pooled") & (by_set["size"] == "1")].iloc[0]
    assert pooled["n_patients"] == len(with_ext.plan.split.test) + 4
    assert pooled["ci_low_pct"] <= pooled["relative_change_pct"] <= pooled["ci_high_pct"]
    report = (tmp_path / "with" / "report.md").read_text(encoding="utf-8")
    assert "## 2b. Every test set" in report and "Dataset901_Ext" in report and "| pooled |" in report
    assert (
        "Under the variation suite (validation" in report
        and f"Winner on validation: `{with_ext.recipe_winner}`" in report
    )
    ablation = [r for r in a.values() if r["run"]["size_label"] == "all"]
    assert all(
        {m["shift"] for m in r["metrics"] if m["subset"] == "validation"} == {"none", "shifted", "pose-unmasked"}
        for r in ablation
    )
    assert "2b." in (tmp_path / "without" / "report.md").read_text(encoding="utf-8")  # a CI for the test split alone


def test_study_plan_names_the_external_sets(cohorts, tmp_path, capsys):
    import yaml

    from globalmask.cli import main

    main_ds, ext = cohorts
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_PLAN, "external_test": [ext.name]}), encoding="utf-8")
    assert main(["study", "plan", str(cfg), str(main_ds)]) == 0
    out = capsys.readouterr().out
    assert f"external test set {ext.name}: 4 cases" in out and str(ext.resolve()) in out
