"""Pictures to check a result by eye: one PNG per case, prediction and reference as outlines.

For every structure in the reference or the prediction, one row of three panels: the axial,
coronal and sagittal slices through the structure's centre (of the reference, or of the prediction
where the reference lacks it), the CT in a soft-tissue window underneath, the reference outlined in
one colour and the prediction in another, a legend saying which is which, and the structure's Dice
in the row's label. Slices are taken in RAS+ (closest canonical) order and drawn with millimetre
extents, so anisotropic voxels keep their true proportions, in the radiological convention: the
patient's right on the left of the axial and coronal panels (marked R and L), anterior up in axial
panels and on the right of sagittal ones (P and A), superior up.

matplotlib is imported when a figure is drawn (it is heavy and optional for the rest of the
package); only its object-oriented API and the Agg canvas are used, so no global backend is set.
:func:`draw_case` works on arrays, for any caller (``evaluate --qc``, ``predict --qc``, a report).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .io import Volume, atomic_path, read_volume, same_geometry, voxel_spacing
from .metrics import dice

#: Outline colours: reference and prediction (colour-blind safe: blue and orange).
REFERENCE_COLOUR = "#00a2ff"
PREDICTION_COLOUR = "#ff8c00"
#: CT display window in HU (soft tissue, as a radiologist reads head-and-neck and thorax CT).
WINDOW_HU = (-160.0, 240.0)

_VIEWS = ("axial", "coronal", "sagittal")
#: The patient's sides at the left and right edge of each view.
_SIDES = {"axial": ("R", "L"), "coronal": ("R", "L"), "sagittal": ("P", "A")}


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array in RAS+ (closest canonical) axis order and its voxel spacing in that order."""
    ornt = nib.orientations.io_orientation(affine)
    canon = nib.orientations.apply_orientation(array, ornt)
    sx, sy, sz = (float(v) for v in voxel_spacing(affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)))
    return np.asarray(canon), (sx, sy, sz)


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(mask)
    return tuple(int(round(v)) for v in idx.mean(axis=0))  # type: ignore[return-value]


def _slice(array: np.ndarray, view: str, at: tuple[int, int, int]) -> np.ndarray:
    """The 2D slice of a RAS+ array through ``at``, as (rows, columns) for imshow with origin 'lower'."""
    x, y, z = at
    if view == "axial":  # rows posterior -> anterior; columns the patient's right -> left (radiological)
        return array[::-1, :, z].T
    if view == "coronal":  # rows inferior -> superior; columns the patient's right -> left
        return array[::-1, y, :].T
    return array[x, :, :].T  # sagittal: columns posterior -> anterior


def _extent(
    view: str, shape: tuple[int, ...], spacing: tuple[float, float, float]
) -> tuple[float, float, float, float]:
    axes = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[view]
    return (0.0, shape[axes[0]] * spacing[axes[0]], 0.0, shape[axes[1]] * spacing[axes[1]])


def draw_case(
    out: str | Path,
    labels: Mapping[str, int],
    reference: Volume | None,
    prediction: Volume | None,
    ct: Volume | None = None,
    title: str = "",
    window: tuple[float, float] = WINDOW_HU,
    dpi: int = 100,
) -> Path:
    """Write one PNG for a case: a row of axial/coronal/sagittal panels per structure found.

    ``reference`` and ``prediction`` are label maps on one grid (either may be None: a prediction
    with no reference is outlined alone); ``ct``, when given, must share that grid and is drawn
    underneath. Structures in neither are left out; a case with none gets one row saying so.

    Parameters
    ----------
    out : str or Path
        The PNG file, written atomically.
    labels : Mapping[str, int]
        ``{name: value}`` of the structures to draw (value 0 skipped).
    reference : Volume or None
        The reference label map.
    prediction : Volume or None
        The predicted label map, on the reference's grid.
    ct : Volume or None
        The CT in HU, on the same grid, drawn underneath.
    title : str
        The figure's title.
    window : tuple of float
        (low, high) display window of the CT, HU.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``out``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = reference if reference is not None else prediction if prediction is not None else ct
    if base is None:
        raise ValueError("draw_case needs a reference, a prediction or a CT")
    affine = base.affine
    spacing = _canonical(np.zeros((1, 1, 1)), affine)[1]

    def canon(v: Volume | None) -> np.ndarray | None:
        return None if v is None else _canonical(np.asarray(v.array), affine)[0]

    ref, pred, image = canon(reference), canon(prediction), canon(ct)
    shape = (ref if ref is not None else pred if pred is not None else image).shape  # type: ignore[union-attr]
    rows = _structure_rows(labels, ref, pred)
    n_rows = max(1, len(rows))
    fig = Figure(figsize=(10.5, 3.2 * n_rows + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, 3, squeeze=False)
    centre = tuple(s // 2 for s in shape)
    for i in range(n_rows):
        name, r, p, at = rows[i] if rows else ("no structure in reference or prediction", None, None, centre)
        for j, view in enumerate(_VIEWS):
            _draw_panel(axes[i][j], view, at, shape, spacing, image, window, r, p)
        axes[i][0].set_ylabel(f"{name}{_score_text(r, p, bool(rows))}", fontsize=10)
    _legend(fig, reference is not None, prediction is not None)
    fig.suptitle(title, x=0.02, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.2 * n_rows + 0.6)))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out)



def draw_prediction(
    png: Path, labels: Mapping[str, int], ct_path: Path, label_map: Path, reference: Path | None = None
) -> None:
    """The QC picture of one prediction written to disk: its CT, the label map, and the reference if on its grid.

    A reference on another grid cannot be overlaid voxel for voxel; it is left out with a warning rather than
    resampled, so the picture never shows a contour the user did not draw.

    Parameters
    ----------
    png : Path
        The picture to write.
    labels : Mapping[str, int]
        ``{name: value}`` of the structures.
    ct_path : Path
        The CT the prediction was made from.
    label_map : Path
        The predicted label map (on the CT's grid).
    reference : Path or None
        A reference label map of the same case, if any.
    """
    ct, pred = read_volume(ct_path), read_volume(label_map)
    ref = read_volume(reference) if reference is not None else None
    if ref is not None and not same_geometry(ref, pred):
        warnings.warn(
            f"{reference}: the reference is not on the CT's grid; the QC picture shows the prediction alone",
            UserWarning, stacklevel=2,
        )
        ref = None
    draw_case(png, labels, ref, pred, ct,
              title=f"{png.stem}: prediction" + (" against the reference" if ref is not None else ""))

def _structure_rows(
    labels: Mapping[str, int], ref: np.ndarray | None, pred: np.ndarray | None
) -> list[tuple[str, np.ndarray | None, np.ndarray | None, tuple[int, int, int]]]:
    """(name, reference mask, predicted mask, centre) of every structure found in either, in ``labels`` order.

    The centre is the reference's, or the prediction's where the reference lacks the structure.
    """
    rows: list[tuple[str, np.ndarray | None, np.ndarray | None, tuple[int, int, int]]] = []
    for name, value in labels.items():
        if value == 0:
            continue
        r = None if ref is None else ref == value
        p = None if pred is None else pred == value
        source = r if r is not None and r.any() else p if p is not None and p.any() else None
        if source is not None:
            rows.append((name, r, p, _centre(source)))
    return rows


def _draw_panel(
    ax: Any,
    view: str,
    at: tuple[int, int, int],
    shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    image: np.ndarray | None,
    window: tuple[float, float],
    r: np.ndarray | None,
    p: np.ndarray | None,
) -> None:
    """One panel: the CT slice (or black) through ``at``, both outlines, the side letters and the title."""
    ext = _extent(view, shape, spacing)
    if image is not None:
        ax.imshow(
            _slice(image, view, at), cmap="gray", vmin=window[0], vmax=window[1], origin="lower", extent=ext,
            interpolation="nearest",
        )
    else:
        ax.imshow(
            np.zeros(_slice(np.zeros(shape), view, at).shape), cmap="gray", vmin=0, vmax=1, origin="lower", extent=ext
        )
    for mask, colour, style in ((r, REFERENCE_COLOUR, "solid"), (p, PREDICTION_COLOUR, "dashed")):
        if mask is None:
            continue
        sl = _slice(mask, view, at).astype(np.float32)
        if sl.min() != sl.max():
            ax.contour(
                sl, levels=[0.5], colors=[colour], linestyles=[style], linewidths=1.4, origin="lower", extent=ext
            )
    ax.set_xticks([])
    ax.set_yticks([])
    for xpos, letter in zip((0.02, 0.98), _SIDES[view]):
        ax.text(
            xpos, 0.5, letter, transform=ax.transAxes, color="yellow", fontsize=9, ha="left" if xpos < 0.5 else "right",
            va="center",
        )
    axis = "z" if view == "axial" else "y" if view == "coronal" else "x"
    ax.set_title(f"{view} ({axis} = {at[2 if view == 'axial' else 1 if view == 'coronal' else 0]})", fontsize=9)


def _score_text(r: np.ndarray | None, p: np.ndarray | None, any_rows: bool) -> str:
    """The row label's score: the Dice, or why there is none (false positive, missed)."""
    score = ""
    if r is not None and p is not None and any_rows:
        score = f"  Dice {dice(p, r):.3f}" if r.any() else "  (not in the reference: false positive)"
        if r.any() and not p.any():
            score = "  (missed: Dice 0)"
    return score


def _legend(fig: Any, reference: bool, prediction: bool) -> None:
    """The figure's legend: which outline is the reference and which the prediction."""
    from matplotlib.lines import Line2D

    handles = []
    if reference:
        handles.append(Line2D([], [], color=REFERENCE_COLOUR, linestyle="solid", linewidth=2, label="reference"))
    if prediction:
        handles.append(Line2D([], [], color=PREDICTION_COLOUR, linestyle="dashed", linewidth=2, label="prediction"))
    fig.legend(handles=handles, loc="upper right", ncol=2, frameon=False, fontsize=10)
