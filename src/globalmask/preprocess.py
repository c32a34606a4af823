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
from .io import Volume, voxel_spacing
from .masks import Recipe, check_ct, largest_component
from .validate import check_keys

DEFAULT_WINDOW = (-1000.0, 1000.0)


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings stored in every checkpoint; ``spacing`` is in RAS array order (mm)."""

    spacing: tuple[float, float, float]
    window: tuple[float, float] = DEFAULT_WINDOW
    crop: bool = True
    crop_level: float = -500.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
            object.__setattr__(self, "window", tuple(float(w) for w in self.window))
        except (TypeError, ValueError):
            raise GeometryError(f"target spacing and CT window must be numbers, got {self.spacing!r} and {self.window!r}") from None
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise GeometryError(f"target spacing must be three finite positive numbers (mm), got {self.spacing}")
        if len(self.window) != 2 or not all(math.isfinite(w) for w in self.window) or self.window[1] <= self.window[0]:
            raise GeometryError(f"CT window must be two finite numbers (low, high) with low < high, got {self.window}")
        if not (math.isfinite(self.crop_level) and math.isfinite(self.crop_margin_mm) and self.crop_margin_mm >= 0):
            raise GeometryError(f"crop level and margin must be finite (margin >= 0), got {self.crop_level}, {self.crop_margin_mm}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        check_keys(d, [f.name for f in fields(cls)], "preprocess settings")
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kwargs)


@dataclass
class Geometry:
    """Everything needed to map a network-grid array back onto the original grid."""

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
        return tuple(slice(a, b) for a, b in zip(self.crop_start, self.crop_stop))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        arr = {"original_affine", "canonical_affine", "grid_affine"}
        kwargs: dict[str, Any] = {k: (np.asarray(v, dtype=np.float64) if k in arr else tuple(int(x) for x in v)) for k, v in d.items()}
        return cls(**kwargs)


@dataclass
class PreparedCase:
    """A case on the network grid: normalised CT, GBM, optional label, and how to go back."""

    id: str
    ct: np.ndarray  # float32, [-1, 1]
    gbm: np.ndarray  # uint8 0/1
    geometry: Geometry
    label: np.ndarray | None = None  # uint8
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct.shape)


# ----------------------------------------------------------------------------------------------
# orientation


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip array axes to RAS+ (closest canonical); returns (array view, new affine)."""
    ornt = nib.orientations.io_orientation(affine)
    canon = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return canon, new_affine


def from_canonical(array: np.ndarray, original_affine: np.ndarray, order: Literal["C", "F"] = "C") -> np.ndarray:
    """Inverse of :func:`to_canonical` for an array on the canonical grid.

    ``order="F"`` gives the Fortran-ordered array NIfTI stores, so writing it needs no second
    transposition (one copy instead of two for a prediction).
    """
    ornt = nib.orientations.io_orientation(original_affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return np.require(nib.orientations.apply_orientation(array, back), requirements=order)


def canonical_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in RAS array order (what :class:`PreprocessConfig.spacing` refers to)."""
    _, a = to_canonical(np.zeros((1, 1, 1)), affine)
    sx, sy, sz = (float(s) for s in voxel_spacing(a))
    return sx, sy, sz


def derive_spacing(affines: Iterable[np.ndarray]) -> tuple[float, float, float]:
    """Median canonical spacing over a training set (nnU-Net's default target)."""
    spacings = np.array([canonical_spacing(a) for a in affines])
    if len(spacings) == 0:
        raise GeometryError("cannot derive a target spacing from zero cases")
    return tuple(float(s) for s in np.median(spacings, axis=0))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# crop and resample


def body_box(ct: np.ndarray, affine: np.ndarray, level: float, margin_mm: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(start, stop) of the body's bounding box plus a margin; the whole volume if no body.

    The largest component is found on a 2x-subsampled copy: the box only needs to be right to
    a voxel or two, and the margin covers that.
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


def resampled_shape(shape: Sequence[int], spacing: Sequence[float] | np.ndarray, target: Sequence[float]) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a grid resampled from ``old_shape`` to ``new_shape`` over the same extent.

    Matches ``interpolate(..., align_corners=False)``: new voxel k samples old index
    (k + 0.5) * s - 0.5 with s = old / new.
    """
    s = np.asarray(old_shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    t = np.eye(4)
    t[:3, :3] = np.diag(s)
    t[:3, 3] = (s - 1.0) / 2.0
    return affine @ t


def resize(array: np.ndarray | torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a 3D array (or C x 3D) with torch; ``mode`` 'linear' or 'nearest'."""
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


def normalize_ct(ct: np.ndarray | torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    lo, hi = window
    t = torch.as_tensor(ct).float().clamp_(lo, hi)
    return t.sub_((lo + hi) / 2).div_((hi - lo) / 2)


# ----------------------------------------------------------------------------------------------
# the two directions


def prepare_case(
    ct: Volume,
    recipe: Recipe | str | None,
    config: PreprocessConfig,
    label: Volume | None = None,
    case_id: str = "case",
) -> PreparedCase:
    """Bring a CT (and its label) onto the network grid; see the module docstring for the steps."""
    recipe = Recipe.parse(recipe)
    if label is not None and label.shape != ct.shape:
        raise GeometryError(f"label shape {label.shape} differs from image shape {ct.shape}", label.path)
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
    if config.crop:
        start, stop = body_box(canon, caffine, config.crop_level, config.crop_margin_mm)
    else:
        start, stop = (0, 0, 0), tuple(canon.shape)
    sl = tuple(slice(a, b) for a, b in zip(start, stop))
    crop_affine = caffine.copy()
    crop_affine[:3, 3] = caffine[:3, :3] @ np.asarray(start, dtype=np.float64) + caffine[:3, 3]
    crop_shape = tuple(b - a for a, b in zip(start, stop))
    spacing = np.linalg.norm(caffine[:3, :3], axis=0)
    grid_shape = resampled_shape(crop_shape, spacing, config.spacing)
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
    ct_grid = resize(normalize_ct(np.ascontiguousarray(canon[sl]), config.window), grid_shape, "linear")
    gbm_grid = resize(np.ascontiguousarray(gbm_full[sl]).astype(np.uint8), grid_shape, "nearest")
    lab_grid = None
    if label is not None:
        lcanon, _ = to_canonical(np.asarray(label.array), label.affine)
        lab_grid = resize(np.ascontiguousarray(lcanon[sl]).astype(np.uint8), grid_shape, "nearest").numpy()
    return PreparedCase(case_id, ct_grid.numpy().astype(np.float32, copy=False), gbm_grid.numpy(), geometry, lab_grid)


def restore_labels(probabilities: np.ndarray | torch.Tensor, geometry: Geometry) -> np.ndarray:
    """Class probabilities (C, *grid_shape) -> uint8 label map on the original grid.

    Each class channel is resampled linearly to the cropped canonical grid (one channel at a
    time, keeping a running argmax, so memory stays at two volumes), the crop is pasted into a
    background volume, and the axes are put back in the input's own order.
    """
    probs = torch.as_tensor(probabilities)
    if tuple(probs.shape[1:]) != tuple(geometry.grid_shape):
        raise GeometryError(f"prediction shape {tuple(probs.shape[1:])} is not the grid shape {geometry.grid_shape}")
    crop_shape = tuple(b - a for a, b in zip(geometry.crop_start, geometry.crop_stop))
    best = resize(probs[0], crop_shape, "linear")
    arg = torch.zeros(crop_shape, dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        p = resize(probs[c], crop_shape, "linear")
        better = p > best
        best = torch.where(better, p, best)
        arg[better] = c
    canon = np.zeros(geometry.canonical_shape, dtype=np.uint8)
    canon[geometry.crop_slices] = arg.numpy()
    return from_canonical(canon, geometry.original_affine, order="F")


def restore_volume(probabilities: np.ndarray | torch.Tensor, geometry: Geometry) -> Volume:
    """Like :func:`restore_labels`, wrapped with the original affine."""
    return Volume(restore_labels(probabilities, geometry), geometry.original_affine.copy())

