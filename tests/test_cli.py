"""Every subcommand, bad values of every argument kind: exit 2, one line, no traceback, inputs untouched.

Each row is an invocation a new user could type (non-finite, zero, negative, too large, wrong
type, wrong shape; outputs aimed at the inputs or a dataset; broken files). The contract checked
for every row:

* exit status 2 (argparse usage errors included);
* stderr is exactly one line, ``globalmask <command>: error: ...``, naming what was wrong
  (the row's ``expect`` text, e.g. the argument or the file);
* no Python traceback;
* nothing under the inputs (dataset, model, prediction folders) changed, and no temporary or
  lock file was left behind;
* the refusal came before any work: no output folder was created.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from globalmask.checkpoint import ModelSpec, save_model
from globalmask.cli import main
from globalmask.io import Volume, read_volume, write_volume
from globalmask.masks import Recipe
from globalmask.model import NetConfig
from globalmask.preprocess import PreprocessConfig

from .conftest import make_tiny_dataset, percentile_dataset

TINY = ["--channels", "4", "8", "--res-units", "0", "--device", "cpu"]


def _spec_payload(model: Path) -> dict:
    return torch.load(model, map_location="cpu", weights_only=True)


def _edit_model(src: Path, dst: Path, edit) -> Path:
    payload = _spec_payload(src)
    edit(payload)
    torch.save(payload, dst)
    return dst


def _models(t: Path, labels: dict[str, int]) -> tuple[Path, Path]:
    """A tiny untrained model, and broken copies of it (garbage, truncated, edited specs)."""
    spec = ModelSpec("ct", Recipe.parse(None), PreprocessConfig(spacing=(2.0, 2.0, 2.5)), labels,
                     NetConfig(channels=(4, 8), strides=(2,), num_res_units=0), (16, 16, 16))
    models = t / "models"
    model = save_model(models / "model.pt", spec, spec.build().state_dict())
    (models / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(300))
    (models / "truncated.pt").write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    def nan_spacing(p):
        p["spec"]["preprocess"]["spacing"] = [float("nan"), 2.0, 2.5]

    def odd_patch(p):
        p["spec"]["patch_size"] = [15, 16, 16]

    def big_label(p):
        p["spec"]["labels"] = {"background": 0, "left": 1, "right": 300}

    def bad_overlap(p):
        p["spec"]["sw_overlap"] = 1.5

    def other_net(p):  # the spec describes a network the weights do not fit: PyTorch's multi-line dump
        p["spec"]["net"]["channels"] = [8, 16]

    for name, edit in {"nan_spacing": nan_spacing, "odd_patch": odd_patch, "big_label": big_label,
                       "bad_overlap": bad_overlap, "other_net": other_net}.items():
        _edit_model(model, models / f"{name}.pt", edit)
    return model, models


STUDY_CONFIGS = {
    "study_unknown.yaml": "modes: [ct]\nsteeps: 10\n",
    "study_lr_nan.yaml": "lr: .nan\n",
    "study_steps_zero.yaml": "steps: 0\n",
    "study_sizes_bad.yaml": "train_sizes: [0, all]\n",
    "study_mode_bad.yaml": "modes: [mri]\n",
    "study_recipe_bad.yaml": "recipe: threshold:level=nan\n",
    "study_list.yaml": "- modes\n- ct\n",
    "study_ok.yaml": "modes: [ct]\ntrain_sizes: [1]\ndraws: 1\nsteps: 2\nval_every: 1\nshifts: []\n"
                     "ablation_recipes: []\n",
    "labels_bad.yaml": "labels: {brainstem: 1,\n  cord: [2\n",
}


def _broken_files(files: Path, img: Path) -> None:
    """Files a user might pass by mistake: cut, implausible, of the wrong kind, malformed."""
    import gzip

    files.mkdir()
    (files / "cut.nii.gz").write_bytes(img.read_bytes()[:200])
    # a header declaring a 4096 x 4096 x 2048 int16 volume (64 GiB) over a few bytes of data
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 2048))
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    (files / "huge.nii.gz").write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000))
    (files / "huge.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000)
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(files / "rgb.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.complex64), np.eye(4)), str(files / "complex.nii.gz"))
    (files / "notes.txt").write_text("not a volume", encoding="utf-8")
    (files / "labels_dup.json").write_text(json.dumps({"background": 0, "a": 1, "b": 1}), encoding="utf-8")
    (files / "labels_neg.json").write_text(json.dumps({"background": 0, "a": -4}), encoding="utf-8")
    for name, text in STUDY_CONFIGS.items():
        (files / name).write_text(text, encoding="utf-8")
    (files / "flat.nii.gz").write_bytes(b"")
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)), str(files / "slice.nii.gz"))
    mha = ("ObjectType = Image\nNDims = 3\nDimSize = 40000 40000 40000\nElementSpacing = 1 1 1\n"
           "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    (files / "huge.mha").write_text(mha, encoding="utf-8")
    (files / "splits_bad.json").write_text('{"train": ["case_000"', encoding="utf-8")
    unknown = {"train": ["nobody"], "validation": [], "test": []}
    (files / "splits_unknown.json").write_text(json.dumps(unknown), encoding="utf-8")


def _predictions(t: Path, labels_dir: Path) -> dict[str, Path]:
    """Prediction folders: right, with an undeclared label, empty, unmatched, fractional, too small, moved."""
    pred = t / "pred"
    shutil.copytree(labels_dir, pred)
    undeclared = t / "pred_undeclared"
    shutil.copytree(labels_dir, undeclared)
    lab = read_volume(undeclared / "case_001.nii.gz")
    arr = lab.array.copy()
    arr[0, 0, 0] = 7
    write_volume(Volume(arr, lab.affine), undeclared / "case_001.nii.gz")
    (t / "empty").mkdir()
    nomatch = t / "pred_nomatch"
    nomatch.mkdir()
    shutil.copy(labels_dir / "case_000.nii.gz", nomatch / "other_000.nii.gz")
    half = t / "pred_half"
    shutil.copytree(labels_dir, half)
    lab0 = read_volume(half / "case_000.nii.gz")
    write_volume(Volume(lab0.array.astype(np.float32) * 0.5, lab0.affine), half / "case_000.nii.gz")
    small = t / "pred_small"
    small.mkdir()
    write_volume(Volume(np.zeros((8, 8, 8), np.uint8), lab0.affine), small / "case_000.nii.gz")
    moved = t / "pred_moved"
    moved.mkdir()
    shifted = lab0.affine.copy()
    shifted[0, 3] += 1.0
    write_volume(Volume(lab0.array, shifted), moved / "case_000.nii.gz")
    return {"pred": pred, "undeclared": undeclared, "empty": t / "empty", "nomatch": nomatch, "half": half,
            "small": small, "moved": moved}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The user's inputs: a dataset, a model, predictions and some broken files (never modified)."""
    t = tmp_path_factory.mktemp("inputs")
    ds = make_tiny_dataset(t / "ds", n=6, shape=(16, 16, 12))
    labels = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["labels"]
    model, models = _models(t, labels)
    img = ds / "imagesTr" / "case_000_0000.nii.gz"
    _broken_files(t / "files", img)
    foreign = t / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_bytes(b"precious")
    return {
        "t": t, "ds": ds, "img": img, "imgdir": ds / "imagesTr", "lab": ds / "labelsTr", "model": model,
        "models": models, "files": t / "files", "foreign": foreign, **_predictions(t, ds / "labelsTr"),
    }


def _train(*extra: str) -> list[str]:
    return ["train", "{ds}", "--out", "{out}", "--steps", "2", "--val-every", "1", *TINY, *extra]


def _study_run(config: str, *extra: str, out: str = "{out}") -> list[str]:
    return ["study", "run", "{ds}", "--config", "{files}/" + config, "--out", out, *extra]


def _phantom(*extra: str) -> list[str]:
    return ["phantom", "--cases", "3", "--shape", "16", "16", "16", "--out", "{out}", *extra]


# (argv with {placeholders}, text the error line must contain)
CASES: dict[str, tuple[list[str], str]] = {
    # --- masks ---------------------------------------------------------------------------------
    "masks into labelsTr": (["masks", "{ds}", "--out", "{lab}"], "dataset"),
    "masks into the dataset root": (["masks", "{ds}", "--out", "{ds}"], "dataset"),
    "masks into the input folder": (["masks", "{img}", "--out", "{imgdir}"], "input"),
    "masks into a foreign folder": (["masks", "{img}", "--out", "{foreign}"], "not a globalmask output"),
    "masks --out is a file": (["masks", "{img}", "--out", "{files}/notes.txt"], "not a folder"),
    "masks recipe level nan": (["masks", "{img}", "--recipe", "threshold:nan", "--out", "{out}"], "level"),
    "masks recipe level inf": (["masks", "{img}", "--recipe", "body:level=inf", "--out", "{out}"], "level"),
    "masks recipe level too large": (["masks", "{img}", "--recipe", "bone:level=1e9", "--out", "{out}"], "level"),
    "masks recipe bins zero": (["masks", "{img}", "--recipe", "otsu:bins=0", "--out", "{out}"], "bins"),
    "masks recipe bins negative": (["masks", "{img}", "--recipe", "otsu:bins=-5", "--out", "{out}"], "bins"),
    "masks recipe bins fractional": (["masks", "{img}", "--recipe", "otsu:bins=2.5", "--out", "{out}"], "bins"),
    "masks recipe bins too large": (["masks", "{img}", "--recipe", "otsu:bins=1e12", "--out", "{out}"], "bins"),
    "masks recipe wrong type": (["masks", "{img}", "--recipe", "bone:level=abc", "--out", "{out}"], "level"),
    "masks recipe unknown key": (["masks", "{img}", "--recipe", "body:radius=3", "--out", "{out}"], "radius"),
    "masks missing input": (["masks", "{t}/absent.nii.gz", "--out", "{out}"], "absent.nii.gz"),
    "masks truncated input": (["masks", "{files}/cut.nii.gz", "--out", "{out}"], "cut.nii.gz"),
    "masks implausible header (gz)": (["masks", "{files}/huge.nii.gz", "--out", "{out}"], "huge.nii.gz"),
    "masks implausible header (nii)": (["masks", "{files}/huge.nii", "--out", "{out}"], "huge.nii"),
    "masks RGB NIfTI": (["masks", "{files}/rgb.nii.gz", "--out", "{out}"], "rgb.nii.gz"),
    "masks complex NIfTI": (["masks", "{files}/complex.nii.gz", "--out", "{out}"], "complex.nii.gz"),
    "masks no --out": (["masks", "{img}"], "--out"),
    "masks empty file": (["masks", "{files}/flat.nii.gz", "--out", "{out}"], "flat.nii.gz"),
    "masks 2D image": (["masks", "{files}/slice.nii.gz", "--out", "{out}"], "2D"),
    "masks implausible MetaImage header": (["masks", "{files}/huge.mha", "--out", "{out}"], "huge.mha"),
    "masks a text file": (["masks", "{files}/notes.txt", "--out", "{out}"], "notes.txt"),
    "masks recipe unknown name": (["masks", "{img}", "--recipe", "lungs", "--out", "{out}"], "lungs"),
    "predict a 2D image": (["predict", "{model}", "{files}/slice.nii.gz", "--out", "{out}"], "2D"),
    "predict missing model": (["predict", "{t}/none.pt", "{img}", "--out", "{out}"], "none.pt"),
    "evaluate non-integer prediction": (["evaluate", "{half}", "{lab}", "--out", "{out}"], "non-integer"),
    "evaluate prediction of another shape": (["evaluate", "{small}", "{lab}", "--out", "{out}"], "shape"),
    "evaluate prediction on a moved grid": (["evaluate", "{moved}", "{lab}", "--out", "{out}"], "tolerance"),
    "train --split malformed": (_train("--split", "{files}/splits_bad.json"), "splits_bad.json"),
    "train --split unknown cases": (_train("--split", "{files}/splits_unknown.json"), "splits_unknown.json"),
    "train --lr wrong type": (_train("--lr", "fast"), "--lr"),
    "train --window one value": (_train("--window", "-100"), "--window"),
    "train a file as the dataset": (["train", "{img}", "--out", "{out}", *TINY], "case_000_0000.nii.gz"),
    # --- issue 25: --overwrite never touches a dataset or an input; no half-done work; one-line messages
    "predict into labelsTr --overwrite": (
        ["predict", "{model}", "{imgdir}", "--out", "{lab}", "--overwrite"], "datasets are read-only"),
    "masks into labelsTr --overwrite": (["masks", "{ds}", "--out", "{lab}", "--overwrite"], "read-only"),
    "evaluate --overwrite into a prediction folder globalmask did not write": (
        ["evaluate", "{pred}", "{lab}", "--overwrite"], "is an input of evaluate"),
    "phantom --cases 2 (no split possible)": (_phantom("--cases", "2"), "--cases 2"),
    "train --resume without a run": (_train("--resume"), "--resume"),
    "predict with weights that do not fit (PyTorch dump)": (
        ["predict", "{models}/other_net.pt", "{img}", "--out", "{out}"], "other_net.pt"),
    "convert with a malformed label map (YAML dump)": (
        ["convert", "dicom-rt", "{files}", "--labels", "{files}/labels_bad.yaml", "--out", "{out}"], "line 3"),
    # --- predict -------------------------------------------------------------------------------
    "predict into labelsTr": (["predict", "{model}", "{imgdir}", "--out", "{lab}"], "dataset"),
    "predict into the dataset root": (["predict", "{model}", "{imgdir}", "--out", "{ds}"], "dataset"),
    "predict into the input folder": (["predict", "{model}", "{imgdir}", "--out", "{imgdir}"], "input"),
    "predict into a foreign folder": (["predict", "{model}", "{img}", "--out", "{foreign}"], "not a globalmask output"),
    "predict garbage checkpoint": (["predict", "{models}/garbage.pt", "{img}", "--out", "{out}"], "garbage.pt"),
    "predict truncated checkpoint": (["predict", "{models}/truncated.pt", "{img}", "--out", "{out}"], "truncated.pt"),
    "predict checkpoint NaN spacing": (["predict", "{models}/nan_spacing.pt", "{img}", "--out", "{out}"], "spacing"),
    "predict checkpoint odd patch": (["predict", "{models}/odd_patch.pt", "{img}", "--out", "{out}"], "patch"),
    "predict checkpoint label 300": (["predict", "{models}/big_label.pt", "{img}", "--out", "{out}"], "label"),
    "predict checkpoint overlap 1.5": (["predict", "{models}/bad_overlap.pt", "{img}", "--out", "{out}"], "overlap"),
    "predict a volume as the model": (["predict", "{img}", "{img}", "--out", "{out}"], "case_000_0000.nii.gz"),
    "predict unknown device": (["predict", "{model}", "{img}", "--device", "tpu", "--out", "{out}"], "tpu"),
    "predict unknown mode": (["predict", "{model}", "{img}", "--mode", "mri", "--out", "{out}"], "mri"),
    "predict missing input": (["predict", "{model}", "{t}/absent.nii.gz", "--out", "{out}"], "absent.nii.gz"),
    "predict implausible header": (["predict", "{model}", "{files}/huge.nii.gz", "--out", "{out}"], "huge.nii.gz"),
    "predict truncated input": (["predict", "{model}", "{img}", "{files}/cut.nii.gz", "--out", "{out}"], "cut.nii.gz"),
    # --- evaluate ------------------------------------------------------------------------------
    "evaluate empty prediction folder": (["evaluate", "{empty}", "{lab}", "--out", "{out}"], "no prediction"),
    "evaluate non-matching predictions": (["evaluate", "{nomatch}", "{lab}", "--out", "{out}"], "case_000"),
    "evaluate undeclared prediction label": (["evaluate", "{undeclared}", "{lab}", "--out", "{out}"], "7"),
    "evaluate into the reference folder": (["evaluate", "{pred}", "{lab}", "--out", "{lab}"], "reference"),
    "evaluate into the images folder": (["evaluate", "{pred}", "{lab}", "--out", "{imgdir}"], "dataset"),
    "evaluate default out is a foreign input": (["evaluate", "{pred}", "{lab}"], "--out"),
    "evaluate into a foreign folder": (
        ["evaluate", "{pred}", "{lab}", "--out", "{foreign}"], "not a globalmask output"),
    "evaluate duplicate label values": (
        ["evaluate", "{pred}", "{lab}", "--labels", "{files}/labels_dup.json", "--out", "{out}"], "labels_dup.json"),
    "evaluate negative label value": (
        ["evaluate", "{pred}", "{lab}", "--labels", "{files}/labels_neg.json", "--out", "{out}"], "labels_neg.json"),
    "evaluate missing labels file": (
        ["evaluate", "{pred}", "{lab}", "--labels", "{files}/absent.json", "--out", "{out}"], "absent.json"),
    "evaluate missing reference folder": (["evaluate", "{pred}", "{t}/nowhere", "--out", "{out}"], "nowhere"),
    # --- train ---------------------------------------------------------------------------------
    "train --steps 0": (_train("--steps", "0"), "--steps"),
    "train --steps negative": (_train("--steps", "-5"), "--steps"),
    "train --steps wrong type": (_train("--steps", "ten"), "--steps"),
    "train --steps too large": (_train("--steps", "1e12"), "--steps"),
    "train --lr nan": (_train("--lr", "nan"), "--lr"),
    "train --lr inf": (_train("--lr", "inf"), "--lr"),
    "train --lr zero": (_train("--lr", "0"), "--lr"),
    "train --lr negative": (_train("--lr", "-0.1"), "--lr"),
    "train --lr too large": (_train("--lr", "1e6"), "--lr"),
    "train --batch-size 0": (_train("--batch-size", "0"), "--batch-size"),
    "train --batch-size too large": (_train("--batch-size", "100000"), "--batch-size"),
    "train --train-cases 0": (_train("--train-cases", "0"), "--train-cases"),
    "train --train-cases negative": (_train("--train-cases", "-2"), "--train-cases"),
    "train --train-cases too many": (_train("--train-cases", "999"), "999"),
    "train --seed negative": (_train("--seed", "-1"), "--seed"),
    "train --seed too large": (_train("--seed", str(2**70)), "--seed"),
    "train --patch-size zero": (_train("--patch-size", "0", "0", "0"), "--patch-size"),
    "train --patch-size not a multiple of the depth": (_train("--patch-size", "15", "16", "16"), "--patch-size"),
    "train --patch-size too large": (_train("--patch-size", "4096", "4096", "4096"), "--patch-size"),
    "train --patch-size wrong shape": (_train("--patch-size", "16", "16"), "--patch-size"),
    "train --spacing zero": (_train("--spacing", "0", "2", "2"), "--spacing"),
    "train --spacing nan": (_train("--spacing", "nan", "2", "2"), "--spacing"),
    "train --spacing negative": (_train("--spacing", "-2", "2", "2"), "--spacing"),
    "train --spacing too large": (_train("--spacing", "500", "2", "2"), "--spacing"),
    "train --spacing too small": (_train("--spacing", "0.001", "0.001", "0.001"), "--spacing"),
    "train --window reversed": (_train("--window", "1000", "-1000"), "--window"),
    "train --window nan": (_train("--window", "nan", "100"), "--window"),
    "train --val-every 0": (_train("--val-every", "0"), "--val-every"),
    "train --checkpoint-every negative": (_train("--checkpoint-every", "-3"), "--checkpoint-every"),
    "train --max-patch-voxels 0": (_train("--max-patch-voxels", "0"), "--max-patch-voxels"),
    "train --channels one level": (_train("--channels", "4"), "--channels"),
    "train --channels zero": (_train("--channels", "0", "8"), "--channels"),
    "train --channels negative": (_train("--channels", "4", "-8"), "--channels"),
    "train --channels too large": (_train("--channels", "4", "100000"), "--channels"),
    "train --res-units negative": (_train("--res-units", "-1"), "--res-units"),
    "train --dims 4": (_train("--dims", "4"), "--dims"),
    "train --optimizer unknown": (_train("--optimizer", "adam"), "--optimizer"),
    "train --schedule unknown": (_train("--schedule", "step"), "--schedule"),
    "train --weight-decay negative": (_train("--weight-decay", "-1"), "--weight-decay"),
    "train --warmup-steps as long as --steps": (_train("--warmup-steps", "2"), "--warmup-steps"),
    "train --mode unknown": (_train("--mode", "mri"), "mri"),
    "train --recipe nan": (_train("--recipe", "threshold:nan"), "level"),
    "train --device unknown": (_train("--device", "tpu"), "tpu"),
    "train --split missing": (_train("--split", "{t}/absent.json"), "absent.json"),
    "train --out inside the dataset": (["train", "{ds}", "--out", "{lab}/run", "--steps", "2", *TINY], "dataset"),
    "train --out a foreign folder": (
        ["train", "{ds}", "--out", "{foreign}", "--steps", "2", *TINY], "not a globalmask"),
    "train --cache inside the dataset": (_train("--cache", "{ds}/cache"), "--cache"),
    "train dataset missing": (["train", "{t}/nowhere", "--out", "{out}", *TINY], "nowhere"),
    # --- phantom -------------------------------------------------------------------------------
    "phantom --cases 0": (_phantom("--cases", "0"), "cases"),
    "phantom --cases negative": (_phantom("--cases", "-3"), "cases"),
    "phantom --cases too many": (_phantom("--cases", "10000000"), "cases"),
    "phantom --shape zero": (["phantom", "--shape", "0", "16", "16", "--out", "{out}"], "shape"),
    "phantom --shape too large": (["phantom", "--shape", "100000", "16", "16", "--out", "{out}"], "shape"),
    "phantom --shape wrong shape": (["phantom", "--shape", "16", "16", "--out", "{out}"], "--shape"),
    "phantom --split nan": (_phantom("--split", "1:nan:1"), "--split"),
    "phantom --split inf": (_phantom("--split", "inf:1:1"), "--split"),
    "phantom --seed negative": (_phantom("--seed", "-1"), "seed"),
    "phantom into a dataset": (_phantom("--out", "{ds}"), "dataset"),
    "phantom into labelsTr": (_phantom("--out", "{lab}"), "labelsTr"),
    # --- demo ----------------------------------------------------------------------------------
    "demo --steps 0": (["demo", "--quick", "--steps", "0", "--out", "{out}"], "--steps"),
    "demo --steps negative": (["demo", "--quick", "--steps", "-1", "--out", "{out}"], "--steps"),
    "demo --train-cases 0": (["demo", "--quick", "--train-cases", "0", "--out", "{out}"], "--train-cases"),
    "demo --seed negative": (["demo", "--quick", "--seed", "-4", "--out", "{out}"], "--seed"),
    "demo into a dataset": (["demo", "--quick", "--out", "{ds}"], "dataset"),
    "demo unknown device": (["demo", "--quick", "--device", "tpu", "--out", "{out}"], "tpu"),
    # --- no command ----------------------------------------------------------------------------
    # --- study -------------------------------------------------------------------------------
    "study unknown setting": (_study_run("study_unknown.yaml"), "steeps"),
    "study lr nan": (_study_run("study_lr_nan.yaml"), "lr"),
    "study steps zero": (_study_run("study_steps_zero.yaml"), "steps"),
    "study size zero": (_study_run("study_sizes_bad.yaml"), "train_sizes"),
    "study unknown mode": (_study_run("study_mode_bad.yaml"), "mri"),
    "study recipe nan": (_study_run("study_recipe_bad.yaml"), "level"),
    "study config not a mapping": (_study_run("study_list.yaml"), "mapping"),
    "study config missing": (["study", "plan", "{ds}", "--config", "{files}/nothing.yaml"], "cannot read"),
    "study config missing, older order": (["study", "plan", "{files}/nothing.yaml", "{ds}"], "cannot read"),
    "study shard out of range": (_study_run("study_ok.yaml", "--shard", "2/2"), "--shard"),
    "study shard malformed": (_study_run("study_ok.yaml", "--shard", "half"), "--shard"),
    "study workers zero": (_study_run("study_ok.yaml", "--workers", "0"), "--workers"),
    "study threads negative": (_study_run("study_ok.yaml", "--threads", "-2"), "--threads"),
    "study max-runs zero": (_study_run("study_ok.yaml", "--max-runs", "0"), "--max-runs"),
    "study into labelsTr": (_study_run("study_ok.yaml", out="{lab}"), "dataset"),
    "study into a foreign folder": (_study_run("study_ok.yaml", out="{foreign}"), "not a globalmask output"),
    "study report without records": (["study", "report", "{empty}", "--out", "{out}"], "no run records"),
    "study report of a file": (["study", "report", "{files}/notes.txt", "--out", "{out}"], "records folder not found"),
    "unknown command": (["segment", "{img}"], "segment"),
}


PROGRESS_LINE = re.compile(r"globalmask [a-z]+: (evaluate|predict|masks) \d+/\d+")


def _digest(folder: Path) -> dict[str, str]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """main(argv) -> (exit status, stderr); a Python exception escaping main counts as a traceback."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # as on the command line: every warning reaches stderr
            rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        import traceback

        rc = "traceback"
        print("Traceback (escaped main)\n" + "".join(traceback.format_exception(exc)), file=__import__("sys").stderr)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_invocation(name, world, tmp_path, capsys):
    argv_t, expect = CASES[name]
    paths = {k: str(v) for k, v in world.items()} | {"out": str(tmp_path / "out")}
    argv = [a.format(**paths) for a in argv_t]
    before = _digest(world["t"])
    rc, err = run_cli(argv, capsys)
    # warnings are one line each, and so are progress lines (a case evaluated before the bad one)
    lines = [ln for ln in err.splitlines() if ln.strip() and ": warning: " not in ln and not PROGRESS_LINE.match(ln)]
    assert "Traceback" not in err, err
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert re.match(r"globalmask( [a-z]+)?: error: ", lines[0]), lines[0]
    assert expect in lines[0], lines[0]
    assert _digest(world["t"]) == before, "an input file changed"
    leftovers = [p for p in world["t"].rglob(".*") if p.name.startswith((".tmp-", ".globalmask"))]
    assert not leftovers, leftovers
    assert not (tmp_path / "out").exists(), "refused, but only after creating the output folder"


def test_table_covers_every_subcommand():
    from globalmask.cli import COMMANDS

    used = {argv[0] for argv, _ in CASES.values()}
    assert set(COMMANDS) <= used
    assert len(CASES) >= 40


# ----------------------------------------------------------------------------------------------
# help and refusals


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("masks", "train", "predict", "evaluate", "phantom", "demo", "study"):
        assert cmd in out


def test_train_sets_every_training_lever_a_study_can(tmp_path, capsys, monkeypatch):
    """Weight decay, optimiser, schedule, warm-up and bf16 reach the run's TrainConfig (and --help names them)."""
    import globalmask.training as train_mod

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = capsys.readouterr().out
    for flag in ("--weight-decay", "--optimizer", "--schedule", "--warmup-steps", "--bf16"):
        assert flag in helptext
    seen = {}

    def fake_train(data, out, cfg, data_cfg, **kw):  # the CLI's work ends where training would begin
        seen["cfg"] = cfg
        return train_mod.TrainResult(out, out / "model.pt", 0.5, 10, 20, 1.0, ["case_000"], True, "plateau", cfg.steps)

    monkeypatch.setattr(train_mod, "train", fake_train)
    root = make_tiny_dataset(tmp_path / "ds", n=4)
    argv = ["train", str(root), "--out", str(tmp_path / "run"), "--steps", "40", "--weight-decay", "0.01",
            "--optimizer", "sgd",
            "--schedule", "cosine", "--warmup-steps", "5", "--bf16", "--patience", "0", *TINY]
    assert main(argv) == 0
    cfg = seen["cfg"]
    assert (cfg.weight_decay, cfg.optimizer, cfg.schedule, cfg.warmup_steps, cfg.bf16, cfg.patience,
            cfg.steps) == (0.01, "sgd", "cosine", 5, True, None, 40)
    assert cfg.net == NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def test_cli_refuses_to_write_into_the_input_folder(phantom_ds, capsys):
    images = phantom_ds.root / "imagesTr"
    assert main(["masks", str(images), "--out", str(images)]) == 2
    assert "output folder is the input folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["nnunet"], ["1", "2", "3"], ["300", "-200"], ["-100"], ["nan", "100"]])
def test_cli_refuses_a_bad_window(tmp_path, capsys, argv):
    root = percentile_dataset(tmp_path / "ds")
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--window", *argv]) == 2
    err = capsys.readouterr().err
    assert "--window" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("window_args, expected", [
    ([], "percentile"),  # the default: the 0.5-99.5 percentiles of the 4 training cases' labelled voxels
    (["--window", "-1000", "1000"], (-1000.0, 1000.0)),
])
def test_cli_train_window_defaults_to_the_training_percentiles(tmp_path, window_args, expected):
    root = percentile_dataset(tmp_path / "ds")  # training cases 0-3: labelled voxels at 0..359 HU
    if expected == "percentile":
        values = np.concatenate([100.0 * i + np.arange(60) for i in range(4)])
        expected = tuple(np.percentile(values, [0.5, 99.5]))
    argv = ["train", str(root), "--out", str(tmp_path / "run"), "--mode", "ct", "--steps", "2", "--val-every", "1",
            "--batch-size", "1",
            "--channels", "4", "8", "--res-units", "0", "--spacing", "4", "4", "4", "--recipe", "threshold:-300",
            "--device", "cpu", *window_args]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert saved["preprocess"]["window"] == pytest.approx(list(expected))


@pytest.mark.parametrize("argv, hint", [
    (["train", "DS", "--out", "RUN"], "continue with the same command plus --resume"),
    (["study", "run", "DS", "--out", "STUDY"], "run the same command again to continue"),
    (["demo", "--out", "DEMO"], "run the same command again to continue"),
    (["masks", "DS", "--out", "MASKS"], None),
])
def test_an_interrupted_command_says_how_to_continue(argv, hint, tmp_path, capsys, monkeypatch):
    """Only ``train`` resumes with a flag; a study or the demo continues by running it again."""
    import signal

    import globalmask.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, argv[0], interrupted)
    argv = [str(tmp_path / a) if a.isupper() else a for a in argv]
    assert main(argv) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"globalmask {argv[0]}: interrupted; no partial files were left"), err
    if hint is None:
        assert "(" not in err and "--resume" not in err
    else:
        assert hint in err and (argv[0] == "train") == ("--resume" in err)


@pytest.mark.parametrize("argv, verbosity", [
    (["train", "ds", "--out", "r"], 0),
    (["-q", "train", "ds", "--out", "r"], -1),
    (["train", "ds", "--out", "r", "--quiet"], -1),
    (["predict", "m.pt", "x", "--out", "p", "-v"], 1),
    (["study", "report", "recs", "--out", "r", "--verbose"], 1),
])
def test_quiet_and_verbose_go_before_or_after_the_command(argv, verbosity):
    from globalmask.cli import build_parser

    assert build_parser().parse_args(argv).verbosity == verbosity


def test_quiet_and_verbose_exclude_each_other(capsys):
    assert run_cli(["evaluate", "a", "b", "-q", "-v"], capsys)[0] == 2


def test_every_option_and_argument_has_help_text():
    import argparse

    from globalmask.cli import build_parser

    missing = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sp in action.choices.items():
                    walk(sp, f"{name} {sub}")
            elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "globalmask")
    assert not missing, missing


def test_the_old_study_form_means_study_run():
    """``globalmask study DATASET`` (before plan/run/report existed) is ``study run``; actions and help are kept."""
    from globalmask.cli import _study_argv

    assert _study_argv(["study", "DS"]) == ["study", "run", "DS"]
    assert _study_argv(["-q", "study", "DS", "-h"]) == ["-q", "study", "run", "DS", "-h"]
    assert _study_argv(["study", "report", "R"]) == ["study", "report", "R"]
    assert _study_argv(["study", "-h"]) == ["study", "-h"]


def test_parsed_defaults_and_types():
    from globalmask.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "ds", "--out", "r"]).lr == 0.002
    assert parser.parse_args(["demo", "--seed", "3"]).seed == 3
    assert parser.parse_args(["phantom", "--out", "p", "--kind", "headneck"]).kind == "headneck"


def test_demo_hands_its_settings_to_the_demo(tmp_path, monkeypatch):
    import globalmask.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out, **kw: seen.update(kw, out=out))
    assert main(["demo", "--out", str(tmp_path / "d"), "--steps", "7", "--train-cases", "2", "--seed", "5",
                 "--device", "cpu", "--kind", "thorax"]) == 0
    assert seen == {"out": tmp_path / "d", "kind": "thorax", "train_cases": 2, "steps": 7, "seed": 5, "device": "cpu",
                    "quick": False}


def test_a_phantom_seed_beyond_32_bits_is_refused(tmp_path, capsys):
    rc, err = run_cli(["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--shape", "8", "8", "8",
                       "--seed", str(2**32)], capsys)
    assert rc != 0 and "seed" in err and str(2**32) in err
    assert not (tmp_path / "p").exists()


def test_an_interrupted_training_ends_its_message_with_the_resume_hint():
    from argparse import Namespace

    from globalmask.cli import _continue_hint

    line = "globalmask train: interrupted; no partial files were left" + _continue_hint(Namespace(command="train"))
    assert line == ("globalmask train: interrupted; no partial files were left (continue with the same command plus "
                    "--resume)")


# ----------------------------------------------------------------------------------------------
# predict's split fallback and --qc --overwrite (the untrained model of ``world``: predictions are
# label maps all the same); the help's promise of an all-or-nothing export


def test_predict_of_a_split_takes_the_model_folders_split_when_the_dataset_has_none(world, tmp_path, capsys):
    """The tiny dataset has no splits.json: ``--subset test`` reads the test list beside the model."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(world["model"], run / "model.pt")
    split = {"train": ["case_000", "case_001", "case_002"], "validation": ["case_003"],
             "test": ["case_004", "case_005"]}
    (run / "splits.json").write_text(json.dumps(split), encoding="utf-8")
    assert not (world["ds"] / "splits.json").exists()
    out = tmp_path / "pred"
    assert main(["predict", str(run / "model.pt"), str(world["ds"]), "--subset", "test", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert f"test split: 2 case(s) from {run / 'splits.json'}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["case_004.nii.gz",
                                                                                  "case_005.nii.gz"]


def test_predict_qc_into_a_non_empty_folder_with_overwrite_writes_beside_its_files(world, tmp_path, capsys):
    """``--overwrite`` covers the --qc folder too: a user's folder holding notes gets the pictures beside them."""
    qc = tmp_path / "qc"
    qc.mkdir()
    (qc / "notes.txt").write_text("mine", encoding="utf-8")
    argv = ["predict", str(world["model"]), str(world["img"]), "--out", str(tmp_path / "pred"), "--qc", str(qc),
            "--device", "cpu"]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "--qc is not empty" in err  # without --overwrite: refused, nothing written
    assert not (tmp_path / "pred").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert "pictures to check: 1 PNG(s)" in capsys.readouterr().out
    assert (qc / "case_000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (qc / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_the_export_help_promises_a_folder_written_whole_or_not_at_all(capsys):
    with pytest.raises(SystemExit):
        main(["export", "nnunet", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "e.g. $nnUNet_raw/Dataset602_HNGBM; written whole or not at all" in helptext
