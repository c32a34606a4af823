"""DICOM series with real-world geometry faults: read correctly (resampled, recorded) or refused.

Every series is written here with pydicom from a volume whose voxel values are a known linear
function of the world position, so a correctly placed and linearly resampled voxel has a value
we can compute by hand.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("pydicom")

from globalmask.cli import main
from globalmask.dicom_rt import write_ct_series
from globalmask.errors import GeometryError, InputFileError
from globalmask.io import Volume, read_dicom_series, read_volume
from globalmask.metrics import structure_metrics, surface_distances_mm

SHAPE = (32, 32, 20)
SPACING = (1.5, 1.25, 2.0)
ORIGIN_LPS = np.array([-20.0, -30.0, 100.0])


def _affine() -> np.ndarray:
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = ORIGIN_LPS * [-1, -1, 1]  # RAS of the LPS origin
    aff[0, 0] = -SPACING[0]  # LPS axes: x grows to the patient's left (R->L in RAS is -x)
    aff[1, 1] = -SPACING[1]
    return aff


def world_value(lps: np.ndarray) -> np.ndarray:
    """HU as a linear function of LPS position: 2 per mm in x, 3 in y, 5 in z (exact under linear interpolation)."""
    return 2.0 * lps[..., 0] + 3.0 * lps[..., 1] + 5.0 * lps[..., 2]


def _volume_for(positions: np.ndarray) -> Volume:
    """Slices whose pixel values follow world_value at their own (possibly shifted) positions."""
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    arr = np.empty((SHAPE[0], SHAPE[1], len(positions)), dtype=np.float64)
    for k, p in enumerate(positions):
        lps = p + i[..., None] * np.array([SPACING[0], 0, 0]) + j[..., None] * np.array([0, SPACING[1], 0])
        arr[:, :, k] = world_value(lps)
    return Volume(np.rint(arr).astype(np.int16), _affine())


def regular_positions(n: int = SHAPE[2]) -> np.ndarray:
    return np.array([ORIGIN_LPS + [0, 0, k * SPACING[2]] for k in range(n)])


def write_series(folder, positions, order=None):
    vol = _volume_for(positions)
    files = write_ct_series(vol, folder, positions=positions)
    return vol, files


def _expected_on_grid(volume: Volume) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in volume.shape], indexing="ij"), axis=-1).astype(np.float64)
    ras = idx @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    return world_value(ras * [-1, -1, 1])


def test_regular_series_reads_exactly(tmp_path):
    vol, _ = write_series(tmp_path / "s", regular_positions())
    got = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(got.array, vol.array)
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)
    assert got.notes == {}


def test_missing_slice_is_resampled_and_recorded(tmp_path, caplog):
    vol, files = write_series(tmp_path / "s", regular_positions())
    files[7].unlink()
    with caplog.at_level(logging.WARNING, logger="globalmask"):
        got = read_volume(tmp_path / "s")
    # the original grid comes back: same shape and affine, the lost plane interpolated from its neighbours
    assert got.shape == vol.shape
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)
    np.testing.assert_allclose(got.array, vol.array, atol=1.0)  # linear in z: exact up to int16 rounding
    note = got.notes["dicom_geometry"]
    assert note["resampled"] and "1 missing slice" in note["faults"][0]
    assert "missing slice" in caplog.text and "resampled" in caplog.text


def test_uneven_spacing_is_resampled_onto_a_regular_grid(tmp_path):
    pos = regular_positions()
    pos[10:, 2] += 1.0  # a 3 mm gap in a 2 mm series
    write_series(tmp_path / "s", pos)
    got = read_volume(tmp_path / "s")
    assert "uneven slice spacing" in got.notes["dicom_geometry"]["faults"][0]
    assert got.spacing[2] == pytest.approx(2.0)
    assert got.shape[2] == 20  # 0..39 mm covered by 2 mm planes
    np.testing.assert_allclose(got.array, _expected_on_grid(got), atol=1.0)


def test_old_reader_would_have_misplaced_the_slices(tmp_path):
    """Guard for the fault this fixes: without resampling, plane k would be placed 1 mm too high."""
    pos = regular_positions()
    pos[10:, 2] += 1.0
    write_series(tmp_path / "s", pos)
    got = read_volume(tmp_path / "s")
    world_z = (got.affine @ [0, 0, 15, 1])[2]
    assert got.array[0, 0, 15] == pytest.approx(world_value(np.array([ORIGIN_LPS[0], ORIGIN_LPS[1], world_z])), abs=1.0)


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path):
    angle = np.deg2rad(15.0)
    pos = regular_positions()
    pos[:, 1] += np.arange(len(pos)) * SPACING[2] * np.tan(angle)  # slices shift along y: a tilted gantry
    write_series(tmp_path / "s", pos)
    got = read_volume(tmp_path / "s")
    note = got.notes["dicom_geometry"]
    assert note["resampled"] and "gantry tilt of about 15.0 degrees" in note["faults"][0]
    m = got.affine[:3, :3]
    gram = m.T @ m
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-9)  # orthogonal: no shear left
    expected = _expected_on_grid(got)
    covered = got.array > got.array.min()  # voxels inside every slice's footprint
    inner = covered.copy()
    inner[:, :2] = inner[:, -2:] = False
    assert inner.sum() > 0.5 * got.array.size
    np.testing.assert_allclose(got.array[inner], expected[inner], atol=1.0)


def test_identical_duplicate_slices_are_dropped_and_recorded(tmp_path):
    vol, files = write_series(tmp_path / "s", regular_positions())
    shutil.copy(files[5], tmp_path / "s" / "copy_of_5.dcm")
    got = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(got.array, vol.array)
    note = got.notes["dicom_geometry"]
    assert not note["resampled"] and note["dropped_duplicates"][0].endswith(".dcm")


def _write_conflicting_duplicate(folder):
    """Slices 5 and 6 at one position with different pixels (6 is the real slice 6's data)."""
    import pydicom

    _, files = write_series(folder, regular_positions())
    ds = pydicom.dcmread(files[6])
    ds.ImagePositionPatient = pydicom.dcmread(files[5]).ImagePositionPatient
    ds.save_as(files[6])


def test_duplicate_positions_with_different_pixels_are_refused(tmp_path):
    _write_conflicting_duplicate(tmp_path / "s")
    with pytest.raises(GeometryError, match="share the slice position"):
        read_volume(tmp_path / "s")


def test_several_missing_slices_are_refused_not_invented(tmp_path):
    _, files = write_series(tmp_path / "s", regular_positions())
    for f in files[5:9]:
        f.unlink()
    with pytest.raises(GeometryError, match="several slices missing"):
        read_volume(tmp_path / "s")


def test_mixed_orientations_are_refused(tmp_path):
    _, files = write_series(tmp_path / "s", regular_positions())
    import pydicom

    ds = pydicom.dcmread(files[3])
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(files[3])
    with pytest.raises(GeometryError, match="different orientations"):
        read_volume(tmp_path / "s")


def test_several_series_in_one_folder_are_refused_naming_them_or_picked(tmp_path):
    write_series(tmp_path / "a", regular_positions())
    write_series(tmp_path / "b", regular_positions(12))
    folder = tmp_path / "both"
    folder.mkdir()
    uids = []
    for sub in ("a", "b"):
        for f in sorted((tmp_path / sub).iterdir()):
            shutil.copy(f, folder / f"{sub}_{f.name}")
        import pydicom

        uids.append(str(pydicom.dcmread(next((tmp_path / sub).iterdir())).SeriesInstanceUID))
    with pytest.raises(InputFileError, match="2 DICOM image series") as err:
        read_volume(folder)
    assert all(u in str(err.value) for u in uids)
    assert read_dicom_series(folder, series_uid=uids[1]).shape == (32, 32, 12)


def test_cli_refuses_a_faulty_series_in_one_line_with_status_2(tmp_path, capsys):
    _write_conflicting_duplicate(tmp_path / "s")
    assert main(["masks", str(tmp_path / "s"), "--out", str(tmp_path / "m")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (tqdm's bar aside)
    assert len(err) == 1 and "globalmask masks: error:" in err[0]
    err = err[0]
    assert "share the slice position" in err and str(tmp_path / "s") in err


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
