"""preprocess.py: canonical orientation, resampling, cropping and their exact inversion onto the input grid."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from globalmask import preprocess
from globalmask.io import Volume, read_volume
from globalmask.masks import Recipe
from globalmask.phantom import make_phantom_case
from globalmask.preprocess import (
    PreparedCase,
    PreprocessConfig,
    _linear_axis,
    _touching,
    body_box,
    canonical_spacing,
    crop_float32,
    derive_spacing,
    from_canonical,
    gather_nearest,
    grid_shape,
    normalize_ct,
    prepare_case,
    resample_affine,
    resampled_shape,
    resize,
    restore_labels,
    to_canonical,
)

from .conftest import OPENKBP, ORIENTED_AFFINES, needs_openkbp, phantom_ct_and_labels


def phantom_like(shape=(30, 26, 22), affine=None):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (x - 15) ** 2 / 100 + (y - 13) ** 2 / 64 < 1
    ct = np.where(body, 40, -1000).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[10:14, 9:13, 6:16] = 1
    lab[16:21, 12:16, 8:14] = 2
    aff = np.diag([1.5, 2.0, 3.0, 1.0]) if affine is None else affine
    return Volume(ct, aff), Volume(lab, aff)


def onehot(label, k):
    return np.stack([(label == c).astype(np.float32) for c in range(k)])


ORIENTATIONS = {
    "RAS": np.diag([1.5, 2.0, 3.0, 1.0]),
    "LPS": np.diag([-1.5, -2.0, 3.0, 1.0]),
    "PLI": np.array([[0, -2.0, 0, 0], [-1.5, 0, 0, 0], [0, 0, -3.0, 0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_canonical_round_trip(name):
    arr = np.random.default_rng(0).random((5, 6, 7))
    aff = ORIENTATIONS[name]
    canon, caff = to_canonical(arr, aff)
    assert nib.aff2axcodes(caff) == ("R", "A", "S")
    np.testing.assert_array_equal(from_canonical(canon, aff), arr)
    # the same world point carries the same value in both grids
    ijk = np.array([1, 2, 3])
    world = aff @ [*ijk, 1]
    cijk = np.round(np.linalg.solve(caff, world)[:3]).astype(int)
    assert canon[tuple(cijk)] == arr[tuple(ijk)]


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_prepare_and_restore_returns_the_original_grid(name):
    ct, lab = phantom_like(affine=ORIENTATIONS[name])
    # same spacing as the input: resampling is the identity, so the round trip is exact
    cfg = PreprocessConfig(spacing=canonical_spacing(ct.affine))
    pc = prepare_case(ct, "threshold", cfg, lab)
    assert pc.ct.dtype == np.float32 and pc.ct.min() >= -1 and pc.ct.max() <= 1
    back = restore_labels(onehot(pc.label, 3), pc.geometry)
    assert back.shape == ct.shape
    np.testing.assert_array_equal(back, lab.array)
    assert back.flags["F_CONTIGUOUS"]  # the order NIfTI stores, so writing needs no transposition


def test_resampled_round_trip_is_close_and_geometry_consistent():
    ct, lab = phantom_like()
    cfg = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    pc = prepare_case(ct, "threshold", cfg, lab)
    assert set(np.unique(pc.gbm)) <= {0, 1} and set(np.unique(pc.label)) <= {0, 1, 2}
    # the grid affine puts each structure's centre where it is in the original (within a voxel)
    for k in (1, 2):
        c_orig = ct.affine @ [*np.argwhere(lab.array == k).mean(0), 1]
        c_grid = pc.geometry.grid_affine @ [*np.argwhere(pc.label == k).mean(0), 1]
        assert np.linalg.norm(c_orig[:3] - c_grid[:3]) < 2.0
    back = restore_labels(onehot(pc.label, 3), pc.geometry)
    for k in (1, 2):
        a, b = back == k, lab.array == k
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8


def test_crop_box_contains_the_body_with_margin():
    ct, lab = phantom_like(shape=(60, 50, 20))
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(1.5, 2.0, 3.0), crop_margin_mm=6), lab)
    # the body ellipse spans i 6..24 and j 6..20 (every k); a 6 mm margin is ceil(6 / 1.5) = 4
    # voxels along i, 3 along j and 2 along k, plus one voxel of slack (the box is found on a copy
    # subsampled by 1 here; by 2 for volumes of 32+ voxels a side), clipped to the volume
    assert pc.geometry.crop_start == (6 - 5, 6 - 4, 0) and pc.geometry.crop_stop == (25 + 5, 21 + 4, 20)
    assert pc.shape == (29, 23, 20)  # target spacing = input spacing: no resampling
    np.testing.assert_array_equal(pc.label, lab.array[1:30, 2:25, :])
    # the crop's first voxel sits where voxel (1, 2, 0) of the input is
    np.testing.assert_allclose(pc.geometry.grid_affine @ [0, 0, 0, 1], ct.affine @ [1, 2, 0, 1])


def test_resampling_samples_where_the_grid_affine_says():
    """CT = a linear ramp in world x: every resampled voxel holds the ramp's value at the world
    position the grid affine gives it (align_corners=False sampling, as resample_affine assumes)."""
    shape, aff = (40, 12, 10), np.diag([1.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-20.0, 5.0, 0.0]
    x_mm = (aff @ np.vstack([np.indices(shape).reshape(3, -1), np.ones(np.prod(shape))]))[0].reshape(shape)
    ct = Volume((10.0 * x_mm).astype(np.float32), aff)  # -200 .. 190 HU: no air, so no crop
    cfg = PreprocessConfig(spacing=(3.0, 2.0, 3.0), window=(-400.0, 400.0))
    pc = prepare_case(ct, "otsu", cfg)
    assert pc.geometry.grid_shape == (13, 12, 10)  # 40 x 1 mm -> round(40 / 3) voxels of ~3.08 mm
    world = pc.geometry.grid_affine @ np.vstack([np.indices(pc.shape).reshape(3, -1), np.ones(np.prod(pc.shape))])
    expected = (10.0 * world[0] / 400.0).reshape(pc.shape)  # window (-400, 400) -> /400
    inner = (slice(1, -1), slice(None), slice(None))  # the outermost voxels clamp at the edge
    np.testing.assert_allclose(pc.ct[inner], expected[inner], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pc.geometry.grid_affine[:3, :3], axis=0), [40 / 13, 2.0, 3.0])


def test_resize_samples_voxel_centres():
    from globalmask.preprocess import resize

    ramp = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    # 8 -> 4 voxels: new voxel k sits at old index 2k + 0.5 (voxel centres, not corners, aligned)
    np.testing.assert_allclose(resize(ramp, (4, 2, 2), "linear")[:, 0, 0].numpy(), [0.5, 2.5, 4.5, 6.5])
    labels = np.repeat(np.array([0, 0, 1, 1, 2, 2, 3, 3], np.uint8), 4).reshape(8, 2, 2)
    assert resize(labels, (4, 2, 2), "nearest")[:, 0, 0].tolist() == [0, 1, 2, 3]
    assert resize(labels, (16, 2, 2), "nearest")[:, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]


def test_without_crop_the_whole_field_of_view_is_kept():
    ct, lab = phantom_like(shape=(60, 50, 20))
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(1.5, 2.0, 3.0), crop=False), lab)
    assert pc.geometry.crop_start == (0, 0, 0) and pc.geometry.crop_stop == (60, 50, 20) and pc.shape == (60, 50, 20)
    np.testing.assert_array_equal(pc.label, lab.array)
    # the id names the case in messages and caches
    assert pc.id == "case"
    assert prepare_case(ct, "threshold", PreprocessConfig(spacing=(1.5, 2.0, 3.0)), case_id="p7").id == "p7"


def test_label_of_another_shape_is_refused():
    from globalmask.errors import GeometryError

    ct, lab = phantom_like()
    bad = Volume(lab.array[:-1], lab.affine, "lab.nii.gz")
    with pytest.raises(GeometryError, match=r"label shape \(29, 26, 22\) differs from image shape \(30, 26, 22\)"):
        prepare_case(ct, "threshold", PreprocessConfig(spacing=(2.0, 2.0, 2.0)), bad)


def test_geometry_survives_its_serialised_form():
    """The preprocessing cache stores Geometry as JSON: the restored map must be identical."""
    import json

    from globalmask.preprocess import Geometry

    ct, lab = phantom_like(affine=ORIENTATIONS["PLI"])
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(2.5, 2.5, 2.5)), lab)
    back = Geometry.from_dict(json.loads(json.dumps(pc.geometry.to_dict())))
    for k in ("original_affine", "canonical_affine", "grid_affine"):
        assert getattr(back, k).dtype == np.float64
        np.testing.assert_array_equal(getattr(back, k), getattr(pc.geometry, k))
    assert back.crop_start == pc.geometry.crop_start and back.grid_shape == pc.geometry.grid_shape
    np.testing.assert_array_equal(
        restore_labels(onehot(pc.label, 3), back), restore_labels(onehot(pc.label, 3), pc.geometry)
    )


def test_preprocess_config_normalises_and_checks_its_values():
    from globalmask.errors import GeometryError
    from globalmask.validate import SettingError

    cfg = PreprocessConfig(spacing=[1, 0.8, 0.5], window=[-100, 200])  # sub-millimetre spacing is fine
    assert cfg.spacing == (1.0, 0.8, 0.5) and cfg.window == (-100.0, 200.0)
    assert all(isinstance(v, float) for v in (*cfg.spacing, *cfg.window))
    # the one spacing rule (preprocess.SPACING)
    for bad in ((0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0), (0.05, 1.0, 1.0), (1.0, 1.0, 25.0), ("a", 1, 1)):
        with pytest.raises(SettingError, match=r"^preprocess.spacing: got .*; expected 3 spacings in mm"):
            PreprocessConfig(spacing=bad)
    with pytest.raises(GeometryError, match="low < high"):
        PreprocessConfig(spacing=(1.0, 1.0, 1.0), window=(100.0, 100.0))
    for window in ((-100.0, 0.0, 200.0), (math.nan, 100.0), (-100.0, math.inf)):  # three values; not finite
        with pytest.raises(GeometryError, match="two finite numbers"):
            PreprocessConfig(spacing=(1.0, 1.0, 1.0), window=window)
    with pytest.raises(GeometryError, match=r"must be numbers, got \('a', 1\)"):
        PreprocessConfig(spacing=(1.0, 1.0, 1.0), window=("a", 1))
    for level, margin in ((-500.0, -1.0), (math.inf, 10.0), (-500.0, math.nan)):
        with pytest.raises(GeometryError, match=r"crop level and margin must be finite \(margin >= 0\)"):
            PreprocessConfig(spacing=(1.0, 1.0, 1.0), crop_level=level, crop_margin_mm=margin)


def test_resample_affine_keeps_extent():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    new = resample_affine(aff, (10, 10, 10), (5, 5, 5))
    # the outer voxel edges stay where they were: first voxel centre moves from 0 mm to 1 mm
    np.testing.assert_allclose(new @ [0, 0, 0, 1], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), [4, 4, 4])


def test_derive_spacing_is_median_in_ras_order():
    affs = [ORIENTATIONS["PLI"], np.diag([1.0, 1.0, 5.0, 1.0]), np.diag([3.0, 3.0, 3.0, 1.0])]
    # PLI: array axis 0 (1.5 mm) points P, axis 1 (2.0 mm) points L -> in RAS order (2.0, 1.5, 3.0)
    assert canonical_spacing(affs[0]) == (2.0, 1.5, 3.0)
    assert derive_spacing(affs) == (2.0, 1.5, 3.0)
    from globalmask.errors import GeometryError

    with pytest.raises(GeometryError, match=r"^cannot derive a target spacing from zero cases$"):
        derive_spacing([])


@needs_openkbp
def test_openkbp_case_round_trip_geometry():
    ct = read_volume(OPENKBP / "imagesTr" / "openkbp_002_0000.nii.gz")
    lab = read_volume(OPENKBP / "labelsTr" / "openkbp_002.nii.gz")
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(4.0, 4.0, 4.0)), lab)
    back = restore_labels(onehot(pc.label, 6), pc.geometry)
    assert back.shape == ct.shape
    for k in range(1, 6):
        a, b = back == k, lab.array == k
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85, k


# ----------------------------------------------------------------------------------------------
# restoring predictions: the fast restore (one axis at a time, only the box where a structure beats
# background) equals the full inversion (resample every class, arg-max, paste, reorient) bit for bit


def reference_restore(probabilities, geometry) -> np.ndarray:
    probs = torch.as_tensor(probabilities)
    crop_shape = tuple(b - a for a, b in zip(geometry.crop_start, geometry.crop_stop))
    best = resize(probs[0], crop_shape, "linear")
    arg = torch.zeros(crop_shape, dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        p = resize(probs[c], crop_shape, "linear")
        better = p > best
        best = torch.where(better, p, best)
        arg[better] = c
    canon = np.zeros(geometry.canonical_shape, dtype=np.uint8)
    canon[geometry.crop_slices] = arg.numpy()
    return from_canonical(canon, geometry.original_affine, order="F")


def _geometry(affine, spacing, shape=(30, 26, 22)):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (x - 15) ** 2 / 100 + (y - 13) ** 2 / 64 < 1
    ct = Volume(np.where(body, 40, -1000).astype(np.int16), affine)
    return prepare_case(ct, "threshold", PreprocessConfig(spacing=spacing)).geometry


def _blobs(grid, k, rng, strength=6.0):
    """Softmax of smooth logits: background nearly everywhere, a few structures in blobs."""
    logits = torch.zeros((k, *grid))
    logits[0] = 2.0
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij"))
    for c in range(1, k):
        centre = torch.as_tensor(rng.uniform(0, 1, 3) * np.array(grid), dtype=torch.float32)
        radius = float(rng.uniform(1.0, 3.0))
        d2 = ((idx - centre.view(3, 1, 1, 1)) ** 2).sum(0)
        logits[c] = strength * torch.exp(-d2 / (2 * radius**2))
    return F.softmax(logits, dim=0)


@pytest.mark.parametrize("name", list(ORIENTED_AFFINES))
@pytest.mark.parametrize("spacing", [(4.0, 3.0, 5.0), (1.0, 1.3, 2.2)])  # coarser and finer than the input
@pytest.mark.parametrize("by_axis", [2.0, 0.0])  # always one axis at a time; never (the default picks one)
def test_fast_restore_equals_full_inversion(name, spacing, by_axis, monkeypatch):
    monkeypatch.setattr(preprocess, "_BY_AXIS_BELOW", by_axis)
    geometry = _geometry(ORIENTED_AFFINES[name], spacing)
    rng = np.random.default_rng(0)
    grid = geometry.grid_shape
    cases = {
        "noise": F.softmax(torch.as_tensor(rng.normal(0, 2, (4, *grid)), dtype=torch.float32), dim=0),
        "blobs": _blobs(grid, 5, rng),
        "one voxel": F.softmax(
            torch.zeros((3, *grid)).index_put_(
                (torch.tensor([2]), *[torch.tensor([n // 2]) for n in grid]), torch.tensor(5.0)
            ),
            dim=0,
        ),
        "nothing": _blobs(grid, 3, rng, strength=1.0),  # background wins everywhere
        "ties": F.softmax(torch.as_tensor(rng.integers(0, 2, (3, *grid)), dtype=torch.float32), dim=0),
        "float64": F.softmax(torch.as_tensor(rng.normal(0, 1, (3, *grid))), dim=0),
    }
    for what, probs in cases.items():
        want = reference_restore(probs, geometry)
        got = restore_labels(probs, geometry)
        assert got.shape == geometry.original_shape and got.dtype == np.uint8 and got.flags["F_CONTIGUOUS"], what
        np.testing.assert_array_equal(got, want, err_msg=what)
        # one class at a time
        assert restore_labels(probs.numpy(), geometry, max_bytes=1).tobytes() == want.tobytes(), what
    assert not reference_restore(cases["nothing"], geometry).any()  # the cases test what they claim
    assert 0 < np.count_nonzero(reference_restore(cases["blobs"], geometry)) < 0.5 * np.prod(geometry.original_shape)


@pytest.mark.parametrize("by_axis", [2.0, 0.0])
def test_restore_resamples_the_classes_in_groups_that_fit_max_bytes(by_axis, monkeypatch):
    """A group holds max_bytes // (4 * voxels resampled per class) classes: the box when resampling
    one axis at a time, the whole crop otherwise; the label map does not depend on the grouping."""
    monkeypatch.setattr(preprocess, "_BY_AXIS_BELOW", by_axis)
    geometry = _geometry(ORIENTED_AFFINES["RAS"], (4.0, 3.0, 5.0))
    grid = geometry.grid_shape
    centre = tuple(torch.tensor([n // 2]) for n in grid)
    # one voxel of class 6
    probs = F.softmax(torch.zeros((7, *grid)).index_put_((torch.tensor([6]), *centre), torch.tensor(5.0)), dim=0)
    want = reference_restore(probs, geometry)
    crop_voxels = int(np.prod([b - a for a, b in zip(geometry.crop_start, geometry.crop_stop)]))
    sizes: list[int] = []
    real_resize, real_linear = preprocess.resize, preprocess._linear_axis

    def resize_spy(x, shape, mode):
        sizes.append(x.shape[0])
        return real_resize(x, shape, mode)

    def linear_spy(x, axis, n, *args):
        if axis == 3:  # the first of the three passes over a group
            sizes.append(x.shape[0])
        return real_linear(x, axis, n, *args)

    monkeypatch.setattr(preprocess, "resize", resize_spy)
    monkeypatch.setattr(preprocess, "_linear_axis", linear_spy)
    # three classes' worth of the whole crop: 7 classes go as 3 + 3 + 1 when the whole crop is resampled
    got = restore_labels(probs, geometry, max_bytes=3 * 4 * crop_voxels)
    np.testing.assert_array_equal(got, want)
    if by_axis == 0.0:
        assert sizes == [3, 3, 1]
    else:  # the box around one voxel is far smaller than the crop: all seven classes fit
        assert sizes == [7]
    assert (want == 6).sum() > 0


def test_fast_restore_on_a_phantom_case():
    ct, lab = make_phantom_case("headneck", 0, seed=1, shape=(48, 48, 40))
    # LAS
    ct = Volume(ct.array[::-1].copy(), ct.affine @ np.array([[-1, 0, 0, 47], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    lab = Volume(lab.array[::-1].copy(), ct.affine)
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(5.0, 5.0, 6.0)), lab)
    k = int(lab.array.max()) + 1
    logits = 4.0 * torch.as_tensor(np.stack([(pc.label == c) for c in range(k)]), dtype=torch.float32)
    logits += torch.as_tensor(np.random.default_rng(1).normal(0, 1, logits.shape), dtype=torch.float32)
    probs = F.softmax(logits, dim=0)
    want = reference_restore(probs, pc.geometry)
    np.testing.assert_array_equal(restore_labels(probs, pc.geometry), want)
    assert set(np.unique(want)) == set(range(k))


def test_one_axis_at_a_time_is_torch_trilinear():
    """The property the fast inversion rests on, checked directly (up- and down-sampling)."""
    x = F.softmax(torch.randn(3, 9, 14, 11, generator=torch.Generator().manual_seed(0)), dim=0)
    for size in [(20, 5, 11), (4, 31, 17), (9, 14, 12)]:
        want = F.interpolate(x[None], size=size, mode="trilinear", align_corners=False)[0]
        got = x
        for ax in (2, 1, 0):
            got = _linear_axis(got, 1 + ax, size[ax])
        assert torch.equal(got, want)


def test_touching_range():
    # 4 -> 8: output k samples input 0.5 k - 0.25 (clamped at 0) and its right neighbour
    assert _touching(0, 0, 4, 8) == (0, 3)  # k = 0, 1, 2 sample 0, 0.25, 0.75
    assert _touching(3, 3, 4, 8) == (5, 8)  # k = 5, 6, 7 sample 2.25, 2.75, 3.25
    assert _touching(2, 2, 5, 5) == (2, 3)  # same size: the identity
    # 8 -> 2: output 0 samples 1.5 (inputs 1, 2), output 1 samples 5.5 (inputs 5, 6)
    assert _touching(1, 2, 8, 2) == (0, 1)
    assert _touching(2, 5, 8, 2) == (0, 2)
    assert _touching(3, 4, 8, 2) == (0, 0)  # seen by no output voxel


# ----------------------------------------------------------------------------------------------
# the cheaper preprocessing gives exactly what the straightforward one gave: the GBM / label resize
# is a gather with torch's nearest-exact indices, the float32 crop is numpy's conversion for every dtype
# and byte order, and prepare_case equals the old step-by-step preprocessing bit for bit


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
            np.testing.assert_array_equal(
                gather_nearest(a, (2, 0, 0), (n_in, 2, 3), (n_out, 3, 2)), _old_nearest(a, sl, (n_out, 3, 2))
            )
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
@pytest.mark.parametrize("name", list(ORIENTED_AFFINES))
def test_crop_float32_is_numpys_conversion(dtype, name):
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 900, size=(23, 19, 17))
    arr = (raw > 0) if dtype == "?" else raw.astype(dtype)
    if np.dtype(dtype).kind in "iu":
        arr = np.clip(raw, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    canon, _ = to_canonical(np.asfortranarray(arr), ORIENTED_AFFINES[name])  # NIfTI arrays are Fortran-ordered
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
    ct_grid = resize(
        normalize_ct(np.ascontiguousarray(canon[sl], dtype=np.float32), config.window), grid, "linear"
    ).numpy()
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


@pytest.mark.parametrize("name", list(ORIENTED_AFFINES))
@pytest.mark.parametrize("spacing", [(4.0, 3.0, 5.0), (1.0, 1.3, 2.2), (3.0, 2.0, 1.5)])
@pytest.mark.parametrize("recipe", ["bone", "body"])
def test_prepare_case_equals_the_straightforward_preprocessing(name, spacing, recipe):
    ct, lab = phantom_ct_and_labels()
    aff = ORIENTED_AFFINES[name]
    config = PreprocessConfig(spacing=spacing)
    new = prepare_case(Volume(ct, aff), recipe, config, Volume(lab, aff))
    _assert_same(new, reference_prepare(Volume(ct, aff), recipe, config, Volume(lab, aff)))


@needs_openkbp
def test_prepare_case_on_a_real_ct_equals_the_straightforward_preprocessing():
    ct = read_volume(OPENKBP / "imagesTr" / "openkbp_002_0000.nii.gz")
    lab = read_volume(OPENKBP / "labelsTr" / "openkbp_002.nii.gz")
    config = PreprocessConfig(spacing=(6.0, 6.0, 6.0))
    _assert_same(prepare_case(ct, "bone", config, lab), reference_prepare(ct, "bone", config, lab))


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



@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_grid_shape_is_the_shape_prepare_case_makes(name):
    """The study's cost estimate sizes patches with grid_shape: it must be the network grid's shape."""
    ct, lab = phantom_like(shape=(60, 50, 20), affine=ORIENTATIONS[name])
    for cfg in (
        PreprocessConfig(spacing=(1.5, 2.0, 3.0), crop_margin_mm=6),
        PreprocessConfig(spacing=(2.5, 1.0, 4.0), crop=False),
    ):
        assert grid_shape(ct, cfg) == prepare_case(ct, "threshold", cfg, lab).geometry.grid_shape
    cropped, whole = (np.prod(grid_shape(ct, PreprocessConfig(spacing=(1.5, 2.0, 3.0), crop=c))) for c in (True, False))
    assert cropped < whole  # the crop is part of the shape: the body fills a fraction of this volume
