"""What a volume is: a 3D array with its RAS+ affine, the names of volume files, and grid geometry.

The geometry rules live here once: voxel spacing from the affine (:func:`voxel_spacing`), the
SimpleITK (LPS) conversion, the spacing a header may declare, and the one tolerance
(:data:`GEOMETRY_ATOL_MM`) that decides whether two grids are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import GeometryError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES

#: Spacings above this (mm) are treated as a broken header rather than a real scan.
MAX_SPACING_MM = 20.0

#: Two grids are the same when their affines agree within this (mm). One value for every check
#: (image vs label in training, prediction vs reference in evaluation): header round-off is far
#: below it (float32 positions of ~500 mm are good to ~1e-4 mm) and a real grid change far above.
GEOMETRY_ATOL_MM = 1e-2

#: A header declaring more voxels than this (or a side longer than MAX_SIDE) is broken, not a CT:
#: refused before any memory is allocated. 2**31 voxels is 16x a 1024x1024x2048 whole-body scan.
MAX_VOXELS = 2**31
MAX_SIDE = 16384

# SimpleITK works in LPS, NIfTI in RAS: flipping the first two world axes converts between them.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis: the column norms of the affine's 3x3 part.

    The one definition of spacing: whatever the orientation (flips, rotations, LPS or RAS), the
    length of one step along an array axis is the norm of that axis' column.

    Parameters
    ----------
    affine : numpy.ndarray
        The 4x4 (or 3x4) voxel-to-world affine, mm.

    Returns
    -------
    numpy.ndarray
        Shape (3,): the spacing in mm along array axes 0, 1, 2.
    """
    return np.asarray(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine (RAS+, mm).

    ``array[i, j, k]`` sits at world position ``affine @ [i, j, k, 1]``.

    Attributes
    ----------
    array : numpy.ndarray
        The voxels, 3D, indexed ``[i, j, k]`` along the affine's columns.
    affine : numpy.ndarray
        The 4x4 voxel-to-world affine (RAS+, mm).
    path : Path or None
        The file or folder the volume was read from, named in errors; not compared.
    notes : dict[str, Any]
        How the volume was read when that matters downstream; not compared.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = field(default=None, compare=False)
    #: How the volume was read when that matters downstream (e.g. a DICOM series resampled onto
    #: a regular grid); written beside predictions as a sidecar JSON.
    notes: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise GeometryError(f"affine must be 4x4, got {self.affine.shape}", self.path)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The array's shape (voxels along array axes 0, 1, 2).

        Returns
        -------
        tuple of int
            The three sides.
        """
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine).

        Returns
        -------
        tuple of float
            The spacing in mm along array axes 0, 1, 2.
        """
        sx, sy, sz = (float(s) for s in voxel_spacing(self.affine))
        return sx, sy, sz

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxels (which must have the same shape).

        Parameters
        ----------
        array : numpy.ndarray
            The new voxels, with this volume's shape.

        Returns
        -------
        Volume
            A volume with ``array``, a copy of this affine, the same path and a copy of the notes.
        """
        if tuple(array.shape) != self.shape:
            raise GeometryError(f"new array shape {array.shape} differs from {self.shape}", self.path)
        return Volume(array, self.affine.copy(), self.path, dict(self.notes))


# ----------------------------------------------------------------------------------------------
# naming


def volume_suffix(path: str | Path) -> str:
    """The volume-format suffix of ``path`` ('.nii.gz', '.nrrd', ...), or '' if it has none.

    Parameters
    ----------
    path : str or Path
        A file name or path.

    Returns
    -------
    str
        The lower-case suffix, one of :data:`VOLUME_SUFFIXES`, or ''.
    """
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def strip_suffix(path: str | Path) -> str:
    """File name without its volume suffix: 'case_0000.nii.gz' -> 'case_0000'.

    Parameters
    ----------
    path : str or Path
        A file name or path.

    Returns
    -------
    str
        The file name (no folder) without its volume suffix.
    """
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def case_id_from_path(path: str | Path) -> str:
    """nnU-Net style case id: drop the volume suffix and a trailing 4-digit channel tag.

    'openkbp_001_0000.nii.gz' -> 'openkbp_001'; 'patient7.nrrd' -> 'patient7'. Predictions are named
    by this id so that they line up with nnU-Net's label files.

    Parameters
    ----------
    path : str or Path
        An image, label or prediction file.

    Returns
    -------
    str
        The case id.
    """
    stem = strip_suffix(path)
    if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
        return stem[:-5]
    return stem


def is_volume_path(path: str | Path) -> bool:
    """True when ``path`` is a volume file (by suffix) or a folder holding DICOM files.

    Parameters
    ----------
    path : str or Path
        A file or folder.

    Returns
    -------
    bool
        Whether :func:`~globalmask.io.read_volume` would try to read it.
    """
    p = Path(path)
    return (p.is_file() and volume_suffix(p) != "") or (p.is_dir() and _looks_like_dicom_dir(p))


def _looks_like_dicom_dir(path: Path) -> bool:
    return any(
        child.is_file() and child.suffix.lower() in (".dcm", ".ima", "") and _has_dicm_magic(child)
        for child in path.iterdir()
    )


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# geometry helpers


def sitk_geometry_to_affine(spacing: ArrayLike, origin: ArrayLike, direction: ArrayLike) -> np.ndarray:
    """SimpleITK (LPS) spacing/origin/direction -> RAS+ 4x4 affine in array order (x, y, z).

    Parameters
    ----------
    spacing : array_like
        The three voxel sizes (mm), SimpleITK order (x, y, z).
    origin : array_like
        The world position of voxel (0, 0, 0) in LPS (mm).
    direction : array_like
        The 3x3 direction cosines (nine values, row-major) in LPS.

    Returns
    -------
    numpy.ndarray
        The 4x4 RAS+ affine.
    """
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)
    return affine


def affine_to_sitk_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Inverse of :func:`sitk_geometry_to_affine`: (spacing, origin, direction) in LPS.

    Parameters
    ----------
    affine : numpy.ndarray
        A 4x4 RAS+ affine (mm).

    Returns
    -------
    spacing : tuple of float
        The three voxel sizes (mm).
    origin : tuple of float
        The LPS position of voxel (0, 0, 0) (mm).
    direction : tuple of float
        The nine direction cosines, row-major, LPS.
    """
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :4]
    spacing = voxel_spacing(lps)
    direction = lps[:, :3] / spacing
    return tuple(spacing.tolist()), tuple(lps[:, 3].tolist()), tuple(direction.ravel().tolist())


def check_spacing(affine: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse zero, negative, non-finite or absurd (> 20 mm) voxel sizes.

    Parameters
    ----------
    affine : numpy.ndarray
        The 4x4 voxel-to-world affine (mm).
    path : str or Path or None
        The file named in the error.

    Raises
    ------
    GeometryError
        When the affine is non-finite, degenerate or has a spacing above :data:`MAX_SPACING_MM`.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise GeometryError("the affine contains NaN or infinite values (broken header)", path)
    spacing = voxel_spacing(affine)
    if np.any(spacing < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise GeometryError(
            f"voxel spacing {np.round(spacing, 4).tolist()} mm has a zero axis (broken header)", path
        )
    if np.any(spacing > MAX_SPACING_MM):
        raise GeometryError(
            f"voxel spacing {np.round(spacing, 3).tolist()} mm exceeds {MAX_SPACING_MM:g} mm: "
            "not a plausible CT grid (check the header's pixdim / spacing)",
            path,
        )



def affine_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two affines (mm; NaN-safe: NaN compares as different).

    Parameters
    ----------
    a, b : numpy.ndarray
        The two 4x4 affines (mm).

    Returns
    -------
    float
        The largest absolute element difference, ``inf`` when any is NaN.
    """
    d = float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
    return d if math.isfinite(d) else math.inf


def check_same_grid(vol: Volume, ref: Volume, what: str, ref_what: str, consequence: str) -> None:
    """Raise :class:`GeometryError` naming ``vol``'s file unless it lies on ``ref``'s voxel grid.

    One rule and one message for every pair that must share voxels (a label and its image, a
    prediction and its reference): equal shapes, affines within :data:`GEOMETRY_ATOL_MM`.
    ``consequence`` says why the mismatch matters to the caller.

    Parameters
    ----------
    vol : Volume
        The volume checked; its path is named in the error.
    ref : Volume
        The volume whose grid ``vol`` must share.
    what : str
        How the message names ``vol`` (e.g. 'label').
    ref_what : str
        How the message names ``ref`` (e.g. 'image').
    consequence : str
        The end of the message: why the mismatch matters.

    Raises
    ------
    GeometryError
        When shapes differ or affines differ by more than :data:`GEOMETRY_ATOL_MM`.
    """
    if vol.shape != ref.shape:
        raise GeometryError(
            f"{what} shape {vol.shape} differs from {ref_what} shape {ref.shape}: {consequence}", vol.path
        )
    diff = affine_difference(vol.affine, ref.affine)
    if not diff <= GEOMETRY_ATOL_MM:
        raise GeometryError(
            f"{what} affine differs from {ref_what} affine by up to {diff:.4g} mm (tolerance {GEOMETRY_ATOL_MM:g} mm; "
            f"spacing, origin or orientation): {consequence}",
            vol.path,
        )


def same_geometry(a: Volume, b: Volume, atol_mm: float = GEOMETRY_ATOL_MM) -> bool:
    """True when both volumes have the same shape and affines agreeing within ``atol_mm``
    (:data:`GEOMETRY_ATOL_MM`, the one tolerance used by train, predict and evaluate).

    Parameters
    ----------
    a, b : Volume
        The two volumes.
    atol_mm : float
        The largest affine difference (mm) still counted as the same grid.

    Returns
    -------
    bool
        Whether they share a voxel grid.
    """
    return a.shape == b.shape and affine_difference(a.affine, b.affine) <= atol_mm
