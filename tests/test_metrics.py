"""metrics.py: hand-computed cases in mm, properties, the folder evaluator, and sheared (gantry-tilt) affines."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from globalmask.errors import DatasetError, GeometryError, InputFileError
from globalmask.evaluation import evaluate_folder
from globalmask.io import Volume, write_volume
from globalmask.metrics import (
    center_of_mass_distance_mm,
    center_of_mass_mm,
    dice,
    evaluate_volumes,
    format_summary,
    structure_metrics,
    summarize,
    surface_distances_mm,
    volume_ml,
)

from .conftest import oblique_affine

SQ2, SQ3 = math.sqrt(2.0), math.sqrt(3.0)
HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def box(shape, *slices) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slices)] = True
    return m


def rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def affine_from(spacing, rotation=np.eye(3), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(rotation) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


# ----------------------------------------------------------------------------------------------
# Dice and volume


def test_dice_of_overlapping_boxes_is_the_exact_fraction():
    a = box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4))  # 64 voxels
    b = box((8, 8, 8), slice(2, 5), slice(0, 4), slice(0, 4))  # 48 voxels, 32 shared
    assert Fraction(dice(a, b)).limit_denominator(1000) == Fraction(2 * 32, 64 + 48) == Fraction(4, 7)
    assert dice(a, b) == pytest.approx(4 / 7, abs=1e-15)


def test_dice_edge_cases():
    empty = np.zeros((4, 4, 4), bool)
    full = np.ones((4, 4, 4), bool)
    assert math.isnan(dice(empty, empty))
    assert dice(empty, full) == 0.0 and dice(full, empty) == 0.0
    assert dice(full, full) == 1.0
    assert dice(full.astype(np.uint8) * 3, full) == 1.0  # any non-zero value is inside
    with pytest.raises(ValueError, match="shape"):
        dice(empty, np.zeros((4, 4, 5), bool))


def test_volume_ml_uses_the_voxel_size():
    mask = box((6, 6, 6), slice(0, 2), slice(0, 5), slice(0, 1))  # 10 voxels
    assert volume_ml(mask, np.diag([2.0, 2.0, 3.0, 1.0])) == pytest.approx(10 * 12 / 1000)  # 0.12 mL
    # rotation and origin do not change a volume; a flipped axis (negative det) neither
    assert volume_ml(mask, oblique_affine((2.0, 2.0, 3.0), 30.0)) == pytest.approx(0.12)
    assert volume_ml(mask, np.diag([-2.0, 2.0, 3.0, 1.0])) == pytest.approx(0.12)
    assert volume_ml(np.zeros((3, 3, 3)), np.eye(4)) == 0.0


# ----------------------------------------------------------------------------------------------
# centre of mass


def test_com_distance_shift_along_an_anisotropic_axis():
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    ref = box((10, 10, 12), slice(2, 5), slice(3, 6), slice(2, 6))
    pred = box((10, 10, 12), slice(2, 5), slice(3, 6), slice(4, 8))  # 2 voxels along the 3 mm axis
    assert center_of_mass_distance_mm(pred, ref, aff) == pytest.approx(6.0)
    pred_y = box((10, 10, 12), slice(2, 5), slice(5, 8), slice(2, 6))  # 2 voxels along the 2 mm axis
    assert center_of_mass_distance_mm(pred_y, ref, aff) == pytest.approx(4.0)


def test_com_world_position_under_a_90_degree_rotation():
    # columns: i -> +y (1 mm), j -> -x (2 mm), k -> +z (3 mm); origin (10, 20, 30)
    aff = affine_from((1.0, 2.0, 3.0), rot_z(90), origin=(10.0, 20.0, 30.0))
    mask = box((8, 8, 8), slice(1, 4), slice(2, 5), slice(3, 6))  # voxel centroid (2, 3, 4)
    # world = (10 - 2*3, 20 + 1*2, 30 + 3*4) by hand
    np.testing.assert_allclose(center_of_mass_mm(mask, aff), [4.0, 22.0, 42.0], atol=1e-12)
    shifted_i = np.roll(mask, 2, axis=0)  # 2 voxels of 1 mm
    shifted_j = np.roll(mask, 3, axis=1)  # 3 voxels of 2 mm
    assert center_of_mass_distance_mm(shifted_i, mask, aff) == pytest.approx(2.0)
    assert center_of_mass_distance_mm(shifted_j, mask, aff) == pytest.approx(6.0)
    assert center_of_mass_mm(np.zeros((3, 3, 3)), aff) is None


def test_com_distance_under_a_30_degree_oblique_affine():
    aff = oblique_affine(spacing=(1.5, 2.0, 3.0), angle_deg=30.0, origin=(10.0, -20.0, 5.0))
    ref = box((12, 12, 8), slice(2, 5), slice(2, 6), slice(1, 4))
    pred = box((12, 12, 8), slice(4, 7), slice(3, 7), slice(1, 4))  # shift (2, 1, 0) voxels = (3, 2, 0) mm
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected_vector = np.array([3 * c - 2 * s, 3 * s + 2 * c, 0.0])  # rotation of (3, 2, 0) mm by 30 deg
    np.testing.assert_allclose(center_of_mass_mm(pred, aff) - center_of_mass_mm(ref, aff), expected_vector, atol=1e-12)
    assert center_of_mass_distance_mm(pred, ref, aff) == pytest.approx(math.sqrt(13.0))


def test_com_distance_nan_when_either_mask_is_empty():
    m = box((5, 5, 5), slice(1, 3), slice(1, 3), slice(1, 3))
    e = np.zeros_like(m)
    assert math.isnan(center_of_mass_distance_mm(m, e, np.eye(4)))
    assert math.isnan(center_of_mass_distance_mm(e, m, np.eye(4)))


# ----------------------------------------------------------------------------------------------
# surface distances


def test_hd95_and_msd_of_concentric_cubes_by_hand():
    # reference 5^3 cube, prediction its central 3^3 cube. Surfaces are the outer voxel shells.
    # pred shell (26 voxels) -> ref shell: 1 voxel each.
    # ref shell (98 voxels) -> pred cube: 54 face voxels at 1, 36 edge voxels at sqrt2, 8 corners at sqrt3.
    # HD95 = max(p95 of 26 x 1, p95 of the 98) = sqrt3 (p95 index 92.15 falls among the corners).
    ref = box((9, 9, 9), slice(2, 7), slice(2, 7), slice(2, 7))
    pred = box((9, 9, 9), slice(3, 6), slice(3, 6), slice(3, 6))
    hd95, msd = surface_distances_mm(pred, ref, np.eye(4))
    assert hd95 == pytest.approx(SQ3)
    assert msd == pytest.approx((26 * 1 + 54 * 1 + 36 * SQ2 + 8 * SQ3) / (26 + 98))
    # symmetric: swapping prediction and reference changes nothing
    assert surface_distances_mm(ref, pred, np.eye(4)) == pytest.approx((hd95, msd))
    # 2 mm isotropic voxels: everything doubles
    assert surface_distances_mm(pred, ref, np.diag([2.0, 2.0, 2.0, 1.0])) == pytest.approx((2 * hd95, 2 * msd))


def test_parallel_planes_anisotropic_and_oblique():
    # two single-voxel-thick planes 2 voxels apart along the 3 mm axis: every distance is 6 mm
    ref = box((6, 7, 10), slice(1, 5), slice(1, 6), slice(3, 4))
    pred = box((6, 7, 10), slice(1, 5), slice(1, 6), slice(5, 6))
    assert surface_distances_mm(pred, ref, np.diag([1.0, 2.0, 3.0, 1.0])) == pytest.approx((6.0, 6.0))
    # the same planes stacked along axis 0 (1.5 mm) under a 30-degree rotation: 3 mm
    ref0 = np.moveaxis(ref, 2, 0)
    pred0 = np.moveaxis(pred, 2, 0)
    aff = oblique_affine(spacing=(1.5, 2.0, 3.0), angle_deg=30.0)
    assert surface_distances_mm(pred0, ref0, aff) == pytest.approx((3.0, 3.0))
    assert center_of_mass_distance_mm(pred0, ref0, aff) == pytest.approx(3.0)


def test_hd95_ignores_a_lone_outlier_that_the_mean_still_sees():
    # a 10x10 plane (100 surface voxels) plus one stray voxel 10 voxels (= 20 mm) away
    ref = box((14, 12, 12), slice(0, 1), slice(1, 11), slice(1, 11))
    pred = ref.copy()
    pred[10, 5, 5] = True
    hd95, msd = surface_distances_mm(pred, ref, np.diag([2.0, 1.0, 1.0, 1.0]))
    # directed pred->ref: 100 zeros and one 20 mm -> p95 = 0; ref->pred: all zero
    assert hd95 == pytest.approx(0.0)
    assert msd == pytest.approx(20.0 / (101 + 100))


def test_hd95_uses_directed_percentiles_not_one_pooled_percentile():
    # reference: a 20-voxel line (every voxel is surface); prediction: its first voxel, 2 mm voxels
    ref = box((20, 3, 3), slice(0, 20), slice(1, 2), slice(1, 2))
    pred = box((20, 3, 3), slice(0, 1), slice(1, 2), slice(1, 2))
    hd95, msd = surface_distances_mm(pred, ref, np.diag([2.0, 1.0, 1.0, 1.0]))
    # d(pred->ref) = [0]; d(ref->pred) = 0, 2, ..., 38 mm -> p95 at rank 0.95 * 19 = 18.05 -> 36.1 mm
    # (one pooled percentile over all 21 values would give rank 19 -> 36.0 mm)
    assert hd95 == pytest.approx(36.1)
    assert msd == pytest.approx(2.0 * sum(range(20)) / 21)


def test_surface_distances_nan_when_either_mask_is_empty():
    m = box((5, 5, 5), slice(1, 3), slice(1, 3), slice(1, 3))
    e = np.zeros_like(m)
    for a, b in ((m, e), (e, m), (e, e)):
        hd95, msd = surface_distances_mm(a, b, np.eye(4))
        assert math.isnan(hd95) and math.isnan(msd)
    assert surface_distances_mm(m, m, np.eye(4)) == (0.0, 0.0)


def test_mask_touching_the_array_border_has_a_closed_surface():
    full = np.ones((4, 4, 4), bool)
    inner = box((4, 4, 4), slice(1, 3), slice(1, 3), slice(1, 3))
    # the full block's surface is its outer shell (zero padding outside the array), 1 voxel from `inner`
    hd95, msd = surface_distances_mm(inner, full, np.eye(4))
    assert hd95 == pytest.approx(SQ3)  # corners of the shell are sqrt3 from the inner cube
    assert msd > 0


def test_small_organs_in_a_big_volume_match_the_cropped_result():
    small_ref = box((8, 8, 8), slice(2, 6), slice(1, 5), slice(2, 7))
    small_pred = box((8, 8, 8), slice(3, 7), slice(1, 6), slice(2, 6))
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    big_ref = np.zeros((256, 256, 120), bool)
    big_pred = np.zeros_like(big_ref)
    big_ref[200:208, 30:38, 100:108] = small_ref
    big_pred[200:208, 30:38, 100:108] = small_pred
    assert surface_distances_mm(big_pred, big_ref, aff) == pytest.approx(
        surface_distances_mm(small_pred, small_ref, aff)
    )
    assert center_of_mass_distance_mm(big_pred, big_ref, aff) == pytest.approx(
        center_of_mass_distance_mm(small_pred, small_ref, aff)
    )


# ----------------------------------------------------------------------------------------------
# label maps


LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}


def label_pair():
    ref = np.zeros((16, 16, 12), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 1
    pred[2:6, 2:6, 3:7] = 1  # liver: shifted 1 voxel along the 3 mm axis
    ref[9:13, 9:13, 2:5] = 2  # kidney: missed
    pred[10:12, 1:3, 8:10] = 3  # spleen: false positive
    return pred, ref  # pancreas: absent


def test_structure_metrics_statuses():
    pred, ref = label_pair()
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    rows = {r["structure"]: r for r in structure_metrics(pred, ref, aff, LABELS)}
    assert list(rows) == ["liver", "kidney", "spleen", "pancreas"]  # background skipped, order kept
    liver = rows["liver"]
    assert liver["status"] == "ok" and liver["label"] == 1
    assert liver["dice"] == pytest.approx(2 * 48 / 128)
    assert liver["com_mm"] == pytest.approx(3.0)
    assert liver["pred_ml"] == liver["ref_ml"] == pytest.approx(64 * 6 / 1000)
    assert liver["hd95_mm"] == pytest.approx(3.0)
    kidney = rows["kidney"]
    assert kidney["status"] == "missed" and kidney["dice"] == 0.0 and kidney["pred_ml"] == 0.0
    assert kidney["ref_ml"] == pytest.approx(48 * 6 / 1000)
    assert all(math.isnan(kidney[k]) for k in ("com_mm", "hd95_mm", "msd_mm"))
    spleen = rows["spleen"]
    assert spleen["status"] == "false_positive" and spleen["dice"] == 0.0 and spleen["ref_ml"] == 0.0
    assert all(math.isnan(spleen[k]) for k in ("com_mm", "hd95_mm", "msd_mm"))
    pancreas = rows["pancreas"]
    assert pancreas["status"] == "absent" and math.isnan(pancreas["dice"])
    assert set(liver) == {"structure", "label", "dice", "com_mm", "hd95_mm", "msd_mm", "pred_ml", "ref_ml", "status"}
    # same columns for every status
    assert set(pancreas) == set(liver) and pancreas["pred_ml"] == pancreas["ref_ml"] == 0.0
    assert all(math.isnan(pancreas[k]) for k in ("com_mm", "hd95_mm", "msd_mm"))
    # a label set with no structure at all (background only) gives no rows, not an error
    assert structure_metrics(pred, ref, aff, {"background": 0}) == []


def test_structure_metrics_agree_with_the_binary_functions_under_an_oblique_affine():
    pred, ref = label_pair()
    aff = oblique_affine((1.5, 2.0, 3.0), 30.0)
    liver = structure_metrics(pred, ref, aff, LABELS)[0]
    p, r = pred == 1, ref == 1
    assert liver["dice"] == pytest.approx(dice(p, r))
    assert liver["com_mm"] == pytest.approx(center_of_mass_distance_mm(p, r, aff))
    assert (liver["hd95_mm"], liver["msd_mm"]) == pytest.approx(surface_distances_mm(p, r, aff))
    assert liver["pred_ml"] == pytest.approx(volume_ml(p, aff))


def test_structure_metrics_accepts_integral_float_maps_and_refuses_probabilities():
    pred, ref = label_pair()
    rows = structure_metrics(pred.astype(np.float32), ref, np.eye(4), LABELS)
    assert rows[0]["status"] == "ok"
    with pytest.raises(ValueError, match="non-integer"):
        structure_metrics(pred.astype(np.float32) * 0.5, ref, np.eye(4), LABELS)


# ----------------------------------------------------------------------------------------------
# summaries


def per_case_table() -> pd.DataFrame:
    nan = float("nan")
    rows = [
        # liver: ok, ok, missed -> dice mean over (0.8, 0.9, 0.0)
        ("c1", "liver", 1, 0.8, 2.0, 4.0, 1.0, 10.0, 11.0, "ok"),
        ("c2", "liver", 1, 0.9, 4.0, 6.0, 2.0, 12.0, 12.0, "ok"),
        ("c3", "liver", 1, 0.0, nan, nan, nan, 0.0, 9.0, "missed"),
        # kidney: ok, absent, false positive
        ("c1", "kidney", 2, 0.7, 1.0, 2.0, 0.5, 3.0, 3.0, "ok"),
        ("c2", "kidney", 2, nan, nan, nan, nan, 0.0, 0.0, "absent"),
        ("c3", "kidney", 2, 0.0, nan, nan, nan, 1.0, 0.0, "false_positive"),
    ]
    cols = ["case", "structure", "label", "dice", "com_mm", "hd95_mm", "msd_mm", "pred_ml", "ref_ml", "status"]
    return pd.DataFrame(rows, columns=cols)


def test_summarize_counts_misses_as_zero_and_excludes_absent():
    s = summarize(per_case_table()).set_index("structure")
    assert list(s.index) == ["liver", "kidney", "all"]
    liver = s.loc["liver"]
    assert liver["n_cases"] == 3 and liver["n_missed"] == 1 and liver["n_false_positive"] == 0
    assert liver["dice_mean"] == pytest.approx(1.7 / 3)
    assert liver["dice_std"] == pytest.approx(np.std([0.8, 0.9, 0.0], ddof=1))
    assert liver["com_mm_mean"] == pytest.approx(3.0)
    assert liver["com_mm_std"] == pytest.approx(math.sqrt(2.0))  # sample std of (2, 4)
    assert liver["ref_ml_mean"] == pytest.approx(32 / 3)
    kidney = s.loc["kidney"]
    assert kidney["n_absent"] == 1 and kidney["n_false_positive"] == 1 and kidney["n_scored"] == 2
    assert kidney["dice_mean"] == pytest.approx(0.35)
    assert kidney["com_mm_mean"] == pytest.approx(1.0) and math.isnan(kidney["com_mm_std"])  # n = 1
    pooled = s.loc["all"]
    assert pooled["n_cases"] == 3 and pooled["n_missed"] == 1 and pooled["n_scored"] == 5
    assert pooled["dice_mean"] == pytest.approx(np.mean([0.8, 0.9, 0.0, 0.7, 0.0]))
    assert pooled["dice_std"] == pytest.approx(np.std([0.8, 0.9, 0.0, 0.7, 0.0], ddof=1))
    assert pooled["hd95_mm_mean"] == pytest.approx(4.0)


def test_summarize_survives_a_csv_round_trip_and_empty_input(tmp_path):
    path = tmp_path / "m.csv"
    per_case_table().to_csv(path, index=False)
    again = summarize(pd.read_csv(path))
    pd.testing.assert_frame_equal(again, summarize(per_case_table()))
    empty = summarize(per_case_table().iloc[:0])
    assert empty.empty and "dice_mean" in empty.columns


def test_format_summary_is_a_readable_table():
    text = format_summary(summarize(per_case_table()))
    lines = text.splitlines()
    assert "structure" in lines[0] and "Dice" in lines[0] and "HD95" in lines[0] and "missed" in lines[0]
    liver = next(line for line in lines if line.startswith("liver"))
    assert "0.567 ± 0.493" in liver
    kidney = next(line for line in lines if line.startswith("kidney"))
    assert "1.00" in kidney and "n/a" not in kidney.split()[2]
    assert lines[-1].startswith("all")
    # one value (the kidney CoM: one case) prints without a spread; no value at all as n/a
    assert " 1.00 " in kidney and "nan" not in text
    no_distance = per_case_table().assign(com_mm=float("nan"), hd95_mm=float("nan"), msd_mm=float("nan"))
    kidney = next(line for line in format_summary(summarize(no_distance)).splitlines() if line.startswith("kidney"))
    assert kidney.split()[5:8] == ["n/a", "n/a", "n/a"]


# ----------------------------------------------------------------------------------------------
# volumes and folders


def test_evaluate_volumes_checks_geometry_and_names_both_files(tmp_path):
    pred, ref = label_pair()
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    p_path, r_path = tmp_path / "pred" / "c1.nii.gz", tmp_path / "ref" / "c1.nii.gz"
    nearly = aff.copy()
    nearly[:3, 3] += 5e-4  # within the 1e-3 mm tolerance
    rows = evaluate_volumes(Volume(pred, nearly, p_path), Volume(ref, aff, r_path), LABELS, "c1")
    assert [r["case"] for r in rows] == ["c1"] * 4 and list(rows[0])[0] == "case"
    shifted = aff.copy()
    shifted[:3, 3] += [0.0, 0.0, 1.5]
    with pytest.raises(GeometryError) as err:
        evaluate_volumes(Volume(pred, shifted, p_path), Volume(ref, aff, r_path), LABELS, "c1")
    assert str(p_path) in str(err.value) and str(r_path) in str(err.value)
    with pytest.raises(GeometryError) as err:
        evaluate_volumes(Volume(pred[:, :, :10], aff, p_path), Volume(ref, aff, r_path), LABELS, "c1")
    assert str(p_path) in str(err.value) and str(r_path) in str(err.value) and "shape" in str(err.value)
    with pytest.raises(InputFileError, match="non-integer"):
        evaluate_volumes(Volume(pred * 0.5, aff, p_path), Volume(ref, aff, r_path), LABELS, "c1")


def write_cohort(root: Path, aff: np.ndarray) -> tuple[Path, Path]:
    """labelsTr/ with 3 cases + dataset.json; predictions for c0 (perfect), c1 (shifted) and a stray."""
    labels_dir, pred_dir = root / "ds" / "labelsTr", root / "pred"
    ref = np.zeros((12, 12, 8), np.uint8)
    ref[2:6, 2:6, 2:5] = 1
    ref[7:10, 7:10, 2:5] = 2
    for i in range(3):
        write_volume(Volume(ref, aff), labels_dir / f"c{i}.nii.gz")
    (root / "ds" / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "left": 1, "right": 2}, "channel_names": {"0": "CT"}})
    )
    write_volume(Volume(ref, aff), pred_dir / "c0.nii.gz")
    write_volume(Volume(np.roll(ref, 1, axis=0), aff), pred_dir / "c1.nii.gz")
    write_volume(Volume(ref, aff), pred_dir / "stray.nii.gz")  # no reference
    return pred_dir, labels_dir


def test_evaluate_folder_round_trip_with_a_missing_prediction(tmp_path):
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    pred_dir, labels_dir = write_cohort(tmp_path, aff)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_case, summary = evaluate_folder(pred_dir, labels_dir, out_dir=out)
    messages = " ".join(str(w.message) for w in caught)
    assert "stray.nii.gz" in messages and "c2" in messages

    assert list(per_case.columns[:3]) == ["case", "structure", "label"]
    assert len(per_case) == 6 and set(per_case["structure"]) == {"left", "right"}  # names from dataset.json
    by = per_case.set_index(["case", "structure"])
    assert by.loc[("c0", "left"), "dice"] == 1.0 and by.loc[("c0", "left"), "com_mm"] == 0.0
    assert by.loc[("c1", "left"), "com_mm"] == pytest.approx(2.0)  # 1 voxel of 2 mm
    assert by.loc[("c1", "left"), "dice"] == pytest.approx(2 * 36 / 96)
    assert (by.loc["c2", "status"] == "missed").all() and (by.loc["c2", "dice"] == 0.0).all()
    assert by.loc[("c2", "left"), "ref_ml"] == pytest.approx(48 * 10 / 1000)

    s = summary.set_index("structure")
    assert s.loc["left", "n_missed"] == 1 and s.loc["all", "n_missed"] == 2 and s.loc["all", "n_cases"] == 3
    assert s.loc["left", "dice_mean"] == pytest.approx((1.0 + 0.75 + 0.0) / 3)

    assert {p.name for p in out.iterdir()} == {"metrics.csv", "summary.csv", "summary.json"}  # no temp files left
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), per_case, check_dtype=False)
    meta = json.loads(
        (out / "summary.json").read_text(encoding="utf-8"),
        parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"),
    )
    assert meta["missing_predictions"] == ["c2"] and meta["ignored_predictions"] == ["stray.nii.gz"]
    assert [r["structure"] for r in meta["summary"]] == ["left", "right", "all"]
    assert meta["labels"] == {"background": 0, "left": 1, "right": 2}
    assert meta["label_dir"] == str(labels_dir)


def test_evaluate_folder_geometry_mismatch_names_the_files(tmp_path):
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    pred_dir, labels_dir = write_cohort(tmp_path, aff)
    bad = aff.copy()
    bad[2, 2] = 3.0
    write_volume(Volume(np.zeros((12, 12, 8), np.uint8), bad), pred_dir / "c1.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(GeometryError) as err:
            evaluate_folder(pred_dir, labels_dir)
    assert str(pred_dir / "c1.nii.gz") in str(err.value) and str(labels_dir / "c1.nii.gz") in str(err.value)


def test_evaluate_folder_derives_labels_pairs_channel_tags_and_filters_cases(tmp_path):
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    labels_dir, pred_dir = tmp_path / "labels", tmp_path / "pred"
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:3, 1:3, 1:3] = 3
    ref[5:7, 5:7, 5:7] = 7
    write_volume(Volume(ref, aff), labels_dir / "a.nii.gz")
    write_volume(Volume(ref, aff), labels_dir / "b.nrrd")
    write_volume(Volume(ref, aff), pred_dir / "a_0000.nii.gz")  # nnU-Net channel tag
    write_volume(Volume(ref, aff), pred_dir / "b.mha")  # any volume format
    per_case, summary = evaluate_folder(pred_dir, labels_dir)
    assert sorted(set(per_case["structure"])) == ["label_3", "label_7"]
    assert (per_case["status"] == "ok").all() and (per_case["dice"] == 1.0).all()
    only_b, _ = evaluate_folder(pred_dir, labels_dir, {"organ": 7}, cases=["b"])
    assert list(only_b["case"]) == ["b"] and list(only_b["structure"]) == ["organ"]
    with pytest.raises(DatasetError, match="zzz"):
        evaluate_folder(pred_dir, labels_dir, cases=["zzz"])
    with pytest.raises(InputFileError):
        evaluate_folder(tmp_path / "nope", labels_dir)
    # labels stored as int16 (not uint8): the values are derived the same way
    write_volume(Volume(ref.astype(np.int16), aff), tmp_path / "l16" / "a.nii.gz")
    with pytest.warns(UserWarning, match="b.mha"):  # its reference is not in this folder
        per16, _ = evaluate_folder(pred_dir, tmp_path / "l16")
    assert sorted(set(per16["structure"])) == ["label_3", "label_7"] and (per16["dice"] == 1.0).all()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no reference label volumes"):
        evaluate_folder(pred_dir, tmp_path / "empty")


# ----------------------------------------------------------------------------------------------
# properties


small_shapes = hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7)
masks_pair = small_shapes.flatmap(lambda s: st.tuples(hnp.arrays(bool, s), hnp.arrays(bool, s)))
nonempty_pair = masks_pair.filter(lambda pr: pr[0].any() and pr[1].any())
spacings = st.tuples(*[st.floats(0.3, 5.0) for _ in range(3)])
angles = st.floats(-180.0, 180.0)


@HYP
@given(masks_pair)
def test_dice_symmetric_and_bounded(pair):
    a, b = pair
    d1, d2 = dice(a, b), dice(b, a)
    if not a.any() and not b.any():
        assert math.isnan(d1) and math.isnan(d2)
    else:
        assert d1 == d2 and 0.0 <= d1 <= 1.0


@HYP
@given(nonempty_pair, st.tuples(*[st.integers(0, 8) for _ in range(3)]), spacings, angles)
def test_com_distance_invariant_to_translation(pair, offset, spacing, angle):
    a, b = pair
    aff = affine_from(spacing, rot_z(angle), origin=(3.0, -4.0, 5.0))
    big = tuple(s + 8 for s in a.shape)
    sl = tuple(slice(o, o + s) for o, s in zip(offset, a.shape))
    A, B = np.zeros(big, bool), np.zeros(big, bool)
    A[sl], B[sl] = a, b
    expected = center_of_mass_distance_mm(a, b, aff)
    assert center_of_mass_distance_mm(A, B, aff) == pytest.approx(expected, abs=1e-9)
    moved = aff.copy()
    moved[:3, 3] += (123.4, -56.7, 8.9)
    assert center_of_mass_distance_mm(a, b, moved) == pytest.approx(expected, abs=1e-9)
    # surface distances are translation invariant too (exercises the cropping)
    assert surface_distances_mm(A, B, aff) == pytest.approx(surface_distances_mm(a, b, aff), abs=1e-9)


@HYP
@given(nonempty_pair, spacings, angles, st.floats(0.25, 4.0))
def test_distances_scale_linearly_with_spacing(pair, spacing, angle, s):
    a, b = pair
    aff = affine_from(spacing, rot_z(angle), origin=(1.0, 2.0, 3.0))
    scaled = aff.copy()
    scaled[:3, :3] *= s
    com, (hd, msd) = center_of_mass_distance_mm(a, b, aff), surface_distances_mm(a, b, aff)
    assert center_of_mass_distance_mm(a, b, scaled) == pytest.approx(s * com, rel=1e-9, abs=1e-9)
    hd_s, msd_s = surface_distances_mm(a, b, scaled)
    assert hd_s == pytest.approx(s * hd, rel=1e-9, abs=1e-9)
    assert msd_s == pytest.approx(s * msd, rel=1e-9, abs=1e-9)
    assert volume_ml(a, scaled) == pytest.approx(s**3 * volume_ml(a, aff), rel=1e-9)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nonempty_pair, spacings)
def test_surface_distances_match_monai(pair, spacing):
    """Same definitions as MONAI's HD95 (directed percentiles, max) and symmetric ASD."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    a, b = pair
    pa, pb = torch.as_tensor(a[None, None], dtype=torch.float32), torch.as_tensor(b[None, None], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd_m = compute_hausdorff_distance(pa, pb, include_background=True, percentile=95, spacing=list(spacing)).item()
        asd_m = compute_average_surface_distance(
            pa, pb, include_background=True, symmetric=True, spacing=list(spacing)
        ).item()
    hd, msd = surface_distances_mm(a, b, np.diag([*spacing, 1.0]))
    assert hd == pytest.approx(hd_m, rel=1e-5, abs=1e-5)  # MONAI works in float32
    assert msd == pytest.approx(asd_m, rel=1e-5, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# surface distances on sheared (tilted) affines


def _sheared(tilt_deg: float) -> np.ndarray:
    aff = np.eye(4)
    aff[0, 2] = np.tan(np.deg2rad(tilt_deg))  # x shifts with z: a gantry-tilt shear, 1 mm voxels
    return aff


def test_surface_distance_uses_the_true_geometry_on_a_sheared_affine():
    pred = np.zeros((6, 6, 6), bool)
    ref = np.zeros((6, 6, 6), bool)
    pred[2, 2, 2] = True
    ref[3, 2, 3] = True  # index offset (1, 0, 1): world offset (1 + tan45, 0, 1) = (2, 0, 1)
    hd95, msd = surface_distances_mm(pred, ref, _sheared(45.0))
    assert hd95 == pytest.approx(np.sqrt(5.0)) and msd == pytest.approx(np.sqrt(5.0))  # column norms would say sqrt(3)
    ref[:] = False
    ref[1, 2, 3] = True  # offset (-1, 0, 1): world (-1 + 1, 0, 1) = (0, 0, 1)
    assert surface_distances_mm(pred, ref, _sheared(45.0))[0] == pytest.approx(1.0)


def test_structure_metrics_use_the_true_geometry_on_a_sheared_affine():
    pred = np.zeros((8, 8, 8), np.uint8)
    ref = np.zeros((8, 8, 8), np.uint8)
    pred[2, 2, 2] = 1
    ref[4, 2, 4] = 1  # offset (2, 0, 2) -> world (2 + 2 tan20, 0, 2)
    t = np.tan(np.deg2rad(20.0))
    row = structure_metrics(pred, ref, _sheared(20.0), {"background": 0, "organ": 1})[0]
    assert row["hd95_mm"] == pytest.approx(np.hypot(2 + 2 * t, 2.0))
    assert row["com_mm"] == pytest.approx(np.hypot(2 + 2 * t, 2.0))


def test_folder_evaluation_lives_in_evaluation_and_the_pure_metrics_do_not_import_it():
    """``metrics`` is pure (arrays in, numbers out): folder evaluation sits above it, never inside."""
    import globalmask.evaluation
    import globalmask.metrics

    assert globalmask.evaluation.EVALUATE_OUTPUTS == ("metrics.csv", "summary.csv", "summary.json")
    assert not hasattr(globalmask.metrics, "evaluate_folder")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = globalmask.metrics.nothing

