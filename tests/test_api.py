"""The package-root API (globalmask.api): the verbs give what the machinery under them gives.

* ``predict`` and ``make_gbm`` answer the same for a path, a nibabel image and an array with its
  affine, on exactly the input's grid; an array without an affine is refused.
* A wrong training setting fails before any work, with the message of the command line and a study.
* ``import globalmask`` loads neither torch nor monai; the verbs load on first use.
* A tiny training through the API is the training the command line runs (same weights, same labels).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import globalmask
from globalmask import api
from globalmask.checkpoint import ModelSpec, save_model
from globalmask.cli import main
from globalmask.errors import DatasetError, OutputError
from globalmask.io import Volume, read_volume, write_volume
from globalmask.masks import Recipe
from globalmask.masks import make_gbm as masks_make_gbm
from globalmask.model import NetConfig
from globalmask.preprocess import PreprocessConfig
from globalmask.validate import SettingError

from .conftest import ORIENTED_AFFINES, SMALL_NET, make_tiny_dataset, phantom_ct_and_labels

LABELS = {"background": 0, "bone": 1, "other": 2}


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A seeded, untrained CT+GBM checkpoint: its label maps are arbitrary but deterministic."""
    spec = ModelSpec("ct+gbm", Recipe.parse("bone"), PreprocessConfig(spacing=(3.0, 3.0, 3.0)), LABELS,
                     NetConfig(channels=(4, 8), strides=(2,), num_res_units=0), (16, 16, 16))
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("model") / "model.pt", spec, spec.build().state_dict())


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    """A CT on an LPS grid (the array is not in RAS order: predictions must come back on it)."""
    ct, _ = phantom_ct_and_labels()
    return write_volume(Volume(ct, ORIENTED_AFFINES["LPS"]), tmp_path_factory.mktemp("ct") / "scan.nii.gz")


# ----------------------------------------------------------------------------------------------
# the package root


def test_import_globalmask_loads_neither_torch_nor_monai():
    code = ("import sys, globalmask; heavy = [m for m in ('torch', 'monai') if m in sys.modules]; "
            "print(heavy, sorted(n for n in globalmask.__all__ if n in dir(globalmask)) == sorted(globalmask.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]


def test_the_verbs_are_the_api_functions():
    for name in ("train", "predict", "evaluate", "make_gbm", "run_study"):
        assert getattr(globalmask, name) is getattr(api, name)
    assert globalmask.TrainConfig.__module__ == "globalmask.training"
    with pytest.raises(AttributeError, match="segment"):
        _ = globalmask.segment  # type: ignore[attr-defined]


def test_a_lazy_name_is_imported_on_first_use_then_kept_at_the_root(monkeypatch):
    """Each name resolves to its own module's object and is stored at the root; unknown names are refused by name;
    ``dir()`` lists every exported name, sorted."""
    import importlib

    homes = {"train": "api", "Predictor": "infer", "StudyConfig": "study", "DataConfig": "training"}
    for name, module in homes.items():
        monkeypatch.delitem(vars(globalmask), name, raising=False)  # not yet looked up
        value = getattr(globalmask, name)
        assert value is getattr(importlib.import_module(f"globalmask.{module}"), name)
        assert vars(globalmask)[name] is value
    with pytest.raises(AttributeError) as e:
        _ = globalmask.segment  # type: ignore[attr-defined]
    assert str(e.value) == "module 'globalmask' has no attribute 'segment'"
    names = dir(globalmask)
    assert names == sorted(names) and set(globalmask.__all__) <= set(names)


# ----------------------------------------------------------------------------------------------
# predict and make_gbm: a path, an image, an array with its affine


def test_predict_answers_the_same_for_a_path_an_image_and_an_array(untrained_model, ct_file):
    img = nib.load(str(ct_file))
    by_path = globalmask.predict(untrained_model, ct_file, device="cpu")
    by_image = globalmask.predict(untrained_model, img, device="cpu")
    by_array = globalmask.predict(untrained_model, np.asanyarray(img.dataobj), affine=img.affine, device="cpu")
    expected = read_volume(ct_file)
    for result in (by_path, by_image, by_array):
        assert isinstance(result, nib.Nifti1Image)
        assert result.shape == expected.shape and np.array_equal(result.affine, expected.affine)
        assert np.array_equal(result.get_fdata(), by_path.get_fdata())
    labels = np.asanyarray(by_path.dataobj)
    assert labels.dtype == np.uint8 and len(np.unique(labels)) > 1, "an all-background map would prove nothing"
    # and it is the Predictor's own answer, from a loaded Predictor too
    predictor = globalmask.Predictor(untrained_model, device="cpu")
    assert np.array_equal(predictor.predict(expected).array, labels)
    assert np.array_equal(np.asanyarray(globalmask.predict(predictor, ct_file).dataobj), labels)


def test_predict_on_a_dicom_series_folder(untrained_model, phantom_series):
    volume, _, files = phantom_series
    folder = files[0].parent
    by_folder = globalmask.predict(untrained_model, folder, device="cpu")
    by_array = globalmask.predict(untrained_model, volume.array, affine=volume.affine, device="cpu")
    assert by_folder.shape == volume.shape and np.array_equal(by_folder.affine, volume.affine)
    assert np.array_equal(np.asanyarray(by_folder.dataobj), np.asanyarray(by_array.dataobj))


def test_an_array_needs_its_affine(untrained_model, ct_file):
    ct = read_volume(ct_file)
    with pytest.raises(ValueError, match="affine="):
        globalmask.predict(untrained_model, ct.array)
    with pytest.raises(ValueError, match="affine="):
        globalmask.make_gbm(ct.array)
    with pytest.raises(ValueError, match="a file carries its own affine"):
        globalmask.make_gbm(ct_file, affine=ct.affine)
    with pytest.raises(ValueError, match="3D"):
        globalmask.make_gbm(ct.array[..., 0], affine=ct.affine)
    with pytest.raises(TypeError, match="list"):
        globalmask.make_gbm(ct.array.tolist(), affine=ct.affine)


def test_make_gbm_is_the_masks_recipe_on_the_input_grid():
    ct, _ = phantom_ct_and_labels()
    affine = ORIENTED_AFFINES["oblique"]
    for recipe in ("threshold:-300", "bone", "body"):
        gbm = globalmask.make_gbm(ct, recipe, affine=affine)
        expected = masks_make_gbm(Volume(ct, affine), recipe).array
        array = np.asanyarray(gbm.dataobj)
        assert array.dtype == np.uint8 and set(np.unique(array)) <= {0, 1}
        assert gbm.shape == ct.shape and np.array_equal(gbm.affine, affine)
        assert np.array_equal(array, expected)
    # the known answer of the threshold recipe: every voxel strictly above the level
    threshold = np.asanyarray(globalmask.make_gbm(ct, "threshold:-300", affine=affine).dataobj)
    assert np.array_equal(threshold, (ct > -300).astype(np.uint8)) and 0 < threshold.sum() < threshold.size


def test_out_writes_the_result_and_never_the_input(tmp_path, ct_file, untrained_model):
    src = shutil.copy(ct_file, tmp_path / "scan.nii.gz")
    before = Path(src).read_bytes()
    gbm = globalmask.make_gbm(src, "bone", out=tmp_path / "scan_gbm.nii.gz")
    written = read_volume(tmp_path / "scan_gbm.nii.gz")
    assert np.array_equal(written.array, np.asanyarray(gbm.dataobj)) and np.allclose(written.affine, gbm.affine)
    labels = globalmask.predict(untrained_model, src, out=tmp_path / "labels.nrrd", device="cpu")
    assert np.array_equal(read_volume(tmp_path / "labels.nrrd").array, np.asanyarray(labels.dataobj))
    with pytest.raises(OutputError, match="would overwrite the input"):
        globalmask.make_gbm(src, "bone", out=src)
    with pytest.raises(OutputError, match="would overwrite the input"):  # before the model is even read
        globalmask.predict(tmp_path / "no_model.pt", src, out=src)
    assert Path(src).read_bytes() == before


# ----------------------------------------------------------------------------------------------
# train: one set of rules, before any work


@pytest.mark.parametrize("setting, value, flag", [
    ("lr", float("nan"), ["--lr", "nan"]),
    ("steps", 0, ["--steps", "0"]),
    ("batch_size", 1000, ["--batch-size", "1000"]),
    ("patch_size", [24, 32, 32], ["--patch-size", "24", "32", "32"]),  # not a multiple of the default U-Net's 16
    ("warmup_steps", 3000, ["--warmup-steps", "3000"]),  # the maximum steps are 3000
    ("optimizer", "adam", ["--optimizer", "adam"]),
])
def test_a_wrong_setting_fails_before_any_work_as_on_the_command_line(setting, value, flag, tmp_path, capsys,
                                                                      monkeypatch):
    import globalmask.training as training
    from globalmask.study import StudyConfig

    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training started"))
    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(16, 16, 12))
    with pytest.raises(SettingError) as err:
        globalmask.train(ds, tmp_path / "api", **{setting: value})
    assert main(["train", str(ds), "--out", str(tmp_path / "cli"), *flag]) == 2
    cli_line = capsys.readouterr().err.strip()
    with pytest.raises(SettingError) as study_err:
        StudyConfig(**{setting: value})
    assert str(err.value).startswith(f"train.{setting}: got ")
    assert cli_line.startswith(f"globalmask train: error: argument --{setting.replace('_', '-')}: got ")
    tails = {message.split(": got ", 1)[1] for message in (str(err.value), cli_line, str(study_err.value))}
    assert len(tails) == 1, tails
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_train_refuses_a_name_that_is_not_a_setting(tmp_path):
    with pytest.raises(TypeError, match="step"):
        globalmask.train(tmp_path / "ds", tmp_path / "run", step=10)
    with pytest.raises(SettingError, match=r"data\.window"):
        globalmask.train(tmp_path / "ds", tmp_path / "run", window=(100, -100))
    assert not (tmp_path / "run").exists()


def test_train_config_starts_from_a_config_or_a_mapping():
    base = globalmask.TrainConfig(mode="gbm", steps=50, net=SMALL_NET)
    cfg = api.train_config(base, lr=1e-3, patch_size=[16, 16, 16])
    assert (cfg.mode, cfg.steps, cfg.lr, cfg.patch_size, cfg.net) == ("gbm", 50, 1e-3, (16, 16, 16), SMALL_NET)
    assert api.train_config(base) is base
    assert api.train_config({"lr": 0.01, "out": "ignored"}, mode="ct").lr == 0.01
    with pytest.raises(TypeError, match="modes"):
        api.train_config(base, modes=["ct"])


@pytest.mark.slow
def test_a_tiny_training_through_the_api_is_the_command_lines(phantom_ds, tmp_path, capsys):
    settings = {"mode": "ct+gbm", "train_cases": 2, "seed": 1, "steps": 12, "val_every": 6, "batch_size": 1}
    result = globalmask.train(phantom_ds.root, tmp_path / "api", net=SMALL_NET, device="cpu", progress=False,
                              **settings)
    argv = ["train", str(phantom_ds.root), "--out", str(tmp_path / "cli"), "--channels", "8", "16", "32", "64",
            "--res-units", "1", "--device", "cpu"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    assert f"model: {tmp_path / 'cli' / 'model.pt'}" in capsys.readouterr().out
    api_state = torch.load(result.model_path, map_location="cpu", weights_only=True)
    cli_state = torch.load(tmp_path / "cli" / "model.pt", map_location="cpu", weights_only=True)
    assert api_state["spec"] == cli_state["spec"]
    assert all(torch.equal(api_state["state_dict"][k], v) for k, v in cli_state["state_dict"].items())
    # its labels are the command line's predict, on exactly the scan's grid
    case = phantom_ds.cases[phantom_ds.load_split().test[0]]
    assert main(["predict", str(tmp_path / "cli" / "model.pt"), str(case.image), "--out", str(tmp_path / "preds"),
                 "--device", "cpu"]) == 0
    labels = globalmask.predict(result.model_path, case.image, device="cpu")
    by_cli = read_volume(next((tmp_path / "preds").glob("*.nii.gz")))
    assert np.array_equal(np.asanyarray(labels.dataobj), by_cli.array) and np.allclose(labels.affine, by_cli.affine)
    assert labels.shape == read_volume(case.image).shape


# ----------------------------------------------------------------------------------------------
# evaluate and the study


def test_evaluate_scores_references_against_themselves_as_perfect(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(16, 16, 12))
    preds = shutil.copytree(ds / "labelsTr", tmp_path / "preds")
    per_case, summary = globalmask.evaluate(preds, ds, out=tmp_path / "eval")
    assert sorted(per_case["case"].unique()) == [f"case_{i:03d}" for i in range(4)]
    assert set(per_case["structure"]) == {"left", "right"} and (per_case["dice"] == 1.0).all()
    assert (per_case["status"] == "ok").all() and (per_case["com_mm"] == 0.0).all()
    assert json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))["n_cases"] == 4
    assert globalmask.evaluate(preds, ds / "labelsTr", labels={"left": 1})[0]["structure"].unique().tolist() == ["left"]
    (tmp_path / "dup.json").write_text(json.dumps({"background": 0, "a": 1, "b": 1}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dup\.json"):
        globalmask.evaluate(preds, ds, labels=tmp_path / "dup.json")
    with pytest.raises(OutputError, match="reference label folder"):
        globalmask.evaluate(preds, ds, out=ds / "labelsTr")


def test_run_study_checks_its_settings_before_any_work(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(16, 16, 12))
    with pytest.raises(SettingError, match=r"^study\.lr: got nan"):
        globalmask.run_study(ds, tmp_path / "study", {"lr": float("nan")})
    with pytest.raises(SettingError, match=r"^run_study\.workers: got 0"):
        globalmask.run_study(ds, tmp_path / "study", {"modes": ["ct"]}, workers=0)
    with pytest.raises(SettingError, match="steeps"):
        globalmask.run_study(ds, tmp_path / "study", {"steeps": 10})
    assert not (tmp_path / "study").exists()


def test_plan_text_is_what_study_plan_prints(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "ds", n=10, shape=(16, 16, 12))
    config = tmp_path / "study.yaml"
    config.write_text("modes: [ct, gbm]\ntrain_sizes: [1, 2]\ndraws: 2\nsteps: 20\nrecipe: auto\n"
                      "ablation_recipes: [bone, body]\nshifts: []\n", encoding="utf-8")
    # as `study run` takes them: the dataset, then --config
    assert main(["study", "plan", str(ds), "--config", str(config), "--shards", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed == api.plan_text(config, ds, shards=3) + "\n"
    # the older order, CONFIG DATASET, prints the same plan
    assert main(["study", "plan", str(config), str(ds), "--shards", "3"]) == 0
    assert capsys.readouterr().out == printed
    # the study.yaml given twice is refused, naming both
    assert main(["study", "plan", str(config), str(ds), "--config", str(config)]) == 2
    assert f"either --config {config} or as the first of two paths ({config})" in capsys.readouterr().err
    # no --config: the paper's default study, as `study run` without one
    assert main(["study", "plan", str(ds)]) == 0
    assert capsys.readouterr().out == api.plan_text(None, ds) + "\n"
    lines = printed.splitlines()
    assert lines[0].startswith("plan ") and "split 6/2/2" in lines[0]
    assert sum(line.startswith("1 ") for line in lines) == 2  # the two ablation recipes, GBM only
    assert "8 sweep runs" in printed  # 2 modes x 2 sizes x 2 draws


@pytest.mark.slow
def test_run_study_runs_a_tiny_study_to_its_report(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(16, 16, 12))
    config = {"modes": ["ct", "gbm"], "train_sizes": [1], "draws": 1, "steps": 2, "val_every": 1, "shifts": [],
              "ablation_recipes": [], "net": {"channels": [4, 8], "strides": [2], "num_res_units": 0}, "overlays": 0}
    results = globalmask.run_study(ds, tmp_path / "study", config, shard="0/1", progress=False)
    assert results is not None and results.complete
    planned = {line.split()[1] for line in api.plan_text(config, ds).splitlines() if line.startswith(("1 ", "2 "))}
    assert len(planned) == 3  # the fixed recipe's GBM run at all cases (stage 1), then ct and gbm at 1 case
    assert {p.stem for p in (tmp_path / "study" / "records").glob("*.json")} == planned
    assert sorted(r.mode for r in results.runs) == ["ct", "gbm", "gbm"]
    assert (tmp_path / "study" / "report.md").is_file()


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of api.py asked for


def test_a_nibabel_image_with_an_affine_argument_is_refused():
    ct, _ = phantom_ct_and_labels()
    img = nib.Nifti1Image(ct, ORIENTED_AFFINES["LPS"])
    with pytest.raises(ValueError, match="affine= is for a numpy array; a nibabel image carries its own affine"):
        api.as_volume(img, affine=np.eye(4))


@pytest.mark.parametrize("name", ["RAS", "LPS", "oblique"])
def test_to_nifti_sets_sform_and_qform_as_write_volume_does(name, tmp_path):
    """sform code 1 with the exact affine; qform code 1 too where it can hold the affine (no shear)."""
    from .conftest import oblique_affine

    affine = oblique_affine((2.0, 2.5, 3.0), 30.0, (1.0, -2.0, 3.0)) if name == "oblique" else ORIENTED_AFFINES[name]
    vol = Volume(np.zeros((4, 5, 6), np.uint8), affine)
    img = api.to_nifti(vol)
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert scode == 1 and qcode == 1
    np.testing.assert_allclose(sform, affine, atol=1e-5)
    np.testing.assert_allclose(qform, affine, atol=1e-5)
    written = nib.load(str(write_volume(vol, tmp_path / "v.nii.gz"))).header
    assert (int(written["sform_code"]), int(written["qform_code"])) == (1, 1)
    sheared = affine.copy()
    sheared[0, 1] += 0.5  # not a rotation and scaling: the qform cannot hold it
    img = api.to_nifti(Volume(np.zeros((4, 5, 6), np.uint8), sheared))
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 0


def test_evaluate_refuses_its_out_in_the_reference_folder_naming_it_and_marks_what_it_writes(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=3, shape=(16, 16, 12))
    preds = shutil.copytree(ds / "labelsTr", tmp_path / "preds")
    with pytest.raises(OutputError, match="reference label folder") as err:
        globalmask.evaluate(preds, ds, out=ds / "labelsTr")
    assert err.value.path == ds / "labelsTr"
    globalmask.evaluate(preds, ds, out=tmp_path / "eval", qc=tmp_path / "qc")
    from globalmask.guard import MARKER_NAME

    for folder in ("eval", "qc"):  # each output folder says which command made it
        assert json.loads((tmp_path / folder / MARKER_NAME).read_text(encoding="utf-8"))["command"] == "evaluate"


def test_evaluate_qc_pictures_of_a_dataset_show_its_ct(tmp_path):
    """References in a dataset: the QC picture has the CT under the outlines; a bare label folder gives outlines
    alone."""
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    preds = shutil.copytree(ds / "labelsTr", tmp_path / "preds")
    bare = shutil.copytree(ds / "labelsTr", tmp_path / "bare")  # the same labels, no dataset around them
    globalmask.evaluate(preds, ds, labels=ds / "dataset.json", qc=tmp_path / "qc_ds")
    globalmask.evaluate(preds, bare, labels=ds / "dataset.json", qc=tmp_path / "qc_bare")
    for case in ("case_000", "case_001"):
        with_ct = (tmp_path / "qc_ds" / f"{case}.png").read_bytes()
        assert with_ct != (tmp_path / "qc_bare" / f"{case}.png").read_bytes()


def test_evaluate_subset_takes_its_cases_from_the_split_given(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=5, shape=(16, 16, 12))
    preds = shutil.copytree(ds / "labelsTr", tmp_path / "preds")
    split = tmp_path / "other_split.json"
    split.write_text(json.dumps({"train": ["case_000", "case_001"], "validation": ["case_002"],
                                 "test": ["case_003", "case_004"]}), encoding="utf-8")
    per_case, _ = globalmask.evaluate(preds, ds, subset="test", split=split)
    assert sorted(per_case["case"].unique()) == ["case_003", "case_004"]
    per_case, _ = globalmask.evaluate(preds, ds, subset="validation", split=split)
    assert per_case["case"].unique().tolist() == ["case_002"]


def test_plan_text_estimate_uses_the_seconds_per_step_given(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=10, shape=(16, 16, 12))
    config = {"modes": ["ct"], "train_sizes": [1, 2], "draws": 1, "steps": 900, "recipe": "bone", "shifts": []}
    text = api.plan_text(config, ds, seconds_per_step=2.0)
    # a CT-only study with a fixed recipe: no ablation, 2 sweep runs of at most 900 steps at 2 s a step = 1 h
    assert "2 runs, at most 1800 training steps; at most 1.0 h on one machine (2.0 s/step as given" in text


def test_run_study_hands_its_choices_to_the_study(tmp_path, monkeypatch):
    """The device given overrides the configuration's (the rest kept), threads and workers pass on (one worker by
    default), and the default folder is study-<dataset folder name> in the working directory, for a dataset
    given as a Path, a string or a loaded Dataset (a Path was named ``study-``: its ``.root`` is "/")."""
    from globalmask import study

    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(16, 16, 12))
    seen: dict = {}

    def fake_run_study(dataset, out, cfg, **kwargs):
        seen.update(dataset=dataset, out=out, cfg=cfg, **kwargs)

    monkeypatch.setattr(study, "run_study", fake_run_study)
    monkeypatch.chdir(tmp_path)
    assert globalmask.run_study(ds, config={"modes": ["ct"], "lr": 0.02}, device="cpu", threads=3) is None
    assert seen["out"] == Path("study-ds") and seen["cfg"].device == "cpu" and seen["cfg"].lr == 0.02
    assert seen["cfg"].modes == ["ct"] and seen["threads"] == 3 and seen["workers"] == 1
    from globalmask.dataset import load_dataset

    globalmask.run_study(load_dataset(ds), config={"modes": ["ct"]}, workers=2)
    assert seen["out"] == Path("study-ds") and seen["workers"] == 2 and seen["threads"] is None
    globalmask.run_study(str(ds), config={"modes": ["ct"]})
    assert seen["out"] == Path("study-ds")
    assert seen["cfg"].device == globalmask.StudyConfig().device  # no device given: the configuration's


def test_train_keeps_the_recipe_spacing_and_window_it_is_given(tmp_path):
    """A 2-step training of a tiny network: the model stores what train() was given, for predict to re-apply."""
    from globalmask.checkpoint import load_model

    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(16, 16, 12))
    result = globalmask.train(ds, tmp_path / "run", recipe="threshold:-300", spacing=(2.0, 2.0, 2.5),
                              window=(-1000, 1000), mode="ct+gbm", steps=2, val_every=1, batch_size=1,
                              net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0), patch_size=(8, 8, 8),
                              device="cpu", progress=False)
    spec, _ = load_model(result.model_path)
    assert spec.recipe.spec == "threshold:level=-300" and spec.mode == "ct+gbm"
    assert tuple(spec.preprocess.spacing) == (2.0, 2.0, 2.5) and tuple(spec.preprocess.window) == (-1000, 1000)
