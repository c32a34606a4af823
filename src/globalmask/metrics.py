"""Segmentation metrics in millimetres: Dice, centre-of-mass error, HD95, mean surface distance, volume.

Everything geometric goes through the voxel-to-world affine (RAS+, mm) so numbers are comparable
across scanners with different voxel sizes and orientations; nothing is ever reported in voxels.

* Pure functions on arrays come first (:func:`dice`, :func:`center_of_mass_mm`,
  :func:`surface_distances_mm`, :func:`volume_ml`, :func:`structure_metrics`).
* :func:`evaluate_volumes` checks that a prediction and its reference share one grid.
* :func:`evaluate_folder` pairs a prediction folder with a reference folder (like nnU-Net's
  ``evaluate_predictions.py``), :func:`summarize` turns the long per-case table into
  mean ± std per structure (the paper's "mean (std)", sample std) and :func:`format_summary`
  prints it.

Conventions for a structure in one case (the ``status`` column):

===================  ==========================  =======  ====================
status               reference / prediction      Dice     distances
===================  ==========================  =======  ====================
``ok``               both non-empty              value    values
``missed``           present / empty             0.0      NaN
``false_positive``   empty / present             0.0      NaN
``absent``           both empty                  NaN      NaN
===================  ==========================  =======  ====================

A missed structure therefore lowers the mean Dice (it counts as 0) and is counted in
``n_missed``; an absent one is left out of every mean.

Surface distances on an orthogonal grid (any rotation, any voxel size) use the column norms of
``affine[:3, :3]`` as voxel spacing, which is exact there (rotations keep lengths). On a sheared
grid (non-orthogonal columns, e.g. a gantry-tilted series) column norms would be wrong by up to
~20% at 20 degrees, so the surface voxels are mapped to mm through the full 3x3 matrix instead.
Centres of mass and volumes use the full affine and are exact for any affine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import DatasetError, InputFileError
from .io import Volume, check_same_grid, voxel_spacing

# Affines of a prediction and its reference may differ by io.GEOMETRY_ATOL_MM and still count as
# one grid: io.check_same_grid, the rule training's image/label check shares.

#: Columns of the per-case table, in order (``case`` first when it comes from a file).
ROW_COLUMNS = ("structure", "label", "dice", "com_mm", "hd95_mm", "msd_mm", "pred_ml", "ref_ml", "status")
CASE_COLUMNS = ("case", *ROW_COLUMNS)

_METRICS = ("com_mm", "hd95_mm", "msd_mm")
SUMMARY_COLUMNS = (
    "structure",
    "n_cases",
    "n_scored",
    "n_missed",
    "n_false_positive",
    "n_absent",
    "dice_mean",
    "dice_std",
    *[f"{m}_{s}" for m in _METRICS for s in ("mean", "std")],
    "pred_ml_mean",
    "ref_ml_mean",
)

# 6-connected structuring element: a voxel is on the surface when one face-neighbour is outside.
# This is what MONAI's get_mask_edges uses (scipy's default), so our numbers match MONAI's.
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)


# ----------------------------------------------------------------------------------------------
# small helpers


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == np.bool_ else mask != 0


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_mask(pred), _as_mask(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError("affine contains NaN or infinite values")
    return affine


def _spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel-to-mm map for surface distances: the column norms (a length-3 vector) when the grid
    is orthogonal, else the full 3x3 matrix, so sheared (tilted) grids get their true geometry.

    Orthogonal grids keep the column-norm path so their results stay bit-identical.
    """
    m = _check_affine(affine)[:3, :3]
    norms = voxel_spacing(m)
    gram = m.T @ m
    off = gram - np.diag(np.diag(gram))
    if np.all(norms > 0) and np.max(np.abs(off)) <= 1e-6 * float(np.max(norms)) ** 2:
        return np.asarray(norms)
    return m


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels, or None when there are none."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        if hit.size == 0:
            return None
        slices.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(slices)


def _union_box(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, shape: tuple[int, ...], margin: int = 1
) -> tuple[slice, ...]:
    """Union of two boxes grown by ``margin`` voxels, clipped to ``shape``."""
    boxes = [x for x in (a, b) if x is not None]
    return tuple(
        slice(
            max(0, min(bx[d].start for bx in boxes) - margin), min(shape[d], max(bx[d].stop for bx in boxes) + margin)
        )
        for d in range(len(shape))
    )


def _shift_affine(affine: np.ndarray, starts: Iterable[int]) -> np.ndarray:
    """Affine of a sub-array that starts at voxel ``starts`` of the original array."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] = affine[:3, :3] @ np.asarray(list(starts), dtype=np.float64) + affine[:3, 3]
    return out


def _to_label_array(array: np.ndarray) -> np.ndarray:
    """Integer label map; float maps are accepted when every value is a whole number."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"label map has non-numeric dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("label map contains NaN or infinite values")
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise ValueError("label map holds non-integer values (a probability map rather than labels?)")
    lo, hi = (float(rounded.min()), float(rounded.max())) if rounded.size else (0.0, 0.0)
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int32
    return np.asarray(rounded.astype(dtype))


# ----------------------------------------------------------------------------------------------
# pure metrics on binary masks


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice = 2|P∩R| / (|P|+|R|) of two binary masks (non-zero = inside).

    NaN when both are empty: there is nothing to overlap, and 1.0 would reward predicting nothing.

    Parameters
    ----------
    pred : numpy.ndarray
        The predicted mask.
    ref : numpy.ndarray
        The reference mask, same shape.

    Returns
    -------
    float
        Dice in [0, 1], NaN when both are empty.
    """
    pred, ref = _check_pair(pred, ref)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred + n_ref == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)


def center_of_mass_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """World (mm) position of the mask's voxel centre of mass, or None for an empty mask.

    The voxel centroid (``scipy.ndimage.center_of_mass``) is mapped through the full affine, so it
    is exact for rotated, anisotropic and even sheared grids.

    Parameters
    ----------
    mask : numpy.ndarray
        A 3D mask (non-zero = inside).
    affine : numpy.ndarray
        Its 4x4 voxel-to-world affine (mm).

    Returns
    -------
    numpy.ndarray or None
        Shape (3,): the world position (mm), or None.
    """
    mask = _as_mask(mask)
    affine = _check_affine(affine)
    box = _bbox(mask)
    if box is None:
        return None
    com_vox = np.asarray(ndimage.center_of_mass(mask[box]), dtype=np.float64)
    com_vox += np.array([s.start for s in box], dtype=np.float64)
    return np.asarray(affine[:3, :3] @ com_vox + affine[:3, 3])


def center_of_mass_distance_mm(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> float:
    """Euclidean distance (mm) between the world centres of mass; NaN if either mask is empty.

    Parameters
    ----------
    pred : numpy.ndarray
        The predicted mask.
    ref : numpy.ndarray
        The reference mask, same shape.
    affine : numpy.ndarray
        Their 4x4 voxel-to-world affine (mm).

    Returns
    -------
    float
        The distance (mm), or NaN.
    """
    pred, ref = _check_pair(pred, ref)
    a, b = center_of_mass_mm(pred, affine), center_of_mass_mm(ref, affine)
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(a - b))


def _directed_surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(distances pred-surface -> ref-surface, ref-surface -> pred-surface) in mm; both masks non-empty.

    Surfaces are the mask voxels with a face-neighbour outside (mask XOR its 6-connected erosion),
    as in MONAI. Both masks are first cropped to their union bounding box plus a 1-voxel zero
    margin, so a 512x512x200 scan with a small organ costs about as much as the organ itself, and a
    mask touching the array border gets a closed surface there (zero padding).
    """
    box = _bbox(pred | ref)
    assert box is not None
    p = np.pad(pred[box], 1)
    r = np.pad(ref[box], 1)
    edge_p = p & ~ndimage.binary_erosion(p, structure=_SURFACE_STRUCTURE)
    edge_r = r & ~ndimage.binary_erosion(r, structure=_SURFACE_STRUCTURE)
    # Nearest surface voxel by a KD-tree on the (sparse) surface coordinates in mm: exact Euclidean
    # distances, and cheaper than a dense distance transform for large organs.
    pts_p = _to_mm(np.argwhere(edge_p).astype(np.float64), spacing)
    pts_r = _to_mm(np.argwhere(edge_r).astype(np.float64), spacing)
    d_pr = cKDTree(pts_r).query(pts_p, k=1)[0]
    d_rp = cKDTree(pts_p).query(pts_r, k=1)[0]
    return np.asarray(d_pr, dtype=np.float64), np.asarray(d_rp, dtype=np.float64)


def _to_mm(index_points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxel offsets -> mm offsets: per-axis scaling (orthogonal grid) or the full matrix (sheared)."""
    return np.asarray(index_points * spacing if spacing.ndim == 1 else index_points @ spacing.T)


def _surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray) -> tuple[float, float]:
    if not pred.any() or not ref.any():
        return float("nan"), float("nan")
    d_pr, d_rp = _directed_surface_distances(pred, ref, spacing)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    msd = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
    return hd95, msd


def surface_distances_mm(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """(HD95, mean symmetric surface distance) in mm; (NaN, NaN) if either mask is empty.

    Definitions (identical to MONAI's ``compute_hausdorff_distance(percentile=95)`` and
    ``compute_average_surface_distance(symmetric=True)``, which the tests check):

    * surface = voxels of the mask with at least one face-neighbour outside it;
    * d(P->R) = for each surface voxel of P, the Euclidean distance (mm) to the nearest surface
      voxel of R; likewise d(R->P);
    * HD95 = max(95th percentile of d(P->R), 95th percentile of d(R->P)), percentiles with linear
      interpolation (numpy/torch default) -- the *directed* percentiles, not one pooled percentile;
    * MSD = mean of d(P->R) and d(R->P) pooled together (each surface voxel weighs the same).

    Distances are exact for any affine: column norms on orthogonal grids, the full 3x3 matrix on
    sheared ones. MONAI itself returns NaN (HD) and inf (ASD) when only one mask is empty;
    here both are NaN so "undefined" has one spelling.

    Parameters
    ----------
    pred : numpy.ndarray
        The predicted 3D mask.
    ref : numpy.ndarray
        The reference mask, same shape.
    affine : numpy.ndarray
        Their 4x4 voxel-to-world affine (mm).

    Returns
    -------
    hd95 : float
        95th-percentile Hausdorff distance (mm), or NaN.
    msd : float
        Mean symmetric surface distance (mm), or NaN.
    """
    pred, ref = _check_pair(pred, ref)
    return _surface_metrics(pred, ref, _spacing(affine))


def volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume in millilitres: voxel count * |det(affine[:3, :3])| mm^3 / 1000 (exact for any affine).

    Parameters
    ----------
    mask : numpy.ndarray
        A mask (non-zero = inside).
    affine : numpy.ndarray
        Its 4x4 voxel-to-world affine (mm).

    Returns
    -------
    float
        The volume (ml).
    """
    affine = _check_affine(affine)
    return int(np.count_nonzero(_as_mask(mask))) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


# ----------------------------------------------------------------------------------------------
# label maps


def _status(n_pred: int, n_ref: int) -> str:
    if n_ref and n_pred:
        return "ok"
    if n_ref:
        return "missed"
    if n_pred:
        return "false_positive"
    return "absent"


def structure_metrics(
    pred_label: np.ndarray, ref_label: np.ndarray, affine: np.ndarray, labels: Mapping[str, int]
) -> list[dict[str, Any]]:
    """One row per structure of ``labels`` (background / value 0 skipped), in the order given.

    Row keys: structure, label, dice, com_mm, hd95_mm, msd_mm, pred_ml, ref_ml, status (see the
    module docstring for the status rules). Each structure is evaluated inside the union bounding
    box of its prediction and reference (found for all labels in one pass), so many small organs in
    a large scan stay cheap.

    Parameters
    ----------
    pred_label : numpy.ndarray
        The predicted 3D label map (integers, or floats holding whole numbers).
    ref_label : numpy.ndarray
        The reference label map, same shape.
    affine : numpy.ndarray
        Their 4x4 voxel-to-world affine (mm).
    labels : Mapping[str, int]
        ``{name: value}`` of the structures to score.

    Returns
    -------
    list of dict[str, Any]
        One row per structure, keys :data:`ROW_COLUMNS`.
    """
    pred_label = _to_label_array(pred_label)
    ref_label = _to_label_array(ref_label)
    if pred_label.shape != ref_label.shape:
        raise ValueError(f"prediction shape {pred_label.shape} differs from reference shape {ref_label.shape}")
    if pred_label.ndim != 3:
        raise ValueError(f"expected 3D label maps, got shape {pred_label.shape}")
    affine = _check_affine(affine)
    spacing = _spacing(affine)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    wanted = [
        (str(name), int(value)) for name, value in labels.items() if int(value) != 0 and str(name) != "background"
    ]
    positive = [v for _, v in wanted if v > 0]
    max_label = max(positive, default=0)
    # find_objects gives every positive label's bounding box in a single pass over the volume.
    pred_boxes = ndimage.find_objects(pred_label, max_label) if max_label else []
    ref_boxes = ndimage.find_objects(ref_label, max_label) if max_label else []
    shape = pred_label.shape
    rows: list[dict[str, Any]] = []
    for name, value in wanted:
        if value > 0:
            pb, rb = pred_boxes[value - 1], ref_boxes[value - 1]
        else:  # negative values are unusual; fall back to explicit boxes
            pb, rb = _bbox(pred_label == value), _bbox(ref_label == value)
        row: dict[str, Any] = {"structure": name, "label": value}
        if pb is None and rb is None:
            row.update(
                dice=float("nan"), com_mm=float("nan"), hd95_mm=float("nan"), msd_mm=float("nan"), pred_ml=0.0,
                ref_ml=0.0, status="absent",
            )
            rows.append(row)
            continue
        box = _union_box(pb, rb, shape, margin=1)
        p = pred_label[box] == value
        r = ref_label[box] == value
        n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        status = _status(n_pred, n_ref)
        row["dice"] = dice(p, r)
        if status == "ok":
            sub_affine = _shift_affine(affine, (s.start for s in box))
            row["com_mm"] = center_of_mass_distance_mm(p, r, sub_affine)
            row["hd95_mm"], row["msd_mm"] = _surface_metrics(p, r, spacing)
        else:
            row.update(com_mm=float("nan"), hd95_mm=float("nan"), msd_mm=float("nan"))
        row.update(pred_ml=n_pred * voxel_ml, ref_ml=n_ref * voxel_ml, status=status)
        rows.append({k: row[k] for k in ROW_COLUMNS})
    return rows


def _label_array_of(volume: Volume, role: str) -> np.ndarray:
    try:
        return _to_label_array(volume.array)
    except ValueError as exc:
        raise InputFileError(f"{role} is not a label map: {exc}", volume.path) from exc


def _describe(path: Path | None) -> str:
    return str(path) if path is not None else "<in-memory volume>"


def evaluate_volumes(pred: Volume, ref: Volume, labels: Mapping[str, int], case_id: str) -> list[dict[str, Any]]:
    """:func:`structure_metrics` for one case after checking both volumes share one grid.

    Shapes must be equal and affines agree within io.GEOMETRY_ATOL_MM: metrics of a prediction resampled to a
    different grid would silently compare different anatomy. Raises GeometryError naming both files.

    Parameters
    ----------
    pred : Volume
        The prediction.
    ref : Volume
        The reference label map.
    labels : Mapping[str, int]
        ``{name: value}`` of the structures to score.
    case_id : str
        The value of the rows' ``case`` column.

    Returns
    -------
    list of dict[str, Any]
        One row per structure, keys :data:`CASE_COLUMNS`.
    """
    check_same_grid(pred, ref, "prediction", f"reference {_describe(ref.path)}",
                    "predictions must be on the reference grid, or metrics would compare different anatomy")
    pred_array, ref_array = _label_array_of(pred, "prediction"), _label_array_of(ref, "reference")
    # A prediction value that neither the label map nor the reference knows would silently count
    # as background (e.g. a model trained with another numbering): refuse it. Values shared with
    # the reference but left out of ``labels`` are structures deliberately not scored.
    declared = {int(v) for v in labels.values()} | {0}
    ref_values = _values(ref_array)
    undeclared = sorted(_values(pred_array) - declared - ref_values)
    if undeclared:
        raise DatasetError(
            f"prediction holds label value(s) {undeclared[:10]} that are not declared in the label map "
            f"{sorted(declared)} and not found in the reference {_describe(ref.path)}; check --labels / dataset.json",
            pred.path,
        )
    rows = structure_metrics(pred_array, ref_array, ref.affine, labels)
    return [{"case": case_id, **row} for row in rows]


def _values(array: np.ndarray) -> set[int]:
    """Distinct values of a label map (a bincount for uint8: one pass, no sort)."""
    if array.dtype == np.uint8:
        return {int(v) for v in np.flatnonzero(np.bincount(array.ravel(), minlength=1))}
    return {int(v) for v in np.unique(array)}


# ----------------------------------------------------------------------------------------------
# summaries


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), std


def _summary_row(name: str, df: pd.DataFrame) -> dict[str, Any]:
    status = df["status"].astype(str) if "status" in df else pd.Series(["ok"] * len(df), index=df.index)
    scored = df[status != "absent"]
    n_cases = int(df["case"].nunique()) if "case" in df else len(df)
    row: dict[str, Any] = {
        "structure": name,
        "n_cases": n_cases,
        "n_scored": int(len(scored)),
        "n_missed": int((status == "missed").sum()),
        "n_false_positive": int((status == "false_positive").sum()),
        "n_absent": int((status == "absent").sum()),
    }
    row["dice_mean"], row["dice_std"] = _mean_std(scored["dice"])
    for metric in _METRICS:
        row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(scored[metric])
    row["pred_ml_mean"] = _mean_std(df["pred_ml"])[0]
    row["ref_ml_mean"] = _mean_std(df["ref_ml"])[0]
    return row


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std (ddof=1, NaN for one value) per structure, plus a pooled ``all`` row.

    Dice: over every non-absent row (missed and false positives count as 0). Distances: over the
    rows where they are defined (both masks non-empty). Volumes: over all rows. ``n_cases`` counts
    distinct cases, ``n_scored`` the rows behind the Dice mean. Extra columns (mode, shift, ...)
    are ignored: group before calling to keep them apart.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The per-case table (:data:`CASE_COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        One row per structure and ``all``, columns :data:`SUMMARY_COLUMNS`.
    """
    if per_case.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows = [_summary_row(str(name), group) for name, group in per_case.groupby("structure", sort=False)]
    rows.append(_summary_row("all", per_case))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def mean_std_text(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """'0.712 ± 0.083': the one way every table (CLI, demo, report) prints a mean and its std.

    A missing or non-finite mean prints 'n/a'; a missing or non-finite std (one value) prints the mean alone.

    Parameters
    ----------
    mean : float or None
        The mean.
    std : float or None
        The standard deviation.
    digits : int
        Decimal places of both.

    Returns
    -------
    str
        The text.
    """
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_summary(summary: pd.DataFrame) -> str:
    """Plain-text table: structure, n, Dice, CoM error, HD95 and MSD (mean ± std, mm), missed, FP.

    Parameters
    ----------
    summary : pandas.DataFrame
        The table from :func:`summarize`.

    Returns
    -------
    str
        The table, one line per structure (no trailing newline).
    """
    header = [
        "structure", "n", "Dice mean±std", "CoM mm mean±std", "HD95 mm mean±std", "MSD mm mean±std", "missed", "FP"
    ]
    body = []
    for _, r in summary.iterrows():
        body.append(
            [
                str(r["structure"]),
                str(int(r["n_scored"])),
                mean_std_text(r["dice_mean"], r["dice_std"], 3),
                mean_std_text(r["com_mm_mean"], r["com_mm_std"], 2),
                mean_std_text(r["hd95_mm_mean"], r["hd95_mm_std"], 2),
                mean_std_text(r["msd_mm_mean"], r["msd_mm_std"], 2),
                str(int(r["n_missed"])),
                str(int(r["n_false_positive"])),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(body):
        if row[0] == "all" and i == len(body) - 1 and len(body) > 1:
            out.append("  ".join("-" * w for w in widths))
        out.append(line(row))
    return "\n".join(out)
