"""Reading and writing volumes with their geometry.

A :class:`Volume` is a 3D array plus a 4x4 voxel-to-world affine in the NIfTI (RAS+, millimetre)
convention, whatever format it came from. NIfTI goes through nibabel; NRRD, MetaImage and DICOM
series go through SimpleITK, whose LPS geometry is converted to the same RAS+ affine, so the rest of
globalmask never needs to know where a volume came from.

Every writer here is atomic: it writes a temporary file in the destination folder and renames it
into place, so a crash never leaves a half-written file that looks complete.

One module per concern, every public name re-exported here (``from globalmask.io import ...``):
:mod:`.volume` (the volume, file names, grid geometry), :mod:`.formats` (NIfTI, NRRD/MetaImage:
headers, reading, writing), :mod:`.dicom` (DICOM series and their geometry), :mod:`.readers`
(any path to a volume) and :mod:`.files` (atomic files, text and JSON).
"""

from __future__ import annotations

from .dicom import (
    DICOM_DUPLICATE_TOL_MM,
    DICOM_MAX_GAP_FACTOR,
    DICOM_SPACING_REL_TOL,
    DICOM_TILT_TOL_MM,
    DicomSlice,
    SeriesGeometry,
    analyse_series_geometry,
    dicom_image_series,
    read_dicom_series,
    read_dicom_slice_header,
)
from .files import atomic_path, json_safe, read_json, write_failure, write_json, write_text
from .formats import IN_MEMORY_WRITE_BYTES, SFORM_QFORM_ATOL_MM, check_data_type, check_declared_shape, write_volume
from .readers import check_volume_header, read_affine, read_volume
from .volume import (
    GEOMETRY_ATOL_MM,
    MAX_SIDE,
    MAX_SPACING_MM,
    MAX_VOXELS,
    NIFTI_SUFFIXES,
    SITK_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    affine_difference,
    affine_to_sitk_geometry,
    case_id_from_path,
    check_same_grid,
    check_spacing,
    is_volume_path,
    same_geometry,
    sitk_geometry_to_affine,
    strip_suffix,
    volume_suffix,
    voxel_spacing,
)

__all__ = [
    "DICOM_DUPLICATE_TOL_MM",
    "DICOM_MAX_GAP_FACTOR",
    "DICOM_SPACING_REL_TOL",
    "DICOM_TILT_TOL_MM",
    "GEOMETRY_ATOL_MM",
    "IN_MEMORY_WRITE_BYTES",
    "MAX_SIDE",
    "MAX_SPACING_MM",
    "MAX_VOXELS",
    "NIFTI_SUFFIXES",
    "SFORM_QFORM_ATOL_MM",
    "SITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "DicomSlice",
    "SeriesGeometry",
    "Volume",
    "affine_difference",
    "affine_to_sitk_geometry",
    "analyse_series_geometry",
    "atomic_path",
    "case_id_from_path",
    "check_data_type",
    "check_declared_shape",
    "check_same_grid",
    "check_spacing",
    "check_volume_header",
    "dicom_image_series",
    "is_volume_path",
    "json_safe",
    "read_affine",
    "read_dicom_series",
    "read_dicom_slice_header",
    "read_json",
    "read_volume",
    "same_geometry",
    "sitk_geometry_to_affine",
    "strip_suffix",
    "volume_suffix",
    "voxel_spacing",
    "write_failure",
    "write_json",
    "write_text",
    "write_volume",
]
