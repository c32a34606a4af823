"""DICOM RT Structure Sets in and out, ROI-name mapping, and CT series written from volumes.

Contours <-> masks are done here on scikit-image (``measure.find_contours`` at level 0.5,
``draw.polygon2mask``) rather than with rt-utils: rt-utils (last release 1.2.7, January 2023)
needs OpenCV, re-reads the series from a folder itself (so it cannot follow a series that
globalmask resampled onto a regular grid) and writes with attributes pydicom 3 deprecates.

* Reading: every CLOSED_PLANAR contour is mapped from patient coordinates (LPS, mm) through the
  CT volume's inverse affine; contours of one plane are combined with the even-odd (XOR) rule, so
  holes and several islands per slice come out right (the convention planning systems use).
* Writing: each axial plane of a label is traced by marching squares at level 0.5 (a polygon
  through the mid-points between inside and outside voxel centres, which rasterises back to the
  same voxels); holes become separate contours (XOR again).
* Files are written with pydicom and reference the CT series: Frame of Reference, study, series
  and every SOP instance (Contour Image Sequence per contour where the plane is a CT slice).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io as _io
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from skimage.draw import polygon2mask
from skimage.measure import find_contours
from tqdm.auto import tqdm

from . import guard
from ._version import __version__
from .dicom_seg import write_dicom_seg
from .errors import DatasetError, GeometryError, GlobalmaskError, InputFileError, OutputError
from .io import (
    Volume,
    atomic_path,
    dicom_image_series,
    read_dicom_series,
    read_volume,
    voxel_spacing,
    write_json,
    write_text,
    write_volume,
)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_LPS = np.diag([-1.0, -1.0, 1.0])

#: Display colours (RGB) given to structures in label order.
PALETTE = [
    (255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255), (0, 220, 220),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (128, 255, 0), (255, 0, 128), (160, 82, 45),
]


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InputFileError("DICOM RT support needs pydicom: pip install 'globalmask[dicom]'") from exc
    return pydicom


# ----------------------------------------------------------------------------------------------
# ROI names -> labels


def normalise_roi_name(name: str) -> str:
    """Case, spaces, underscores and hyphens do not matter: 'Brain Stem' == 'brain_stem' == 'BrainStem'.

    Parameters
    ----------
    name : str
        ROI name as written in a structure set or a label map.

    Returns
    -------
    str
        The name in lower case without whitespace, underscores or hyphens.
    """
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


@dataclass
class LabelMap:
    """Label values, accepted ROI names per label, and the overlap priority (first wins).

    Attributes
    ----------
    labels : dict of str to int
        Label name -> label value (1..255).
    synonyms : dict of str to str
        Normalised ROI name (:func:`normalise_roi_name`) -> label name.
    priority : list of str
        Label names, highest priority first: where contours overlap, the earlier label wins.
    """

    labels: dict[str, int]
    synonyms: dict[str, str]  # normalised ROI name -> label name
    priority: list[str]

    @property
    def with_background(self) -> dict[str, int]:
        """The labels with ``background: 0`` first (the ``labels`` of nnU-Net's ``dataset.json``).

        Returns
        -------
        dict of str to int
            ``{"background": 0, **labels}``.
        """
        return {"background": 0, **self.labels}


def parse_label_map(obj: object, source: str | Path = "<labels>") -> LabelMap:
    """Build a :class:`LabelMap` from a label-map mapping.

    The mapping is ``{"labels": {name: value}, "synonyms": {name: [...]}, "priority": [...]}``.
    A plain ``{name: value}`` mapping is accepted too. The label name itself is always a synonym.
    Priority defaults to the order of ``labels``: where contours overlap, the earlier label wins.

    Parameters
    ----------
    obj : object
        The parsed JSON or YAML document (anything but a mapping is refused).
    source : str or Path, optional
        Where ``obj`` came from, named in error messages.

    Returns
    -------
    LabelMap
        The labels, their synonyms and the overlap priority.

    Raises
    ------
    DatasetError
        When ``obj`` is not a valid label map (values outside 1..255, duplicate values or synonyms,
        synonyms or priority naming unknown labels).
    """
    if not isinstance(obj, Mapping):
        raise DatasetError("label map must be a mapping", source)
    raw = obj.get("labels", obj) if isinstance(obj.get("labels", None), Mapping) else obj
    labels: dict[str, int] = {}
    for name, value in raw.items():
        if name in ("synonyms", "priority") or str(name) == "background":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > 255:
            raise DatasetError(f"label {name!r} must have an integer value 1..255, got {value!r}", source)
        labels[str(name)] = int(value)
    if not labels:
        raise DatasetError("label map names no labels", source)
    if len(set(labels.values())) != len(labels):
        raise DatasetError(f"label values must be distinct, got {labels}", source)
    synonyms: dict[str, str] = {}
    extra = obj.get("synonyms", {}) if raw is not obj else {}
    if not isinstance(extra, Mapping):
        raise DatasetError("'synonyms' must map label names to lists of ROI names", source)
    for name in labels:
        names = [name, *([extra[name]] if isinstance(extra.get(name), str) else list(extra.get(name, [])))]
        for roi in names:
            key = normalise_roi_name(roi)
            if key in synonyms and synonyms[key] != name:
                raise DatasetError(f"ROI name {roi!r} is a synonym of both {synonyms[key]!r} and {name!r}", source)
            synonyms[key] = name
    unknown = [k for k in extra if k not in labels]
    if unknown:
        raise DatasetError(f"synonyms given for unknown label(s) {unknown}", source)
    priority = [str(p) for p in (obj.get("priority", []) if raw is not obj else [])]
    bad = [p for p in priority if p not in labels]
    if bad:
        raise DatasetError(f"priority names unknown label(s) {bad}", source)
    priority += [n for n in labels if n not in priority]
    return LabelMap(labels, synonyms, priority)


def load_label_map(path: str | Path) -> LabelMap:
    """Read a label map from JSON or YAML (see :func:`parse_label_map`).

    Parameters
    ----------
    path : str or Path
        The ``.json``, ``.yaml`` or ``.yml`` file.

    Returns
    -------
    LabelMap
        The parsed label map.
    """


    path = Path(path)
    if not path.is_file():
        raise InputFileError("label map file not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        obj = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except Exception as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        what = getattr(exc, "problem", None) or getattr(exc, "msg", None) or type(exc).__name__
        raise DatasetError(f"cannot parse label map{at}: {what}", path) from exc
    return parse_label_map(obj, path)


def match_rois(roi_names: Sequence[str], label_map: LabelMap) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(found {label: ROI name}, missing labels, ignored {ROI name: reason}) for one structure set.

    When two ROIs map to one label the first (in ROI order) is used and the other is ignored as a
    duplicate, so the choice is visible in the conversion table.

    Parameters
    ----------
    roi_names : sequence of str
        The ROI names of the structure set, in ROI order.
    label_map : LabelMap
        Labels and the ROI names each accepts.

    Returns
    -------
    found : dict of str to str
        Label name -> the ROI name used for it.
    missing : list of str
        Labels no ROI maps to.
    ignored : dict of str to str
        ROI name -> why it is not used.
    """
    found: dict[str, str] = {}
    ignored: dict[str, str] = {}
    for roi in roi_names:
        label = label_map.synonyms.get(normalise_roi_name(roi))
        if label is None:
            ignored[roi] = "not in the label map"
        elif label in found:
            ignored[roi] = f"duplicate of {found[label]!r} for {label}"
        else:
            found[label] = roi
    missing = [name for name in label_map.labels if name not in found]
    return found, missing, ignored


# ----------------------------------------------------------------------------------------------
# reading RTSTRUCT


@dataclass
class Roi:
    """One ROI of an RT Structure Set, as read.

    Attributes
    ----------
    number : int
        ROINumber.
    name : str
        ROIName.
    color : tuple of int or None
        ROIDisplayColor (RGB), None when absent.
    contours : list of numpy.ndarray
        Closed planar contours, each (n, 3) in LPS mm.
    skipped : int
        Contours that cannot be rasterised (not CLOSED_PLANAR, or fewer than 3 points).
    skipped_kinds : dict of str to int
        Why they were skipped, e.g. ``{"OPEN_PLANAR": 2, "POINT": 1}``.
    """
    number: int
    name: str
    color: tuple[int, int, int] | None
    contours: list[np.ndarray] = field(default_factory=list)  # (n, 3) LPS mm, closed planar only
    skipped: int = 0  # contours that cannot be rasterised (not CLOSED_PLANAR, or fewer than 3 points)
    skipped_kinds: dict[str, int] = field(default_factory=dict)  # why, e.g. {"OPEN_PLANAR": 2, "POINT": 1}


@dataclass
class StructureSet:
    """An RT Structure Set file as read by :func:`read_rtstruct`.

    Attributes
    ----------
    file : Path
        The RTSTRUCT file.
    frame_of_reference_uid : str
        The referenced Frame of Reference UID ("" when none is given).
    series_uids : list of str
        SeriesInstanceUIDs of the referenced image series.
    rois : list of Roi
        The ROIs in StructureSetROISequence order.
    """
    file: Path
    frame_of_reference_uid: str
    series_uids: list[str]
    rois: list[Roi]


def read_rtstruct(path: str | Path) -> StructureSet:
    """ROIs and their closed planar contours (LPS mm) from an RT Structure Set file.

    Parameters
    ----------
    path : str or Path
        The RTSTRUCT file.

    Returns
    -------
    StructureSet
        The referenced Frame of Reference and series, and every ROI with its contours.
    """
    pydicom = _pydicom()
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputFileError(f"cannot read DICOM file ({type(exc).__name__}: {exc})", path) from exc
    if str(getattr(ds, "SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and getattr(ds, "Modality", "") != "RTSTRUCT":
        raise InputFileError("not an RT Structure Set (SOP class / Modality)", path)
    for_uid = ""
    series: list[str] = []
    for ref in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
        for_uid = for_uid or str(getattr(ref, "FrameOfReferenceUID", ""))
        for study in getattr(ref, "RTReferencedStudySequence", []):
            for s in getattr(study, "RTReferencedSeriesSequence", []):
                series.append(str(s.SeriesInstanceUID))
    rois = {
        int(r.ROINumber): Roi(int(r.ROINumber), str(r.ROIName), None)
        for r in getattr(ds, "StructureSetROISequence", [])
    }
    for item in getattr(ds, "ROIContourSequence", []):
        roi = rois.get(int(item.ReferencedROINumber))
        if roi is None:
            continue
        if "ROIDisplayColor" in item:
            roi.color = tuple(int(c) for c in item.ROIDisplayColor)  # type: ignore[assignment]
        for contour in getattr(item, "ContourSequence", []):
            kind = str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR"))
            try:
                pts = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64).reshape(-1, 3)
            except (AttributeError, ValueError) as exc:
                raise InputFileError(
                    f"ROI {roi.name!r}: a contour's ContourData is not a list of x, y, z triplets ({exc})", path
                ) from exc
            if kind != "CLOSED_PLANAR" or len(pts) < 3:
                why = kind if kind != "CLOSED_PLANAR" else "fewer than 3 points"
                roi.skipped += 1
                roi.skipped_kinds[why] = roi.skipped_kinds.get(why, 0) + 1
                continue
            roi.contours.append(pts)
    return StructureSet(path, for_uid, series, list(rois.values()))


def _source_planes(volume: Volume) -> np.ndarray:
    """Index positions (along the volume's third axis) of the CT slices the contours were drawn on."""
    note = volume.notes.get("dicom_geometry")
    if note and note.get("resampled"):
        return np.asarray(note["source_positions_mm"], dtype=np.float64) / float(note["slice_spacing_mm"])
    return np.arange(volume.shape[2], dtype=np.float64)


#: A contour lies on a CT slice when its plane is within this fraction of the slice spacing of
#: the slice's position; contours farther from every slice (between slices, or beyond the first
#: or last one, as when a structure set was drawn on a longer scan) are dropped with a warning,
#: never merged into the nearest slice, where the even-odd rule would cut holes into it.
CONTOUR_PLANE_TOL = 0.25


@dataclass
class ContourReport:
    """What happened to an ROI's contours on rasterisation (for warnings and ``conversion.csv``).

    Attributes
    ----------
    used : int
        Contours rasterised.
    off_plane_z : list of float
        LPS z (mm) of contours on no CT slice: dropped.
    outside : int
        Contours wholly outside the CT's field of view in-plane: dropped.
    clipped : int
        Contours partly outside it: cut at the edge of the image.
    """

    used: int = 0
    off_plane_z: list[float] = field(default_factory=list)  # LPS z (mm) of contours on no CT slice: dropped
    outside: int = 0  # contours wholly outside the CT's field of view in-plane: dropped
    clipped: int = 0  # contours partly outside it: cut at the edge of the image

    @property
    def dropped(self) -> int:
        """Contours dropped: off every CT slice, or wholly outside the field of view.

        Returns
        -------
        int
            ``len(off_plane_z) + outside``.
        """
        return len(self.off_plane_z) + self.outside

    def problems(self, roi: str, volume: Volume) -> list[str]:
        """One line per kind of loss, naming the ROI and where (empty when every contour was used).

        Parameters
        ----------
        roi : str
            The ROI name to put in the lines.
        volume : Volume
            The CT the contours were rasterised on (its z extent is quoted for off-plane contours).

        Returns
        -------
        list of str
            One message per kind of loss.
        """
        out = []
        if self.off_plane_z:
            z = (_LPS @ (volume.affine @ np.array([[0, 0, 0, 1], [0, 0, volume.shape[2] - 1, 1]], float).T)[:3]).T[:, 2]
            out.append(
                f"ROI {roi!r}: {len(self.off_plane_z)} contour(s) at z "
                f"{min(self.off_plane_z):.2f}..{max(self.off_plane_z):.2f} mm "
                f"lie on no CT slice (the CT spans z {min(z):.2f}..{max(z):.2f} mm; a contour must lie within "
                f"{CONTOUR_PLANE_TOL:g} slice spacing of a slice): dropped"
            )
        if self.outside:
            out.append(
                f"ROI {roi!r}: {self.outside} contour(s) lie wholly outside the CT's field of view in-plane: dropped"
            )
        if self.clipped:
            out.append(
                f"ROI {roi!r}: {self.clipped} contour(s) extend beyond the CT's field of view in-plane: cut at its edge"
            )
        return out


def rasterise_roi(
    contours: Sequence[np.ndarray], volume: Volume, where: str | Path = ""
) -> tuple[np.ndarray, ContourReport]:
    """Binary mask on ``volume``'s grid from closed planar contours (LPS mm); XOR within a plane.

    Contours must be parallel to the volume's axial planes (third array axis). Each contour is
    assigned by its position to the CT slice it lies on (within :data:`CONTOUR_PLANE_TOL` of the
    slice spacing); one on no slice is dropped and reported, never moved to the nearest slice.
    Each plane of the volume takes the contours of its nearest CT slice: the same plane for a
    regular series, nearest neighbour along the normal for a series resampled on reading (whose
    grid puts a plane of its own at or next to every source slice, so none is lost).

    Parameters
    ----------
    contours : sequence of numpy.ndarray
        Closed planar contours, each (n, 3) in LPS mm.
    volume : Volume
        The CT whose grid the mask is drawn on.
    where : str or Path, optional
        The file named in errors.

    Returns
    -------
    mask : numpy.ndarray
        Boolean array of ``volume``'s shape.
    report : ContourReport
        Contours used, dropped and clipped.

    Raises
    ------
    GeometryError
        When a contour is not parallel to the CT slices.
    """
    shape = volume.shape
    inv = np.linalg.inv(volume.affine)
    planes = _source_planes(volume)
    by_plane: dict[int, list[np.ndarray]] = {}
    report = ContourReport()
    for pts in contours:
        ras = pts @ _LPS.T
        idx = ras @ inv[:3, :3].T + inv[:3, 3]
        kf = idx[:, 2]
        if float(kf.max() - kf.min()) > 0.1:
            raise GeometryError("a contour is not parallel to the CT slices (its points span several slices)", where)
        q = int(np.argmin(np.abs(planes - kf.mean())))
        if abs(planes[q] - kf.mean()) > CONTOUR_PLANE_TOL:
            report.off_plane_z.append(float(np.mean(pts[:, 2])))
            continue
        ij = idx[:, :2]
        lo, hi = np.full(2, -0.5), np.asarray(shape[:2], float) - 0.5  # the image's extent in index units
        if np.any(ij.max(axis=0) < lo) or np.any(ij.min(axis=0) > hi):
            report.outside += 1
            continue
        report.clipped += int(np.any(ij < lo) or np.any(ij > hi))
        report.used += 1
        by_plane.setdefault(q, []).append(ij)
    mask = np.zeros(shape, dtype=bool)
    if not by_plane:
        return mask, report
    for k in range(shape[2]):
        q = int(np.argmin(np.abs(planes - k)))
        for poly in by_plane.get(q, []):
            mask[:, :, k] ^= polygon2mask(shape[:2], poly)
    return mask, report


def rasterise_contours(
    contours: Sequence[np.ndarray], volume: Volume, where: str | Path = ""
) -> tuple[np.ndarray, int]:
    """(mask, number of contours dropped) of :func:`rasterise_roi`, for callers that need no details.

    Parameters
    ----------
    contours : sequence of numpy.ndarray
        Closed planar contours, each (n, 3) in LPS mm.
    volume : Volume
        The CT whose grid the mask is drawn on.
    where : str or Path, optional
        The file named in errors.

    Returns
    -------
    mask : numpy.ndarray
        Boolean array of ``volume``'s shape.
    dropped : int
        Contours dropped (on no CT slice, or wholly outside the field of view).
    """
    mask, report = rasterise_roi(contours, volume, where)
    return mask, report.dropped


# ----------------------------------------------------------------------------------------------
# writing RTSTRUCT


def _plane_contours(plane: np.ndarray) -> list[np.ndarray]:
    """Closed contours (n, 2) in array index units of one binary plane: marching squares at 0.5 on
    the zero-padded plane, outer boundaries and hole boundaries alike (the reader's XOR rule turns
    them back into the same voxels)."""
    out = []
    for c in find_contours(np.pad(np.asarray(plane, dtype=bool), 1).astype(np.float32), 0.5):
        c = c[:-1] if np.allclose(c[0], c[-1]) else c
        if len(c) >= 3:
            out.append(c - 1.0)
    return out


def mask_to_contours(mask: np.ndarray, affine: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(plane k, contour points (n, 3) in LPS mm) for every closed contour of every axial plane.

    Parameters
    ----------
    mask : numpy.ndarray
        Binary 3-D mask (i, j, k).
    affine : numpy.ndarray
        4x4 voxel-to-RAS affine (mm) of the mask.

    Returns
    -------
    list of tuple of (int, numpy.ndarray)
        Plane index k and the contour's (n, 3) points in LPS mm, plane by plane.
    """

    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=np.float64)
    out: list[tuple[int, np.ndarray]] = []
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        for c in _plane_contours(mask[:, :, k]):
            idx = np.column_stack([c, np.full(len(c), float(k))])
            ras = idx @ affine[:3, :3].T + affine[:3, 3]
            out.append((int(k), ras @ _LPS.T))
    return out


def read_series_headers(files: Sequence[str | Path]) -> list:
    """pydicom datasets (no pixel data) of a CT series, sorted along the slice normal.

    Parameters
    ----------
    files : sequence of str or Path
        The series' DICOM files, in any order.

    Returns
    -------
    list of pydicom.dataset.Dataset
        One header per file, sorted by position along the slice normal.
    """
    pydicom = _pydicom()
    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(str(f), stop_before_pixels=True))
        except Exception as exc:
            raise InputFileError(f"cannot read DICOM header ({type(exc).__name__}: {exc})", f) from exc
    if not headers:
        raise InputFileError("no DICOM images given")
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    headers.sort(key=lambda d: float(np.asarray(d.ImagePositionPatient, dtype=np.float64) @ normal))
    return headers


def _copy(src, dst, keywords: Sequence[str]) -> None:
    for kw in keywords:
        if kw in src:
            setattr(dst, kw, getattr(src, kw))
        else:
            setattr(dst, kw, "")


_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def _normal(headers) -> np.ndarray:
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def _slice_planes(labels: Volume, headers: Sequence) -> list[tuple[object, int, float]]:
    """(CT slice header, nearest label plane k, the slice's own plane in label index units) per CT
    slice inside the label map, one per position (identical duplicate slices are written once)."""
    normal = _normal(headers)
    axis = _LPS @ labels.affine[:3, 2]
    if abs(abs(float(axis @ normal)) / float(np.linalg.norm(axis)) - 1.0) > 1e-3:
        raise GeometryError("the label map's planes are not parallel to the CT slices: not a prediction on this series")
    inv = np.linalg.inv(labels.affine)
    out: list[tuple[object, int, float]] = []
    last = None
    for h in headers:
        pos = np.asarray(h.ImagePositionPatient, dtype=np.float64)
        along = float(pos @ normal)
        if last is not None and abs(along - last) <= 0.01:
            continue  # an identical duplicate (the reader kept one copy): one set of contours per position
        last = along
        kf = float((inv[:3, :3] @ (_LPS @ pos) + inv[:3, 3])[2])
        k = int(np.floor(kf + 0.5))
        if 0 <= k < labels.shape[2] and abs(kf - k) <= 0.5 + 1e-6:
            out.append((h, k, kf))
    return out


def build_rtstruct(labels: Volume, names: Mapping[str, int], headers: Sequence, label: str = "globalmask",
                   colors: Mapping[str, tuple[int, int, int]] | None = None):
    """An RT Structure Set (pydicom Dataset) with one ROI per structure of ``labels``.

    ``headers`` are the CT series' datasets (:func:`read_series_headers`); the label map must be
    in the same Frame of Reference (a prediction on that series, on its own grid or on the regular
    grid it was resampled onto on reading). Contours are written on the CT slices themselves, each
    referencing its slice: slice s gets the contours of the label plane nearest to it, placed at
    the slice's own position (so a prediction on a repaired grid, whose extra planes lie between
    slices, re-imports onto the same voxels). Empty structures get an ROI with no Contour
    Sequence (the standard allows no empty one) so the planning system still lists them.

    Parameters
    ----------
    labels : Volume
        The label map (a prediction on the CT series).
    names : mapping of str to int
        Structure name -> label value; background (0 or the name ``background``) is left out.
    headers : sequence of pydicom.dataset.Dataset
        The CT series' headers, sorted along the slice normal.
    label : str, optional
        Structure Set label and name, and the series description's prefix.
    colors : mapping of str to tuple of int, optional
        Display colour (RGB) per structure name; the others take :data:`PALETTE` in label order.

    Returns
    -------
    pydicom.dataset.FileDataset
        The RT Structure Set, not yet written.
    """
    from pydicom.sequence import Sequence as Seq

    ds = _rtstruct_header(headers[0], label)
    ds.ReferencedFrameOfReferenceSequence = Seq([_referenced_frame(headers)])
    slices = _slice_planes(labels, headers)
    rois, contours_seq, observations = [], [], []
    array = np.asarray(labels.array)
    structures = ((n, v) for n, v in names.items() if int(v) != 0 and n != "background")
    for number, (name, value) in enumerate(structures, start=1):
        color = (colors or {}).get(name, PALETTE[(number - 1) % len(PALETTE)])
        roi, rc, obs = _roi_items(
            number, name, color, array == int(value), labels.affine, slices, ds.FrameOfReferenceUID
        )
        rois.append(roi)
        contours_seq.append(rc)
        observations.append(obs)
    ds.StructureSetROISequence = Seq(rois)
    ds.ROIContourSequence = Seq(contours_seq)
    ds.RTROIObservationsSequence = Seq(observations)
    return ds


def _rtstruct_header(ref, label: str):
    """The RT Structure Set's file meta and its Patient, Study, RT Series, Frame of Reference,
    Equipment and Structure Set attributes, from the CT slice header ``ref`` (no ROIs yet)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    now = _dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS  # type: ignore[assignment]  # pydicom accepts a str UID
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    # an in-memory dataset has no file name
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)  # type: ignore[arg-type]
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    _copy(ref, ds, _PATIENT_STUDY)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.SeriesDescription = f"{label} structures"
    ds.InstanceNumber = 1
    ds.Manufacturer = "globalmask"
    ds.ManufacturerModelName = "globalmask"
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.OperatorsName = ""  # RT Series module, Type 2
    ds.FrameOfReferenceUID = str(ref.FrameOfReferenceUID)  # Frame of Reference module: the CT's
    ds.PositionReferenceIndicator = str(getattr(ref, "PositionReferenceIndicator", "") or "")
    return ds


def _image_ref(h):
    """A Contour Image Sequence item referencing the CT slice with header ``h``."""
    pydicom = _pydicom()
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = h.SOPClassUID
    item.ReferencedSOPInstanceUID = h.SOPInstanceUID
    return item


def _referenced_frame(headers: Sequence):
    """The Referenced Frame of Reference item: the CT's frame, its study, its series and every slice."""
    pydicom = _pydicom()
    from pydicom.sequence import Sequence as Seq

    ref = headers[0]
    series = pydicom.Dataset()
    series.SeriesInstanceUID = ref.SeriesInstanceUID
    series.ContourImageSequence = Seq([_image_ref(h) for h in headers])
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as TPSs expect)
    study.ReferencedSOPInstanceUID = ref.StudyInstanceUID
    study.RTReferencedSeriesSequence = Seq([series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = str(ref.FrameOfReferenceUID)
    frame.RTReferencedStudySequence = Seq([study])
    return frame


def _roi_items(number: int, name: str, color, structure: np.ndarray, affine: np.ndarray,
               slices: Sequence[tuple[object, int, float]], for_uid: str) -> tuple:
    """(Structure Set ROI, ROI Contour, RT ROI Observations) items of one structure: its binary
    ``structure`` traced on every CT slice of ``slices`` (:func:`_slice_planes`) it touches."""
    pydicom = _pydicom()
    from pydicom.sequence import Sequence as Seq

    roi = pydicom.Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = for_uid
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    rc = pydicom.Dataset()
    rc.ReferencedROINumber = number
    rc.ROIDisplayColor = list(color)
    items = []
    for h, k, kf in slices:
        if not structure[:, :, k].any():
            continue
        for c in _plane_contours(structure[:, :, k]):
            idx = np.column_stack([c, np.full(len(c), kf)])  # on the CT slice itself, not on plane k
            pts = (idx @ affine[:3, :3].T + affine[:3, 3]) @ _LPS.T
            item = pydicom.Dataset()
            item.ContourImageSequence = Seq([_image_ref(h)])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(pts)
            item.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            items.append(item)
    if items:  # Contour Sequence: one or more items when present, so an empty structure has none
        rc.ContourSequence = Seq(items)
    obs = pydicom.Dataset()
    obs.ObservationNumber = number
    obs.ReferencedROINumber = number
    obs.RTROIInterpretedType = "ORGAN"
    obs.ROIInterpreter = ""
    return roi, rc, obs


#: Attributes an RT Structure Set must carry (PS3.3 A.19: Patient, General Study, RT Series,
#: Frame of Reference, General Equipment, Structure Set, SOP Common modules): Type 1 need a value,
#: Type 2 may be empty but must be present.
RTSTRUCT_TYPE1 = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                  "FrameOfReferenceUID", "StructureSetLabel", "StructureSetROISequence", "ROIContourSequence",
                  "RTROIObservationsSequence")
RTSTRUCT_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "OperatorsName",
                  "PositionReferenceIndicator", "Manufacturer", "StructureSetDate", "StructureSetTime")


def rtstruct_problems(ds) -> list[str]:
    """What makes ``ds`` an invalid RT Structure Set, in words (empty when none is found).

    A pydicom-level check of the rules this writer can break (required attributes, no empty
    sequence, contour point counts, ROI cross-references); ``dciodvfy`` checks the rest where
    it is installed.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The RT Structure Set to check.

    Returns
    -------
    list of str
        One sentence per problem found.
    """
    problems = [
        f"Type 1 attribute {kw} is missing or empty"
        for kw in RTSTRUCT_TYPE1
        if kw not in ds or ds.data_element(kw).is_empty
    ]
    problems += [f"Type 2 attribute {kw} is missing" for kw in RTSTRUCT_TYPE2 if kw not in ds]

    def walk(d, where: str) -> None:
        for elem in d:
            if elem.VR == "SQ":
                if len(elem.value) == 0:
                    problems.append(
                        f"empty {elem.keyword} in {where} (a sequence that is present needs one or more items)"
                    )
                for n, item in enumerate(elem.value):
                    walk(item, f"{elem.keyword}[{n}]")

    walk(ds, "the dataset")
    numbers = {int(r.ROINumber) for r in ds.get("StructureSetROISequence", [])}
    for rc in ds.get("ROIContourSequence", []):
        if int(rc.ReferencedROINumber) not in numbers:
            problems.append(
                f"ROIContourSequence refers to ROI {rc.ReferencedROINumber}, "
                "which StructureSetROISequence does not define"
            )
        for c in rc.get("ContourSequence", []):
            n = int(c.get("NumberOfContourPoints", -1))
            if len(c.get("ContourData", [])) != 3 * n:
                problems.append(
                    f"ROI {rc.ReferencedROINumber}: a contour declares {n} points "
                    f"but holds {len(c.get('ContourData', []))} values"
                )
            if "ContourGeometricType" not in c:
                problems.append(f"ROI {rc.ReferencedROINumber}: a contour has no ContourGeometricType")
    for obs in ds.get("RTROIObservationsSequence", []):
        problems += [
            f"RTROIObservationsSequence item lacks {kw}"
            for kw in ("ObservationNumber", "ReferencedROINumber", "RTROIInterpretedType", "ROIInterpreter")
            if kw not in obs
        ]
    return problems


def write_rtstruct(
    labels: Volume, names: Mapping[str, int], headers: Sequence, path: str | Path, label: str = "globalmask"
) -> Path:
    """Build (:func:`build_rtstruct`) and write atomically an RT Structure Set.

    Parameters
    ----------
    labels : Volume
        The label map (a prediction on the CT series).
    names : mapping of str to int
        Structure name -> label value.
    headers : sequence of pydicom.dataset.Dataset
        The CT series' headers (:func:`read_series_headers`).
    path : str or Path
        The ``.dcm`` file to write.
    label : str, optional
        Structure Set label and name.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputError
        When the object would be invalid DICOM (a writer bug): nothing is written.
    """
    ds = build_rtstruct(labels, names, headers, label)
    problems = rtstruct_problems(ds)
    if problems:  # a writer bug, never the user's: refuse to hand a planning system an invalid object
        raise OutputError(f"the RT Structure Set would be invalid DICOM ({'; '.join(problems[:3])})", path)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# CT series written from a volume (test data, demos, phantoms for planning systems)


def write_ct_series(volume: Volume, folder: str | Path, *, patient_id: str = "PHANTOM", study_uid: str | None = None,
                    positions: np.ndarray | None = None, uid_prefix: str | None = None) -> list[Path]:
    """Write ``volume`` (orthogonal affine, HU) as a CT Image series, one file per axial plane.

    ``positions`` (n, 3) overrides ImagePositionPatient (LPS) per plane: tests use it to make
    series with missing slices, uneven spacing or gantry tilt.

    Parameters
    ----------
    volume : Volume
        The CT (HU) with an orthogonal affine.
    folder : str or Path
        Where the files ``CT0000.dcm``, ... are written (created if needed).
    patient_id : str, optional
        PatientID (and PatientName ``<id>^``).
    study_uid : str, optional
        StudyInstanceUID; a new one is generated when not given.
    positions : numpy.ndarray, optional
        (n, 3) ImagePositionPatient per plane (LPS mm).
    uid_prefix : str, optional
        Prefix of the generated UIDs (pydicom's when not given).

    Returns
    -------
    list of Path
        The files written, in plane order.
    """
    _pydicom()  # a clear error when the optional DICOM extra is missing
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = _LPS @ volume.affine[:3, :4]
    spacing = voxel_spacing(lps)
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    array = np.asarray(volume.array)
    n = array.shape[2]
    if positions is None:
        positions = np.array([lps[:, 3] + k * lps[:, 2] for k in range(n)])
    study_uid = study_uid or generate_uid(prefix=uid_prefix)
    series_uid, for_uid = generate_uid(prefix=uid_prefix), generate_uid(prefix=uid_prefix)
    files = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_SOP_CLASS  # type: ignore[assignment]  # pydicom accepts a str UID
        meta.MediaStorageSOPInstanceUID = generate_uid(prefix=uid_prefix)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        # an in-memory dataset has no file name
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)  # type: ignore[arg-type]
        ds.SOPClassUID = CT_IMAGE_SOP_CLASS
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"{patient_id}^", patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.Manufacturer, ds.PositionReferenceIndicator = "globalmask", ""
        # Type 2C/2: present (dciodvfy cannot tell a paired body part)
        ds.PatientPosition, ds.Laterality, ds.KVP, ds.AcquisitionNumber = "HFS", "", "", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(np.rint(array[:, :, k].T).astype(np.int16)).tobytes()
        path = folder / f"CT{k:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        files.append(path)
    return files


# ----------------------------------------------------------------------------------------------
# patient folders (CT + RTSTRUCT) -> nnU-Net v2 raw dataset


@dataclass
class PatientFiles:
    """The DICOM files of one patient folder (:func:`scan_patient`).

    Attributes
    ----------
    folder : Path
        The patient folder.
    series : dict of str to list of Path
        Image series: SeriesInstanceUID -> files.
    rtstructs : list of Path
        The RT Structure Set files.
    """
    folder: Path
    series: dict[str, list[Path]]  # image series: SeriesInstanceUID -> files
    rtstructs: list[Path]


def scan_patient(folder: str | Path) -> PatientFiles:
    """Find the image series and RT Structure Sets under ``folder`` (any depth; other files ignored).

    Parameters
    ----------
    folder : str or Path
        The patient folder.

    Returns
    -------
    PatientFiles
        The image series by SeriesInstanceUID and the RTSTRUCT files.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    series: dict[str, list[Path]] = {}
    rtstructs: list[Path] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(
                str(f),
                stop_before_pixels=True,
                specific_tags=["Modality", "SOPClassUID", "SeriesInstanceUID", "ImagePositionPatient"],
            )
        except (InvalidDicomError, OSError, ValueError):
            continue
        if str(getattr(ds, "SOPClassUID", "")) == RTSTRUCT_SOP_CLASS or getattr(ds, "Modality", "") == "RTSTRUCT":
            rtstructs.append(f)
        elif "ImagePositionPatient" in ds and "SeriesInstanceUID" in ds:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(f)
    return PatientFiles(folder, series, rtstructs)


def _patient_folders(src: Path) -> list[Path]:
    if any(p.is_file() and not p.name.startswith(".") for p in src.iterdir()):
        return [src]
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputFileError("holds no patient folders (CT series + RTSTRUCT)", src)
    return folders


def _case_id(folder: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", folder.name).strip("_") or "case"


def convert_patient(folder: Path, label_map: LabelMap) -> tuple[Volume, Volume, dict]:
    """(CT, label map on the CT grid, table row) for one patient folder.

    Parameters
    ----------
    folder : Path
        The patient folder (one CT series and one RTSTRUCT).
    label_map : LabelMap
        Labels, ROI-name synonyms and overlap priority.

    Returns
    -------
    ct : Volume
        The CT series (HU).
    labels : Volume
        The label map on the CT's grid.
    row : dict
        The patient's row of ``conversion.csv`` (:data:`CONVERSION_COLUMNS`).
    """

    found_files, ss, uid = _structure_set_and_series(folder)
    ct = read_dicom_series(folder, files=found_files.series[uid])
    headers = read_series_headers(found_files.series[uid][:1])
    ct_for = str(getattr(headers[0], "FrameOfReferenceUID", ""))
    if ss.frame_of_reference_uid and ct_for and ss.frame_of_reference_uid != ct_for:
        raise GeometryError(
            f"RT Structure Set Frame of Reference {ss.frame_of_reference_uid} differs from the CT's {ct_for}", ss.file
        )
    rois = {r.name: r for r in ss.rois}
    found, missing, ignored = match_rois([r.name for r in ss.rois], label_map)
    masks: dict[str, np.ndarray] = {}
    off_plane = 0
    problems: list[str] = []
    for label, roi_name in found.items():
        roi = rois[roi_name]
        mask, report = rasterise_roi(roi.contours, ct, ss.file)
        off_plane += len(report.off_plane_z)
        if roi.skipped:
            kinds = ", ".join(f"{n} {k}" for k, n in roi.skipped_kinds.items())
            problems.append(
                f"ROI {roi_name!r}: {roi.skipped} contour(s) are not closed polygons ({kinds}) "
                "and cannot fill voxels: dropped"
            )
        problems.extend(report.problems(roi_name, ct))
        masks[label] = mask
    for problem in problems:  # one line each, naming the patient folder
        warnings.warn(f"{folder}: {problem}", stacklevel=2)
    array = np.zeros(ct.shape, dtype=np.uint8)
    lost: dict[str, int] = {}
    taken = np.zeros(ct.shape, dtype=bool)
    for label in label_map.priority:  # highest priority first: later labels only fill free voxels
        if label not in masks:
            continue
        lost[label] = int(np.count_nonzero(masks[label] & taken))
        array[masks[label] & ~taken] = label_map.labels[label]
        taken |= masks[label]
    empty = [label for label, m in masks.items() if not m.any()]
    row = {
        "patient": folder.name,
        "case": _case_id(folder),
        "rtstruct": found_files.rtstructs[0].name,
        "series_uid": uid,
        "found": "; ".join(f"{label}={roi}" for label, roi in found.items()),
        "missing": "; ".join(missing),
        "ignored": "; ".join(f"{roi} ({why})" for roi, why in ignored.items()),
        "empty": "; ".join(empty),
        "overlap_voxels_lost": "; ".join(f"{label}:{n}" for label, n in lost.items() if n),
        "off_plane_contours": off_plane,
        "dropped_contours": " | ".join(problems),
        "geometry": "; ".join(ct.notes.get("dicom_geometry", {}).get("faults", [])) or "regular",
    }
    return ct, ct.with_array(array), row


#: conversion.csv columns, in order (a skipped patient has only patient, case, status and reason).
CONVERSION_COLUMNS = ("patient", "case", "status", "reason", "rtstruct", "series_uid", "found", "missing", "ignored",
                      "empty", "overlap_voxels_lost", "off_plane_contours", "dropped_contours", "geometry")


def check_patient(folder: Path) -> None:
    """The cheap checks of one patient folder, before any CT is read.

    One RTSTRUCT that names a series found in the folder (raises the error :func:`convert_patient`
    would raise).

    Parameters
    ----------
    folder : Path
        The patient folder.

    Raises
    ------
    InputFileError
        When the folder has no RTSTRUCT, several, or none of the series it references.
    """
    _structure_set_and_series(folder)


def _structure_set_and_series(folder: Path) -> tuple[PatientFiles, StructureSet, str]:
    """(files found, the one RT Structure Set, the UID of the CT series it references): the checks
    :func:`check_patient` makes before any CT is read and :func:`convert_patient` relies on."""
    found_files = scan_patient(folder)
    if not found_files.rtstructs:
        raise InputFileError("no RT Structure Set (RTSTRUCT) found in the patient folder", folder)
    if len(found_files.rtstructs) > 1:
        raise InputFileError(
            f"{len(found_files.rtstructs)} RT Structure Sets found "
            f"({', '.join(p.name for p in found_files.rtstructs)}); keep one per patient",
            folder,
        )
    ss = read_rtstruct(found_files.rtstructs[0])
    wanted = [u for u in ss.series_uids if u in found_files.series]
    if wanted:
        return found_files, ss, wanted[0]
    if len(found_files.series) == 1 and not ss.series_uids:
        return found_files, ss, next(iter(found_files.series))
    raise InputFileError(
        f"the RT Structure Set references series {ss.series_uids or '(none)'} "
        f"but the folder holds {list(found_files.series) or 'no image series'}",
        ss.file,
    )


def convert_dicom_rt(src: str | Path, label_map: LabelMap | str | Path, out: str | Path, progress: bool = True,
                     skip_bad: bool = False) -> tuple[Path, list[dict]]:
    """Patient folders (CT series + RTSTRUCT) -> nnU-Net v2 raw dataset with a conversion table.

    Writes ``out/imagesTr/<case>_0000.nii.gz``, ``out/labelsTr/<case>.nii.gz``, ``dataset.json``
    and ``conversion.csv``/``conversion.json`` (one row per patient: ROIs found, missing, ignored,
    empty, voxels lost to higher-priority overlaps, contours dropped, geometry repairs).

    All or nothing: every patient folder is checked first (an RTSTRUCT naming a series that is
    there, distinct case ids), then the dataset is built in a hidden folder beside ``out`` and
    moved into place at the end, so a failure leaves ``out`` as it was. With ``skip_bad`` a
    patient that fails is left out and listed in ``conversion.csv`` (status ``skipped``, with the
    reason) instead, and the others are converted.

    Parameters
    ----------
    src : str or Path
        A patient folder, or a folder of patient folders.
    label_map : LabelMap or str or Path
        The label map, or its JSON/YAML file.
    out : str or Path
        The dataset folder to create (absent or empty, not inside ``src``).
    progress : bool, optional
        Show a progress bar.
    skip_bad : bool, optional
        Leave out patients that cannot be converted instead of failing.

    Returns
    -------
    out : Path
        The dataset folder.
    rows : list of dict
        The rows of ``conversion.csv``, one per patient folder.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputFileError("source folder not found", src)
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        raise OutputError(f"output dataset would be written inside the source folder {src}; choose another --out", out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError("output dataset folder exists and is not empty", out)
    if not isinstance(label_map, LabelMap):
        label_map = load_label_map(label_map)
    folders = _patient_folders(src)
    bad = _precheck_patients(src, folders, skip_bad)
    rows: list[dict] = []
    with guard.staged_folder(out) as tmp:
        for folder in tqdm(folders, desc="convert dicom-rt", unit="patient", disable=not progress):
            if folder not in bad:
                try:
                    ct, labels, row = convert_patient(folder, label_map)
                except GlobalmaskError as exc:
                    if not skip_bad:
                        raise
                    bad[folder] = str(exc)
            if folder in bad:
                rows.append(
                    {"patient": folder.name, "case": _case_id(folder), "status": "skipped", "reason": bad[folder]}
                )
                warnings.warn(f"{folder}: skipped ({bad[folder]})", stacklevel=2)
                continue
            write_volume(ct, tmp / "imagesTr" / f"{row['case']}_0000.nii.gz")
            write_volume(labels, tmp / "labelsTr" / f"{row['case']}.nii.gz")
            if ct.notes:
                write_json(tmp / "geometry" / f"{row['case']}.json", ct.notes)
            rows.append({"status": "converted", "reason": "", **row})
        n_good = sum(r["status"] == "converted" for r in rows)
        if n_good == 0:
            raise InputFileError(
                f"none of the {len(folders)} patient folder(s) could be converted (see the warnings above)", src
            )
        _write_tables(tmp, label_map, rows, n_good)
    return out, rows


def _precheck_patients(src: Path, folders: list[Path], skip_bad: bool) -> dict[Path, str]:
    """{folder: why} for the patient folders that fail :func:`check_patient`, after checking that the
    case ids are distinct; raises when any fails and ``skip_bad`` is not set."""
    seen: dict[str, Path] = {}
    for folder in folders:
        case = _case_id(folder)
        if case in seen:
            raise DatasetError(
                f"patient folders {seen[case].name} and {folder.name} give the same case id {case!r}", src
            )
        seen[case] = folder
    bad: dict[Path, str] = {}
    for folder in folders:  # every patient checked before any CT is read or anything written
        try:
            check_patient(folder)
        except GlobalmaskError as exc:
            bad[folder] = str(exc)
    if bad and not skip_bad:
        shown = "; ".join(bad.values())
        raise InputFileError(
            f"{len(bad)} of {len(folders)} patient folder(s) cannot be converted: {shown} "
            "(fix them, or pass --skip-bad to convert the others)",
            src,
        )
    return bad


def _write_tables(tmp: Path, label_map: LabelMap, rows: list[dict], n_good: int) -> None:
    """``dataset.json``, ``conversion.csv`` and ``conversion.json`` of a converted dataset in ``tmp``."""
    write_json(
        tmp / "dataset.json",
        {
            "channel_names": {"0": "CT"},
            "labels": label_map.with_background,
            "numTraining": n_good,
            "file_ending": ".nii.gz",
            "description": f"converted from DICOM RT by globalmask {__version__}; "
            f"overlap priority: {', '.join(label_map.priority)}",
        },
    )
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CONVERSION_COLUMNS), restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(tmp / "conversion.csv", buf.getvalue())
    write_json(tmp / "conversion.json", {"priority": label_map.priority, "patients": rows})


# ----------------------------------------------------------------------------------------------
# predictions -> RTSTRUCT / DICOM-SEG beside the NIfTI label maps


def check_dicom_inputs(inputs: Sequence[Path], fmt: str) -> None:
    """Before predicting: RTSTRUCT/DICOM-SEG output needs every input to be a DICOM series folder.

    Parameters
    ----------
    inputs : sequence of Path
        The prediction inputs.
    fmt : str
        The output format asked for (named in the error).

    Raises
    ------
    InputFileError
        When an input is a file.
    """
    for src in inputs:
        if not Path(src).is_dir():
            raise InputFileError(
                f"--format {fmt} needs DICOM series folders as inputs "
                "(the objects reference the series' UIDs), got a file",
                src,
            )


def write_prediction_objects(
    inputs: Sequence[Path], label_files: Sequence[Path], names: Mapping[str, int], out_dir: str | Path, fmt: str
) -> list[Path]:
    """For each (DICOM input folder, written label map): ``<case>_rtstruct.dcm`` or ``<case>_seg.dcm``.

    Parameters
    ----------
    inputs : sequence of Path
        The DICOM series folders predicted on.
    label_files : sequence of Path
        The label maps written for them, in the same order.
    names : mapping of str to int
        Structure name -> label value.
    out_dir : str or Path
        Where the objects are written.
    fmt : str
        ``"rtstruct"`` or ``"dicom-seg"``.

    Returns
    -------
    list of Path
        The files written.
    """

    out_dir = Path(out_dir)
    written = []
    for src, label_file in zip(inputs, label_files):
        series = dicom_image_series(Path(src))
        if len(series) != 1:
            raise InputFileError(f"expected one DICOM image series, found {len(series)}", src)
        headers = read_series_headers(next(iter(series.values())))
        labels = read_volume(label_file)
        case = label_file.name[: -len(".nii.gz")] if label_file.name.endswith(".nii.gz") else label_file.stem
        if fmt == "rtstruct":
            written.append(write_rtstruct(labels, names, headers, out_dir / f"{case}_rtstruct.dcm"))
        elif fmt == "dicom-seg":
            written.append(write_dicom_seg(labels, names, headers, out_dir / f"{case}_seg.dcm"))
        else:
            raise InputFileError(f"unknown output format {fmt!r} (nifti, rtstruct, dicom-seg)")
    return written
