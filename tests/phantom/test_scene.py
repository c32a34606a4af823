"""phantom/scene.py: per-case grid and pose (spacing, origin, field of view) and the scanner model (HU classes,
noise)."""

from __future__ import annotations

import numpy as np
import pytest

from globalmask.phantom import (
    HEADNECK_LABELS,
    make_phantom_case,
)

from .conftest import _case, _labels, _volume_ml


def test_spacing_and_origin_vary_per_case_but_field_of_view_does_not_depend_on_grid():
    affines = [_case("headneck", i)[0].affine for i in range(4)]
    spacings = {tuple(np.round(np.diag(a)[:3], 6)) for a in affines}
    origins = {tuple(np.round(a[:3, 3], 3)) for a in affines}
    assert len(spacings) == 4 and len(origins) == 4
    for a in affines:  # in-plane isotropic, slice spacing separate, ranges scaled by 64/48
        sx, sy, sz = np.diag(a)[:3]
        assert sx == pytest.approx(sy)
        assert 3.9 * 64 / 48 - 1e-6 <= sx <= 4.6 * 64 / 48 + 1e-6
        assert 3.7 * 64 / 48 - 1e-6 <= sz <= 4.5 * 64 / 48 + 1e-6
    # the same case on two grids covers the same field of view and holds the same anatomy (in mL)
    small, big = _case("headneck", 1)[1], make_phantom_case("headneck", 1, 0, (64, 64, 64))[1]
    fov_small = np.diag(small.affine)[:3] * 48
    fov_big = np.diag(big.affine)[:3] * 64
    np.testing.assert_allclose(fov_small, fov_big)
    for name in ("brainstem", "mandible", "parotid_left"):
        v = HEADNECK_LABELS[name]
        assert _volume_ml(small, v) == pytest.approx(_volume_ml(big, v), rel=0.2), name


def _air_hu(ct) -> float:
    a = ct.array
    corners = [a[:3, :3], a[:3, -3:], a[-3:, :3], a[-3:, -3:]]
    return float(np.mean([c.mean() for c in corners]))


@pytest.mark.parametrize("kind", ["headneck", "thorax"])
def test_tissue_classes_survive_the_scanner_transform(kind):
    labels = _labels(kind, False)
    soft = (
        ["brainstem", "spinal_cord", "parotid_left", "parotid_right"]
        if kind == "headneck"
        else ["heart", "aorta", "spinal_cord"]
    )
    for i in range(8):
        ct, lab = _case(kind, i)
        assert _air_hu(ct) < -700, (kind, i)
        for name in soft:
            values = ct.array[lab.array == labels[name]]
            assert values.mean() > -300, (kind, i, name)
            assert np.mean(values > -300) > 0.9, (kind, i, name)  # a -300 HU GBM keeps them
        if kind == "headneck":
            assert np.median(ct.array[lab.array == labels["mandible"]]) > 250, i
        else:
            for name in ("lung_left", "lung_right"):
                assert ct.array[lab.array == labels[name]].mean() < -500, (i, name)


def test_organ_intensity_is_unreliable_across_scanners():
    for kind, name in (("headneck", "parotid_left"), ("thorax", "spinal_cord")):
        means = [
            float(_case(kind, i)[0].array[_case(kind, i)[1].array == _labels(kind, False)[name]].mean())
            for i in range(8)
        ]
        assert max(means) - min(means) > 30, (kind, name, means)


def test_noise_and_blur_differ_between_cases():
    # air outside the body is flat -1000 before the scanner: its spread is the scanner noise
    stds = [float(_case("headneck", i)[0].array[:4, :4].std()) for i in range(6)]
    assert max(stds) > 1.5 * min(stds)


def test_the_scanner_scales_offsets_blurs_adds_noise_clips_and_rounds():
    from globalmask.phantom.scene import scan

    rng = np.random.default_rng(0)
    ideal = {"blur": 0.0, "scale": 2.0, "offset": 10.0, "noise": 0.0}
    hu = np.array([[[100.0, 0.6, 5000.0, -5000.0]]], np.float32)
    out = scan(hu.copy(), ideal, rng)
    assert out.dtype == np.int16 and out.tolist() == [[[210, 11, 3071, -1024]]]
    spot = np.zeros((9, 9, 9), np.float32)
    spot[4, 4, 4] = 1000.0
    flat = {"blur": 0.0, "scale": 1.0, "offset": 0.0, "noise": 0.0}
    assert scan(spot.copy(), flat | {"blur": 0.05}, rng)[4, 4, 4] == 1000  # at most 0.05 voxel: no blur
    # a 1-voxel Gaussian spreads the spot: its peak keeps 1 / (2 pi)^1.5 of it
    assert scan(spot.copy(), flat | {"blur": 1.0}, rng)[4, 4, 4] == pytest.approx(1000 / (2 * np.pi) ** 1.5, abs=1)
    noisy = scan(np.zeros((32, 32, 32), np.float32), flat | {"noise": 20.0}, rng).astype(float)
    assert noisy.std() == pytest.approx(20.0, rel=0.05) and abs(noisy.mean()) < 0.5


def _scene(shape=(16, 20, 12), seed=3):
    from globalmask.phantom.scene import Scene
    from globalmask.phantom.shapes import Draw

    draw = Draw(np.random.default_rng(seed))
    scene = Scene("thorax", shape, draw)
    scene.make_fields(draw)
    return scene


def test_the_grid_centre_lies_at_the_field_of_view_centre():
    scene = _scene()
    centre = (np.array(scene.shape) - 1) / 2.0
    assert (scene.affine @ [*centre, 1.0])[:3] == pytest.approx(scene.fov_centre)
    assert np.diag(scene.affine)[:3] == pytest.approx(scene.spacing)


def test_a_box_covers_every_voxel_whose_anatomy_lies_in_it_and_stays_on_the_grid():
    """On a grid of three different sizes: each voxel whose anatomy coordinates fall in the box is in the block;
    a box around everything is the whole grid."""
    scene = _scene()
    mid = np.array([c[8, 10, 6] for c in scene.q])  # the anatomy at the grid's middle
    lo, hi = mid + [-150.0, -3.0, -5.0], mid + [150.0, 3.0, 5.0]  # long along x
    inside = np.all([(scene.q[i] >= lo[i]) & (scene.q[i] <= hi[i]) for i in range(3)], axis=0)
    assert inside.any()
    block = scene.box(lo, hi)
    assert block is not None
    outside = inside.copy()
    outside[block] = False
    assert not outside.any()
    assert scene.box([-1e4] * 3, [1e4] * 3) == tuple(slice(0, n) for n in scene.shape)


def test_a_smooth_field_of_unit_normal_coefficients_has_unit_variance_at_every_voxel():
    """The field is linear in its c^3 coefficients: its variance at a voxel, for independent unit normal ones, is
    the sum over the coefficients of the squared field of that coefficient alone, 1 everywhere (the weights are
    normalised per voxel), edges and corners included."""
    scene = _scene()
    c = 4
    variance = np.zeros(scene.shape)
    for k in range(c**3):
        coef = np.zeros(c**3, np.float32)
        coef[k] = 1.0
        variance += scene._field(coef.reshape(c, c, c)).astype(float) ** 2
    np.testing.assert_allclose(variance, 1.0, rtol=1e-5)


def test_the_smooth_fields_bumps_lie_on_a_lattice_spanning_the_field_of_view():
    """Five bumps per axis at -0.55, -0.275, 0, 0.275, 0.55 of the field of view from its centre: one coefficient
    alone peaks at its lattice point (within a voxel or so), the outer ones, beyond the grid, at its edge voxels."""
    from globalmask.phantom.scene import Scene
    from globalmask.phantom.shapes import Draw

    scene = Scene("thorax", (40, 48, 32), Draw(np.random.default_rng(3)))
    c = 5
    for k, at in enumerate(np.linspace(-0.55, 0.55, c)):
        coef = np.zeros((c, c, c), np.float32)
        coef[k, k, k] = 1.0
        field = scene._field(coef)
        peak = np.unravel_index(np.argmax(field), field.shape)
        where = np.array([scene.axes[i][peak[i]] for i in range(3)])
        if abs(at) < 0.5:
            np.testing.assert_allclose((where - scene.fov_centre) / scene.fov, at, atol=0.04)
        else:
            assert peak == ((0, 0, 0) if at < 0 else tuple(n - 1 for n in scene.shape))
        assert field.max() == pytest.approx(0.5, abs=0.05)  # shared with its neighbours: about half at its peak
