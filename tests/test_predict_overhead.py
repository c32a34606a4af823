"""The cheaper prediction path gives exactly what the straightforward one gave.

Known answers are the plain computations the fast paths replaced:

* the GBM / label resize is a gather with torch's own nearest-exact indices: equal to
  ``resize(np.ascontiguousarray(a[crop], dtype=np.uint8), shape, "nearest")`` for many shapes,
  up- and downsampling, crop offsets and strided (flipped, transposed) views;
* the float32 crop is ``np.ascontiguousarray(a[crop], dtype=np.float32)`` for every dtype and
  byte order, and ``prepare_case`` equals the old step-by-step preprocessing bit for bit
  (several orientations, a label, and a real OpenKBP CT when present);
* ``predict_files`` with reading and writing overlapped writes byte-identical files in the same
  order as the strictly sequential loop, and a bad file in the middle of a folder still stops it
  with the error naming that file, after the earlier cases were written (as in order).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from globalmask.checkpoint import ModelSpec, save_model
from globalmask.errors import InputFileError, WriteError
from globalmask.infer import Predictor
from globalmask.io import Volume, read_volume, write_volume
from globalmask.masks import Recipe
from globalmask.model import NetConfig
from globalmask.preprocess import (
    PreparedCase,
    PreprocessConfig,
    body_box,
    crop_float32,
    gather_nearest,
    normalize_ct,
    prepare_case,
    resampled_shape,
    resize,
    to_canonical,
)

from .conftest import OPENKBP, needs_openkbp, oblique_affine

ORIENTATIONS = {
    "RAS": np.diag([1.5, 2.0, 3.0, 1.0]),
    "LPS": np.diag([-1.5, -2.0, 3.0, 1.0]),
    "PLI": np.array([[0, -2.0, 0, 0], [-1.5, 0, 0, 0], [0, 0, -3.0, 0], [0, 0, 0, 1]]),
    "oblique": oblique_affine(),
}


def _old_nearest(array: np.ndarray, sl: tuple[slice, ...], shape) -> np.ndarray:
    return resize(np.ascontiguousarray(array[sl], dtype=np.uint8), shape, "nearest").numpy()


def test_gather_nearest_is_the_nearest_resize_for_many_shapes():
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 5, 7, 8, 13, 17, 31, 32, 33, 64, 97, 118, 128]
    checked = 0
    for n_in in sizes:
        for n_out in sizes:  # every pair of sizes along the first axis: up, down and unchanged
            a = rng.integers(0, 7, size=(n_in + 3, 2, 3), dtype=np.uint8)
            sl = (slice(2, 2 + n_in), slice(0, 2), slice(0, 3))
            np.testing.assert_array_equal(gather_nearest(a, (2, 0, 0), (n_in, 2, 3), (n_out, 3, 2)), _old_nearest(a, sl, (n_out, 3, 2)))
            checked += 1
    for _ in range(40):  # random 3D shapes, offsets, and flipped / transposed views as to_canonical makes
        full = rng.integers(0, 2, size=tuple(rng.integers(4, 40, 3)), dtype=np.uint8).astype(bool)
        view = np.transpose(full, rng.permutation(3))[:: rng.choice([-1, 1]), :, :: rng.choice([-1, 1])]
        start = tuple(int(rng.integers(0, n // 2)) for n in view.shape)
        stop = tuple(int(rng.integers(a + 1, n + 1)) for a, n in zip(start, view.shape))
        crop = tuple(b - a for a, b in zip(start, stop))
        shape = tuple(int(rng.integers(1, 2 * c + 3)) for c in crop)
        sl = tuple(slice(a, b) for a, b in zip(start, stop))
        got = gather_nearest(view, start, crop, shape).astype(np.uint8)
        assert got.flags.c_contiguous and got.shape == shape
        np.testing.assert_array_equal(got, _old_nearest(view, sl, shape))
        checked += 1
    assert checked == len(sizes) ** 2 + 40


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "u1", "i1", "?", "<f4", ">f4", "<i4", "<u2", "<f8"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_crop_float32_is_numpys_conversion(dtype, name):
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 900, size=(23, 19, 17))
    arr = (raw > 0) if dtype == "?" else raw.astype(dtype)
    if np.dtype(dtype).kind in "iu":
        arr = np.clip(raw, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    canon, _ = to_canonical(np.asfortranarray(arr), ORIENTATIONS[name])  # NIfTI arrays are Fortran-ordered
    sl = (slice(2, 21), slice(0, 15), slice(3, 17))
    got = crop_float32(canon, sl)
    want = np.ascontiguousarray(canon[sl], dtype=np.float32)
    assert got.dtype == torch.float32 and got.is_contiguous()
    np.testing.assert_array_equal(got.numpy(), want)


def reference_prepare(ct: Volume, recipe: str, config: PreprocessConfig, label: Volume | None) -> PreparedCase:
    """The preprocessing as first written: full float copy of the crop, resize every channel."""
    rec = Recipe.parse(recipe)
    canon, caffine = to_canonical(np.asarray(ct.array), ct.affine)
    gbm_full = rec(canon, caffine)
    start, stop = body_box(canon, caffine, config.crop_level, config.crop_margin_mm)
    sl = tuple(slice(a, b) for a, b in zip(start, stop))
    crop_shape = tuple(b - a for a, b in zip(start, stop))
    grid = resampled_shape(crop_shape, np.linalg.norm(caffine[:3, :3], axis=0), config.spacing)
    ct_grid = resize(normalize_ct(np.ascontiguousarray(canon[sl], dtype=np.float32), config.window), grid, "linear").numpy()
    gbm_grid = resize(np.ascontiguousarray(gbm_full[sl], dtype=np.uint8), grid, "nearest").numpy()
    lab = None
    if label is not None:
        lcanon, _ = to_canonical(np.asarray(label.array), label.affine)
        lab = resize(np.ascontiguousarray(lcanon[sl], dtype=np.uint8), grid, "nearest").numpy()
    return PreparedCase("ref", ct_grid, gbm_grid, None, lab)  # type: ignore[arg-type]  # geometry compared elsewhere


def _assert_same(new: PreparedCase, old: PreparedCase) -> None:
    for a, b in ((new.ct, old.ct), (new.gbm, old.gbm), (new.label, old.label)):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def _phantom(shape=(40, 34, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (x - 20) ** 2 / 150 + (y - 16) ** 2 / 90 < 1
    ct = np.where(body, rng.normal(40, 30, shape), -1000 + rng.normal(0, 5, shape))
    ct[18:26, 10:15, 8:20] = 700  # bone, off-centre
    label = np.zeros(shape, np.uint8)
    label[18:26, 10:15, 8:20] = 1
    label[10:14, 20:24, 5:25] = 2
    return np.asfortranarray(ct.astype(np.int16)), np.asfortranarray(label)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("spacing", [(4.0, 3.0, 5.0), (1.0, 1.3, 2.2), (3.0, 2.0, 1.5)])
@pytest.mark.parametrize("recipe", ["bone", "body"])
def test_prepare_case_equals_the_straightforward_preprocessing(name, spacing, recipe):
    ct, lab = _phantom()
    aff = ORIENTATIONS[name]
    config = PreprocessConfig(spacing=spacing)
    new = prepare_case(Volume(ct, aff), recipe, config, Volume(lab, aff))
    _assert_same(new, reference_prepare(Volume(ct, aff), recipe, config, Volume(lab, aff)))


@needs_openkbp
def test_prepare_case_on_a_real_ct_equals_the_straightforward_preprocessing():
    ct = read_volume(OPENKBP / "imagesTr" / "openkbp_002_0000.nii.gz")
    lab = read_volume(OPENKBP / "labelsTr" / "openkbp_002.nii.gz")
    config = PreprocessConfig(spacing=(6.0, 6.0, 6.0))
    _assert_same(prepare_case(ct, "bone", config, lab), reference_prepare(ct, "bone", config, lab))


# ----------------------------------------------------------------------------------------------
# predict_files: overlapped reading / writing


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(
        mode="ct+gbm",
        recipe=Recipe.parse("threshold"),
        preprocess=PreprocessConfig(spacing=(3.0, 3.0, 3.0), crop_margin_mm=4.0),
        labels={"background": 0, "a": 1, "b": 2},
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        patch_size=(8, 8, 8),
    )
    return save_model(tmp_path_factory.mktemp("ovl") / "untrained.pt", spec, spec.build().state_dict())


def _folder(root: Path, n: int = 4) -> Path:
    """``n`` scans in different orientations and sizes (so each prediction differs)."""
    names = list(ORIENTATIONS)
    for i in range(n):
        ct, _ = _phantom(shape=(24 + 2 * i, 20 + i, 16), seed=i)
        write_volume(Volume(ct, ORIENTATIONS[names[i % len(names)]]), root / f"case{i}_0000.nii.gz")
    return root


def test_overlapped_predict_files_writes_the_sequential_files(untrained, tmp_path):
    src = _folder(tmp_path / "in")
    pred = Predictor(untrained, device="cpu")
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
def test_bad_file_in_the_middle_stops_with_its_name_after_the_earlier_cases(untrained, tmp_path, overlap):
    src = _folder(tmp_path / "in", n=4)
    bad = src / "case2_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(InputFileError, match=r"case2_0000\.nii\.gz"):
        Predictor(untrained, device="cpu").predict_files([src], tmp_path / "out", progress=False, overlap=overlap)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    read_volume(tmp_path / "out" / "case1.nii.gz")  # complete and readable


def test_an_earlier_write_failure_wins_over_a_later_read_error(untrained, tmp_path, monkeypatch):
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
            Predictor(untrained, device="cpu").predict_files([src], tmp_path / f"out{overlap}", progress=False, overlap=overlap)
        assert sorted(f.name for f in (tmp_path / f"out{overlap}").iterdir()) == ["case0.nii.gz"]


def test_gather_nearest_matches_large_random_resizes():
    """Axes longer than a uint8 arange can label: random uint8 volumes up to 600 voxels a side."""
    rng = np.random.default_rng(3)
    for _ in range(12):
        s_in = tuple(int(x) for x in rng.integers(1, 600, 3))
        s_out = tuple(int(x) for x in rng.integers(1, 600, 3))
        s_in = (s_in[0], s_in[1], max(1, 400_000 // (s_in[0] * s_in[1])))  # small enough to be quick
        s_out = (s_out[0], s_out[1], max(1, 400_000 // (s_out[0] * s_out[1])))
        a = rng.integers(0, 255, s_in, dtype=np.uint8)
        sl = tuple(slice(0, n) for n in s_in)
        np.testing.assert_array_equal(gather_nearest(a, (0, 0, 0), s_in, s_out), _old_nearest(a, sl, s_out))
