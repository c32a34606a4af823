"""Simulated scanner shifts: the HU transform, seeded noise per (shift, case), blur in millimetres."""

from __future__ import annotations

import numpy as np
import pytest

from globalmask.io import Volume
from globalmask.shift import DEFAULT_SHIFTS, ScannerShift


def _ct(values: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Volume:
    return Volume(values, np.diag([*spacing, 1.0]))


def test_scale_and_offset_are_applied_to_hounsfield_units():
    ct = _ct(np.array([-1000, 0, 40, 1000], dtype=np.int16).reshape(4, 1, 1))
    out = ScannerShift("lin", offset=-80.0, scale=0.9).apply(ct)
    np.testing.assert_array_equal(out.array.ravel(), [-980.0, -80.0, -44.0, 820.0])  # 0.9 * HU - 80
    assert out.array.dtype == np.float32
    np.testing.assert_array_equal(out.affine, ct.affine)


def test_input_is_never_modified_and_the_affine_is_a_copy():
    arr = np.full((6, 6, 6), 100.0, dtype=np.float32)
    ct = _ct(arr)
    out = ScannerShift("all", offset=10.0, scale=2.0, noise=5.0, blur_mm=1.0).apply(ct, seed=1, case_id="a")
    assert np.all(arr == 100.0)
    out.affine[0, 0] = 99.0
    assert ct.affine[0, 0] == 1.0


def test_noise_is_seeded_per_shift_and_case():
    ct = _ct(np.zeros((8, 8, 8), dtype=np.float32))
    shift = ScannerShift("n", noise=30.0)
    a1 = shift.apply(ct, seed=0, case_id="case_a").array
    a2 = shift.apply(ct, seed=0, case_id="case_a").array
    b = shift.apply(ct, seed=0, case_id="case_b").array
    other_seed = shift.apply(ct, seed=1, case_id="case_a").array
    other_name = ScannerShift("m", noise=30.0).apply(ct, seed=0, case_id="case_a").array
    np.testing.assert_array_equal(a1, a2)  # every model sees the same shifted scan
    for other in (b, other_seed, other_name):
        assert not np.array_equal(a1, other)
    assert abs(float(a1.std()) - 30.0) < 4.0 and abs(float(a1.mean())) < 4.0  # 512 draws of N(0, 30)


def test_blur_sigma_is_in_millimetres_per_axis():
    # a single bright voxel on a 2 x 1 x 1 mm grid: a 2 mm blur is 1 voxel along x, 2 voxels along y, z
    arr = np.zeros((21, 21, 21), dtype=np.float32)
    arr[10, 10, 10] = 1000.0
    out = ScannerShift("b", blur_mm=2.0).apply(_ct(arr, spacing=(2.0, 1.0, 1.0))).array
    assert out.sum() == pytest.approx(1000.0, rel=1e-4)  # blur keeps the total
    idx = np.arange(21) - 10.0

    def sd(profile):
        w = profile / profile.sum()
        return float(np.sqrt((w * idx**2).sum()))

    assert sd(out.sum(axis=(1, 2))) == pytest.approx(1.0, abs=0.02)
    assert sd(out.sum(axis=(0, 2))) == pytest.approx(2.0, abs=0.02)
    assert sd(out.sum(axis=(0, 1))) == pytest.approx(2.0, abs=0.02)


def test_default_levels_grow_in_noise_and_blur():
    names = [s.name for s in DEFAULT_SHIFTS]
    assert names == ["mild", "moderate", "severe"]
    assert [s.noise for s in DEFAULT_SHIFTS] == sorted(s.noise for s in DEFAULT_SHIFTS)
    assert [s.blur_mm for s in DEFAULT_SHIFTS] == sorted(s.blur_mm for s in DEFAULT_SHIFTS)
    assert ScannerShift.__dataclass_fields__.keys() == DEFAULT_SHIFTS[0].to_dict().keys()
