"""DICOM CT series: slices grouped by series, their geometry checked (never assumed), faults repaired
on a regular grid or refused by name."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import GeometryError, GlobalmaskError, InputFileError
from .formats import _check_read_memory, _sitk_header, _sitk_image_to_volume
from .volume import _LPS_TO_RAS, Volume

# DICOM series: the geometry of a stack of slices is checked, never assumed.
#
# A CT series is a set of 2D slices, each with its own ImagePositionPatient (IPP) and
# ImageOrientationPatient (IOP). Readers that take the first slice's origin and the distance
# between the first two slices silently produce a wrong affine when a slice is missing, the
# spacing is uneven, two slices share a position or the gantry was tilted (slices shifted
# in-plane). Here slices are sorted by the projection of IPP on the slice normal and every fault is
# either repaired explicitly (resampled onto a regular orthogonal grid, recorded in
# ``Volume.notes`` and logged) or refused with a one-line error naming the series and the fault.

#: Two slices closer than this along the normal (mm) share one position.
DICOM_DUPLICATE_TOL_MM = 0.01
#: Gaps may differ from the median gap by this fraction (or 0.01 mm) and still count as regular.
DICOM_SPACING_REL_TOL = 0.01
#: In-plane shift between slices (mm) above which the series counts as gantry-tilted.
DICOM_TILT_TOL_MM = 0.01
#: A gap larger than this many regular spacings is a block of missing slices: refused, not invented.
DICOM_MAX_GAP_FACTOR = 3.0

_NON_IMAGE_MODALITIES = {"RTSTRUCT", "SEG", "REG", "RTPLAN", "RTDOSE", "SR", "PR", "KO"}


@dataclass
class DicomSlice:
    """Header of one DICOM image file: enough to place it in space (LPS, mm).

    Attributes
    ----------
    file : Path
        The DICOM file.
    position : numpy.ndarray
        ImagePositionPatient: the LPS position (mm) of the first pixel.
    direction : numpy.ndarray
        3x3, columns: row direction, column direction, normal (LPS).
    size : tuple of int
        (columns, rows).
    spacing : tuple of float
        (between columns, between rows), mm.
    series_uid : str
        SeriesInstanceUID, '' when absent.
    sop_uid : str
        SOPInstanceUID, '' when absent.
    """

    file: Path
    position: np.ndarray  # ImagePositionPatient (LPS)
    direction: np.ndarray  # 3x3, columns: row direction, column direction, normal (LPS)
    size: tuple[int, int]  # (columns, rows)
    spacing: tuple[float, float]  # (between columns, between rows) in mm
    series_uid: str = ""
    sop_uid: str = ""


def _meta(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def read_dicom_slice_header(file: str | Path) -> DicomSlice:
    """Header of one DICOM image (no pixels read); refuses files without a position.

    Parameters
    ----------
    file : str or Path
        One DICOM image file.

    Returns
    -------
    DicomSlice
        Its position, orientation, size, pixel spacing and UIDs.
    """

    file = Path(file)
    reader = _sitk_header(file, "DICOM")
    if not reader.HasMetaDataKey("0020|0032") or not reader.HasMetaDataKey("0020|0037"):
        raise GeometryError(
            "DICOM image has no ImagePositionPatient/ImageOrientationPatient: cannot place it in space", file
        )
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    return DicomSlice(
        file=file,
        position=np.asarray(reader.GetOrigin()[:3], dtype=np.float64),
        direction=direction,
        size=(int(reader.GetSize()[0]), int(reader.GetSize()[1])),
        spacing=(float(reader.GetSpacing()[0]), float(reader.GetSpacing()[1])),
        series_uid=_meta(reader, "0020|000e"),
        sop_uid=_meta(reader, "0008|0018"),
    )


@dataclass
class SeriesGeometry:
    """Where the slices of a series lie and what (if anything) must be repaired.

    ``slices`` are sorted along the normal (duplicates already removed); ``faults`` lists the
    repaired faults in words.

    Attributes
    ----------
    slices : list of DicomSlice
        The kept slices, sorted along the normal.
    normal_mm : numpy.ndarray
        Position of each slice along the normal relative to the first (mm).
    inplane_mm : numpy.ndarray
        Shape (n, 2): in-plane offset of each slice from the first (mm).
    spacing_z : float
        The slice spacing of the regular grid to read or resample onto (mm); 0 for one slice.
    faults : list of str
        The repaired faults, in words.
    dropped : list of Path
        The identical duplicate slices left out.
    """

    slices: list[DicomSlice]
    normal_mm: np.ndarray  # position of each slice along the normal (mm)
    inplane_mm: np.ndarray  # (n, 2) in-plane offset of each slice from the first (mm)
    spacing_z: float
    faults: list[str]
    dropped: list[Path]

    @property
    def regular(self) -> bool:
        """True when the kept slices already form a regular orthogonal grid (dropping identical
        duplicates does not need resampling).

        Returns
        -------
        bool
            Whether the series can be read as it is, without resampling.
        """
        return len(self.faults) == (1 if self.dropped else 0)


def analyse_series_geometry(
    slices: list[DicomSlice], where: str | Path, pixels: Callable[[Path], np.ndarray] | None = None
) -> SeriesGeometry:
    """Sort slices along their normal and classify the series' geometry (pure, for tests).

    ``pixels(file) -> ndarray`` is used only to compare slices that share a position: identical
    duplicates are dropped (and recorded), different ones refused.

    Parameters
    ----------
    slices : list of DicomSlice
        The headers of the series' images, in any order.
    where : str or Path
        The folder named in errors.
    pixels : callable or None
        ``pixels(file) -> ndarray``: a slice's pixels, for comparing slices at the same position.

    Returns
    -------
    SeriesGeometry
        The sorted slices, their positions and the faults to repair.
    """
    if not slices:
        raise InputFileError("DICOM series holds no images", where)
    first = slices[0]
    _check_same_orientation_and_size(slices, where)
    normal = first.direction[:, 2]
    order = sorted(range(len(slices)), key=lambda i: float(slices[i].position @ normal))
    slices = [slices[i] for i in order]
    uid = first.series_uid or "?"
    faults: list[str] = []
    slices, dropped = _drop_duplicates(slices, normal, uid, where, pixels)
    if dropped:
        faults.append(f"dropped {len(dropped)} identical duplicate slice(s): {', '.join(p.name for p in dropped[:5])}")

    pos = np.array([s.position for s in slices])
    along = (pos - pos[0]) @ normal
    inplane = (pos - pos[0]) @ first.direction[:, :2]
    if len(slices) == 1:
        return SeriesGeometry(slices, along, inplane, 0.0, faults, dropped)
    dz = _grid_spacing(slices, along, uid, where, faults)
    shift = float(np.abs(inplane).max())
    if shift > DICOM_TILT_TOL_MM:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(inplane[-1]), along[-1]))) if along[-1] > 0 else float("nan")
        faults.append(f"slices shifted in-plane by up to {shift:.2f} mm (gantry tilt of about {angle:.1f} degrees)")
    return SeriesGeometry(slices, along, inplane, dz, faults, dropped)


def _check_same_orientation_and_size(slices: list[DicomSlice], where: str | Path) -> None:
    """Refuse a series whose slices differ in orientation, size or pixel spacing from the first."""
    first = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.direction, first.direction, atol=1e-4):
            raise GeometryError(
                f"DICOM series {first.series_uid or '?'}: slices have different orientations "
                f"(ImageOrientationPatient), e.g. {first.file.name} and {s.file.name}",
                where,
            )
        if s.size != first.size or not np.allclose(s.spacing, first.spacing, rtol=1e-4):
            raise GeometryError(
                f"DICOM series {first.series_uid or '?'}: slices differ in size or pixel spacing ({first.file.name}: "
                f"{first.size} at {first.spacing} mm, {s.file.name}: {s.size} at {s.spacing} mm)",
                where,
            )


def _drop_duplicates(
    slices: list[DicomSlice],
    normal: np.ndarray,
    uid: str,
    where: str | Path,
    pixels: Callable[[Path], np.ndarray] | None,
) -> tuple[list[DicomSlice], list[Path]]:
    """(kept slices, dropped files) of slices sorted along ``normal``: identical copies of a slice are dropped.

    Two slices at one position along the normal that differ in in-plane position or pixels (or
    whose pixels cannot be compared) are refused.
    """
    dropped: list[Path] = []
    kept = [slices[0]]
    for s in slices[1:]:
        prev = kept[-1]
        if abs(float((s.position - prev.position) @ normal)) > DICOM_DUPLICATE_TOL_MM:
            kept.append(s)
            continue
        same_place = np.allclose(s.position, prev.position, atol=DICOM_DUPLICATE_TOL_MM)
        same_pixels = same_place and pixels is not None and np.array_equal(pixels(s.file), pixels(prev.file))
        if not same_pixels:
            raise GeometryError(
                f"DICOM series {uid}: {prev.file.name} and {s.file.name} share the slice position "
                f"{float(prev.position @ normal):.2f} mm along the normal but differ "
                f"({'in-plane position' if not same_place else 'pixel data'}); remove the wrong copy",
                where,
            )
        dropped.append(s.file)
    return kept, dropped


def _grid_spacing(
    slices: list[DicomSlice], along: np.ndarray, uid: str, where: str | Path, faults: list[str]
) -> float:
    """The slice spacing (mm) of the regular grid the series is read onto; repaired faults appended to ``faults``.

    ``along`` holds the slices' positions along the normal (mm, from the first, ascending; at
    least two). A gap of more than :data:`DICOM_MAX_GAP_FACTOR` median spacings is refused.
    """
    gaps = np.diff(along)
    dz = float(np.median(gaps))
    tol = max(0.01, DICOM_SPACING_REL_TOL * dz)
    if float(gaps.max()) > DICOM_MAX_GAP_FACTOR * dz:
        k = int(np.argmax(gaps))
        raise GeometryError(
            f"DICOM series {uid}: a gap of {gaps[k]:.2f} mm between {slices[k].file.name} and "
            f"{slices[k + 1].file.name} is {gaps[k] / dz:.1f} times the {dz:.2f} mm slice spacing (several slices "
            "missing); refusing to interpolate across it",
            where,
        )
    extent = float(along[-1])
    if np.any(np.abs(gaps - dz) > tol):
        missing = [i for i, g in enumerate(gaps) if abs(g / dz - round(g / dz)) * dz <= tol and round(g / dz) >= 2]
        if missing and len(missing) == int(np.sum(np.abs(gaps - dz) > tol)):
            faults.append(
                f"{sum(int(round(gaps[i] / dz)) - 1 for i in missing)} missing slice(s) (gaps of "
                f"{', '.join(f'{gaps[i]:.2f}' for i in missing)} mm in a {dz:.2f} mm series)"
            )
            dz = extent / round(extent / dz)  # the series' own grid, from its first to its last slice
        else:
            faults.append(f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm, median {dz:.2f} mm)")
            # planes no farther apart than the closest two slices, from the first slice to the last:
            # every source slice is the nearest one to a plane of its own, so none (and none of its
            # contours) is lost, and the grid ends on the last slice instead of before it
            dz = extent / math.ceil(extent / float(gaps.min()) - 1e-6)
    else:
        dz = extent / (len(slices) - 1)  # regular: the mean spacing, robust to rounding of IPP
    return dz

def _lps_affine(direction: np.ndarray, spacing: tuple[float, float, float], origin: np.ndarray) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _read_slice_pixels(file: Path) -> np.ndarray:
    """One slice's pixels (rescaled to HU by GDCM) in (x, y) = (column, row) order."""

    try:
        image = sitk.ReadImage(str(file))
    except Exception as exc:
        raise InputFileError(
            "cannot read DICOM image "
            f"({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})",
            file,
        ) from exc
    array = sitk.GetArrayFromImage(image)
    return array.reshape(array.shape[-2:]).T


def _resample_series(geom: SeriesGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Linear resampling of an irregular (missing/uneven/tilted) stack onto a regular orthogonal grid.

    Target planes are parallel to the slices, ``spacing_z`` apart from the first slice to the last
    (``spacing_z`` divides the series' extent, so no slice at either end is left out); each target
    voxel is interpolated linearly between the two source slices that bracket it along the normal,
    at its own in-plane position within each (so tilted slices are un-sheared). In-plane the grid
    keeps the slices' pixel spacing and covers every slice (voxels outside them get the series'
    minimum, i.e. air).
    """

    first = geom.slices[0]
    dx, dy = first.spacing
    nx, ny = first.size
    dz = geom.spacing_z
    # spacing_z divides the extent: the last plane is the last slice
    n_out = int(round(float(geom.normal_mm[-1]) / dz)) + 1
    u0, v0 = float(geom.inplane_mm[:, 0].min()), float(geom.inplane_mm[:, 1].min())
    u1, v1 = float(geom.inplane_mm[:, 0].max()), float(geom.inplane_mm[:, 1].max())
    out_nx = nx + int(np.ceil((u1 - u0) / dx - 1e-6))
    out_ny = ny + int(np.ceil((v1 - v0) / dy - 1e-6))
    _check_read_memory((out_nx, out_ny, n_out), 4, first.file)
    cache: dict[int, np.ndarray] = {}

    def source(i: int) -> np.ndarray:
        if i not in cache:
            cache.clear() if len(cache) > 4 else None
            cache[i] = _read_slice_pixels(geom.slices[i].file).astype(np.float32)
        return cache[i]

    fill = float(min(source(0).min(), source(len(geom.slices) - 1).min()))
    grid_u, grid_v = np.meshgrid(
        np.arange(out_nx, dtype=np.float64), np.arange(out_ny, dtype=np.float64), indexing="ij"
    )

    def in_plane(i: int) -> np.ndarray:
        du = (u0 - geom.inplane_mm[i, 0]) / dx
        dv = (v0 - geom.inplane_mm[i, 1]) / dy
        if (out_nx, out_ny) == (nx, ny) and abs(du) < 1e-9 and abs(dv) < 1e-9:
            return source(i)
        return np.asarray(
            ndimage.map_coordinates(source(i), [grid_u + du, grid_v + dv], order=1, mode="constant", cval=fill)
        )

    out = np.empty((out_nx, out_ny, n_out), dtype=np.float32)
    for t in range(n_out):
        s = t * dz
        b = int(np.searchsorted(geom.normal_mm, s - 1e-6))
        b = min(max(b, 0), len(geom.slices) - 1)
        if abs(geom.normal_mm[b] - s) <= 1e-6 or b == 0:
            out[:, :, t] = in_plane(b)
            continue
        a = b - 1
        w = (s - geom.normal_mm[a]) / (geom.normal_mm[b] - geom.normal_mm[a])
        out[:, :, t] = (1.0 - w) * in_plane(a) + w * in_plane(b)
    origin = first.position + u0 * first.direction[:, 0] + v0 * first.direction[:, 1]
    return out, _lps_affine(first.direction, (dx, dy, dz), origin)


def dicom_image_series(folder: Path, unplaced: dict[str, Path] | None = None) -> dict[str, list[Path]]:
    """{SeriesInstanceUID: files} of the image series in ``folder`` (RTSTRUCT, SEG, ... left out).

    Image series without ImagePositionPatient are left out too; ``unplaced`` collects them
    ({uid: first file}) so that a caller can say why a folder holds no usable series.

    Parameters
    ----------
    folder : Path
        The folder to scan (not recursively).
    unplaced : dict[str, Path] or None
        Filled with ``{uid: first file}`` of the image series without a position, when given.

    Returns
    -------
    dict[str, list of Path]
        The files of each usable image series, by SeriesInstanceUID.
    """

    reader = sitk.ImageSeriesReader()
    out: dict[str, list[Path]] = {}
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = [Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), uid)]
        head = sitk.ImageFileReader()
        head.SetFileName(str(files[0]))
        try:
            head.ReadImageInformation()
        except Exception:
            continue
        if _meta(head, "0008|0060").upper() in _NON_IMAGE_MODALITIES:
            continue
        if not head.HasMetaDataKey("0020|0032"):
            if unplaced is not None:
                unplaced[uid] = files[0]
            continue
        out[uid] = files
    return out


def read_dicom_series(path: str | Path, series_uid: str | None = None, files: list[Path] | None = None) -> Volume:
    """Read one DICOM image series with a verified geometry (see the block comment above).

    ``path`` is the folder (named in errors); ``files`` the series' files when already known,
    else the folder must hold exactly one image series, or ``series_uid`` picks one. Regular series
    are read as they are; missing slices, uneven spacing and gantry tilt are resampled linearly onto
    a regular orthogonal grid, with ``notes['dicom_geometry']`` saying what was done; duplicates
    with different pixels, mixed orientations, large gaps and several series are refused.

    Parameters
    ----------
    path : str or Path
        The series' folder, named in errors.
    series_uid : str or None
        The series to read when the folder holds several.
    files : list of Path or None
        The series' files when already known (the folder is then not scanned).

    Returns
    -------
    Volume
        The series as a volume (HU, RAS+ affine in mm), with ``notes['dicom_geometry']`` when it was
        repaired.
    """


    path = Path(path)
    if files is None:
        files = _series_files(path, series_uid)
    headers = [read_dicom_slice_header(f) for f in files]
    pixel_cache: dict[Path, np.ndarray] = {}

    def pixels(f: Path) -> np.ndarray:
        if f not in pixel_cache:
            pixel_cache[f] = _read_slice_pixels(f)
        return pixel_cache[f]

    geom = analyse_series_geometry(headers, path, pixels)
    first = geom.slices[0]
    uid = first.series_uid or "?"
    if len(geom.slices) == 1 or geom.regular:
        return _read_regular_series(geom, path, uid)
    array, affine = _resample_series(geom)
    volume = Volume(array, affine, path)
    volume.notes["dicom_geometry"] = _geometry_note(geom, uid, resampled=True, shape=array.shape)
    logging.getLogger("globalmask").warning(
        "%s: DICOM series %s: %s; resampled linearly onto a regular %.3g mm grid of %d slices",
        path, uid, "; ".join(geom.faults), geom.spacing_z, array.shape[2],
    )
    return volume


def _series_files(path: Path, series_uid: str | None) -> list[Path]:
    """The files of the one image series in ``path`` (or of ``series_uid``); none or several are refused."""
    unplaced: dict[str, Path] = {}
    series = dicom_image_series(path, unplaced)
    if not series and unplaced:
        uid, first_file = next(iter(unplaced.items()))
        raise GeometryError(
            f"DICOM series {uid}: image {first_file.name} has no ImagePositionPatient (0020,0032), so its slices "
            "cannot be placed in space",
            path,
        )
    if not series:
        raise InputFileError("folder holds no DICOM image series (and is not a volume file)", path)
    if series_uid is not None:
        if series_uid not in series:
            raise InputFileError(f"no DICOM series {series_uid} here (found {', '.join(series)})", path)
        return series[series_uid]
    if len(series) > 1:
        raise InputFileError(
            f"folder holds {len(series)} DICOM image series ({', '.join(series)}); put one series per folder "
            "or pick one (read_dicom_series(..., series_uid=...))",
            path,
        )
    return next(iter(series.values()))


def _read_regular_series(geom: SeriesGeometry, path: Path, uid: str) -> Volume:
    """Read a series whose kept slices form a regular grid as it is, with the affine of the verified geometry."""
    first = geom.slices[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.file) for s in geom.slices])
    try:
        _check_read_memory((*first.size, len(geom.slices)), 8, path)
        image = reader.Execute()
    except GlobalmaskError:
        raise
    except Exception as exc:
        raise InputFileError(f"cannot read DICOM series {uid} ({exc})", path) from exc
    volume = _sitk_image_to_volume(image, path)
    if len(geom.slices) > 1:  # the affine from the verified geometry, not from the first two slices
        volume.affine = _lps_affine(first.direction, (*first.spacing, geom.spacing_z), first.position)
    if geom.dropped:
        volume.notes["dicom_geometry"] = _geometry_note(geom, uid, resampled=False)
        logging.getLogger("globalmask").warning("%s: DICOM series %s: %s", path, uid, "; ".join(geom.faults))
    return volume

def _geometry_note(
    geom: SeriesGeometry, uid: str, resampled: bool, shape: Sequence[int] | None = None
) -> dict[str, Any]:
    note = {
        "series_uid": uid,
        "faults": list(geom.faults),
        "resampled": resampled,
        "source_slices": len(geom.slices),
        "source_positions_mm": [round(float(x), 4) for x in geom.normal_mm],
        "source_inplane_shift_mm": np.round(geom.inplane_mm, 4).tolist(),
        "dropped_duplicates": [str(p) for p in geom.dropped],
    }
    if resampled and shape is not None:
        note.update(interpolation="linear", slice_spacing_mm=geom.spacing_z, shape=[int(s) for s in shape])
    return note


def _read_dicom_series(path: Path) -> Volume:
    return read_dicom_series(path)
