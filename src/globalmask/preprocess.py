"""From a CT (+ label) on its own grid to network-ready arrays, and back again.

Steps, each recorded in a :class:`Geometry` so predictions can be mapped back exactly:

1. **Reorient** to RAS+ array order (nibabel's closest canonical orientation): a model trained on
   one orientation then sees every scan the same way round. Left and right are *not* symmetrised.
2. **GBM** with the recipe, on the whole (reoriented) CT, so it equals ``globalmask masks``.
3. **Crop** to the body's bounding box (a -500 HU largest component, whatever the recipe) plus a
   margin: the network sees less air, and every input mode sees the same field of view.
4. **Resample** to the target spacing with ``torch.nn.functional.interpolate``: trilinear for CT,
   nearest neighbour for the GBM and labels, so binary stays binary and labels stay integers.
5. **Clip and scale** CT from the HU window to [-1, 1].

:func:`restore_labels` undoes 4 → 3 → 1 on class probabilities (linear interpolation, then
argmax), giving a label map with exactly the input's shape and affine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_memory
from .errors import GeometryError
from .io import MAX_SPACING_MM, Volume, check_same_grid, voxel_spacing
from .masks import Recipe, check_ct, largest_component
from .validate import check_keys, real, sequence

#: The one rule for a target spacing wherever it is given (command line, study configuration,
#: Python, checkpoint): three spacings in mm, each from 0.1 mm to the largest plausible CT spacing.
MIN_SPACING_MM = 0.1
SPACING = sequence(real(MIN_SPACING_MM, MAX_SPACING_MM), 3, "spacings in mm")

DEFAULT_WINDOW = (-1000.0, 1000.0)


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings stored in every checkpoint; ``spacing`` is in RAS array order (mm).

    Attributes
    ----------
    spacing : tuple of float
        Target voxel spacing (mm), RAS array order.
    window : tuple of float
        (low, high) HU window mapped to [-1, 1].
    crop : bool
        Whether to crop to the body's bounding box.
    crop_level : float
        HU level of the body used for the crop.
    crop_margin_mm : float
        Margin around the body box (mm).
    """

    spacing: tuple[float, float, float]
    window: tuple[float, float] = DEFAULT_WINDOW
    crop: bool = True
    crop_level: float = -500.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", SPACING(self.spacing, "preprocess.spacing"))
        try:
            object.__setattr__(self, "window", tuple(float(w) for w in self.window))
        except (TypeError, ValueError):
            raise GeometryError(f"CT window must be numbers, got {self.window!r}") from None
        if len(self.window) != 2 or not all(math.isfinite(w) for w in self.window) or self.window[1] <= self.window[0]:
            raise GeometryError(f"CT window must be two finite numbers (low, high) with low < high, got {self.window}")
        if not (math.isfinite(self.crop_level) and math.isfinite(self.crop_margin_mm) and self.crop_margin_mm >= 0):
            raise GeometryError(
                f"crop level and margin must be finite (margin >= 0), got {self.crop_level}, {self.crop_margin_mm}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (how checkpoints store them).

        Returns
        -------
        dict[str, Any]
            One entry per field.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """The settings from :meth:`to_dict`'s dict; unknown keys are refused.

        Parameters
        ----------
        d : dict[str, Any]
            The stored settings (lists are read as tuples).

        Returns
        -------
        PreprocessConfig
            The checked settings.
        """
        check_keys(d, [f.name for f in fields(cls)], "preprocess settings")
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kwargs)


@dataclass
class Geometry:
    """Everything needed to map a network-grid array back onto the original grid.

    Attributes
    ----------
    original_shape : tuple of int
        Shape of the input volume, in its own voxel order.
    original_affine : numpy.ndarray
        Its 4x4 affine (RAS+, mm).
    canonical_shape : tuple of int
        Shape after reorienting to RAS+ array order.
    canonical_affine : numpy.ndarray
        The reoriented volume's affine.
    crop_start, crop_stop : tuple of int
        The crop box on the canonical grid (voxels, stop exclusive).
    grid_shape : tuple of int
        Shape of the network grid.
    grid_affine : numpy.ndarray
        The network grid's affine.
    """

    original_shape: tuple[int, int, int]
    original_affine: np.ndarray
    canonical_shape: tuple[int, int, int]
    canonical_affine: np.ndarray
    crop_start: tuple[int, ...]
    crop_stop: tuple[int, ...]
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """The crop box as slices of the canonical grid.

        Returns
        -------
        tuple of slice
            One slice per canonical axis.
        """
        return tuple(slice(a, b) for a, b in zip(self.crop_start, self.crop_stop))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The geometry as a JSON-ready dict of lists.

        Returns
        -------
        dict[str, Any]
            One entry per field.
        """
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """The geometry from :meth:`to_dict`'s dict.

        Parameters
        ----------
        d : dict[str, Any]
            The stored geometry.

        Returns
        -------
        Geometry
            The geometry, affines as float64 arrays, shapes as int tuples.
        """
        arr = {"original_affine", "canonical_affine", "grid_affine"}
        kwargs: dict[str, Any] = {
            k: (np.asarray(v, dtype=np.float64) if k in arr else tuple(int(x) for x in v)) for k, v in d.items()
        }
        return cls(**kwargs)


@dataclass
class PreparedCase:
    """A case on the network grid: normalised CT, GBM, optional label, and how to go back.

    Attributes
    ----------
    id : str
        The case id.
    ct : numpy.ndarray
        float32 CT on the network grid, scaled to [-1, 1].
    gbm : numpy.ndarray
        uint8 0/1 GBM on the network grid.
    geometry : Geometry
        How to map the grid back onto the input volume.
    label : numpy.ndarray or None
        uint8 label map on the network grid, when given.
    meta : dict[str, Any]
        Free-form notes about the case.
    """

    id: str
    ct: np.ndarray  # float32, [-1, 1]
    gbm: np.ndarray  # uint8 0/1
    geometry: Geometry
    label: np.ndarray | None = None  # uint8
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The network grid's shape.

        Returns
        -------
        tuple of int
            Shape of ``ct`` (RAS array order).
        """
        return tuple(self.ct.shape)


# ----------------------------------------------------------------------------------------------
# orientation


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip array axes to RAS+ (closest canonical); returns (array view, new affine).

    Parameters
    ----------
    array : numpy.ndarray
        A 3D array.
    affine : numpy.ndarray
        Its 4x4 voxel-to-world affine.

    Returns
    -------
    array : numpy.ndarray
        A view of ``array`` in RAS+ voxel order.
    affine : numpy.ndarray
        The view's affine.
    """
    ornt = nib.orientations.io_orientation(affine)
    canon = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return canon, new_affine


def from_canonical(array: np.ndarray, original_affine: np.ndarray, order: Literal["C", "F"] = "C") -> np.ndarray:
    """Inverse of :func:`to_canonical` for an array on the canonical grid.

    ``order="F"`` gives the Fortran-ordered array NIfTI stores, so writing it needs no second
    transposition (one copy instead of two for a prediction).

    Parameters
    ----------
    array : numpy.ndarray
        An array on the canonical (RAS+) grid of a volume with ``original_affine``.
    original_affine : numpy.ndarray
        The 4x4 affine of the original volume.
    order : {'C', 'F'}
        Memory order of the result.

    Returns
    -------
    numpy.ndarray
        ``array`` in the original voxel order.
    """
    ornt = nib.orientations.io_orientation(original_affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return np.require(nib.orientations.apply_orientation(array, back), requirements=order)


def canonical_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in RAS array order (what :class:`PreprocessConfig.spacing` refers to).

    Parameters
    ----------
    affine : numpy.ndarray
        A 4x4 voxel-to-world affine.

    Returns
    -------
    tuple of float
        Spacing (mm) along the R, A, S array axes.
    """
    _, a = to_canonical(np.zeros((1, 1, 1)), affine)
    sx, sy, sz = (float(s) for s in voxel_spacing(a))
    return sx, sy, sz


def derive_spacing(affines: Iterable[np.ndarray]) -> tuple[float, float, float]:
    """Median canonical spacing over a training set (nnU-Net's default target).

    Parameters
    ----------
    affines : iterable of numpy.ndarray
        The 4x4 affines of the training images.

    Returns
    -------
    tuple of float
        The per-axis median spacing (mm), RAS array order.
    """
    spacings = np.array([canonical_spacing(a) for a in affines])
    if len(spacings) == 0:
        raise GeometryError("cannot derive a target spacing from zero cases")
    return tuple(float(s) for s in np.median(spacings, axis=0))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# crop and resample


def body_box(
    ct: np.ndarray, affine: np.ndarray, level: float, margin_mm: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(start, stop) of the body's bounding box plus a margin; the whole volume if no body.

    The largest component is found on a 2x-subsampled copy: the box only needs to be right to
    a voxel or two, and the margin covers that.

    Parameters
    ----------
    ct : numpy.ndarray
        The CT in HU.
    affine : numpy.ndarray
        Its 4x4 affine, for the spacing.
    level : float
        HU level of the body.
    margin_mm : float
        Margin added on every side (mm).

    Returns
    -------
    start, stop : tuple of int
        The box (voxels, stop exclusive), clipped to the volume.
    """
    step = 2 if min(ct.shape) >= 32 else 1
    small = np.asarray(ct[::step, ::step, ::step]) > level
    body = largest_component(small)
    if not body.any():
        return (0, 0, 0), tuple(ct.shape)
    idx = np.nonzero(body)
    spacing = voxel_spacing(affine)
    start, stop = [], []
    for ax in range(3):
        margin = int(np.ceil(margin_mm / spacing[ax])) + step
        start.append(max(0, int(idx[ax].min()) * step - margin))
        stop.append(min(ct.shape[ax], (int(idx[ax].max()) + 1) * step + margin))
    return tuple(start), tuple(stop)


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float] | np.ndarray, target: Sequence[float]
) -> tuple[int, int, int]:
    """Grid shape after resampling ``shape`` from ``spacing`` to ``target`` (at least 1 per axis).

    Parameters
    ----------
    shape : sequence of int
        The current shape.
    spacing : sequence of float or numpy.ndarray
        The current spacing (mm).
    target : sequence of float
        The target spacing (mm).

    Returns
    -------
    tuple of int
        The resampled shape.
    """
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a grid resampled from ``old_shape`` to ``new_shape`` over the same extent.

    Matches ``interpolate(..., align_corners=False)``: new voxel k samples old index
    (k + 0.5) * s - 0.5 with s = old / new.

    Parameters
    ----------
    affine : numpy.ndarray
        The 4x4 affine of the original grid.
    old_shape : sequence of int
        The original shape.
    new_shape : sequence of int
        The resampled shape.

    Returns
    -------
    numpy.ndarray
        The resampled grid's 4x4 affine.
    """
    s = np.asarray(old_shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    t = np.eye(4)
    t[:3, :3] = np.diag(s)
    t[:3, 3] = (s - 1.0) / 2.0
    return affine @ t


def resize(array: np.ndarray | torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a 3D array (or C x 3D) with torch; ``mode`` 'linear' or 'nearest'.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        A 3D array, or channels x 3D.
    shape : sequence of int
        The target spatial shape.
    mode : str
        'linear' (trilinear, as float32) or 'nearest' (nearest-exact, dtype kept).

    Returns
    -------
    torch.Tensor
        The resized array, with ``array``'s number of dimensions.
    """
    t = torch.as_tensor(array)
    squeeze = t.ndim == 3
    t = t[None, None] if squeeze else t[None]
    if tuple(t.shape[2:]) != tuple(shape):
        if mode == "linear":
            t = F.interpolate(t.float(), size=tuple(shape), mode="trilinear", align_corners=False)
        elif mode == "nearest":
            t = F.interpolate(t, size=tuple(shape), mode="nearest-exact")
        else:
            raise ValueError(mode)
    return t[0, 0] if squeeze else t[0]


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of every output voxel of ``resize(uint8 array, mode="nearest")`` along one axis.

    Asked from torch itself (a float32 arange resized along one axis; every axis of the 3D kernel
    takes its indices from its own two sizes), so a gather with these indices is the resize bit for
    bit. The index arithmetic follows the input dtype (float64 inputs get other indices for some
    sizes), and float32 computes them as uint8 does: tests/test_predict_overhead.py checks both.

    Parameters
    ----------
    n_in : int
        Input length along the axis.
    n_out : int
        Output length.

    Returns
    -------
    numpy.ndarray
        Shape (n_out,): the source index of every output voxel.
    """
    if n_in == n_out:
        return np.arange(n_in, dtype=np.intp)
    src = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1, 1)  # exact below 2**24 voxels
    return F.interpolate(src, size=(n_out, 1, 1), mode="nearest-exact").flatten().numpy().astype(np.intp)


def gather_nearest(
    array: np.ndarray, start: Sequence[int], crop_shape: Sequence[int], shape: Sequence[int]
) -> np.ndarray:
    """``resize(array[crop], shape, "nearest")`` as one index gather (C order, ``array``'s dtype).

    Reads only the voxels the resize keeps, straight from ``array`` (a strided view is fine): no
    copy of the whole crop. tests/test_predict_overhead.py checks it against :func:`resize`.

    Parameters
    ----------
    array : numpy.ndarray
        The full 3D array.
    start : sequence of int
        Start of the crop (voxels).
    crop_shape : sequence of int
        Shape of the crop.
    shape : sequence of int
        The target shape.

    Returns
    -------
    numpy.ndarray
        The resized crop.
    """
    index = [a + nearest_indices(n, m) for a, n, m in zip(start, crop_shape, shape)]
    gathered: np.ndarray = np.asarray(array)[np.ix_(*index)]
    return gathered


#: dtypes torch converts to float32 exactly (so it cannot round differently from numpy)
_EXACT_TO_FLOAT32 = (np.bool_, np.int8, np.uint8, np.int16, np.float32)


def crop_float32(array: np.ndarray, slices: tuple[slice, ...]) -> torch.Tensor:
    """``array[slices]`` as a C-contiguous float32 tensor: ``np.ascontiguousarray(array[slices], dtype=np.float32)``.

    A canonical view (:func:`to_canonical`) is usually transposed and flipped, and numpy's strided
    gather into C order is slow; copying in the array's own memory order first and letting torch
    transpose while converting is 2-3x faster, with the same values.

    Parameters
    ----------
    array : numpy.ndarray
        A 3D array, any dtype and strides.
    slices : tuple of slice
        The crop.

    Returns
    -------
    torch.Tensor
        The crop as C-contiguous float32.
    """
    part = array[slices]
    if part.dtype.type not in _EXACT_TO_FLOAT32 or not part.dtype.isnative:  # torch takes native byte order only
        return torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
    own = np.array(part, order="K")  # same memory order as ``array``, positive strides
    return torch.empty(own.shape, dtype=torch.float32).copy_(torch.from_numpy(own))  # one pass: transpose + convert


def normalize_ct(ct: np.ndarray | torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Clip a CT to the HU ``window`` and scale it linearly to [-1, 1].

    Parameters
    ----------
    ct : numpy.ndarray or torch.Tensor
        The CT in HU.
    window : sequence of float
        (low, high) HU.

    Returns
    -------
    torch.Tensor
        The scaled CT as float32.
    """
    lo, hi = window
    t = torch.as_tensor(ct).float().clamp_(lo, hi)
    return t.sub_((lo + hi) / 2).div_((hi - lo) / 2)


# ----------------------------------------------------------------------------------------------
# the two directions


def crop_box(
    canon: np.ndarray, caffine: np.ndarray, config: PreprocessConfig
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(start, stop) of the region of a canonical CT that goes onto the network grid.

    Parameters
    ----------
    canon : numpy.ndarray
        The canonical (RAS+) CT in HU.
    caffine : numpy.ndarray
        Its 4x4 affine.
    config : PreprocessConfig
        Whether and how to crop.

    Returns
    -------
    start, stop : tuple of int
        The box (voxels, stop exclusive); the whole volume when cropping is off.
    """
    if config.crop:
        return body_box(canon, caffine, config.crop_level, config.crop_margin_mm)
    return (0, 0, 0), tuple(canon.shape)


def grid_shape(ct: Volume, config: PreprocessConfig) -> tuple[int, int, int]:
    """Shape of the network grid :func:`prepare_case` makes of ``ct`` (crop, then resample),
    without resampling: what sizes training patches, cheap enough for a study's cost estimate.

    Parameters
    ----------
    ct : Volume
        The CT.
    config : PreprocessConfig
        The preprocessing settings.

    Returns
    -------
    tuple of int
        The network grid's shape (RAS array order).
    """
    canon, caffine = to_canonical(np.asarray(ct.array), ct.affine)
    start, stop = crop_box(canon, caffine, config)
    return resampled_shape([b - a for a, b in zip(start, stop)], voxel_spacing(caffine), config.spacing)


def prepare_case(
    ct: Volume,
    recipe: Recipe | str | None,
    config: PreprocessConfig,
    label: Volume | None = None,
    case_id: str = "case",
) -> PreparedCase:
    """Bring a CT (and its label) onto the network grid; see the module docstring for the steps.

    Parameters
    ----------
    ct : Volume
        The CT in HU.
    recipe : Recipe or str or None
        The GBM recipe or its spec; None for the default.
    config : PreprocessConfig
        Target spacing, window and crop.
    label : Volume or None
        The label map on the CT's grid, for training.
    case_id : str
        The id the prepared case carries.

    Returns
    -------
    PreparedCase
        The CT, GBM and label on the network grid, with the geometry to go back.
    """
    recipe = Recipe.parse(recipe)
    if label is not None:
        check_same_grid(label, ct, "label", "image", "a label must lie on its CT's voxel grid")
    check_ct(ct, recipe)
    n_in = float(np.prod(ct.shape))
    n_grid = n_in * float(np.prod(ct.spacing) / np.prod(config.spacing))
    check_memory(
        n_in * 6 + n_grid * 14,
        f"preprocessing this {ct.shape} volume to {config.spacing} mm",
        ct.path,
        "choose a coarser target spacing (--spacing)",
    )
    canon, caffine = to_canonical(np.asarray(ct.array), ct.affine)
    gbm_full = recipe(canon, caffine)
    start, stop = crop_box(canon, caffine, config)
    sl = tuple(slice(a, b) for a, b in zip(start, stop))
    crop_affine = caffine.copy()
    crop_affine[:3, 3] = caffine[:3, :3] @ np.asarray(start, dtype=np.float64) + caffine[:3, 3]
    crop_shape = tuple(b - a for a, b in zip(start, stop))
    grid_shape = resampled_shape(crop_shape, voxel_spacing(caffine), config.spacing)
    geometry = Geometry(
        original_shape=ct.shape,
        original_affine=ct.affine.copy(),
        canonical_shape=tuple(canon.shape),
        canonical_affine=caffine,
        crop_start=tuple(start),
        crop_stop=tuple(stop),
        grid_shape=grid_shape,
        grid_affine=resample_affine(crop_affine, crop_shape, grid_shape),
    )
    ct_grid = resize(normalize_ct(crop_float32(canon, sl), config.window), grid_shape, "linear")
    gbm_grid = gather_nearest(gbm_full, start, crop_shape, grid_shape).astype(np.uint8)
    lab_grid = None
    if label is not None:
        lcanon, _ = to_canonical(np.asarray(label.array), label.affine)
        lab_grid = gather_nearest(lcanon, start, crop_shape, grid_shape).astype(np.uint8)
    return PreparedCase(case_id, ct_grid.numpy().astype(np.float32, copy=False), gbm_grid, geometry, lab_grid)


def _linear_axis(x: torch.Tensor, axis: int, n: int, start: int = 0, length: int | None = None) -> torch.Tensor:
    """Resample one axis of ``x`` linearly to ``n`` voxels (``interpolate``, align_corners=False).

    Torch's CPU trilinear kernel nests three 1D linear interpolations (last axis innermost) from
    the same code, so applying this to the last, middle, then first spatial axis gives
    bit-identical results (tests/test_preprocess.py checks it). (Bilinear with an unchanged
    axis is *not* bit-identical: its CPU kernel differs.) ``x`` may hold only rows
    [start, start + x.shape[axis]) of an axis of ``length``: the rest count as zeros, which is
    exact for every output voxel whose two source rows lie inside.
    """
    length = x.shape[axis] if length is None else length
    xt = x.movedim(axis, -1)
    if start or xt.shape[-1] != length:
        full = x.new_zeros((*xt.shape[:-1], length))
        full[..., start : start + xt.shape[-1]] = xt
        xt = full
    if length == n:
        return xt.movedim(-1, axis)  # trilinear leaves an axis of unchanged size exactly as it is
    y = F.interpolate(xt.reshape(1, -1, length), size=n, mode="linear", align_corners=False)
    return y.view(*xt.shape[:-1], n).movedim(-1, axis)


def _sources(start: int, stop: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Input voxels [lo, hi) that output voxels [start, stop) interpolate from (a superset, like :func:`_touching`)."""
    if n_in == n_out:
        return start, stop
    real = np.maximum((np.array([start, stop - 1]) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    return max(0, int(np.floor(real[0] - 0.01))), min(n_in, int(np.floor(real[1] + 0.01)) + 2)


def _touching(lo: int, hi: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Output voxels [start, stop) whose linear-interpolation support may meet input voxels [lo, hi].

    Output voxel k samples input coordinate (k + 0.5) * n_in / n_out - 0.5 from its two neighbours
    (``interpolate``, align_corners=False); a margin of 0.01 voxel covers float32 rounding, so the
    range is a superset: output voxels outside it only see inputs outside [lo, hi].
    """
    if n_in == n_out:
        return lo, hi + 1
    real = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    eps = 0.01
    hit = np.nonzero((np.floor(real + eps) + 1 >= lo) & (np.floor(real - eps) <= hi))[0]
    return (int(hit[0]), int(hit[-1]) + 1) if len(hit) else (0, 0)


def _first_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over the first axis and the first index reaching it (uint8), like ``max(dim=0)``.

    ``amax`` plus one comparison per class, in uint8 arithmetic: several times faster on the CPU
    than ``argmax``/``max`` over a leading axis, which torch does not vectorise.
    """
    best = x.amax(0)
    arg = torch.zeros(x.shape[1:], dtype=torch.uint8)
    for c in range(x.shape[0] - 1, -1, -1):  # downwards, so the first class reaching the max wins
        hit = (x[c] == best).view(torch.uint8)
        arg += hit * (c - arg)  # arg = c where hit (exact in uint8 arithmetic, which wraps)
    return best, arg


#: Resample one axis at a time when the box holds less than this fraction of the crop: per voxel it
#: costs about twice one trilinear call (transposed copies), but skips everything outside the box.
_BY_AXIS_BELOW = 0.5


def restore_labels(probabilities: np.ndarray | torch.Tensor, geometry: Geometry, max_bytes: int = 2**28) -> np.ndarray:
    """Class probabilities (C, *grid_shape) -> uint8 label map on the original grid.

    Bit for bit what this gives: every class channel resampled linearly (``interpolate``,
    trilinear) to the cropped canonical grid, the first class with the highest probability per
    voxel, pasted into background, axes put back in the input's order. Two shortcuts make it
    cheap for a typical prediction: outside the box of network voxels where a structure beats
    background, grown by the interpolation support, every resampled probability vector is a
    non-negative combination of background-winning vectors (and rounding is monotone), so
    background wins there too and nothing is computed; inside a small box the channels are
    resampled one axis at a time (see :func:`_linear_axis`), a large one in one trilinear call.
    Channels go in groups of at most ``max_bytes`` of resampled values, with a running argmax.

    Parameters
    ----------
    probabilities : numpy.ndarray or torch.Tensor
        Shape (C, *grid_shape): class probabilities on the network grid, background first.
    geometry : Geometry
        The case's geometry from :func:`prepare_case`.
    max_bytes : int
        Memory budget for resampled values per class group (bytes).

    Returns
    -------
    numpy.ndarray
        uint8 label map with the original shape and voxel order (Fortran-ordered).
    """
    probs = torch.as_tensor(probabilities).float().cpu()  # the CPU kernels are the ones the equivalence is tested on
    if tuple(probs.shape[1:]) != tuple(geometry.grid_shape):
        raise GeometryError(f"prediction shape {tuple(probs.shape[1:])} is not the grid shape {geometry.grid_shape}")
    out = np.zeros(geometry.original_shape, dtype=np.uint8, order="F")  # NIfTI's order: written without a copy
    canon, _ = to_canonical(out, geometry.original_affine)  # a view of ``out`` with the axes in RAS order
    if tuple(canon.shape) != tuple(geometry.canonical_shape):
        raise GeometryError(f"canonical shape {canon.shape} of the input grid is not {geometry.canonical_shape}")
    crop_shape = tuple(b - a for a, b in zip(geometry.crop_start, geometry.crop_stop))
    if probs.shape[0] < 2:
        return out
    fg = probs[1:].amax(0) > probs[0]  # a structure wins (argmax != 0; amax is the fast reduction)
    if not bool(fg.any()):
        return out
    boxes = []
    for ax in range(3):
        idx = torch.nonzero(fg.any(dim=tuple(d for d in range(3) if d != ax))).flatten()
        boxes.append(_touching(int(idx[0]), int(idx[-1]), probs.shape[1 + ax], crop_shape[ax]))
    if any(a == b for a, b in boxes):  # structures fall between output voxels (strong downsampling)
        return out
    box_voxels = int(np.prod([b - a for a, b in boxes]))
    by_axis = box_voxels < _BY_AXIS_BELOW * np.prod(crop_shape)
    group = max(1, min(probs.shape[0], max_bytes // (4 * (box_voxels if by_axis else int(np.prod(crop_shape))))))
    best: torch.Tensor | None = None
    arg: torch.Tensor | None = None
    for c0 in range(0, probs.shape[0], group):
        x = probs[c0 : c0 + group]
        if by_axis:  # only the grid rows the box reads, one axis at a time, last axis first (torch's order)
            (d0, d1), (h0, h1), _ = [_sources(*boxes[ax], probs.shape[1 + ax], crop_shape[ax]) for ax in range(3)]
            x = _linear_axis(x[:, d0:d1, h0:h1], 3, crop_shape[2]).narrow(3, boxes[2][0], boxes[2][1] - boxes[2][0])
            x = _linear_axis(x, 2, crop_shape[1], h0, probs.shape[2]).narrow(2, boxes[1][0], boxes[1][1] - boxes[1][0])
            x = _linear_axis(x, 1, crop_shape[0], d0, probs.shape[1]).narrow(1, boxes[0][0], boxes[0][1] - boxes[0][0])
            gbest, garg = _first_max(x.movedim(1, -1))  # the memory order the last pass left
            gbest, garg = gbest.movedim(-1, 0), garg.movedim(-1, 0)
        else:
            x = resize(x, crop_shape, "linear")
            gbest, garg = _first_max(x[(slice(None), *(slice(a, b) for a, b in boxes))])
        garg += c0
        if best is None or arg is None:
            best, arg = gbest, garg
        else:
            better = gbest > best  # strictly: an earlier class keeps a tie
            best = torch.where(better, gbest, best)
            arg = torch.where(better, garg, arg)
    assert arg is not None  # at least one class group
    canon[tuple(slice(s + a, s + b) for s, (a, b) in zip(geometry.crop_start, boxes))] = arg.numpy()
    return out


def restore_volume(probabilities: np.ndarray | torch.Tensor, geometry: Geometry) -> Volume:
    """Like :func:`restore_labels`, wrapped with the original affine.

    Parameters
    ----------
    probabilities : numpy.ndarray or torch.Tensor
        Shape (C, *grid_shape): class probabilities on the network grid.
    geometry : Geometry
        The case's geometry from :func:`prepare_case`.

    Returns
    -------
    Volume
        The label map with the original affine.
    """
    return Volume(restore_labels(probabilities, geometry), geometry.original_affine.copy())

