"""io.py: reading and writing volumes with their geometry, atomic writes, clear errors, and DICOM series
with real-world geometry faults (read correctly, resampled and recorded, or refused)."""

from __future__ import annotations

import gzip
import logging
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globalmask.cli import main
from globalmask.dicom_rt import write_ct_series
from globalmask.errors import GeometryError, GlobalmaskError, InputFileError
from globalmask.io import (
    Volume,
    affine_to_sitk_geometry,
    case_id_from_path,
    check_same_grid,
    read_affine,
    read_dicom_series,
    read_volume,
    sitk_geometry_to_affine,
    write_text,
    write_volume,
)

from .conftest import oblique_affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_preserves_voxels_and_geometry(tmp_path, suffix):
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 2000, size=(7, 9, 5)).astype(np.int16)
    vol = Volume(arr, oblique_affine())
    path = write_volume(vol, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_sitk_geometry_matches_nibabel_for_the_same_file(tmp_path):
    """The same NIfTI file read by nibabel and by SimpleITK gives the same RAS affine."""
    vol = Volume(np.zeros((4, 5, 6), np.int16), oblique_affine(angle_deg=-20))
    path = write_volume(vol, tmp_path / "x.nii.gz")
    img = sitk.ReadImage(str(path))
    aff = sitk_geometry_to_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    np.testing.assert_allclose(aff, nib.load(str(path)).affine, atol=1e-4)
    spacing, origin, direction = affine_to_sitk_geometry(aff)
    np.testing.assert_allclose(sitk_geometry_to_affine(spacing, origin, direction), aff, atol=1e-9)


def test_lps_world_position_of_a_voxel(tmp_path):
    """A voxel's world position (RAS) agrees between a NIfTI and an MHA (LPS) written from it."""
    aff = oblique_affine()
    arr = np.zeros((6, 6, 6), np.uint8)
    arr[1, 2, 3] = 1
    write_volume(Volume(arr, aff), tmp_path / "a.mha")
    img = sitk.ReadImage(str(tmp_path / "a.mha"))
    lps = np.array(img.TransformIndexToPhysicalPoint((1, 2, 3)))
    ras = aff @ [1, 2, 3, 1]
    np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-6)


def test_dicom_series_folder(tmp_path):
    arr = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) * 10 - 300
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((-10.0, 20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(arr.shape[2]):
        sl = img[:, :, k]
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")  # series instance UID
        sl.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(sl)
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5), atol=1e-4)
    np.testing.assert_allclose(vol.affine[:3, 3], [10.0, -20.0, 30.0], atol=1e-4)  # LPS -> RAS


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    vol = Volume(np.ones((3, 3, 3), np.uint8), np.eye(4))
    write_volume(vol, tmp_path / "m.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["m.nii.gz"]


def test_written_files_get_the_usual_permissions(tmp_path):
    """The temporary file behind an atomic write is 0600; the output must follow the umask instead."""
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "r.md", "x")
        write_volume(Volume(np.ones((3, 3, 3), np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    finally:
        os.umask(old)
    for name in ("r.md", "m.nii.gz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_read_affine_matches_read_volume(tmp_path):
    vol = Volume(np.zeros((3, 4, 5), np.int16), oblique_affine())
    for name in ("a.nii.gz", "a.nrrd"):
        write_volume(vol, tmp_path / name)
        np.testing.assert_allclose(read_affine(tmp_path / name), read_volume(tmp_path / name).affine, atol=1e-5)


def test_case_ids():
    assert case_id_from_path("x/openkbp_001_0000.nii.gz") == "openkbp_001"
    assert case_id_from_path("patient7.nrrd") == "patient7"
    assert case_id_from_path("scan_12.nii") == "scan_12"


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match=r"nope\.nii\.gz: file not found"):
        read_volume(tmp_path / "nope.nii.gz")
    good = write_volume(Volume(np.zeros((20, 20, 20), np.int16), np.eye(4)), tmp_path / "g.nii.gz")
    data = good.read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"t\.nii\.gz.*corrupt or truncated"):
        read_volume(tmp_path / "t.nii.gz")


def test_not_3d_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(InputFileError, match="2D"):
        read_volume(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 2), np.int16), np.eye(4)), tmp_path / "multi.nii.gz")
    with pytest.raises(InputFileError, match="several channels"):
        read_volume(tmp_path / "multi.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 1), np.int16), np.eye(4)), tmp_path / "single.nii.gz")
    assert read_volume(tmp_path / "single.nii.gz").shape == (5, 5, 5)


def test_absurd_spacing_is_refused(tmp_path):
    with pytest.raises(GeometryError, match="exceeds 20 mm"):
        write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.diag([1, 1, 25.0, 1])), tmp_path / "s.nii.gz")
        read_volume(tmp_path / "s.nii.gz")


# ----------------------------------------------------------------------------------------------
# datasets and splits


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_write_volume_gives_nibabels_file_content(tmp_path, suffix, monkeypatch):
    """The in-memory NIfTI writer stores exactly what nibabel's own save stores (header and voxels)."""
    import gzip

    import nibabel as nib

    from globalmask import io

    rng = np.random.default_rng(0)
    for array in (
        np.asfortranarray(rng.integers(0, 4, (9, 8, 7)).astype(np.uint8)),
        rng.normal(0, 100, (5, 6, 7)).astype(np.int16),
    ):
        vol = Volume(array, oblique_affine())
        fast = io.write_volume(vol, tmp_path / f"fast{suffix}")
        monkeypatch.setattr(io.formats, "IN_MEMORY_WRITE_BYTES", -1)  # nibabel's streaming save
        slow = io.write_volume(vol, tmp_path / f"slow{suffix}")
        monkeypatch.undo()
        raw = (lambda p: gzip.decompress(p.read_bytes())) if suffix == ".nii.gz" else (lambda p: p.read_bytes())
        assert raw(fast) == raw(slow)
        back = io.read_volume(fast)
        np.testing.assert_array_equal(back.array, array)
        np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
        assert nib.load(fast).header.get_xyzt_units() == ("mm", "unknown")


# ----------------------------------------------------------------------------------------------
# robustness: random bytes, corrupted headers and absurd sizes give a volume or a clear error (hypothesis)


FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_nifti_bytes() -> bytes:
    arr = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 1000
    img = nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0]))
    return img.to_bytes()


VALID = _valid_nifti_bytes()


def _read_or_clear_error(path) -> None:
    """The only acceptable outcomes: a Volume with a sane geometry, or a GlobalmaskError."""
    try:
        vol = read_volume(path)
    except GlobalmaskError as exc:
        assert str(path.name) in str(exc)
        return
    assert vol.array.ndim == 3
    assert np.all(np.isfinite(vol.affine))


@FUZZ
@given(data=st.binary(min_size=0, max_size=2000), suffix=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha"]))
def test_random_bytes_give_a_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" and data[:1] == b"\x00" else data)
    _read_or_clear_error(path)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 347), st.integers(0, 255)), min_size=1, max_size=12), compress=st.booleans()
)
def test_corrupted_nifti_headers_give_a_volume_or_a_clear_error(tmp_path, edits, compress):
    raw = bytearray(VALID)
    for offset, value in edits:
        raw[offset] = value
    path = tmp_path / ("h.nii.gz" if compress else "h.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    _read_or_clear_error(path)


@FUZZ
@given(
    dims=st.lists(st.integers(-5, 2**31 - 1), min_size=3, max_size=3),
    pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=3),
)
def test_absurd_nifti_dimensions_and_spacings(tmp_path, dims, pixdim):
    """Huge declared sizes must be refused before allocating; odd spacings named as such."""
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(VALID), check=False)
    hdr["dim"][1:4] = [max(-32768, min(32767, d)) for d in dims]
    hdr["pixdim"][1:4] = pixdim
    raw = hdr.binaryblock + b"\x00" * 4 + VALID[352:]
    path = tmp_path / "d.nii"
    path.write_bytes(raw)
    _read_or_clear_error(path)


# ----------------------------------------------------------------------------------------------
# DICOM series with real-world geometry faults. Every series is written with pydicom from a volume whose
# voxel values are a known linear function of the world position, so a correctly placed and linearly
# resampled voxel has a value we can compute by hand.


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
    pytest.importorskip("pydicom")  # the DICOM writer is an optional extra: only these tests need it
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
    vol, _ = write_series(tmp_path / "s", pos)
    got = read_volume(tmp_path / "s")
    assert "uneven slice spacing" in got.notes["dicom_geometry"]["faults"][0]
    # planes no farther apart than the closest slices (2 mm), from the first slice (0 mm) to the last (39 mm):
    # 20 intervals of 1.95 mm (issue 25: a 2 mm grid of 20 planes ended at 38 mm and dropped the last slice)
    assert got.spacing[2] == pytest.approx(1.95)
    assert got.shape[2] == 21
    np.testing.assert_allclose(got.array, _expected_on_grid(got), atol=1.0)
    np.testing.assert_array_equal(got.array[:, :, [0, -1]], vol.array[:, :, [0, -1]])  # both end slices as they are
    last_z = (got.affine @ [0, 0, got.shape[2] - 1, 1])[2]
    assert last_z == pytest.approx(pos[-1, 2], abs=1e-4)


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


def test_check_same_grid_tolerates_rounding_and_refuses_another_grid(tmp_path):
    """The one rule for voxels that must line up (label/image, prediction/reference): shape, affine within 0.01 mm."""
    aff = oblique_affine((0.9, 1.1, 2.5))
    ref = Volume(np.zeros((6, 5, 4), np.uint8), aff, tmp_path / "ref.nii.gz")
    near = aff.copy()
    near[:3, 3] += 0.004  # float rounding of a header: same grid
    check_same_grid(Volume(np.zeros((6, 5, 4), np.uint8), near, tmp_path / "a.nii.gz"), ref, "label", "image", "why")
    with pytest.raises(
        GeometryError, match=r"label shape \(6, 5, 3\) differs from image shape \(6, 5, 4\): not aligned"
    ) as exc:
        check_same_grid(
            Volume(np.zeros((6, 5, 3), np.uint8), aff, tmp_path / "b.nii.gz"), ref, "label", "image", "not aligned"
        )
    assert "b.nii.gz" in str(exc.value)
    moved = aff.copy()
    moved[:3, 3] += [0.0, 0.5, 0.0]  # half a millimetre off: another grid
    with pytest.raises(
        GeometryError, match=r"prediction affine differs from reference affine by up to 0\.5 mm \(tolerance 0\.01 mm"
    ) as exc:
        check_same_grid(
            Volume(np.zeros((6, 5, 4), np.uint8), moved, tmp_path / "c.nii.gz"), ref, "prediction", "reference", "x"
        )
    assert "c.nii.gz" in str(exc.value)


# ----------------------------------------------------------------------------------------------
# issue 29: series geometry beyond the axial, positive-tilt case


def _oriented_series(folder, row, col, n=12, drop=None, seed=0):
    """A series whose slices lie along ``normal = row x col`` (LPS), written under shuffled file names
    (names out of slice order, as exports from some scanners are); ``drop`` removes one slice."""
    pytest.importorskip("pydicom")
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    spacing = (1.5, 1.25, 2.0)
    shape = (10, 9, n)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    positions = np.array([ORIGIN_LPS + k * spacing[2] * normal for k in range(n)])
    arr = np.stack(
        [world_value(p + i[..., None] * spacing[0] * row + j[..., None] * spacing[1] * col) for p in positions], axis=2
    )
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.column_stack(
        [row * spacing[0], col * spacing[1], normal * spacing[2]]
    )
    aff[:3, 3] = ORIGIN_LPS * [-1, -1, 1]
    files = write_ct_series(Volume(np.rint(arr).astype(np.int16), aff), folder, positions=positions)
    if drop is not None:
        files[drop].unlink()
        files = [f for k, f in enumerate(files) if k != drop]
    names = [f.name for f in files]
    perm = np.random.default_rng(seed).permutation(len(files))
    for f in files:
        f.rename(f.with_name("tmp_" + f.name))
    for f, p in zip(files, perm):
        f.with_name("tmp_" + f.name).rename(f.with_name(names[p]))  # slice k now lies in a file named after another one
    return positions, normal


ORIENTATIONS = {
    "sagittal": ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),  # slices stacked along x (L-R)
    "coronal": ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),  # slices stacked along y (A-P)
}


@pytest.mark.parametrize("drop", [None, 5], ids=["regular", "gap"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_non_axial_series_in_shuffled_files_reads_every_voxel_where_it_lies(tmp_path, orientation, drop):
    """Issue 29: slices of a sagittal or coronal series must be ordered along their own normal, not
    by z or by file name, whether the reader is handed the folder or the files in name order."""
    row, col = ORIENTATIONS[orientation]
    positions, normal = _oriented_series(tmp_path / "s", row, col, drop=drop)
    files = sorted((tmp_path / "s").iterdir())
    for got in (read_volume(tmp_path / "s"), read_dicom_series(tmp_path / "s", files=files)):
        assert got.shape[2] == len(positions)  # the gap comes back as one interpolated plane
        np.testing.assert_allclose(got.array, _expected_on_grid(got), atol=1.0)
        axis = np.diag([-1.0, -1.0, 1.0]) @ got.affine[:3, 2]
        np.testing.assert_allclose(axis / np.linalg.norm(axis), normal, atol=1e-6)  # planes stacked along the normal
        first = np.diag([-1.0, -1.0, 1.0]) @ got.affine[:3, 3]
        # starting at the first slice, whichever file holds it
        np.testing.assert_allclose(first, positions[0], atol=1e-3)
        assert ("dicom_geometry" in got.notes) == (drop is not None)


def test_negative_gantry_tilt_is_resampled_like_a_positive_one(tmp_path):
    """Issue 29: slices shifted towards -y (the gantry tilted the other way) must be un-sheared too:
    the grid starts at the most negative in-plane offset and covers every slice."""
    angle = np.deg2rad(-15.0)
    pos = regular_positions()
    pos[:, 1] += np.arange(len(pos)) * SPACING[2] * np.tan(angle)
    write_series(tmp_path / "s", pos)
    got = read_volume(tmp_path / "s")
    note = got.notes["dicom_geometry"]
    assert note["resampled"] and "gantry tilt of about 15.0 degrees" in note["faults"][0]
    shift = abs(pos[-1, 1] - pos[0, 1])
    # wide enough for every slice
    assert got.shape[:2] == (SHAPE[0], SHAPE[1] + int(np.ceil(shift / SPACING[1] - 1e-6)))
    # the grid's first row is the lowest in-plane position of any slice (the last one's), not the first slice's
    origin_lps = np.diag([-1.0, -1.0, 1.0]) @ got.affine[:3, 3]
    np.testing.assert_allclose(origin_lps, [pos[0, 0], pos[-1, 1], pos[0, 2]], atol=1e-3)
    expected = _expected_on_grid(got)
    covered = got.array > got.array.min()
    inner = covered.copy()
    inner[:, :2] = inner[:, -2:] = False
    assert inner.sum() > 0.5 * got.array.size
    np.testing.assert_allclose(got.array[inner], expected[inner], atol=1.0)
    # each slice's own pixels land where the slice lay: slice 0 at its (unshifted) rows, the last one shifted
    for k in (0, len(pos) - 1):
        row0 = int(round((pos[k, 1] - pos[-1, 1]) / SPACING[1]))
        world = pos[k] + np.array([0.0, 0.0, 0.0])
        assert got.array[0, row0, k] == pytest.approx(world_value(world), abs=1.0)


def test_series_geometry_of_no_slices_and_of_a_thin_tilted_stack(tmp_path):
    """analyse_series_geometry (pure): no images is refused by name; a tilted stack thinner than 1 mm
    still reports its tilt angle (atan of the in-plane shift over the extent along the normal)."""
    from pathlib import Path

    from globalmask.io.dicom import DicomSlice, analyse_series_geometry

    with pytest.raises(InputFileError, match="DICOM series holds no images"):
        analyse_series_geometry([], tmp_path)
    eye = np.eye(3)
    slices = [
        DicomSlice(Path(f"s{k}.dcm"), np.array([0.0, 0.1 * k, 0.5 * k]), eye, (4, 4), (1.0, 1.0), "1.2.3")
        for k in range(3)
    ]
    geom = analyse_series_geometry(slices, tmp_path)
    assert geom.spacing_z == pytest.approx(0.5)
    assert any("gantry tilt of about 11.3 degrees" in f for f in geom.faults), geom.faults


# ----------------------------------------------------------------------------------------------
# io.volume and io.files on their own (issue 29: what their mutants asked for)


def test_volume_needs_a_4x4_affine_and_with_array_keeps_geometry_path_and_notes(tmp_path):
    from globalmask.io import Volume

    with pytest.raises(GeometryError, match=r"affine must be 4x4, got \(3, 3\)") as err:
        Volume(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "v.nii")
    assert err.value.path == tmp_path / "v.nii"
    vol = Volume(np.zeros((2, 3, 4), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]), tmp_path / "v.nii", {"resampled": True})
    new = vol.with_array(np.ones((2, 3, 4), np.uint8))
    assert new.array.dtype == np.uint8 and new.array.sum() == 24 and new.path == vol.path
    np.testing.assert_array_equal(new.affine, vol.affine)
    assert new.notes == {"resampled": True} and new.notes is not vol.notes  # a copy: the original's notes stay
    new.notes["x"] = 1
    assert vol.notes == {"resampled": True}


def test_same_geometry_within_the_tolerance_only():
    from globalmask.io import Volume, same_geometry

    a = Volume(np.zeros((4, 4, 4)), np.diag([2.0, 2.0, 3.0, 1.0]))
    moved = a.affine.copy()
    moved[0, 3] += 0.005  # header round-off: the same grid
    assert same_geometry(a, a) and same_geometry(a, Volume(np.zeros((4, 4, 4)), moved))
    moved[0, 3] += 0.5
    assert not same_geometry(a, Volume(np.zeros((4, 4, 4)), moved))
    assert not same_geometry(a, Volume(np.zeros((4, 4, 5)), a.affine))


def test_spacing_check_accepts_20_mm_and_names_the_file_of_a_broken_affine(tmp_path):
    from globalmask.io.volume import check_spacing

    check_spacing(np.diag([0.5, 0.5, 20.0, 1.0]))  # 20 mm slices: thick, still a CT
    with pytest.raises(GeometryError, match="exceeds 20 mm"):
        check_spacing(np.diag([0.5, 0.5, 20.001, 1.0]))
    broken = np.eye(4)
    broken[1, 1] = np.nan
    with pytest.raises(GeometryError, match="NaN or infinite") as err:
        check_spacing(broken, tmp_path / "v.nii.gz")
    assert err.value.path == tmp_path / "v.nii.gz"


def test_json_safe_and_write_json_convert_numpy_values_and_paths(tmp_path):
    from pathlib import Path

    from globalmask.io import json_safe, read_json, write_json

    obj = {"yes": np.bool_(True), "no": False, "n": np.int64(3), "x": np.float32(0.5), "nan": float("nan"),
           "inf": np.float64("inf"), "arr": np.array([1, 2]), "path": Path("a/b.nii.gz"), "t": (1.5, None)}
    assert json_safe(obj) == {"yes": True, "no": False, "n": 3, "x": 0.5, "nan": None, "inf": None, "arr": [1, 2],
                              "path": "a/b.nii.gz", "t": [1.5, None]}
    assert type(json_safe(np.bool_(True))) is bool and type(json_safe(np.float32(0.5))) is float
    written = {"n": np.int64(3), "x": np.float32(0.5), "arr": np.arange(3), "path": Path("a/b")}
    write_json(tmp_path / "o.json", written)
    assert read_json(tmp_path / "o.json") == {"n": 3, "x": 0.5, "arr": [0, 1, 2], "path": "a/b"}


def test_read_json_refusals_name_the_file_and_the_problem(tmp_path):
    from globalmask.errors import DatasetError
    from globalmask.io import read_json

    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n  oops}', encoding="utf-8")
    with pytest.raises(DatasetError, match="malformed JSON at line 2 column 3: Expecting property name") as err:
        read_json(bad)
    assert err.value.path == bad
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_json(bad)
    assert str(err.value) == f"{bad}: expected a JSON object, got list"
    with pytest.raises(InputFileError) as err:
        read_json(tmp_path / "absent.json")
    assert str(err.value) == f"{tmp_path / 'absent.json'}: cannot read (No such file or directory)"


def test_a_failed_write_says_why_and_what_was_kept(tmp_path):
    from globalmask.io.files import write_failure

    target = tmp_path / "summary.json"
    disk_full = OSError(28, "No space left on device")
    assert write_failure(target, disk_full) == (
        "could not write summary.json (No space left on device; is the disk full?); nothing was written under that name"
    )
    target.write_text("{}", encoding="utf-8")
    assert write_failure(target, disk_full).endswith("; the previous summary.json is unchanged")
    # an error without strerror: its last line is the reason, else its type
    three_lines = RuntimeError("write failed\nat block 7\nquota exceeded")
    assert "(quota exceeded; is the disk" in write_failure(target, three_lines)
    assert "(RuntimeError; is the disk" in write_failure(target, RuntimeError())


# ----------------------------------------------------------------------------------------------
# io.formats and io.readers on their own (issue 29: what their mutants asked for)


def test_reading_needs_the_memory_of_the_voxels_and_eight_bytes_each_when_scaled(tmp_path, monkeypatch):
    from globalmask import checks
    from globalmask.errors import ResourceError

    write_volume(Volume(np.zeros((20, 10, 10), np.int16), np.eye(4)), tmp_path / "plain.nii")  # 4000 bytes
    raw = bytearray((tmp_path / "plain.nii").read_bytes())
    raw[112:116] = np.float32(2.0).tobytes()  # scl_slope 2: the voxels are read as float64, 16000 bytes
    (tmp_path / "scaled.nii").write_bytes(bytes(raw))
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 3000)
    with pytest.raises(ResourceError, match=r"reading a \(20, 10, 10\) volume needs about") as err:
        read_volume(tmp_path / "plain.nii")
    assert err.value.path == tmp_path / "plain.nii"
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 5000)
    assert read_volume(tmp_path / "plain.nii").shape == (20, 10, 10)
    with pytest.raises(ResourceError):
        read_volume(tmp_path / "scaled.nii")
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 17000)
    assert read_volume(tmp_path / "scaled.nii").array.max() == 0


def test_shape_refusals_name_the_file_and_say_what_the_array_is(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "flat.nii.gz")
    assert err.value.path == tmp_path / "flat.nii.gz"
    assert err.value.problem == "expected a 3D volume, got an array of shape (5, 5) (a 2D image)"
    nib.save(nib.Nifti1Image(np.zeros(7, np.int16), np.eye(4)), tmp_path / "line.nii.gz")
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "line.nii.gz")
    assert err.value.problem == "expected a 3D volume, got an array of shape (7,)"  # neither 2D nor channels


def test_a_gzip_cut_after_its_voxels_is_refused_as_truncated(tmp_path):
    """nibabel would read the voxels of a .nii.gz whose checksum and length trailer are gone as if whole."""
    good = write_volume(Volume(np.arange(8000, dtype=np.int16).reshape(20, 20, 20), np.eye(4)), tmp_path / "g.nii.gz")
    (tmp_path / "cut.nii.gz").write_bytes(good.read_bytes()[:-8])
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "cut.nii.gz")
    assert err.value.path == tmp_path / "cut.nii.gz"
    assert err.value.problem.startswith("gzip stream is corrupt or truncated: it ends before its end-of-stream marker")


def test_data_types_that_are_not_intensities_are_refused_by_name():
    from globalmask.io import check_data_type

    for ok in (np.int16, np.uint8, np.bool_, np.float32, np.float64, np.int64):
        check_data_type(ok)
    with pytest.raises(InputFileError) as err:
        check_data_type(np.complex64, "c.nii")
    assert str(err.value) == (
        "c.nii: voxel data type complex (<c8) is not a scalar intensity; expected integers or floats of up to 64 bits"
    )
    with pytest.raises(InputFileError, match=r"data type RGB/structured \(\|V3\)"):
        check_data_type(np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]))
    with pytest.raises(InputFileError, match=r"data type <U4 \(<U4\)"):
        check_data_type("U4")


def test_header_check_accepts_good_files_and_refuses_each_bad_one_by_name(tmp_path):
    from globalmask.io import check_volume_header

    vol = Volume(np.zeros((3, 4, 5), np.int16), np.eye(4))
    for name in ("a.nii.gz", "a.nii", "a.nrrd", "a.mha"):
        check_volume_header(write_volume(vol, tmp_path / name))
    check_volume_header(tmp_path)  # a folder: a DICOM series is checked when read
    with pytest.raises(InputFileError) as err:
        check_volume_header(tmp_path / "absent.nii.gz")
    assert str(err.value) == f"{tmp_path / 'absent.nii.gz'}: file not found"
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    for check in (check_volume_header, read_affine):
        with pytest.raises(InputFileError) as err:
            check(tmp_path / "notes.txt")
        assert err.value.path == tmp_path / "notes.txt"
        assert err.value.problem.startswith("unknown volume format (expected one of .nii.gz, .nii, ")
    (tmp_path / "broken.nii").write_bytes(b"\0" * 400)
    with pytest.raises(InputFileError, match="cannot read NIfTI file") as err:
        check_volume_header(tmp_path / "broken.nii")
    assert err.value.path == tmp_path / "broken.nii"


def test_read_affine_of_a_volume_with_a_singleton_fourth_axis(tmp_path):
    image = sitk.Image([4, 5, 6, 1], sitk.sitkInt16)
    image.SetSpacing([0.5, 0.7, 2.0, 1.0])
    image.SetOrigin([1.0, 2.0, 3.0, 0.0])
    sitk.WriteImage(image, str(tmp_path / "t.nrrd"))
    expected = np.array([[-0.5, 0, 0, -1.0], [0, -0.7, 0, -2.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])  # LPS to RAS
    np.testing.assert_allclose(read_affine(tmp_path / "t.nrrd"), expected)
    assert read_volume(tmp_path / "t.nrrd").shape == (4, 5, 6)
    np.testing.assert_allclose(read_volume(tmp_path / "t.nrrd").affine, expected)
