"""phantom thorax-varied: the thorax subjects under a per-case acquisition (contrast phase, kVp, dose, kernel).

Labels and affines are the thorax kind's bit for bit (only intensities differ); the drawn levels
stay in their stated (cited) ranges and vary across cases; air and soft tissue stay calibrated;
the dataset says which variant it is. The thorax kind's own output is pinned in test_case.py.
"""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from globalmask.errors import GlobalmaskError
from globalmask.io import read_volume
from globalmask.phantom import (
    THORAX_CHAMBER_LABELS,
    THORAX_LABELS,
    make_phantom_case,
    make_phantom_dataset,
    phantom_labels,
)
from globalmask.phantom import thorax as th
from globalmask.preprocess import resize
from globalmask.shift import ct_noise

from .conftest import _case

SHAPE = (40, 40, 40)


def _acq(index: int, seed: int = 0) -> th.Acquisition:
    return th.draw_acquisition(th.acquisition_stream(seed, index))


def test_same_arguments_same_case_and_seeds_differ():
    a_ct, a_lab = make_phantom_case("thorax-varied", 3, 7, (24, 24, 24))
    b_ct, b_lab = make_phantom_case("thorax-varied", 3, 7, (24, 24, 24))
    np.testing.assert_array_equal(a_ct.array, b_ct.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    np.testing.assert_array_equal(a_ct.affine, b_ct.affine)
    assert _acq(3, 7) == _acq(3, 7)
    assert [_acq(i, 0) for i in range(4)] != [_acq(i, 1) for i in range(4)]


@pytest.mark.parametrize("chambers", [False, True])
def test_labels_and_geometry_are_the_thorax_kinds_only_intensities_differ(chambers):
    for i in range(4):
        ct, lab = _case("thorax", i, shape=SHAPE, chambers=chambers)
        ct_v, lab_v = _case("thorax-varied", i, shape=SHAPE, chambers=chambers)
        np.testing.assert_array_equal(lab_v.array, lab.array)
        np.testing.assert_array_equal(ct_v.affine, ct.affine)
        np.testing.assert_array_equal(lab_v.affine, ct.affine)
        assert ct_v.shape == ct.shape == SHAPE
        assert ct_v.array.dtype == np.int16 and lab_v.array.dtype == np.uint8
        assert nib.aff2axcodes(ct_v.affine) == ("R", "A", "S")
        assert ct_v.array.min() >= -1024 and ct_v.array.max() <= 3071
        assert not np.array_equal(ct_v.array, ct.array)
    assert phantom_labels("thorax-varied", chambers) == (THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS)


def test_drawn_levels_lie_in_their_stated_ranges_and_every_option_occurs():
    draws = [_acq(i) for i in range(600)]
    phases = [a.phase for a in draws]
    for name, weight in th.PHASES:
        assert abs(phases.count(name) / len(draws) - weight) < 0.07, name
    assert {a.kvp for a in draws} == {v for v, _ in th.VOLTAGES}
    assert {a.kernel for a in draws} == {k for k, _ in th.KERNELS}
    for a in draws:
        lo, hi = th.BLOOD_UNENHANCED_HU
        assert lo <= a.blood_unenhanced <= hi
        if a.phase == "non-contrast":
            assert a.blood_l == a.blood_r == a.svc_hu == a.blood_unenhanced
            assert th.MYOCARDIUM_UNENHANCED_HU[0] <= a.myo <= th.MYOCARDIUM_UNENHANCED_HU[1]
            assert a.liver == th.LIVER_HU
        else:
            lo, hi = th.BLOOD_LEFT_HU[a.phase]
            assert lo <= a.blood_l <= hi
            assert a.myo > th.MYOCARDIUM_UNENHANCED_HU[0] and a.liver > th.LIVER_HU
        if a.phase == "arterial":
            assert th.BLOOD_RIGHT_ARTERIAL_HU[0] <= a.blood_r <= th.BLOOD_RIGHT_ARTERIAL_HU[1]
            assert th.SVC_ARTERIAL_HU[0] <= a.svc_hu <= th.SVC_ARTERIAL_HU[1]
        assert 35.0 <= a.blood_l <= 400.0  # the blood pool at 120 kVp over all phases
        assert th.DOSE_RANGE[0] <= a.dose_fraction <= th.DOSE_RANGE[1]
        assert abs(a.offset_hu) <= th.CALIBRATION_HU
        assert 3.0 < a.noise_hu() < 30.0


def test_blood_pool_in_the_image_follows_the_draw_and_varies_across_cases():
    seen = []
    for i in range(8):
        ct, lab = _case("thorax-varied", i, shape=SHAPE, chambers=True)
        a = _acq(i)
        pool = ndimage.binary_erosion(lab.array == THORAX_CHAMBER_LABELS["heart_lv"])  # inside the wall
        got = float(np.median(ct.array[pool]))
        want = a.at_kvp(a.blood_l) + a.offset_hu
        assert abs(got - want) < 25.0, (i, a.phase, got, want)
        seen.append(got)
    assert max(seen) - min(seen) > 200.0  # unenhanced to arterial within 8 cases (seed 0)
    assert len({_acq(i).phase for i in range(8)}) == 3


def test_air_and_soft_tissue_stay_calibrated():
    for i in range(6):
        ct, lab = _case("thorax-varied", i, shape=SHAPE)
        assert abs(float(np.median(ct.array[:3, :3, :])) + 1000.0) <= 8.0  # air around the body
        cord = float(np.median(ct.array[lab.array == THORAX_LABELS["spinal_cord"]]))
        assert 25.0 <= cord <= 55.0  # 38 HU cord: neither contrast nor kVp moves it
        lung = float(np.median(ct.array[np.isin(lab.array, [THORAX_LABELS["lung_left"], THORAX_LABELS["lung_right"]])]))
        assert -930.0 <= lung <= -770.0


def test_tube_voltage_moves_only_what_is_above_soft_tissue():
    a = _acq(0)
    for kvp, iodine in ((80, 1.65), (100, 1.28), (120, 1.0), (140, 0.87)):
        b = th.Acquisition(**{**a.__dict__, "kvp": kvp})
        assert b.at_kvp(40.0) == 40.0 and b.at_kvp(-1000.0) == -1000.0
        assert b.at_kvp(300.0) == pytest.approx(100.0 + 200.0 * iodine, rel=1e-6)


def test_trilinear_keep_matches_resampling_ct_noise():
    """The noise model's claim: what preprocess.resize (trilinear) keeps of shift.ct_noise."""
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    native = ct_noise((131, 127, 30), affine, rng, 1.0, 0.25)
    grid = resize(native, (21, 20, 16), "linear").numpy()  # ~6.2 x 6.4 x 4.7 mm: non-integer ratios
    assert float(grid.std()) == pytest.approx(math.sqrt(th.trilinear_keep("standard", 0.25)), rel=0.06)


def test_dataset_says_which_variant_and_lists_acquisitions(tmp_path):
    shape = (24, 24, 24)  # coarser grids exceed the 20 mm voxels read_volume accepts
    out = make_phantom_dataset(tmp_path / "v", kind="thorax-varied", cases=2, seed=4, shape=shape)
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["phantom"]["kind"] == "thorax-varied"
    assert meta["name"] == "GlobalmaskPhantomThoraxVaried"
    assert "thorax-varied" in meta["description"]
    assert meta["labels"] == THORAX_LABELS
    ids = [f"phantom_thorax_varied_{i:03d}" for i in range(2)]
    assert sorted(meta["acquisition"]) == ids
    assert meta["acquisition"][ids[1]] == _acq(1, 4).to_dict()
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in ids]
    base = make_phantom_dataset(tmp_path / "t", kind="thorax", cases=2, seed=4, shape=shape)
    for i, cid in enumerate(ids):
        np.testing.assert_array_equal(read_volume(out / "labelsTr" / f"{cid}.nii.gz").array,
                                      read_volume(base / "labelsTr" / f"phantom_thorax_{i:03d}.nii.gz").array)
    with pytest.raises(GlobalmaskError, match="chambers"):
        make_phantom_case("headneck", 0, 0, (20, 20, 20), chambers=True)


def test_thorax_dataset_json_is_unchanged(tmp_path):
    """dataset.json of the thorax kind, as the code before thorax-varied wrote it."""
    out = make_phantom_dataset(tmp_path / "t", kind="thorax", cases=3, seed=0, shape=(24, 28, 20))
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8")) == {
        "name": "GlobalmaskPhantomThorax",
        "description": (
            "globalmask digital phantom cohort (synthetic CT with organ labels): kind=thorax, seed=0, shape=24x28x20, "
            "cases=3, chambers=False. Anatomy (shape and position) is consistent across subjects; intensities vary "
            "with the simulated scanner."
        ),
        "reference": "globalmask.phantom (generated, no patient data)",
        "licence": "synthetic data, no restrictions",
        "release": "globalmask phantom v1",
        "channel_names": {"0": "CT"},
        "labels": THORAX_LABELS,
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "phantom": {"kind": "thorax", "seed": 0, "cases": 3, "shape": [24, 28, 20], "chambers": False},
        "globalmask_phantom_version": 1,
    }


def test_cli_phantom_thorax_varied(tmp_path):
    from globalmask.cli import main

    out = tmp_path / "ph"
    args = ["phantom", "--kind", "thorax-varied", "--cases", "3", "--shape", "20", "20", "20", "--split", "1:1:1",
            "--out", str(out)]
    assert main(args) == 0
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    expected = [f"phantom_thorax_varied_{i:03d}" for i in range(3)]
    assert sorted(split["train"] + split["validation"] + split["test"]) == expected
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["phantom"]["kind"] == "thorax-varied"


def test_the_acquisition_listed_in_dataset_json_is_pinned():
    """Case 2 of seed 4 as dataset.json lists it (the draws are part of the pinned cohort): an arterial phase at
    120 kVp, where the image shows the left-heart blood at its drawn level plus the calibration offset."""
    listed = _acq(2, 4).to_dict()
    assert listed == {
        "phase": "arterial", "kvp": 120, "kernel": "standard", "dose_fraction": 0.342, "reference_noise_hu": 20.5,
        "offset_hu": 2.7, "blood_lv_hu": 358.7, "blood_rv_hu": 248.4, "svc_hu": 671.9, "myocardium_hu": 93.7,
        "liver_hu": 75.5, "blood_lv_image_hu": 361.4,
    }
    assert listed["blood_lv_image_hu"] == pytest.approx(listed["blood_lv_hu"] + listed["offset_hu"], abs=0.11)
