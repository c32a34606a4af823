"""Simulated scanner shifts and the realistic variation suite: each family changes what it should and
nothing else, on the CT's own grid, seeded per (variation, case), the input never modified."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from globalmask.errors import GlobalmaskError
from globalmask.io import Volume
from globalmask.masks import Recipe
from globalmask.shift import (
    AIR_HU,
    DEFAULT_SHIFTS,
    MAX_HU,
    MU_WATER_PER_MM,
    REFERENCE_VOXEL_MM,
    THORAX_CONTRAST,
    VARIATION_SUITE,
    Dose,
    IodineContrast,
    Kernel,
    Metal,
    Pose,
    ScannerShift,
    SliceThickness,
    TruncatedFOV,
    TubeVoltage,
    ct_noise,
    find_teeth,
    noise_on_grid,
    variation_from_dict,
)


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


# ----------------------------------------------------------------------------------------------
# the realistic suite


def crafted_head(shape=(40, 44, 16), spacing=(2.0, 2.0, 2.5), affine=None) -> tuple[Volume, Volume]:
    """Air, a soft-tissue head (40 HU) with a fat rim (-100 HU), a bone ring (1000 HU), contrast
    (300 HU) in a 'vessel', dense teeth (2500 HU) at the front (high y: anterior on a RAS grid)
    in slices 6..8, and a label map: 1 = vessel, 2 = a block of soft tissue."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    r2 = ((x - 20) / 16) ** 2 + ((y - 20) / 18) ** 2
    ct = np.full(shape, -1000.0, np.float32)
    ct[r2 < 1.0] = -100.0
    ct[r2 < 0.85] = 40.0
    ct[(r2 > 0.6) & (r2 < 0.7)] = 1000.0
    vessel = ((x - 14) ** 2 + (y - 16) ** 2 < 4) & (z > 1)
    ct[vessel] = 300.0
    teeth = (np.abs(x - 20) < 5) & (np.abs(y - 33) < 2) & (z >= 6) & (z <= 8)
    ct[teeth] = 2500.0
    lab = np.zeros(shape, np.uint8)
    lab[vessel] = 1
    lab[22:28, 14:20, 4:12] = 2
    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    return Volume(ct, aff), Volume(lab, aff.copy())


ALL_VARIATIONS = [*VARIATION_SUITE, *THORAX_CONTRAST]


@pytest.mark.parametrize("variation", ALL_VARIATIONS, ids=lambda v: v.name)
def test_every_variation_keeps_the_grid_the_input_and_is_seeded_per_case(variation):
    ct, lab = crafted_head()
    before, lab_before = ct.array.copy(), lab.array.copy()
    out, moved = variation.apply_pair(ct, lab, seed=3, case_id="a")
    assert out.shape == ct.shape and out.array.dtype == np.float32
    np.testing.assert_array_equal(out.affine, ct.affine)
    assert out.affine is not ct.affine
    np.testing.assert_array_equal(ct.array, before)  # the input is never modified
    np.testing.assert_array_equal(lab.array, lab_before)
    if variation.family != "fov":  # this 80 x 88 mm head fits inside every field of view of the suite
        assert not np.array_equal(out.array, before)
    again, _ = variation.apply_pair(ct, lab, seed=3, case_id="a")
    np.testing.assert_array_equal(again.array, out.array)  # every model sees the same varied scan
    if variation.moves_labels:
        assert moved is not lab and moved.shape == lab.shape and moved.array.dtype == lab.array.dtype
        np.testing.assert_array_equal(moved.affine, lab.affine)
    else:
        assert moved is lab  # an intensity change leaves the reference where it is
    assert variation_from_dict(variation.to_dict()) == variation
    if not variation.needs_label:
        np.testing.assert_array_equal(variation.apply(ct, seed=3, case_id="a").array, out.array)


def test_suite_names_are_unique_and_families_have_two_or_three_levels():
    names = [v.name for v in ALL_VARIATIONS]
    assert len(set(names)) == len(names)
    assert all(n.startswith(f"{v.family}-") for n, v in zip(names, ALL_VARIATIONS))
    counts = Counter(v.family for v in ALL_VARIATIONS)
    assert set(counts) == {"voltage", "dose", "kernel", "thickness", "metal", "fov", "pose", "contrast"}
    assert all(2 <= c <= 3 for c in counts.values())
    assert not any(v.needs_label for v in VARIATION_SUITE)  # the default suite runs on any dataset


@pytest.mark.parametrize(
    "variation",
    [v for v in VARIATION_SUITE if v.family in ("dose", "metal") or getattr(v, "added_noise_hu", 0) > 0],
    ids=lambda v: v.name,
)
def test_random_variations_differ_between_cases_and_seeds(variation):
    ct, _ = crafted_head()
    a = variation.apply(ct, seed=0, case_id="a").array
    assert not np.array_equal(a, variation.apply(ct, seed=0, case_id="b").array)
    assert not np.array_equal(a, variation.apply(ct, seed=1, case_id="a").array)


def test_old_scanner_shift_dicts_still_read_and_pair():
    for s in DEFAULT_SHIFTS:
        assert variation_from_dict(s.to_dict()) == s
        assert s.family == "scanner" and s.level == s.name
    assert DEFAULT_SHIFTS[1].to_dict() == {
        "name": "moderate",
        "offset": -80.0,
        "scale": 0.9,
        "noise": 30.0,
        "blur_mm": 1.0,
    }
    ct, lab = crafted_head()
    out, same = DEFAULT_SHIFTS[0].apply_pair(ct, lab, seed=0, case_id="x")
    assert same is lab
    np.testing.assert_array_equal(out.array, DEFAULT_SHIFTS[0].apply(ct, seed=0, case_id="x").array)
    with pytest.raises(GlobalmaskError, match="unknown variation family 'magic'"):
        variation_from_dict({"family": "magic", "level": "x"})
    with pytest.raises(GlobalmaskError, match="does not match"):
        variation_from_dict({**VARIATION_SUITE[0].to_dict(), "name": "voltage-other"})
    with pytest.raises(GlobalmaskError, match=r"no parameter\(s\) \['kvp'\]"):
        variation_from_dict({"family": "voltage", "level": "x", "kvp": 80})
    with pytest.raises(GlobalmaskError, match="grid"):
        DEFAULT_SHIFTS[0].apply_pair(ct, Volume(lab.array[:-1], lab.affine))


def test_voltage_changes_bone_and_contrast_and_leaves_soft_tissue_air_and_water():
    hu = np.array([-1024, -1000, -100, 0, 40, 100, 101, 300, 400, 750, 1100, 2000], np.float32)
    ct = _ct(hu.reshape(-1, 1, 1))
    low = TubeVoltage("80kVp", iodine_ratio=1.65, bone_ratio=1.30).apply(ct).array.ravel()
    np.testing.assert_array_equal(low[:6], hu[:6])  # <= 100 HU: exactly unchanged
    # above: 100 + (HU - 100) r, r = 1.65 up to 400 HU, 1.30 from 1100 HU, linear between
    np.testing.assert_allclose(
        low[6:], [101.65, 430.0, 595.0, 100 + 650 * (1.65 - 0.35 * 0.5), 1400.0, 100 + 1900 * 1.3], rtol=1e-5
    )
    assert np.all(np.diff(low) > 0)  # monotone: the order of voxels is kept
    high = TubeVoltage("140kVp", iodine_ratio=0.87, bone_ratio=0.93).apply(ct).array.ravel()
    np.testing.assert_array_equal(high[:6], hu[:6])
    assert np.all(high[6:] < hu[6:]) and np.all(np.diff(high) > 0)


def test_dose_noise_has_the_stated_std_a_zero_mean_and_a_ramp_shaped_spectrum():
    flat = Volume(np.full((64, 64, 6), 40.0, np.float32), np.diag([*REFERENCE_VOXEL_MM, 1.0]))
    dose = Dose("quarter", dose_fraction=0.25)
    assert dose.noise_hu == pytest.approx(12.0 * np.sqrt(3.0))
    noise = dose.apply(flat, case_id="a").array - 40.0
    assert float(noise.std()) == pytest.approx(dose.noise_hu, rel=1e-3)  # at the reference voxel: as stated
    assert abs(float(noise.mean())) < 1.0
    # radially averaged power per slice: near zero at low frequency, rising towards the NPS peak (0.25 /mm)
    power = (np.abs(np.fft.fft2(noise, axes=(0, 1))) ** 2).mean(axis=2)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64, 1.0), np.fft.fftfreq(64, 1.0), indexing="ij"))
    low, peak, high = power[(f > 0) & (f < 0.06)].mean(), power[(f > 0.2) & (f < 0.3)].mean(), power[f > 0.45].mean()
    assert low < 0.35 * peak and high < peak  # white noise would give ratios of 1
    coarse = Volume(np.full((32, 32, 4), 40.0, np.float32), np.diag([5.0, 5.0, 2.5, 1.0]))
    assert noise_on_grid(10.0, coarse.affine) == pytest.approx(2.0)  # 25x the voxel volume: 1/5 the std
    assert float(dose.apply(coarse).array.std()) == pytest.approx(dose.noise_hu / 5.0, rel=1e-3)


def test_kernel_smooths_or_sharpens_in_plane_only_and_keeps_flat_regions():
    ct = np.full((32, 32, 6), 40.0, np.float32)
    ct[16:, :, :] = 1000.0  # an in-plane edge
    ct[:, :, 3:] += 100.0  # and an edge along z, which a kernel must not touch
    vol = Volume(ct, np.diag([0.5, 0.5, 2.5, 1.0]))
    smooth = Kernel("smooth", mtf50_per_mm=0.25).apply(vol).array
    np.testing.assert_allclose(smooth[4, 8], ct[4, 8], atol=0.05)  # far from the edge: unchanged, in every slice
    assert np.abs(np.diff(smooth[:, 8, 0])).max() < 0.5 * 960.0  # the step is spread over more than a voxel
    np.testing.assert_allclose(smooth[:, :, 0], smooth[:, :, 2], atol=1e-3)  # slices are filtered independently
    sharp = Kernel("sharp", mtf50_per_mm=0.6).apply(vol).array
    assert sharp[16:, 8, 0].max() > 1010.0 and sharp[:16, 8, 0].min() < 30.0  # overshoot on both sides of the edge
    noisy = (
        Kernel("sharp", mtf50_per_mm=0.6, added_noise_hu=25.0)
        .apply(Volume(np.zeros((32, 32, 4), np.float32), np.diag([*REFERENCE_VOXEL_MM, 1.0])))
        .array
    )
    assert float(noisy.std()) == pytest.approx(25.0, rel=1e-3)


def test_slice_thickness_averages_along_z_only_and_keeps_the_grid():
    ct = np.full((6, 6, 40), 40.0, np.float32)
    ct[2:4, 2:4, :] = 1000.0  # constant along z: untouched
    ct[0, 0, 20] = 1000.0  # a 1 mm slab in one column: spread over about 5 mm
    vol = Volume(ct, np.diag([1.0, 1.0, 1.0, 1.0]))
    out = SliceThickness("5mm", thickness_mm=5.0).apply(vol).array
    np.testing.assert_allclose(out[1:, 1:], ct[1:, 1:], atol=1e-3)
    column = out[0, 0] - 40.0
    assert column.max() < 0.4 * 960.0 and (column > 1.0).sum() >= 5
    assert column.sum() == pytest.approx(960.0, rel=0.1)  # the slab's HU x mm is kept
    # not thicker than the grid
    assert SliceThickness("thin", thickness_mm=1.0).apply(vol).array.tolist() == ct.tolist()


def test_metal_adds_streaks_around_the_teeth_only():
    ct, _ = crafted_head()
    metal = Metal("2-fillings", n_inserts=2, radius_mm=2.0, height_mm=4.0)
    teeth = find_teeth(ct.array, ct.affine)
    # the dense block, in mm
    assert abs(teeth[0] - 40.0) < 6.0 and abs(teeth[1] - 66.0) < 3.0 and 15.0 <= teeth[2] <= 20.0
    out = metal.apply(ct, case_id="a").array
    diff = out - ct.array
    changed = np.flatnonzero(np.abs(diff).max(axis=(0, 1)) > 0)
    assert changed.min() >= 5 and changed.max() <= 9  # only the slices of the inserts (height 4 mm around slice 7)
    centres, slices = metal.insert_centres(ct.array, ct.affine)
    assert len(centres) == 2 and 7 in slices
    k = 7
    assert all(out[int(ci), int(cj), k] == MAX_HU for ci, cj in centres)  # the inserts saturate the 12-bit scale
    soft = (ct.array[:, :, k] == 40.0)
    dist = np.hypot(*np.meshgrid(np.arange(40) - centres[0][0], np.arange(44) - centres[0][1], indexing="ij")) * 2.0
    near = np.abs(diff[:, :, k])[soft & (dist > 4) & (dist < 20)]
    assert np.median(near) > 20.0 and near.max() > 200.0  # streaks of hundreds of HU in the soft tissue nearby
    assert np.all(diff[~ndimage.binary_dilation(ct.array > -500)] == 0)  # the air around the head is left alone


def test_truncated_fov_empties_only_what_lies_outside_the_cylinder():
    ct, _ = crafted_head()
    fov = TruncatedFOV("40mm", diameter_mm=40.0, offset_mm=0.0)
    inside = fov.inside(ct.array, ct.affine)
    out = fov.apply(ct).array
    np.testing.assert_array_equal(out[inside], ct.array[inside])
    assert np.all(out[~inside] == AIR_HU)
    assert np.all(inside == inside[:, :, :1])  # a cylinder along z
    assert inside[:, :, 0].sum() == pytest.approx(np.pi * 10**2, rel=0.1)  # radius 20 mm on a 2 mm grid: ~314 voxels
    np.testing.assert_array_equal(TruncatedFOV("big", diameter_mm=1000.0).apply(ct).array, ct.array)


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 2.5, 1.0]), np.diag([-2.0, -2.0, 2.5, 1.0])], ids=["RAS", "LPS"])
def test_pose_translation_moves_ct_and_labels_in_world_mm(affine):
    ct, lab = crafted_head(affine=affine)
    out, moved = Pose("shift", translation_mm=(4.0, 0.0, 0.0)).apply_pair(ct, lab)
    step = 2 if affine[0, 0] > 0 else -2  # +4 mm in world x is +-2 voxels along the first axis
    src = slice(2, 38) if step > 0 else slice(4, 40)
    dst = slice(4, 40) if step > 0 else slice(2, 38)
    np.testing.assert_allclose(out.array[dst], ct.array[src], atol=1e-3)
    np.testing.assert_array_equal(moved.array[dst], lab.array[src])


def test_pose_rotation_keeps_labels_on_the_ct_and_binary():
    ct, lab = crafted_head()
    out, moved = Pose("tilt", rotation_deg=(10.0, 4.0, 8.0), translation_mm=(2.0, -3.0, 1.0)).apply_pair(ct, lab)
    assert moved.array.dtype == np.uint8 and set(np.unique(moved.array)) <= {0, 1, 2}
    assert (moved.array == 1).sum() == pytest.approx((lab.array == 1).sum(), rel=0.25)
    vessel, contrast = moved.array == 1, np.abs(out.array - 300.0) < 150.0
    assert (vessel & contrast).sum() / vessel.sum() > 0.8  # the moved vessel label sits on the moved vessel
    assert not np.array_equal(moved.array, lab.array)


def test_contrast_shifts_only_the_labelled_blood_pool():
    ct, lab = crafted_head()
    contrast = IodineContrast("plus", hu=150.0, label_values=(1,))
    with pytest.raises(GlobalmaskError, match="use apply_pair"):
        contrast.apply(ct)
    out, same = contrast.apply_pair(ct, lab)
    assert same is lab
    diff = out.array - ct.array
    pool = (lab.array == 1) & (ndimage.uniform_filter(ct.array, 3) > 100.0)
    assert pool.sum() > 0
    np.testing.assert_array_equal(diff[pool], 150.0)
    np.testing.assert_array_equal(diff[~pool], 0.0)  # the soft-tissue block (label 2) and everything else stay


def test_the_gbm_recomputed_from_the_varied_ct_changes_where_it_should():
    ct, lab = crafted_head()
    # dense soft tissue: 200 HU, below bone:250
    ct.array[(ct.array == 40.0) & (np.arange(44)[None, :, None] < 8)] = 200.0
    low = TubeVoltage("80kVp", iodine_ratio=1.65, bone_ratio=1.30).apply(ct)
    bone, threshold, pct = Recipe.parse("bone"), Recipe.parse("threshold"), Recipe.parse("percentile")
    gained = bone(low.array, low.affine) & ~bone(ct.array, ct.affine)
    assert gained.any() and np.all(ct.array[gained] == 200.0)  # 200 -> 265 HU: a fixed bone level moves with kVp
    np.testing.assert_array_equal(threshold(low.array, low.affine), threshold(ct.array, ct.affine))  # soft tissue fixed
    np.testing.assert_array_equal(pct(low.array, low.affine), pct(ct.array, ct.affine))  # ranks kept
    cut = TruncatedFOV("40mm", diameter_mm=40.0, offset_mm=0.0).apply(ct)
    body_before, body_after = Recipe.parse("body")(ct.array, ct.affine), Recipe.parse("body")(cut.array, cut.affine)
    assert body_after.sum() < body_before.sum() and not np.any(body_after & ~body_before)
    moved, _ = Pose("shift", translation_mm=(4.0, 0.0, 0.0)).apply_pair(ct, lab)
    np.testing.assert_array_equal(bone(moved.array, moved.affine)[4:], bone(ct.array, ct.affine)[2:38])


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of shift.py asked for


def test_ct_noise_spectrum_peaks_at_the_stated_frequency():
    """NPS(f) = f exp(-f^2 / (2 p^2)): at 2p it is 2 exp(-2) / exp(-1/2) = 0.45 of its peak at p."""
    aff = np.diag([0.25, 0.25, 2.5, 1.0])  # Nyquist 2 /mm: the spectrum is seen well past its peak
    noise = ct_noise((128, 128, 4), aff, np.random.default_rng(0), 10.0, 0.5)
    assert float(noise.std()) == pytest.approx(10.0, rel=1e-4)
    power = (np.abs(np.fft.fft2(noise, axes=(0, 1))) ** 2).mean(axis=2)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(128, 0.25), np.fft.fftfreq(128, 0.25), indexing="ij"))
    ring = {x: power[(f > x - 0.05) & (f < x + 0.05)].mean() for x in (0.25, 0.5, 1.0)}
    assert ring[1.0] / ring[0.5] == pytest.approx(2 * np.exp(-2) / np.exp(-0.5), abs=0.05)
    assert ring[0.25] / ring[0.5] == pytest.approx(0.5 * np.exp(-1 / 8) / np.exp(-0.5), abs=0.07)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.5), (1.0, 1.0, 2.5)], ids=["2mm", "1mm"])
def test_metal_with_an_ideal_beam_adds_the_insert_alone(spacing):
    """No beam hardening and no photon starvation: the streaks vanish and what is added is the insert
    itself, mu / mu_water x 1000 HU over its cross-section (pi r^2), centred where it was placed, on a
    grid coarser than the simulation's (2 mm) as on one as fine (1 mm)."""
    ct, _ = crafted_head(spacing=spacing)
    metal = Metal("ideal", n_inserts=1, radius_mm=2.0, mu_per_mm=0.25 * MU_WATER_PER_MM, beam_hardening=0.0,
                  photons=1e12)
    diff = (metal.apply(ct, case_id="a").array - ct.array)[:, :, 7]
    ((ci, cj),), _ = metal.insert_centres(ct.array, ct.affine)
    ci, cj = int(ci), int(cj)
    window = diff[ci - 4:ci + 5, cj - 4:cj + 5]
    voxel_mm2 = spacing[0] * spacing[1]
    assert float(window.sum()) * voxel_mm2 / 250.0 == pytest.approx(np.pi * 2.0**2, rel=0.05)  # HU x mm^2 / 250 HU
    assert diff[ci, cj] > 200.0
    weight = np.clip(window, 0.0, None)
    ia, ib = np.indices(window.shape)
    assert abs(float((weight * ia).sum() / weight.sum()) - 4) < 0.02
    assert abs(float((weight * ib).sum() / weight.sum()) - 4) < 0.02
    far = np.hypot(*(np.indices(diff.shape) - np.array([ci, cj])[:, None, None])) * spacing[0] > 8.0
    assert np.abs(diff[far]).max() < 5.0  # everything else unchanged but for interpolation ripple


def test_pose_rotation_is_in_degrees_about_the_body_centre():
    ct = np.full((21, 21, 5), AIR_HU, np.float32)
    ct[5:16, 10, :] = 40.0  # a bar along x through the centre of the grid
    out = Pose("yaw", rotation_deg=(0.0, 0.0, 90.0)).apply(Volume(ct, np.eye(4))).array
    np.testing.assert_allclose(out[10, 5:16], 40.0, atol=1e-3)  # now along y
    assert np.all(out[[5, 6, 7, 8, 9, 11, 12, 13, 14, 15], 10] == AIR_HU)


def test_pose_refuses_what_is_not_three_finite_numbers_naming_it():
    with pytest.raises(GlobalmaskError) as err:
        Pose("bad", translation_mm=(1.0, float("nan"), 0.0))
    assert str(err.value) == "variation 'pose-bad': translation_mm must be three finite numbers, got (1.0, nan, 0.0)"
    with pytest.raises(GlobalmaskError, match=r"rotation_deg must be three finite numbers, got \(1.0, 2.0\)"):
        Pose("short", rotation_deg=(1.0, 2.0))
