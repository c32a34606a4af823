"""DICOM Segmentation (DICOM-SEG) objects of label maps, built and decoded with highdicom.

A prediction on a CT series becomes one binary segment per structure, each frame aligned with
the CT slice it lies on (the Frame of Reference, study and source images are referenced by
highdicom). Predictions on a grid that globalmask resampled on reading (missing slices, tilt) are
written with their own plane positions, so the SEG stays in the same patient coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ._version import __version__
from .errors import GeometryError, InputFileError
from .io import GEOMETRY_ATOL_MM, Volume, atomic_path, voxel_spacing

_LPS = np.diag([-1.0, -1.0, 1.0])


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InputFileError("DICOM-SEG support needs highdicom: pip install 'globalmask[dicom]'") from exc
    return highdicom


def _structures(names: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(str(n), int(v)) for n, v in names.items() if int(v) != 0 and str(n) != "background"]


def build_dicom_seg(labels: Volume, names: Mapping[str, int], source_images: Sequence, series_number: int = 902):
    """highdicom Segmentation of ``labels`` (one BINARY segment per structure, in ``names`` order).

    ``source_images`` are the CT series' pydicom datasets sorted along the slice normal; the label
    map must be on that series' grid (``read_volume`` of it) or on the regular grid it was
    resampled onto.

    Parameters
    ----------
    labels : Volume
        The label map (a prediction on the CT series).
    names : mapping of str to int
        Structure name -> label value; background (0 or the name ``background``) is left out.
    source_images : sequence of pydicom.dataset.Dataset
        The CT series' datasets, sorted along the slice normal.
    series_number : int, optional
        SeriesNumber of the SEG series.

    Returns
    -------
    highdicom.seg.Segmentation
        The DICOM-SEG object, not yet written.

    Raises
    ------
    GeometryError
        When the label map's axes are not the series' row and column directions.
    """
    hd = _highdicom()
    structures = _structures(names)
    array = np.asarray(labels.array)
    lps = _LPS @ labels.affine[:3, :4]
    spacing = voxel_spacing(lps)
    ref = source_images[0]
    iop = np.asarray(ref.ImageOrientationPatient, dtype=np.float64)
    if not (
        np.allclose(lps[:, 0] / spacing[0], iop[:3], atol=1e-4)
        and np.allclose(lps[:, 1] / spacing[1], iop[3:], atol=1e-4)
    ):
        raise GeometryError(
            "label map axes are not the CT series' row/column directions: not a prediction on this series"
        )
    # (frames, rows, columns, segments): frame k is the array's plane k, rows are its y axis.
    frames = np.stack(
        [np.stack([v == array[:, :, k].T for _, v in structures], axis=-1) for k in range(array.shape[2])]
    )
    positions = [lps[:, 3] + k * lps[:, 2] for k in range(array.shape[2])]
    src_pos = [np.asarray(h.ImagePositionPatient, dtype=np.float64) for h in source_images]
    same_grid = (
        len(positions) == len(src_pos)
        and array.shape[:2] == (int(ref.Columns), int(ref.Rows))
        and all(np.allclose(p, q, atol=GEOMETRY_ATOL_MM) for p, q in zip(positions, src_pos))
    )
    descriptions = _segment_descriptions(structures)
    kwargs = {} if same_grid else _own_plane_positions(positions, spacing, iop)
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="globalmask",
        manufacturer_model_name="globalmask",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
        **kwargs,
    )


def _segment_descriptions(structures: Sequence[tuple[str, int]]) -> list:
    """One highdicom SegmentDescription per (name, value) structure, numbered from 1."""
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="globalmask", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=name[:64],
            segmented_property_category=codes.cid7150.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(
                value=name[:16] or "structure", scheme_designator="99GLOBALMASK", meaning=name[:64]
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, (name, _) in enumerate(structures, start=1)
    ]


def _own_plane_positions(positions: Sequence[np.ndarray], spacing: np.ndarray, iop: np.ndarray) -> dict:
    """Segmentation keywords that place every frame at its own plane position (LPS mm), for a label map
    on a grid other than the CT series' own."""
    hd = _highdicom()
    return {
        "plane_positions": [
            hd.PlanePositionSequence(
                coordinate_system=hd.CoordinateSystemNames.PATIENT, image_position=[float(x) for x in p]
            )
            for p in positions
        ],
        "pixel_measures": hd.PixelMeasuresSequence(
            pixel_spacing=[float(spacing[1]), float(spacing[0])],
            slice_thickness=float(spacing[2]),
            spacing_between_slices=float(spacing[2]),
        ),
        "plane_orientation": hd.PlaneOrientationSequence(
            coordinate_system=hd.CoordinateSystemNames.PATIENT, image_orientation=[float(x) for x in iop]
        ),
    }


def write_dicom_seg(labels: Volume, names: Mapping[str, int], source_images: Sequence, path: str | Path) -> Path:
    """Build (:func:`build_dicom_seg`) and write a DICOM-SEG file atomically.

    Parameters
    ----------
    labels : Volume
        The label map (a prediction on the CT series).
    names : mapping of str to int
        Structure name -> label value.
    source_images : sequence of pydicom.dataset.Dataset
        The CT series' datasets, sorted along the slice normal.
    path : str or Path
        The ``.dcm`` file to write.

    Returns
    -------
    Path
        The file written.
    """
    seg = build_dicom_seg(labels, names, source_images)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return Path(path)


def read_dicom_seg(path: str | Path, names: Mapping[str, int], like: Volume | None = None) -> Volume:
    """Decode a DICOM-SEG with highdicom (``get_volume``) into a label map Volume (RAS affine).

    Segments are matched to ``names`` by their labels; highdicom places every frame by its own
    plane position, so this is an independent check of what :func:`write_dicom_seg` wrote.

    Parameters
    ----------
    path : str or Path
        The DICOM-SEG file.
    names : mapping of str to int
        Structure name -> label value to give its segment's voxels.
    like : Volume, optional
        A volume whose grid the result is copied onto (it must share voxel centres with the SEG).

    Returns
    -------
    Volume
        The label map, on the SEG's own grid or on ``like``'s.
    """
    hd = _highdicom()
    seg = hd.seg.segread(str(path))
    numbers = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    vol = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint8)
    seg_array = np.asarray(vol.array)  # (slices, rows, columns), segment numbers
    out = np.zeros_like(seg_array)
    for name, value in _structures(names):
        if name[:64] in numbers:
            out[seg_array == numbers[name[:64]]] = value
    # highdicom index order is (slice, row, column) in LPS; ours is (column, row, slice) in RAS.
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(vol.affine, dtype=np.float64) @ perm
    decoded = Volume(np.ascontiguousarray(out.transpose(2, 1, 0)), affine, Path(path))
    return decoded if like is None else _onto_grid(decoded, like)


def _onto_grid(src: Volume, like: Volume) -> Volume:
    """Copy ``src`` voxels onto ``like``'s grid when both grids share voxel centres (axis flips and
    permutations allowed); voxels of ``like`` outside ``src`` are 0."""

    m = np.linalg.inv(src.affine) @ like.affine
    if not np.allclose(m[:3, :], np.round(m[:3, :]), atol=1e-3):
        raise GeometryError("decoded SEG grid does not share voxel centres with the label grid", src.path)
    out = ndimage.affine_transform(
        src.array,
        np.round(m[:3, :3]),
        offset=np.round(m[:3, 3]),
        output_shape=like.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return like.with_array(out.astype(np.uint8))
