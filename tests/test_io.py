from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from globalmask.dataset import load_dataset, make_split, resolve_split, select_training_cases, validate_split
from globalmask.errors import DatasetError, GeometryError, InputFileError
from globalmask.io import (
    Volume,
    affine_to_sitk_geometry,
    case_id_from_path,
    read_affine,
    read_volume,
    sitk_geometry_to_affine,
    write_text,
    write_volume,
)

from .conftest import OPENKBP, make_tiny_dataset, needs_openkbp, oblique_affine


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


def test_nnunet_dataset_and_seeded_split(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=10)
    ds = load_dataset(root)
    assert len(ds) == 10 and ds.structures == {"left": 1, "right": 2}
    split, source = resolve_split(ds, seed=3)
    assert "seeded" in source
    assert sorted([*split.train, *split.validation, *split.test]) == sorted(ds.cases)
    assert (len(split.train), len(split.validation), len(split.test)) == (6, 2, 2)
    assert make_split(ds.cases, seed=3) == split  # deterministic
    assert make_split(ds.cases, seed=4) != split


def test_split_validation_errors():
    ids = ["a", "b", "c", "d"]
    with pytest.raises(DatasetError, match="not in the dataset"):
        validate_split({"train": ["a", "x"], "validation": [], "test": []}, ids)
    with pytest.raises(DatasetError, match="in both 'train' and 'test'"):
        validate_split({"train": ["a", "b"], "validation": ["c"], "test": ["b"]}, ids)
    with pytest.raises(DatasetError, match="more than once"):
        validate_split({"train": ["a", "a"], "validation": [], "test": []}, ids)


def test_training_subsets_are_seeded_and_nested_in_train():
    ids = [f"c{i}" for i in range(20)]
    a = select_training_cases(ids, 4, seed=1)
    assert a == select_training_cases(list(reversed(ids)), 4, seed=1)  # order of the list does not matter
    assert len(set(a)) == 4 and set(a) <= set(ids)
    assert select_training_cases(ids, 4, seed=2) != a
    assert select_training_cases(ids, None, seed=2) == sorted(ids)


def test_plain_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("p1", "p2"):
        write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "images" / f"{name}.nrrd")
        lab = np.zeros((4, 4, 4), np.uint8)
        lab[1, 1, 1] = 3
        write_volume(Volume(lab, np.eye(4)), tmp_path / "labels" / f"{name}.nii.gz")
    ds = load_dataset(tmp_path)
    assert set(ds.cases) == {"p1", "p2"} and ds.labels == {"background": 0, "label_3": 3}
    (tmp_path / "labels.json").write_text(json.dumps({"liver": 3}))
    assert load_dataset(tmp_path).labels == {"background": 0, "liver": 3}


@needs_openkbp
def test_openkbp_dataset_loads_with_its_fixed_split():
    ds = load_dataset(OPENKBP)
    assert len(ds) == 46
    assert ds.structures == {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "mandible": 5}
    split, source = resolve_split(ds)
    assert source.endswith("splits.json")
    assert (len(split.train), len(split.validation), len(split.test)) == (26, 10, 10)
    vol = read_volume(ds.cases["openkbp_001"].image)
    assert vol.shape == (128, 128, 128) and nib.aff2axcodes(vol.affine) == ("P", "L", "I")
