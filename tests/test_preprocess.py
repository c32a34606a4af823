from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from globalmask.augment import AugmentConfig, apply_intensity, apply_spatial, random_spatial_matrices
from globalmask.io import Volume, read_volume
from globalmask.preprocess import (
    PreprocessConfig,
    canonical_spacing,
    derive_spacing,
    from_canonical,
    prepare_case,
    resample_affine,
    restore_labels,
    to_canonical,
)

from .conftest import OPENKBP, needs_openkbp


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
    np.testing.assert_array_equal(restore_labels(onehot(pc.label, 3), back), restore_labels(onehot(pc.label, 3), pc.geometry))


def test_preprocess_config_normalises_and_checks_its_values():
    from globalmask.errors import GeometryError

    cfg = PreprocessConfig(spacing=[1, 0.8, 0.5], window=[-100, 200])  # sub-millimetre spacing is fine
    assert cfg.spacing == (1.0, 0.8, 0.5) and cfg.window == (-100.0, 200.0)
    assert all(isinstance(v, float) for v in (*cfg.spacing, *cfg.window))
    for bad in ((0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0)):
        with pytest.raises(GeometryError, match=r"three (finite )?positive numbers"):
            PreprocessConfig(spacing=bad)
    with pytest.raises(GeometryError, match="low < high"):
        PreprocessConfig(spacing=(1.0, 1.0, 1.0), window=(100.0, 100.0))


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


def test_spatial_augmentation_keeps_masks_binary_and_identity_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 2, 16, 16, 12)
    x[:, 0] = torch.randn(3, 16, 16, 12)
    x[:, 1, 4:10, 5:9, 3:8] = 1.0
    y = (x[:, 1:2] > 0).to(torch.uint8) * 3
    mats = random_spatial_matrices(3, (32.0, 32.0, 36.0), AugmentConfig(p_spatial=1.0), g)
    xa, ya = apply_spatial(x, y, mats, binary_channels=[1], background=torch.tensor([-1.0, 0.0]))
    assert set(torch.unique(xa[:, 1]).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(ya).tolist()) <= {0, 3}
    # the label follows the GBM exactly (same grid, same nearest-neighbour sampling)
    assert torch.equal((ya > 0), (xa[:, 1:2] > 0))
    eye = torch.eye(3).expand(3, 3, 3)
    xi, yi = apply_spatial(x, y, eye, binary_channels=[1])
    assert torch.allclose(xi, x, atol=1e-5) and torch.equal(yi, y)


def test_rotation_in_millimetres_preserves_physical_lengths():
    """A 90-degree turn of a rod in a non-cubic patch keeps its length in mm (not in patch units)."""
    from globalmask.augment import _rotation

    ext = torch.tensor([40.0, 20.0, 40.0])  # 20 x 10 x 20 voxels of 2 mm
    ang = torch.tensor([[0.0, 0.0, np.pi / 2]])
    m = torch.diag(1.0 / ext) @ _rotation(ang) @ torch.diag(ext)
    x = torch.zeros(1, 1, 20, 10, 20)
    x[0, 0, 6:14, 4:6, 9:11] = 1.0  # 8 voxels = 16 mm along axis 0
    xa, _ = apply_spatial(x, None, m, binary_channels=[0])
    idx = torch.nonzero(xa[0, 0])
    extent = (idx.max(0).values - idx.min(0).values + 1).tolist()
    assert extent == [2, 8, 2]  # now 16 mm along axis 1 (a rotation in patch units would give 4)


def test_intensity_augmentation_only_touches_ct_channels():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(4, 2, 8, 8, 8)
    x[:, 1, 2:5, 2:5, 2:5] = 1.0
    before = x[:, 1].clone()
    out = apply_intensity(x, [0], AugmentConfig(p_intensity=1.0, p_noise=1.0), g)
    assert torch.equal(out[:, 1], before)
    assert not torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))


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
