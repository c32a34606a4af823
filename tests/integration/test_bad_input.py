"""Bad input gets a specific error that names the file and the problem; nothing the user gave changes.

The table below builds one broken input per row in a temporary folder, calls the API function a
user's command would reach, and checks the exception type and that the message names the file
and says what is wrong. A second table runs a few of them through the CLI: exit status 2, one
line on stderr, no traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from globalmask import checks
from globalmask.checkpoint import FORMAT, FORMAT_VERSION, load_model, save_model
from globalmask.cli import main
from globalmask.dataset import load_dataset, resolve_split
from globalmask.errors import (
    CheckpointError,
    DatasetError,
    GeometryError,
    GlobalmaskError,
    InputFileError,
    IntensityError,
    OutputError,
    ResourceError,
)
from globalmask.infer import Predictor
from globalmask.io import Volume, read_volume, write_volume
from globalmask.masks import Recipe, make_gbm
from globalmask.model import NetConfig, check_mode
from globalmask.training import TrainConfig, train
from globalmask.training_data import load_case

from ..conftest import make_tiny_dataset

TINY_NET = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
AFF = np.diag([2.0, 2.0, 2.5, 1.0])


def ct_array(shape=(16, 16, 12)) -> np.ndarray:
    a = np.full(shape, -1000, np.int16)
    a[4:12, 4:12, 2:10] = 40
    return a


def save_nifti(path: Path, array, affine=AFF, pixdim=None) -> Path:
    """Write a NIfTI; with ``pixdim`` the header's voxel sizes are forced (no sform/qform)."""
    if pixdim is None:
        img = nib.Nifti1Image(np.asarray(array), affine)
    else:
        img = nib.Nifti1Image(np.asarray(array), None)
        img.header["pixdim"][1:4] = pixdim
    nib.save(img, str(path))
    return path


def tiny_model(tmp_path: Path, mode="ct") -> Path:
    from globalmask.checkpoint import ModelSpec
    from globalmask.preprocess import PreprocessConfig

    spec = ModelSpec(
        mode,
        Recipe.parse(None),
        PreprocessConfig(spacing=(2.0, 2.0, 2.5)),
        {"background": 0, "a": 1},
        TINY_NET,
        (16, 16, 16),
    )
    return save_model(tmp_path / "model.pt", spec, spec.build().state_dict())


# each builder returns (callable that should fail, file whose name must appear in the message)


def _missing(t):
    return lambda: read_volume(t / "absent.nii.gz"), "absent.nii.gz"


def _truncated(t):
    p = write_volume(Volume(ct_array(), AFF), t / "cut.nii.gz")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return lambda: read_volume(p), "cut.nii.gz"


def _garbage_gz(t):
    p = t / "junk.nii.gz"
    p.write_bytes(gzip.compress(os.urandom(500)))
    return lambda: read_volume(p), "junk.nii.gz"


def _not_gzip(t):
    p = t / "plain.nii.gz"
    p.write_bytes(b"this is not a nifti file at all" * 10)
    return lambda: read_volume(p), "plain.nii.gz"


def _unknown_format(t):
    p = t / "scan.png"
    p.write_bytes(b"\x89PNG....")
    return lambda: read_volume(p), "scan.png"


def _two_d(t):
    p = save_nifti(t / "slice.nii.gz", np.zeros((16, 16), np.int16), np.eye(4))
    return lambda: read_volume(p), "slice.nii.gz"


def _four_d(t):
    p = save_nifti(t / "dyn.nii.gz", np.zeros((8, 8, 8, 3), np.int16), np.eye(4))
    return lambda: read_volume(p), "dyn.nii.gz"


def _zero_spacing(t):
    p = save_nifti(t / "zero.nii.gz", ct_array(), pixdim=[2.0, 0.0, 2.5])
    return lambda: read_volume(p), "zero.nii.gz"


def _negative_spacing(t):
    p = save_nifti(t / "neg.nii.gz", ct_array(), pixdim=[2.0, -2.0, 2.5])
    return lambda: read_volume(p), "neg.nii.gz"


def _negative_mha_spacing(t):
    p = t / "neg.mha"
    p.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 1 -1 1\n"
        "ElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    with open(p, "ab") as fh:
        fh.write(np.zeros(64, np.int16).tobytes())
    return lambda: read_volume(p), "neg.mha"


def _huge_spacing(t):
    p = save_nifti(t / "huge.nii.gz", ct_array(), np.diag([2.0, 2.0, 45.0, 1.0]))
    return lambda: read_volume(p), "huge.nii.gz"


def _nan(t):
    a = ct_array().astype(np.float32)
    a[3, 3, 3] = np.nan
    p = save_nifti(t / "nan.nii.gz", a)
    return lambda: make_gbm(read_volume(p)), "nan.nii.gz"


def _inf(t):
    a = ct_array().astype(np.float32)
    a[5, 5, 5] = np.inf
    p = save_nifti(t / "inf.nii.gz", a)
    return lambda: make_gbm(read_volume(p), "body"), "inf.nii.gz"


def _unit_range(t):
    p = save_nifti(t / "norm.nii.gz", (ct_array() > 0).astype(np.float32) * 0.8)
    return lambda: make_gbm(read_volume(p), "threshold"), "norm.nii.gz"


def _mr_like(t):
    a = np.random.default_rng(0).integers(0, 4000, size=(16, 16, 12)).astype(np.int16)
    p = save_nifti(t / "mr.nii.gz", a)
    return lambda: make_gbm(read_volume(p), "bone"), "mr.nii.gz"


def _too_large(t, monkeypatch):
    p = save_nifti(t / "big.nii.gz", ct_array())
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 1000)
    return lambda: read_volume(p), "big.nii.gz"


def _grid_too_large(t, monkeypatch):
    from globalmask.preprocess import PreprocessConfig, prepare_case

    p = save_nifti(t / "fine.nii.gz", ct_array())
    vol = read_volume(p)
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 50_000_000)
    return lambda: prepare_case(vol, None, PreprocessConfig(spacing=(0.1, 0.1, 0.1))), "fine.nii.gz"


def _shape_mismatch(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    write_volume(Volume(np.zeros((10, 10, 10), np.uint8), AFF), ds / "labelsTr" / "case_001.nii.gz")
    case = load_dataset(ds).cases["case_001"]
    return lambda: load_case(case), "case_001.nii.gz"


def _affine_mismatch(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    lab = read_volume(ds / "labelsTr" / "case_001.nii.gz")
    shifted = lab.affine.copy()
    shifted[0, 3] += 3.0
    write_volume(Volume(lab.array, shifted), ds / "labelsTr" / "case_001.nii.gz")
    case = load_dataset(ds).cases["case_001"]
    return lambda: load_case(case), "case_001.nii.gz"


def _undeclared_label(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    lab = read_volume(ds / "labelsTr" / "case_002.nii.gz")
    arr = lab.array.copy()
    arr[0, 0, 0] = 7
    write_volume(Volume(arr, lab.affine), ds / "labelsTr" / "case_002.nii.gz")
    d = load_dataset(ds)
    return lambda: load_case(d.cases["case_002"], d.labels), "case_002.nii.gz"


def _non_integer_label(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    lab = read_volume(ds / "labelsTr" / "case_000.nii.gz")
    save_nifti(ds / "labelsTr" / "case_000.nii.gz", lab.array.astype(np.float32) * 0.5, lab.affine)
    d = load_dataset(ds)
    return lambda: load_case(d.cases["case_000"], d.labels), "case_000.nii.gz"


def _structure_never_present(t):
    ds = make_tiny_dataset(t / "ds", n=6)
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"]["spleen"] = 3
    (ds / "dataset.json").write_text(json.dumps(meta))
    cfg = TrainConfig(mode="ct", steps=1, net=TINY_NET)
    return lambda: train(ds, t / "run", cfg, progress=False, device="cpu"), "training cases"


def _malformed_dataset_json(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    (ds / "dataset.json").write_text('{"labels": {"a": 1,}')
    return lambda: load_dataset(ds), "dataset.json"


def _labels_not_integers(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    (ds / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": "one"}})
    )
    return lambda: load_dataset(ds), "dataset.json"


def _duplicate_label_values(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    (ds / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 1}})
    )
    return lambda: load_dataset(ds), "dataset.json"


def _not_a_dataset(t):
    (t / "empty").mkdir()
    return lambda: load_dataset(t / "empty"), "empty"


def _split(t, obj):
    ds = make_tiny_dataset(t / "ds", n=5)
    (ds / "splits.json").write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    d = load_dataset(ds)
    return lambda: resolve_split(d), "splits.json"


def _split_unknown(t):
    return _split(t, {"train": ["case_000", "case_099"], "validation": ["case_001"], "test": ["case_002"]})


def _split_overlap(t):
    return _split(t, {"train": ["case_000", "case_001"], "validation": ["case_001"], "test": ["case_002"]})


def _split_test_in_train(t):
    return _split(t, {"train": ["case_000", "case_002"], "validation": ["case_001"], "test": ["case_002"]})


def _split_malformed(t):
    return _split(t, '{"train": [')


def _duplicate_case_ids(t):
    (t / "images").mkdir()
    write_volume(Volume(ct_array(), AFF), t / "images" / "p1.nii.gz")
    write_volume(Volume(ct_array(), AFF), t / "images" / "p1_0000.nrrd")
    return lambda: load_dataset(t), "images"


def _checkpoint_other_version(t):
    p = tiny_model(t)
    payload = torch.load(p, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    payload["globalmask_version"] = "9.1.0"
    torch.save(payload, p)
    return lambda: load_model(p), "model.pt"


def _checkpoint_other_mode(t):
    p = tiny_model(t, mode="ct")
    return lambda: Predictor(p, device="cpu", expect_mode="ct+gbm"), "model.pt"


def _checkpoint_garbage(t):
    p = t / "model.pt"
    p.write_bytes(os.urandom(200))
    return lambda: load_model(p), "model.pt"


def _checkpoint_foreign(t):
    p = t / "model.pt"
    torch.save({"weights": torch.zeros(3)}, p)
    return lambda: load_model(p), "model.pt"


def _predict_into_input_folder(t):
    model = tiny_model(t)
    (t / "in").mkdir()
    write_volume(Volume(ct_array(), AFF), t / "in" / "a.nii.gz")
    return lambda: Predictor(model, device="cpu").predict_files([t / "in"], t / "in", progress=False), "in"


def _run_inside_dataset(t):
    ds = make_tiny_dataset(t / "ds", n=6)
    return lambda: train(ds, ds / "run", TrainConfig(mode="ct", steps=1, net=TINY_NET), progress=False), "run"


def _unknown_recipe(t):
    return lambda: Recipe.parse("hounsfield-magic"), "hounsfield-magic"


def _unknown_mode(t):
    return lambda: check_mode("mri"), "mri"


# ---- issue 25: accepted when they should not have been, or blamed on the wrong file


def _sform_qform(t, name, qform):
    img = nib.Nifti1Image(ct_array(), AFF)
    img.set_sform(AFF, code=1)
    img.set_qform(qform, code=1)
    p = t / name
    nib.save(img, str(p))
    return lambda: read_volume(p), name


def _sform_qform_mirrored(t):
    return _sform_qform(t, "mirror.nii.gz", np.diag([-2.0, 2.0, 2.5, 1.0]))


def _sform_qform_50mm(t):
    moved = AFF.copy()
    moved[2, 3] += 50.0
    return _sform_qform(t, "moved.nii.gz", moved)


def _gzip_without_trailer(t):
    p = write_volume(Volume(ct_array(), AFF), t / "notrailer.nii.gz")
    p.write_bytes(p.read_bytes()[:-8])  # every voxel there, the CRC and length gone: nibabel read it
    return lambda: read_volume(p), "notrailer.nii.gz"


def _gzip_bad_checksum(t):
    p = write_volume(Volume(ct_array(), AFF), t / "crc.nii.gz")
    data = bytearray(p.read_bytes())
    data[-8] ^= 0xFF
    p.write_bytes(bytes(data))
    return lambda: read_volume(p), "crc.nii.gz"


def _channel_named_mri(t):
    ds = make_tiny_dataset(t / "ds", n=3)
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    meta["channel_names"] = {"0": "MRI"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return lambda: load_dataset(ds), "dataset.json"


def _split_case_without_label(t):
    ds = make_tiny_dataset(t / "ds", n=5)
    (ds / "labelsTr" / "case_002.nii.gz").unlink()
    (ds / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_002"], "validation": ["case_001"], "test": ["case_003"]})
    )
    d = load_dataset(ds)
    return lambda: resolve_split(d), "labelsTr/case_002.nii.gz"


def _dicom_slice_without_position(t):
    pydicom = pytest.importorskip("pydicom")
    from globalmask.dicom_rt import write_ct_series

    files = write_ct_series(Volume(ct_array(), AFF), t / "series")
    ds = pydicom.dcmread(files[0])
    del ds.ImagePositionPatient
    ds.save_as(files[0])
    return lambda: read_volume(t / "series"), "CT0000.dcm"


BAD_INPUTS = {
    "missing file": (_missing, InputFileError, "not found"),
    "truncated .nii.gz": (_truncated, InputFileError, "corrupt or truncated"),
    "random bytes in .nii.gz": (_garbage_gz, InputFileError, "cannot read"),
    "not gzip at all": (_not_gzip, InputFileError, "cannot read"),
    "unknown format": (_unknown_format, InputFileError, "unknown volume format"),
    "2D image": (_two_d, InputFileError, "2D"),
    "4D multi-channel": (_four_d, InputFileError, "several channels"),
    "zero spacing": (_zero_spacing, GeometryError, "zero"),
    "negative spacing": (_negative_spacing, GeometryError, "negative"),
    "negative spacing (MetaImage)": (_negative_mha_spacing, GeometryError, "zero or negative"),
    "absurd spacing": (_huge_spacing, GeometryError, "exceeds 20 mm"),
    "NaN voxels": (_nan, IntensityError, "NaN or infinite"),
    "infinite voxels": (_inf, IntensityError, "NaN or infinite"),
    "values in [0, 1]": (_unit_range, IntensityError, "--recipe otsu"),
    "MR-like range": (_mr_like, IntensityError, "does not look like a CT"),
    "volume too large to read": (_too_large, ResourceError, "GiB"),
    "grid too large for the spacing": (_grid_too_large, ResourceError, "coarser target spacing"),
    "image/label shape differ": (_shape_mismatch, GeometryError, "label shape"),
    "image/label affines differ": (_affine_mismatch, GeometryError, "affine differs"),
    "undeclared label value": (_undeclared_label, DatasetError, "not declared in dataset.json"),
    "non-integer label map": (_non_integer_label, DatasetError, "non-integer"),
    "structure empty in every training case": (_structure_never_present, DatasetError, "'spleen'"),
    "malformed dataset.json": (_malformed_dataset_json, DatasetError, "malformed JSON"),
    "label value not an integer": (_labels_not_integers, DatasetError, "expected an integer"),
    "duplicate label values": (_duplicate_label_values, DatasetError, "more than once"),
    "not a dataset folder": (_not_a_dataset, DatasetError, "not a dataset"),
    "split with unknown case ids": (_split_unknown, DatasetError, "not in the dataset"),
    "overlapping splits": (_split_overlap, DatasetError, "in both 'train' and 'validation'"),
    "test case in training": (_split_test_in_train, DatasetError, "in both 'train' and 'test'"),
    "malformed splits.json": (_split_malformed, DatasetError, "malformed JSON"),
    "duplicate case ids": (_duplicate_case_ids, DatasetError, "duplicate case ids"),
    "checkpoint from another version": (_checkpoint_other_version, CheckpointError, "9.1.0"),
    "checkpoint of another input mode": (_checkpoint_other_mode, CheckpointError, "input mode 'ct', not 'ct+gbm'"),
    "corrupt checkpoint": (_checkpoint_garbage, CheckpointError, "cannot read checkpoint"),
    "not a globalmask checkpoint": (_checkpoint_foreign, CheckpointError, FORMAT),
    "output folder is the input folder": (_predict_into_input_folder, OutputError, "input folder"),
    "run folder inside the dataset": (_run_inside_dataset, OutputError, "inside the dataset"),
    "unknown GBM recipe": (_unknown_recipe, GlobalmaskError, "unknown GBM recipe"),
    "unknown input mode": (_unknown_mode, GlobalmaskError, "unknown input mode"),
    "sform and qform mirror each other": (_sform_qform_mirrored, GeometryError, "mirror each other (left-right)"),
    "sform and qform 50 mm apart": (_sform_qform_50mm, GeometryError,
                                    "sform and qform place the voxels up to 50 mm apart"),
    "gzip stream without its trailer": (_gzip_without_trailer, InputFileError, "end-of-stream marker"),
    "gzip checksum damaged": (_gzip_bad_checksum, InputFileError, "corrupt or truncated"),
    "channel 0 is not CT": (_channel_named_mri, DatasetError, "channel 0 is named 'MRI', not 'CT'"),
    "split names a case without a label file": (_split_case_without_label, DatasetError,
                                                "has an image but no label file"),
    "DICOM slice without ImagePositionPatient": (_dicom_slice_without_position, GeometryError,
                                                 "has no ImagePositionPatient"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_a_specific_error(name, tmp_path, monkeypatch):
    build, error, problem = BAD_INPUTS[name]
    import inspect

    args = (tmp_path, monkeypatch) if len(inspect.signature(build).parameters) == 2 else (tmp_path,)
    call, filename = build(*args)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert filename in message, message
    assert problem in message, message


def test_unreadable_file_names_the_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads")
    p = write_volume(Volume(ct_array(), AFF), tmp_path / "locked.nii.gz")
    p.chmod(0)
    with pytest.raises(InputFileError, match=r"locked\.nii\.gz"):
        read_volume(p)


# ----------------------------------------------------------------------------------------------
# through the command line: exit status 2, one line, no traceback


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    cut = _truncated(tmp_path)[0]
    del cut
    rc = main(["masks", str(tmp_path / "cut.nii.gz"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # (the progress bar writes to stderr before it)
    assert last.startswith("globalmask masks: error:") and "cut.nii.gz" in last and "corrupt or truncated" in last


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(InputFileError):
        main(["--debug", "masks", str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "m")])


def test_cli_predict_refuses_a_model_of_another_mode(tmp_path, capsys):
    model = tiny_model(tmp_path, mode="gbm")
    write_volume(Volume(ct_array(), AFF), tmp_path / "a.nii.gz")
    rc = main(["predict", str(model), str(tmp_path / "a.nii.gz"), "--mode", "ct", "--out", str(tmp_path / "p")])
    assert rc == 2 and "trained with input mode 'gbm', not 'ct'" in capsys.readouterr().err


def test_cli_predict_on_non_hu_data_suggests_only_what_predict_can_do(tmp_path, capsys):
    """Issue 25: predict suggested --recipe, which it lacks (the recipe is the checkpoint's)."""
    model = tiny_model(tmp_path)
    p = save_nifti(
        tmp_path / "mr.nii.gz", np.random.default_rng(1).integers(100, 2000, size=(16, 16, 12)).astype(np.int16)
    )
    assert main(["predict", str(model), str(p), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "mr.nii.gz" in err and "convert the data to Hounsfield units" in err and "use --recipe" not in err


def test_cli_non_hu_data_suggests_otsu(tmp_path, capsys):
    p = save_nifti(
        tmp_path / "mr.nii.gz", np.random.default_rng(1).integers(100, 2000, size=(12, 12, 12)).astype(np.int16)
    )
    assert main(["masks", str(p), "--out", str(tmp_path / "m")]) == 2
    assert "--recipe otsu" in capsys.readouterr().err
    assert main(["masks", str(p), "--recipe", "otsu", "--out", str(tmp_path / "m")]) == 0


# ----------------------------------------------------------------------------------------------
# nothing the user gave is modified


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_inputs_are_never_modified(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=6)
    for p in ds.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    before = _digest(ds)
    assert main(["masks", str(ds), "--out", str(tmp_path / "masks")]) == 0
    res = train(
        ds,
        tmp_path / "run",
        TrainConfig(mode="ct+gbm", steps=2, val_every=2, net=TINY_NET),
        progress=False,
        device="cpu",
    )
    Predictor(res.model_path, device="cpu").predict_files([ds / "imagesTr"], tmp_path / "pred", progress=False)
    assert main(["evaluate", str(tmp_path / "pred"), str(ds / "labelsTr"), "--out", str(tmp_path / "ev")]) == 0
    assert _digest(ds) == before
    assert not list(ds.rglob(".tmp-*"))


# checks.py on its own (issue 29): memory, HU and finiteness checks with known answers


def test_available_memory_is_memavailable_else_physical_memory(monkeypatch):
    import io

    meminfo = "MemTotal:       16000 kB\nMemFree:         1000 kB\nMemAvailable:    5000 kB\n"
    monkeypatch.setattr(checks, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert checks.available_memory_bytes() == 5000 * 1024

    def no_proc(*a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(checks, "open", no_proc, raising=False)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < checks.available_memory_bytes() == physical < 1 << 62


def test_memory_check_allows_exactly_what_is_available_and_says_how_much(monkeypatch):
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 8 * 2**30)
    checks.check_memory(8 * 2**30, "the job")  # fits exactly
    with pytest.raises(ResourceError) as err:
        checks.check_memory(8 * 2**30 + 1, "the job", "scan.nii.gz")
    assert str(err.value) == "scan.nii.gz: the job needs about 8.0 GiB but only 8.0 GiB of memory is available"
    with pytest.raises(ResourceError) as err:
        checks.check_memory(12 * 2**30, "resampling", hint="use a coarser --spacing")
    assert str(err.value) == (
        "resampling needs about 12.0 GiB but only 8.0 GiB of memory is available; use a coarser --spacing"
    )


@pytest.mark.parametrize("recipe", ["threshold:-300", ""])
def test_hounsfield_check_names_the_recipe_and_the_kind_of_range(recipe):
    named = recipe or "the recipe"
    with pytest.raises(IntensityError, match=f"HU levels of {named} are meaningless") as err:
        checks.check_hounsfield(np.linspace(0, 1, 1000).reshape(10, 10, 10), "a.nii", recipe)  # span < 50
    assert "values span only [0, 1]" in str(err.value)
    with pytest.raises(IntensityError, match=f"HU levels of {named} are meaningless") as err:
        checks.check_hounsfield(np.linspace(0, 3000, 1000).reshape(10, 10, 10), "a.nii", recipe)
    assert "(an MR-like range)" in str(err.value)
    with pytest.raises(IntensityError, match=r"0\.00% of voxels below -500 HU \(no air\)"):
        checks.check_hounsfield(np.linspace(-400, 1000, 1000).reshape(10, 10, 10), "a.nii", recipe)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hounsfield_check_of_a_large_volume_sees_air_two_voxels_thick_wherever_it_lies(axis):
    """Above 4 million voxels the check reads a sub-sample: one that still sees a 2-voxel slab of air."""
    shape = [170, 170, 170]
    vol = np.full(shape, 40, np.int16)  # 4.9 million voxels of soft tissue
    for start in (84, 85, 99):
        vol[...] = 40
        index = [slice(None)] * 3
        index[axis] = slice(start, start + 2)
        vol[tuple(index)] = -1000
        checks.check_hounsfield(vol, "big.nii")  # 1% of the voxels are air: a CT
    vol[...] = 40
    vol[0, 0, 0] = -400  # a range of HU, but no air anywhere
    with pytest.raises(IntensityError, match="no air"):
        checks.check_hounsfield(vol, "big.nii")
