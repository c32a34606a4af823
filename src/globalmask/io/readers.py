"""The one door from a path to a volume: NIfTI, NRRD/MetaImage or a DICOM series folder."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputFileError
from .dicom import _read_dicom_series
from .formats import _read_nifti, _read_sitk, _sitk_header
from .volume import (
    NIFTI_SUFFIXES,
    SITK_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    check_spacing,
    sitk_geometry_to_affine,
    volume_suffix,
)

# ----------------------------------------------------------------------------------------------
# reading


def read_volume(path: str | Path) -> Volume:
    """Read a 3D volume (NIfTI, NRRD, MetaImage or a DICOM series folder) with its geometry.

    Raises :class:`~globalmask.errors.InputFileError` naming the file when it is missing,
    unreadable, corrupt or not a single-channel 3D volume, and
    :class:`~globalmask.errors.GeometryError` for absurd spacing.

    Parameters
    ----------
    path : str or Path
        A volume file or a folder holding one DICOM image series.

    Returns
    -------
    Volume
        The voxels (array order as stored: x, y, z for NIfTI) with their RAS+ affine (mm).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError("file not found", path)
    volume: Volume | None
    if path.is_dir():
        volume = _read_dicom_series(path)
    else:
        suffix = volume_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            volume = _read_nifti(path)
        elif suffix in SITK_SUFFIXES:
            volume = _read_sitk(path)
        else:
            raise InputFileError(
                f"unknown volume format (expected one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder)",
                path,
            )
    assert volume is not None  # only header_only reads return None
    check_spacing(volume.affine, path)
    return volume



def read_affine(path: str | Path) -> np.ndarray:
    """The affine of a volume from its header only (no voxel data read): cheap for big cohorts.

    Parameters
    ----------
    path : str or Path
        A volume file or DICOM folder (a folder is read in full).

    Returns
    -------
    numpy.ndarray
        The 4x4 RAS+ voxel-to-world affine (mm).
    """
    path = Path(path)
    if path.is_file() and volume_suffix(path) in NIFTI_SUFFIXES:
        try:
            # every NIfTI image has an affine
            return np.asarray(nib.load(str(path)).affine, dtype=np.float64)  # type: ignore[attr-defined]
        except Exception as exc:
            raise InputFileError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from exc
    if path.is_file() and volume_suffix(path) in SITK_SUFFIXES:
        reader = _sitk_header(path)
        return sitk_geometry_to_affine(
            reader.GetSpacing()[:3],
            reader.GetOrigin()[:3],
            np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3],
        )
    return read_volume(path).affine



def check_volume_header(path: str | Path) -> None:
    """Check a volume file from its header alone (no voxel data read), so a batch command can
    refuse a broken input before it starts working: existence, format, data type, declared size
    (plausible, and present in the file), spacing. DICOM folders are checked when read.

    Parameters
    ----------
    path : str or Path
        A volume file or DICOM folder.

    Raises
    ------
    InputFileError
        When the file is missing, of an unknown format, or its header is broken or implausible.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError("file not found", path)
    if path.is_dir():
        return
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        _read_nifti(path, header_only=True)
    elif suffix in SITK_SUFFIXES:
        _read_sitk(path, header_only=True)
    else:
        raise InputFileError(
            f"unknown volume format (expected one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder)", path
        )
