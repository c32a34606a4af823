"""study/__init__.py: run_study end to end on a tiny phantom configuration (files, pairing, resume,
statistics) and report_from_records (partial merges; the `study plan` and `study report` commands)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from globalmask.cli import main
from globalmask.dataset import load_dataset, make_split, save_split, select_training_cases
from globalmask.phantom import make_phantom_dataset
from globalmask.study import (
    ALL,
    RECORDS_DIR,
    StudyConfig,
    make_plan,
    report_from_records,
    run_study,
)

from .conftest import TINY_PLAN, _records

TINY = dict(
    modes=["ct", "gbm", "ct+gbm"],
    train_sizes=[1, 2, ALL],
    draws=2,
    full_draws=1,
    steps={"1": 4, "2": 4, "all": 6},
    val_every=2,
    net={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    shifts=[{"name": "shifted", "offset": 80.0, "scale": 1.1, "noise": 20.0, "blur_mm": 1.0}],
    recipe="threshold:-300",
    ablation_recipes=["bone"],
    overlays=1,
    device="cpu",
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = make_phantom_dataset(
        tmp_path_factory.mktemp("st") / "thorax", kind="thorax", cases=7, seed=1, shape=(32, 32, 32)
    )
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(3, 2, 2)), root / "splits.json")
    return root


@pytest.fixture(scope="module")
def study(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    config = StudyConfig(**TINY)
    # interrupted after 4 runs (as if by a crash): nothing is reported yet
    assert run_study(cohort, out, config, max_runs=4, progress=False, echo=lambda *_: None) is None
    done_first = {p: p.stat().st_mtime_ns for p in (out / RECORDS_DIR).glob("*.json")}
    assert len(done_first) == 4
    results = run_study(cohort, out, config, progress=False, command="globalmask study (test)", echo=lambda *_: None)
    return out, config, results, done_first


@pytest.mark.slow
def test_study_writes_every_output(study, cohort):
    out, config, results, _ = study
    for name in ("per_case.csv", "summary.csv", "results.json", "report.md", "subsets.json", "splits.json",
                 "dice_vs_n.png", "com_vs_n.png", "boxplot_structures.png", "shift_drop.png"):
        assert (out / name).exists(), name
    assert list(out.glob("overlay_*.png"))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "globalmask study (test)" in report and "Relative improvement" in report
    runs = make_plan(cohort, config).all_runs(results.sweep_recipe)
    assert len(runs) == len(results.runs) == 3 * (2 + 2 + 1) + 1  # sweep + the ablation's extra recipe (bone)
    assert all((out / "runs" / r.name / "model" / "model.pt").exists() for r in runs)
    assert results.complete and not results.pending


@pytest.mark.slow
def test_modes_are_trained_on_the_same_subsets(study):
    out, config, results, _ = study
    by_key: dict[tuple, set] = {}
    for r in results.runs:
        if r.role == "sweep":
            by_key.setdefault((r.size_label, r.draw), set()).add(tuple(r.train_ids))
    assert len(by_key) == 5
    assert all(len(v) == 1 for v in by_key.values()), by_key  # one subset per (size, draw), whatever the mode
    subsets = json.loads((out / "subsets.json").read_text(encoding="utf-8"))
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    for size in (1, 2):
        for draw in (0, 1):
            assert subsets[f"n{size}-d{draw}"] == select_training_cases(split["train"], size, config.seed + draw)
    assert subsets["nall-d0"] == sorted(split["train"]) and len(subsets["nall-d0"]) == 3


@pytest.mark.slow
def test_resume_skips_finished_runs(study, cohort):
    out, config, _, done_first = study
    for record, mtime in done_first.items():
        assert record.stat().st_mtime_ns == mtime  # not redone after the interruption
    again = run_study(cohort, out, StudyConfig(**TINY), progress=False, echo=lambda *_: None)
    assert again is not None


@pytest.mark.slow
def test_statistics_are_computed_from_the_per_case_numbers(study):
    out, config, results, _ = study
    per_case = pd.read_csv(out / "per_case.csv")
    test = per_case[
        (per_case["recipe"] == results.sweep_recipe)
        & (per_case["subset"] == "test")
        & (per_case["shift"] == "none")
        & (per_case["status"] != "absent")
    ]
    for c in results.comparisons.to_dict(orient="records"):
        if c["structure"] != "all":
            continue
        a = test[(test["mode"] == c["a"]) & (test["size"].astype(str) == c["size"])]
        b = test[(test["mode"] == c["b"]) & (test["size"].astype(str) == c["size"])]
        assert c["dice_a"] == pytest.approx(a["dice"].mean())
        assert c["relative_improvement_pct"] == pytest.approx(
            (a["dice"].mean() - b["dice"].mean()) / b["dice"].mean() * 100
        )
        ca, cb = a.groupby("case")["dice"].mean(), b.groupby("case")["dice"].mean()
        if np.allclose(ca - cb, 0):
            assert c["wilcoxon_p"] == 1.0
        else:
            assert c["wilcoxon_p"] == pytest.approx(wilcoxon(ca, cb).pvalue)
    summary = pd.read_csv(out / "summary.csv")
    row = summary[
        (summary["mode"] == "gbm")
        & (summary["size"].astype(str) == "all")
        & (summary["subset"] == "test")
        & (summary["shift"] == "none")
        & (summary["structure"] == "all")
        & (summary["recipe"] == results.sweep_recipe)
    ].iloc[0]
    sel = test[(test["mode"] == "gbm") & (test["size"].astype(str) == "all")]
    assert row["dice_mean"] == pytest.approx(sel["dice"].mean())
    assert row["dice_std"] == pytest.approx(sel["dice"].std(ddof=1))
    # shifted evaluations exist for every sweep model and every test case
    shifted = per_case[(per_case["shift"] == "shifted") & (per_case["recipe"] == results.sweep_recipe)]
    assert shifted.groupby(["mode", "size", "draw"]).ngroups == 3 * 5
    assert results.recipe_winner in {"bone:level=250", "threshold:level=-300"}
    assert (
        json.loads((out / "recipe_choice.json").read_text(encoding="utf-8"))["sweep_recipe"] == "threshold:level=-300"
    )


@pytest.mark.slow
def test_auto_recipe_sweeps_with_the_validation_winner(cohort, tmp_path):
    cfg = StudyConfig(
        **{
            **TINY,
            "modes": ["ct", "gbm"],
            "train_sizes": [1],
            "draws": 1,
            "recipe": "auto",
            "ablation_recipes": ["threshold:-300", "body"],
            "shifts": [],
            "overlays": 0,
        }
    )
    results = run_study(cohort, tmp_path / "auto", cfg, progress=False, echo=lambda *_: None)
    choice = json.loads((tmp_path / "auto" / "recipe_choice.json").read_text(encoding="utf-8"))
    ranking = pd.DataFrame(choice["ranking"])
    # the winner is the first by (validation misses, validation CoM, -validation Dice), recomputed here
    best = ranking.sort_values(
        ["validation_missed", "validation_com_mm", "validation_dice"], ascending=[True, True, False]
    ).iloc[0]["recipe"]
    assert choice["winner_on_validation"] == best == results.sweep_recipe
    assert {r.recipe for r in results.runs if r.role == "sweep"} == {best}
    assert len(ranking) == 3  # the default (bone), threshold:-300, body
    # merged with one ablation record only: 2 ablation runs pending, and the 2 sweep runs (ct, gbm at
    # one case) cannot have ids yet, but they count
    one = tmp_path / "one"
    one.mkdir()
    first = sorted((tmp_path / "auto" / "records").glob("gbm-nall-*.json"))[0]
    shutil.copy(first, one / first.name)
    partial = report_from_records([one], tmp_path / "partial")
    assert (len(partial.pending), partial.unplanned, partial.n_pending, partial.sweep_recipe) == (2, 2, 4, None)
    report = (tmp_path / "partial" / "report.md").read_text(encoding="utf-8")
    assert (
        "**Incomplete: 4 run(s)" in report
        and "stage 2 (sweep): 2 runs, planned once every recipe-ablation record is in" in report
    )


@pytest.mark.slow
def test_a_partial_merge_reports_pending_runs_and_only_complete_pairs(three_ways, tmp_path):
    base, single, _, _ = three_ways
    partial = report_from_records([base / "machine0"], tmp_path / "partial")
    missing = set(_records(base / "machine1"))
    assert set(partial.pending) == missing and not partial.complete
    report = (tmp_path / "partial" / "report.md").read_text(encoding="utf-8")
    assert "Incomplete" in report and all(rid in report for rid in missing)
    # a model without a record is shown as n/a, never as a number computed from nothing
    assert "nan" not in report.lower()
    done = {(r.mode, r.size_label) for r in partial.runs if r.role == "sweep"}
    for c in partial.comparisons.to_dict(orient="records"):  # a comparison only where both modes finished the size
        assert (c["a"], c["size"]) in done and (c["b"], c["size"]) in done


@pytest.mark.slow
def test_cli_plan_and_report(three_ways, study_cohort, tmp_path, capsys):
    base, single, *_ = three_ways
    cfg = tmp_path / "study.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(TINY_PLAN), encoding="utf-8")
    assert main(["study", "plan", str(cfg), str(study_cohort), "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert single.plan.hash in out and all(r.run_id in out for r in single.runs)
    assert (
        main(["study", "report", str(base / "machine0"), str(base / "machine1"), "--out", str(tmp_path / "rep")]) == 0
    )
    assert "complete" in capsys.readouterr().out and (tmp_path / "rep" / "report.md").exists()
    assert main(["study", "report", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "rep2")]) == 2
    # not the study's data
    other = make_phantom_dataset(tmp_path / "other", kind="thorax", cases=3, seed=5, shape=(16, 16, 16))
    assert (
        main(["study", "report", str(base / "machine0"), "--out", str(tmp_path / "rep3"), "--dataset", str(other)]) == 2
    )
    assert "lacks" in capsys.readouterr().err and not (tmp_path / "rep3").exists()
    shutil.rmtree(tmp_path / "rep")
    np.testing.assert_equal(
        main(
            ["study", "run", str(study_cohort), "--config", str(cfg), "--out", str(base / "single"), "--shard", "5/2"]
        ),
        2,
    )


@pytest.mark.slow
def test_overlays_use_the_first_full_size_draw_whose_predictions_are_here(study, tmp_path):
    """A study continued on another machine has only some run folders: the overlay takes the
    lowest full-size draw with every mode's predictions, and draws nothing when none is complete."""
    from dataclasses import replace

    from globalmask.study.report import plot_overlays

    out, config, results, _ = study
    d0 = [r for r in results.runs if r.role == "sweep" and r.recipe == results.sweep_recipe and r.size_label == ALL]
    assert {r.draw for r in d0} == {0} and len(d0) == 3
    # draw 0 trained elsewhere (no folders here); draw 1 here, but only two of its modes at first
    d1 = [replace(r, draw=1, name=r.name.replace("-d0", "-d1"), run_id=r.run_id + "-d1") for r in d0]
    moved = replace(results, runs=[*results.runs, *d1])
    runs = tmp_path / "runs"
    for r0, r1 in zip(d0[:2], d1[:2]):
        shutil.copytree(out / "runs" / r0.name / "predictions", runs / r1.name / "predictions")
    assert plot_overlays(runs, moved, 1, tmp_path / "none") == []
    shutil.copytree(out / "runs" / d0[2].name / "predictions", runs / d1[2].name / "predictions")
    (tmp_path / "fig").mkdir()
    names = plot_overlays(runs, moved, 1, tmp_path / "fig")
    case = results.plan.split.test[0]
    modes = [r.mode.replace("+", "_") for r in d1]
    # and each mode as `evaluate --qc` draws it
    assert names == [f"overlay_{case}.png", *(f"qc_{case}_{m}.png" for m in modes)]
    assert all((tmp_path / "fig" / n).stat().st_size > 0 for n in names)


@pytest.mark.slow
def test_report_finds_the_data_where_the_user_says_after_checking_its_content(study, cohort, tmp_path):
    """Records carry the planning machine's data path; elsewhere ``dataset=`` (``--dataset``) points
    at the same cases, accepted only when their content fingerprint matches the plan's."""
    from globalmask.errors import DatasetError

    out = study[0]
    records = tmp_path / "records"
    records.mkdir()
    for f in (out / RECORDS_DIR).glob("*.json"):
        rec = json.loads(f.read_text(encoding="utf-8"))
        rec["plan"]["dataset_root"] = str(tmp_path / "gone")  # as on another machine
        (records / f.name).write_text(json.dumps(rec), encoding="utf-8")
    elsewhere = tmp_path / "data"
    shutil.copytree(cohort, elsewhere)

    report_from_records([records], tmp_path / "without", runs_dir=out / "runs")
    assert not list((tmp_path / "without").glob("overlay_*.png"))
    assert "--dataset DIR" in (tmp_path / "without" / "report.md").read_text(encoding="utf-8")

    report_from_records([records], tmp_path / "with", runs_dir=out / "runs", dataset=elsewhere)
    assert len(list((tmp_path / "with").glob("overlay_*.png"))) == 1

    label = sorted((elsewhere / "labelsTr").glob("*.nii.gz"))[0]  # one label edited: not the study's data
    label.write_bytes(label.read_bytes()[:-1] + bytes([label.read_bytes()[-1] ^ 1]))
    with pytest.raises(DatasetError, match=r"differ from the data study plan [0-9a-f]{16} ran on"):
        report_from_records([records], tmp_path / "edited", runs_dir=out / "runs", dataset=elsewhere)
    assert not (tmp_path / "edited").exists()


# ---- fast: no study is run (the functions run_study and report_from_records hand their work to are replaced)


def test_plan_ablation_trains_one_gbm_model_per_candidate_recipe_and_draw_on_every_case():
    from globalmask.study import plan_ablation

    runs = plan_ablation(StudyConfig(modes=["ct", "gbm"], recipe="auto", ablation_recipes=["bone", "body"],
                                     ablation_draws=2), 12)
    assert len(runs) == len(StudyConfig(recipe="auto", ablation_recipes=["bone", "body"]).candidate_recipes()) * 2
    assert {(r.kind, r.mode, r.size_label, r.n_cases) for r in runs} == {("ablation", "gbm", ALL, 12)}
    assert sorted({r.draw for r in runs}) == [0, 1]


def test_a_dataset_lacking_cases_of_the_plan_is_refused_naming_them(tmp_path):
    from types import SimpleNamespace

    from globalmask.errors import DatasetError
    from globalmask.study import check_same_data

    from ..conftest import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "ds", n=2)
    split = SimpleNamespace(train=("case_000", "gone_1"), validation=("gone_2", "gone_3"), test=("gone_4",))
    plan = SimpleNamespace(split=split, hash="abc123", dataset_fingerprint="")
    with pytest.raises(DatasetError) as e:
        check_same_data(plan, root)
    assert str(e.value) == f"{root}: lacks 4 case(s) of study plan abc123 (gone_1, gone_2, gone_3, ...)"


def _spy(monkeypatch, **results):
    """Replace globalmask.study's helpers by recorders returning ``results``; the calls, by name."""
    import globalmask.study as study

    calls: dict = {}
    for name, value in results.items():
        def fake(*args, _name=name, _value=value, **kwargs):
            calls[_name] = (args, kwargs)
            return _value
        monkeypatch.setattr(study, name, fake)
    return calls


def test_report_from_records_checks_the_dataset_given_and_reports_what_it_analysed(monkeypatch, tmp_path):
    from types import SimpleNamespace

    plan = SimpleNamespace(hash="h")
    calls = _spy(monkeypatch, load_records=(plan, ["r1"]), check_same_data=tmp_path / "data",
                 analyse="RESULTS", write_outputs=None)
    assert report_from_records([tmp_path / "recs"], tmp_path / "rep", command="c", runs_dir="runs",
                               dataset="elsewhere") == "RESULTS"
    assert calls["load_records"][0] == ([tmp_path / "recs"],)
    assert calls["check_same_data"][0] == (plan, "elsewhere")
    assert calls["analyse"][0] == (plan, ["r1"])
    assert calls["write_outputs"] == (("RESULTS", tmp_path / "rep"),
                                      {"command": "c", "runs_dir": "runs", "dataset": tmp_path / "data"})
    calls.clear()
    report_from_records([tmp_path / "recs"], tmp_path / "rep2")  # no dataset: the records' own path, unchecked
    assert "check_same_data" not in calls and calls["write_outputs"][1]["dataset"] is None


def test_run_study_hands_every_setting_to_the_runner_and_reports_when_complete(monkeypatch, tmp_path):
    from types import SimpleNamespace

    plan = SimpleNamespace(hash="h")
    calls = _spy(monkeypatch, make_plan=plan, run_plan=SimpleNamespace(complete=True),
                 load_records=(plan, ["r1"]), analyse="RESULTS", write_outputs=None)
    lines = []
    out = tmp_path / "s"
    assert run_study("ds", out, echo=lines.append, shard=(0, 2), retries=5, command="cmd", threads=3) == "RESULTS"
    args, kwargs = calls["make_plan"]
    assert args[0] == "ds" and isinstance(args[1], StudyConfig)  # the default settings
    assert calls["run_plan"][0] == (plan, out)
    assert {k: calls["run_plan"][1][k] for k in ("shard", "retries", "command", "threads", "progress")} == {
        "shard": (0, 2), "retries": 5, "command": "cmd", "threads": 3, "progress": True}
    assert calls["load_records"][0] == ([out / RECORDS_DIR], "h")
    assert calls["analyse"][0] == (plan, ["r1"])
    assert lines == [f"study h complete: report at {out / 'report.md'}"]


def test_an_unfinished_study_says_what_it_waits_for(monkeypatch, tmp_path):
    from types import SimpleNamespace

    plan = SimpleNamespace(hash="h")
    state = SimpleNamespace(complete=False, waiting_for=None, pending=["a", "b"], executed=["c"])
    _spy(monkeypatch, make_plan=plan, run_plan=state)
    lines = []
    assert run_study("ds", tmp_path, echo=lines.append) is None
    assert lines == ["study h: 1 run(s) executed now; 2 run(s) pending. Run the same command again to continue."]
    state.waiting_for = "the ablation's records"
    lines.clear()
    run_study("ds", tmp_path, echo=lines.append, shard=(1, 2))
    assert lines == ["study h: 1 run(s) executed now; waiting for the ablation's records. Run the same command again "
                     "to continue, or merge the shards' records with `globalmask study report`."]
