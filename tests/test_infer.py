"""infer.py: predict keeps the input's geometry in any orientation; devices are chosen explicitly.

Most tests are fast, with tiny untrained networks (a slow one repeats the check with a trained model).

Two known answers, no training:

* a tiny untrained U-Net sees the same canonical (RAS) array whatever the file's axis order, so
  its labels, mapped voxel by voxel through the affines, must be identical for RAS, LPS, PLI and
  oblique copies of one scan, and every output must carry its own input's shape and affine;
* a voxel-wise "network" that labels every voxel above 150 HU must give exactly ``ct > 150`` on
  the input's own grid (target spacing = input spacing, so no resampling blurs the answer).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from globalmask.checkpoint import ModelSpec, save_model
from globalmask.errors import (
    GeometryError,
    GlobalmaskError,
    InputFileError,
    IntensityError,
    OutputError,
    WriteError,
)
from globalmask.infer import Predictor, collect_inputs
from globalmask.io import Volume, read_volume, write_volume
from globalmask.masks import Recipe
from globalmask.model import NetConfig
from globalmask.preprocess import (
    PreprocessConfig,
)

from .conftest import ORIENTED_AFFINES, oblique_affine, phantom_ct_and_labels

SHAPE = (22, 18, 14)
RAS_AFFINE = np.array([[2.0, 0, 0, -20.0], [0, 2.5, 0, 10.0], [0, 0, 3.0, 4.0], [0, 0, 0, 1]])
# for each RAS array axis: (axis of the new array, direction) - nibabel's orientation convention
ORNTS = {"LPS": [[0, -1], [1, -1], [2, 1]], "PLI": [[1, -1], [0, -1], [2, -1]]}


def scan() -> Volume:
    """An asymmetric body (40 HU) in air with a dense block (300 HU) off to one side and top."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    ct = np.full(SHAPE, -1000, np.int16)
    ct[(x - 11) ** 2 / 64 + (y - 9) ** 2 / 36 < 1] = 40
    ct[12:16, 5:8, 8:12] = 300
    return Volume(ct, RAS_AFFINE.copy())


def reoriented(vol: Volume, name: str) -> Volume:
    """The same scan (same world content) stored with other array axes, or an oblique affine."""
    if name == "RAS":
        return vol
    if name == "oblique":  # world frame rotated 30 degrees about z: closest canonical is still RAS
        rot = oblique_affine((1.0, 1.0, 1.0), 30.0, (0.0, 0.0, 0.0))
        return Volume(vol.array.copy(), rot @ vol.affine)
    ornt = np.array(ORNTS[name])
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    aff = vol.affine @ nib.orientations.inv_ornt_aff(ornt, vol.shape)
    assert "".join(nib.aff2axcodes(aff)) == name
    return Volume(np.ascontiguousarray(arr), aff)


def to_ras_indices(moved: Volume, ras: Volume) -> tuple[np.ndarray, ...]:
    """RAS voxel index of every voxel of ``moved`` (same world point), in C order."""
    idx = np.indices(moved.shape).reshape(3, -1)
    world = moved.affine @ np.vstack([idx, np.ones(idx.shape[1])])
    return tuple(np.round(np.linalg.solve(ras.affine, world)[:3]).astype(int))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A tiny untrained U-Net checkpoint (3 classes) on a grid coarser than the scans."""
    torch.manual_seed(0)
    spec = ModelSpec(
        mode="ct+gbm",
        recipe=Recipe.parse("threshold"),
        preprocess=PreprocessConfig(spacing=(3.0, 3.0, 3.0), crop_margin_mm=4.0),
        labels={"background": 0, "a": 1, "b": 2},
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        patch_size=(8, 8, 8),
    )
    path = tmp_path_factory.mktemp("geo") / "untrained.pt"
    save_model(path, spec, spec.build().state_dict())
    return path


@pytest.mark.parametrize("name", ["LPS", "PLI", "oblique"])
def test_untrained_network_labels_are_the_same_in_world_space(untrained, name):
    predictor = Predictor(untrained, device="cpu")
    ras = scan()
    ras_pred = predictor.predict(ras)
    assert len(np.unique(ras_pred.array)) > 1  # a prediction with structure, so mistakes show
    moved = reoriented(ras, name)
    pred = predictor.predict(moved)
    assert pred.shape == moved.shape
    np.testing.assert_array_equal(pred.affine, moved.affine)
    if name == "oblique":  # a rotated world frame, same voxels: identical labels voxel for voxel
        np.testing.assert_array_equal(pred.array, ras_pred.array)
    else:
        np.testing.assert_array_equal(pred.array.reshape(-1), ras_pred.array[to_ras_indices(moved, ras)])


@pytest.mark.parametrize("name", ["RAS", "LPS", "PLI", "oblique"])
def test_written_prediction_has_the_input_header(untrained, tmp_path, name):
    """The file on disk carries the input's own affine and axis codes, not the internal RAS ones."""

    moved = reoriented(scan(), name)
    src = write_volume(moved, tmp_path / "in" / "scan_0000.nii.gz")
    (out,) = Predictor(untrained, device="cpu").predict_files([src], tmp_path / "out", progress=False)
    assert out.name == "scan.nii.gz"
    back, ref = read_volume(out), read_volume(src)
    assert back.shape == ref.shape and back.array.dtype == np.uint8
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(moved.affine)


class AboveLevel(torch.nn.Module):
    """Voxel-wise 'network': class 1 where the normalised CT channel is above ``x0``, else 0."""

    def __init__(self, x0: float):
        super().__init__()
        self.x0 = x0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ct = x[:, :1]
        return torch.cat([torch.zeros_like(ct), 50.0 * (ct - self.x0)], dim=1)


@pytest.mark.parametrize("name", ["RAS", "LPS", "PLI", "oblique"])
def test_voxelwise_network_gives_the_known_label_map_in_any_orientation(tmp_path, name):
    moved = reoriented(scan(), name)
    spacing = (2.0, 2.5, 3.0)  # the scan's own spacing in RAS order: no resampling
    spec = ModelSpec(
        mode="ct",
        recipe=Recipe.parse("threshold"),
        preprocess=PreprocessConfig(spacing=spacing),
        labels={"background": 0, "dense": 1},
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        patch_size=(8, 8, 8),
    )
    save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    predictor = Predictor(tmp_path / "m.pt", device="cpu")
    predictor.net = AboveLevel(150.0 / 1000.0)  # window (-1000, 1000): 150 HU -> 0.15
    pred = predictor.predict(moved)
    np.testing.assert_array_equal(pred.affine, moved.affine)
    expected = (moved.array > 150).astype(np.uint8)
    assert expected.sum() == 4 * 3 * 4  # the 300 HU block, and nothing else
    np.testing.assert_array_equal(pred.array, expected)


def test_device_selection_is_explicit():
    from globalmask.infer import autocast, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GlobalmaskError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(GlobalmaskError, match="unknown device"):
        resolve_device("tpu")
    # no autocast on the CPU: bf16 there is many times slower without native support
    assert type(autocast(torch.device("cpu"))).__name__ == "nullcontext"


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["LPS", "PLI", "oblique"])
def test_predictions_keep_the_input_geometry_in_any_orientation(trained, phantom_ds, orientation):
    """The same scan stored in another orientation gives the same labels in world space."""
    cid = phantom_ds.load_split().test[0]
    ct = read_volume(phantom_ds.cases[cid].image)
    predictor = Predictor(trained.model_path, device="cpu")
    ras_pred = predictor.predict(ct)
    if orientation == "LPS":
        arr, flip = ct.array[::-1, ::-1, :], np.diag([-1.0, -1.0, 1.0, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = [ct.shape[0] - 1, ct.shape[1] - 1, 0]
        affine = ct.affine @ shift @ flip
    elif orientation == "PLI":
        arr = np.transpose(ct.array, (1, 0, 2))[::-1, :, ::-1]
        perm = np.zeros((4, 4))
        perm[0, 1] = perm[1, 0] = perm[2, 2] = perm[3, 3] = 1  # i<->j
        flip = np.diag([-1.0, 1.0, -1.0, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = [ct.shape[1] - 1, 0, ct.shape[2] - 1]
        affine = ct.affine @ perm @ shift @ flip
    else:  # a 5-degree rotation of the world frame: still closest to RAS, not axis-aligned
        a = np.deg2rad(5)
        rot = np.eye(4)
        rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        arr, affine = ct.array, rot @ ct.affine
    moved = Volume(np.ascontiguousarray(arr), affine)
    pred = predictor.predict(moved)
    assert pred.shape == moved.shape and np.array_equal(pred.affine, moved.affine)
    if orientation == "oblique":
        # a rotated world frame changes nothing in voxel space: identical labels
        np.testing.assert_array_equal(pred.array, ras_pred.array)
        return
    # map every voxel of the moved prediction to RAS voxel indices and compare
    idx = np.indices(moved.shape).reshape(3, -1)
    world = affine @ np.vstack([idx, np.ones(idx.shape[1])])
    ras_idx = np.round(np.linalg.solve(ct.affine, world)[:3]).astype(int)
    np.testing.assert_array_equal(pred.array.reshape(-1), ras_pred.array[tuple(ras_idx)])


# ----------------------------------------------------------------------------------------------
# predict_files: reading and writing overlapped with the network writes byte-identical files in the same
# order as the sequential loop; a bad file in the middle stops it naming that file, after the earlier cases


@pytest.fixture(scope="module")
def untrained_ctgbm(untrained) -> Path:
    return untrained  # the same tiny ct+gbm checkpoint as the geometry tests


def _folder(root: Path, n: int = 4) -> Path:
    """``n`` scans in different orientations and sizes (so each prediction differs)."""
    names = list(ORIENTED_AFFINES)
    for i in range(n):
        ct, _ = phantom_ct_and_labels(shape=(24 + 2 * i, 20 + i, 16), seed=i)
        write_volume(Volume(ct, ORIENTED_AFFINES[names[i % len(names)]]), root / f"case{i}_0000.nii.gz")
    return root


def test_overlapped_predict_files_writes_the_sequential_files(untrained_ctgbm, tmp_path):
    src = _folder(tmp_path / "in")
    pred = Predictor(untrained_ctgbm, device="cpu")
    seq = pred.predict_files([src], tmp_path / "seq", progress=False, overlap=False)
    ovl = pred.predict_files([src], tmp_path / "ovl", progress=False, overlap=True)
    assert [p.name for p in ovl] == [p.name for p in seq] == [f"case{i}.nii.gz" for i in range(4)]
    assert all(p.parent == tmp_path / "ovl" for p in ovl)
    for a, b in zip(seq, ovl):
        assert a.read_bytes() == b.read_bytes()
    labels = [np.asarray(nib.load(str(p)).dataobj) for p in ovl]
    assert any(len(np.unique(lab)) > 1 for lab in labels)  # predictions with structure, so a mix-up shows
    for p in ovl:  # each output has its own input's grid
        back, ref = read_volume(p), read_volume(src / p.name.replace(".nii.gz", "_0000.nii.gz"))
        assert back.shape == ref.shape
        np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    assert sorted(f.name for f in (tmp_path / "ovl").iterdir()) == [p.name for p in ovl]  # no temporary files left


@pytest.mark.parametrize("overlap", [False, True])
def test_bad_file_in_the_middle_stops_with_its_name_after_the_earlier_cases(untrained_ctgbm, tmp_path, overlap):
    src = _folder(tmp_path / "in", n=4)
    bad = src / "case2_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(InputFileError, match=r"case2_0000\.nii\.gz"):
        Predictor(untrained_ctgbm, device="cpu").predict_files([src], tmp_path / "out", progress=False, overlap=overlap)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    read_volume(tmp_path / "out" / "case1.nii.gz")  # complete and readable


def test_an_earlier_write_failure_wins_over_a_later_read_error(untrained_ctgbm, tmp_path, monkeypatch):
    """In order, case 1's failed write stops the run before case 2 is read: the same error here."""
    src = _folder(tmp_path / "in", n=4)
    bad = src / "case2_0000.nii.gz"
    bad.write_bytes(b"not a nifti")
    real_write = Predictor._write

    def write(labels, notes, dst):
        if dst.name == "case1.nii.gz":
            raise WriteError("could not write case1.nii.gz (disk full)", dst)
        return real_write(labels, notes, dst)

    monkeypatch.setattr(Predictor, "_write", staticmethod(write))
    for overlap in (False, True):
        with pytest.raises(WriteError, match=r"case1\.nii\.gz"):
            Predictor(untrained_ctgbm, device="cpu").predict_files(
                [src], tmp_path / f"out{overlap}", progress=False, overlap=overlap
            )
        assert sorted(f.name for f in (tmp_path / f"out{overlap}").iterdir()) == ["case0.nii.gz"]


def _tiny_model(path: Path, labels: dict) -> Path:
    spec = ModelSpec(
        "ct",
        Recipe.parse(None),
        PreprocessConfig(spacing=(2.0, 2.0, 2.5)),
        labels,
        NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        (16, 16, 16),
    )
    return save_model(path, spec, spec.build().state_dict())


@pytest.mark.parametrize("where", ["dataset", "imagesTr"])
def test_predict_subset_segments_only_that_list_of_the_split(tmp_path, capsys, where):
    import json

    from globalmask.cli import main

    from .conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds", n=5, shape=(12, 12, 10))
    (ds / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": ["case_002"], "test": ["case_003", "case_004"]}),
        encoding="utf-8",
    )
    model = _tiny_model(tmp_path / "run" / "model.pt", {"background": 0, "left": 1, "right": 2})
    src = ds if where == "dataset" else ds / "imagesTr"
    assert (
        main(["predict", str(model), str(src), "--subset", "test", "--device", "cpu", "--out", str(tmp_path / "pred")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == ["case_003.nii.gz", "case_004.nii.gz"]


def test_predict_subset_falls_back_on_the_run_folders_split(tmp_path, capsys):
    import json

    from globalmask.cli import main

    from .conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(12, 12, 10))  # no splits.json of its own
    model = _tiny_model(tmp_path / "run" / "model.pt", {"background": 0, "left": 1, "right": 2})
    (tmp_path / "run" / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": ["case_002"], "test": ["case_003"]}),
        encoding="utf-8",
    )
    assert main(["predict", str(model), str(ds), "--subset", "validation", "--device", "cpu",
                 "--out", str(tmp_path / "pred")]) == 0
    assert [p.name for p in (tmp_path / "pred").glob("*.nii.gz")] == ["case_002.nii.gz"]
    assert main(["predict", str(model), str(ds), str(ds), "--subset", "test", "--device", "cpu",
                 "--out", str(tmp_path / "p2")]) == 2
    assert "one dataset folder" in capsys.readouterr().err


def test_predict_files_warns_when_every_prediction_is_empty(tmp_path):
    from .conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(12, 12, 10))
    model = _tiny_model(tmp_path / "run" / "model.pt", {"background": 0, "left": 1, "right": 2})
    predictor = Predictor(model, device="cpu")
    with torch.no_grad():  # a network that says 'background' everywhere
        for p in predictor.net.parameters():
            p.zero_()
        last_bias = [p for n, p in predictor.net.named_parameters() if n.endswith("bias")][-1]
        last_bias[0] = 10.0
    with pytest.warns(UserWarning, match="every one of the 2 prediction"):
        predictor.predict_files([ds / "imagesTr"], tmp_path / "pred", progress=False)


def _above_level_predictor(tmp_path: Path) -> Predictor:
    """A predictor on :func:`scan`'s own spacing whose 'network' labels every voxel above 150 HU."""
    spec = ModelSpec(
        mode="ct",
        recipe=Recipe.parse("threshold"),
        preprocess=PreprocessConfig(spacing=(2.0, 2.5, 3.0)),
        labels={"background": 0, "dense": 1},
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        patch_size=(8, 8, 8),
    )
    save_model(tmp_path / "above.pt", spec, spec.build().state_dict())
    predictor = Predictor(tmp_path / "above.pt", device="cpu")
    predictor.net = AboveLevel(150.0 / 1000.0)
    return predictor


def test_no_empty_prediction_warning_when_one_prediction_has_a_structure(tmp_path):
    """Only a run whose every prediction is background warns: one case with the dense block is enough."""
    predictor = _above_level_predictor(tmp_path)
    dense = scan()
    soft = Volume(np.where(dense.array > 150, 40, dense.array).astype(np.int16), dense.affine.copy())
    files = [write_volume(soft, tmp_path / "in" / "soft_0000.nii.gz"),
             write_volume(dense, tmp_path / "in" / "dense_0000.nii.gz")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predictor.predict_files(files, tmp_path / "pred", progress=False)
    assert not [w for w in caught if "prediction(s) is empty" in str(w.message)]
    assert [int(read_volume(p).array.sum()) for p in out] == [0, 4 * 3 * 4]
    with pytest.warns(UserWarning, match="every one of the 1 prediction"):  # the soft scan alone: empty
        predictor.predict_files(files[:1], tmp_path / "pred1", progress=False)


def test_prepare_keeps_the_case_id_it_is_given(tmp_path):
    prepared = _above_level_predictor(tmp_path).prepare(scan(), "patient_7")
    assert prepared.id == "patient_7"


def test_non_hu_input_is_refused_naming_its_file_with_advice_for_a_fixed_recipe(tmp_path):
    """predict has no --recipe: the message tells what can be done with this model, and names the file."""
    vol = scan()
    scaled = Volume((vol.array.astype(np.float32) + 1000.0) / 1300.0, vol.affine.copy())  # [0, 1]: not HU
    src = write_volume(scaled, tmp_path / "scaled_0000.nii.gz")
    with pytest.raises(IntensityError, match="fixed at training") as err:
        _above_level_predictor(tmp_path).predict(read_volume(src))
    assert err.value.path == src
    assert "use --recipe otsu" not in str(err.value)


def test_a_label_map_off_the_input_grid_is_refused_not_written(tmp_path, monkeypatch):
    """The promise of predict (the input's own grid) is checked: a restore that lost a slice is an error."""
    import globalmask.infer as infer

    real_restore = infer.restore_volume

    def restore_one_slice_short(probs, geometry):
        lab = real_restore(probs, geometry)
        return Volume(lab.array[..., :-1].copy(), lab.affine)

    monkeypatch.setattr(infer, "restore_volume", restore_one_slice_short)
    src = write_volume(scan(), tmp_path / "in" / "scan_0000.nii.gz")
    with pytest.raises(GeometryError, match=r"\(22, 18, 13\) differs from the input grid \(22, 18, 14\)") as err:
        _above_level_predictor(tmp_path).predict_files([src], tmp_path / "out", progress=False)
    assert err.value.path == src
    assert not list((tmp_path / "out").iterdir())


def test_output_folder_that_holds_the_inputs_is_refused_naming_it(tmp_path):
    src = write_volume(scan(), tmp_path / "in" / "scan_0000.nii.gz")
    predictor = _above_level_predictor(tmp_path)
    for inputs in ([src], [tmp_path / "in"]):  # the file, or its folder, predicted into that folder
        with pytest.raises(OutputError, match="choose a separate --out") as err:
            predictor.predict_files(inputs, tmp_path / "in", progress=False)
        assert err.value.path == tmp_path / "in"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["scan_0000.nii.gz"]


def test_two_inputs_with_one_output_name_are_refused_naming_both(tmp_path):
    a = write_volume(scan(), tmp_path / "a" / "scan_0000.nii.gz")
    b = write_volume(scan(), tmp_path / "b" / "scan.nii.gz")
    with pytest.raises(InputFileError, match=r"same output name 'scan\.nii\.gz'") as err:
        collect_inputs([a, b])
    assert f"{a} and {b}" in str(err.value) and err.value.path == b


def test_the_progress_bar_counts_cases(tmp_path, monkeypatch, capsys):
    """On a terminal the bar counts input cases ('2/2', per case), not iterations."""
    import globalmask.infer as infer

    monkeypatch.setattr(infer, "bars_enabled", lambda progress: progress)  # as on a terminal
    files = [write_volume(scan(), tmp_path / "in" / f"s{i}_0000.nii.gz") for i in range(2)]
    _above_level_predictor(tmp_path).predict_files(files, tmp_path / "pred", progress=True)
    err = capsys.readouterr().err
    assert re.search(r"predict: 100%.*2/2 \[.*(case/s|s/case)\]", err), err
