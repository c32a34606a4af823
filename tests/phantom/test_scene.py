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
