"""Global binary masks (GBMs): recipes that binarise a whole CT into shape and position alone.

A GBM throws away intensity and keeps geometry, so a network fed with it must localise organs
from anatomy (body outline, air cavities, skeleton) rather than from grey values. Each recipe is a
pure function ``f(ct, affine, **params) -> bool array`` on an array in Hounsfield units, and a
:class:`Recipe` names one with its parameters so it can be stored in a checkpoint and applied
identically at training and inference time.

Notes
-----
The recipes, with their default parameters:

``threshold`` (level -300 HU)
    Every voxel above the level. -300 HU sits ~700 HU above air and ~200 HU below fat, so scanner
    offsets of a hundred HU barely move it; it keeps the body outline *and* the internal air
    cavities (airway, sinuses, lungs).
``otsu``
    Threshold chosen by Otsu's method on the volume's own histogram: no HU calibration needed, the
    recipe to use when the data are not in Hounsfield units.
``body`` (level -500 HU)
    Threshold, keep the largest connected component (drops couch, tubing, noise) and fill holes in
    3D and slice by slice along the superior-inferior axis: a solid body silhouette.
``percentile`` (q 90)
    Voxels above the q-th percentile of the scan's own body voxels (those above its Otsu
    threshold): the densest 10% of the body, i.e. the skeleton, teeth and contrast, chosen by
    rank rather than by HU. Any monotone change of the HU scale (a linear recalibration, a tube
    voltage that lifts bone and iodine) keeps the ranks and therefore the mask; the amount of air
    around the patient does not count, because air is below the Otsu threshold.
``bone`` (default, level 250 HU)
    High threshold: the skeleton (skull, mandible, vertebrae, ribs), plus contrast-filled vessels
    in contrast CT. It is the default because it localised best in the recipe ablation on real
    head-and-neck CT (``benchmarks/openkbp/``: GBM-only validation Dice 0.67 against 0.52-0.53 for
    the threshold and body recipes, centre-of-mass error 10.6 against 13.2-13.8 mm, no missed
    structure against 1-5): the skeleton is rigid and organs sit at fixed places relative to it,
    whereas the body outline varies with weight, pose and immobilisation masks. Bone is ~1000 HU
    above the level, so scanner offsets of a hundred HU do not move it either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from .checks import check_finite, check_hounsfield
from .errors import GlobalmaskError
from .io import Volume
from .validate import integer, real

RecipeFn = Callable[..., np.ndarray]

_RECIPES: dict[str, tuple[RecipeFn, dict[str, Any]]] = {}

#: Used when the user names no recipe. See the module docstring (and the study report) for why.
DEFAULT_RECIPE = "bone"


def register(name: str, **defaults: Any) -> Callable[[RecipeFn], RecipeFn]:
    """Register a recipe function under ``name`` with its default parameters.

    Parameters
    ----------
    name : str
        The recipe's name, as written in specs ('bone', 'threshold:-200').
    **defaults : Any
        The recipe's parameters with their default values (their types are kept when parsing).

    Returns
    -------
    callable
        A decorator that registers the function and returns it unchanged.
    """

    def wrap(fn: RecipeFn) -> RecipeFn:
        _RECIPES[name] = (fn, defaults)
        return fn

    return wrap


def available_recipes() -> dict[str, dict[str, Any]]:
    """Recipe names with their default parameters.

    Returns
    -------
    dict[str, dict[str, Any]]
        ``{name: {parameter: default}}`` of every registered recipe (copies).
    """
    return {name: dict(defaults) for name, (_, defaults) in _RECIPES.items()}


# ----------------------------------------------------------------------------------------------
# recipe functions (pure: array in, bool array out)


@register("threshold", level=-300.0)
def threshold_mask(ct: np.ndarray, affine: np.ndarray | None = None, level: float = -300.0) -> np.ndarray:
    """Voxels strictly above ``level`` HU.

    Parameters
    ----------
    ct : numpy.ndarray
        The CT in HU, any voxel order.
    affine : numpy.ndarray or None
        Unused; every recipe takes the voxel-to-world affine.
    level : float
        The threshold, HU.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the CT's shape.
    """
    return np.asarray(ct) > level


@register("otsu", bins=256)
def otsu_mask(ct: np.ndarray, affine: np.ndarray | None = None, bins: int = 256) -> np.ndarray:
    """Voxels above Otsu's threshold of the volume's histogram (calibration-free).

    Parameters
    ----------
    ct : numpy.ndarray
        The CT, any intensity scale and voxel order.
    affine : numpy.ndarray or None
        Unused; every recipe takes the voxel-to-world affine.
    bins : int
        Histogram bins for Otsu's method.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the CT's shape (empty for a constant volume).
    """
    ct = np.asarray(ct)
    if ct.min() == ct.max():
        return np.zeros(ct.shape, dtype=bool)
    sample = ct[::2, ::2, ::2] if ct.size > 8_000_000 else ct  # histogram of a subsample is enough
    return np.asarray(ct > threshold_otsu(sample, nbins=int(bins)))


@register("body", level=-500.0)
def body_mask(ct: np.ndarray, affine: np.ndarray | None = None, level: float = -500.0) -> np.ndarray:
    """Solid body silhouette: threshold, largest connected component, holes filled.

    Holes are filled in 3D and then slice by slice across the superior-inferior array axis (read
    from the affine; the last axis if none is given), which also closes the airway and lungs that
    open to the outside through the nose and mouth.

    Parameters
    ----------
    ct : numpy.ndarray
        The CT in HU.
    affine : numpy.ndarray or None
        The 4x4 voxel-to-world affine, for the superior-inferior axis; None means the last axis.
    level : float
        The body threshold, HU.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the CT's shape.
    """
    axis = superior_axis(affine)
    mask = largest_component(np.asarray(ct) > level)
    if not mask.any():
        return mask
    # Filling every slice also fills every hole closed in 3D (a 3D-enclosed cavity is enclosed
    # in each of its slices), so one slice-wise pass gives the same mask as 3D + slice-wise fill.
    return fill_holes_slicewise(mask, axis)


@register("percentile", q=90.0)
def percentile_mask(ct: np.ndarray, affine: np.ndarray | None = None, q: float = 90.0) -> np.ndarray:
    """Voxels strictly above the ``q``-th percentile of the voxels above the scan's Otsu threshold.

    A per-scan relative threshold: it needs no HU calibration and is unchanged by any monotone
    intensity change, because it ranks voxels instead of comparing them with a fixed level.

    Parameters
    ----------
    ct : numpy.ndarray
        The CT, any intensity scale and voxel order.
    affine : numpy.ndarray or None
        Unused; every recipe takes the voxel-to-world affine.
    q : float
        The percentile, in [0, 100).

    Returns
    -------
    numpy.ndarray
        Boolean mask with the CT's shape (empty for a constant volume).
    """
    ct = np.asarray(ct)
    if ct.min() == ct.max():
        return np.zeros(ct.shape, dtype=bool)
    sample = ct[::2, ::2, ::2] if ct.size > 8_000_000 else ct
    body = sample[sample > threshold_otsu(sample)]
    if body.size == 0:
        return np.zeros(ct.shape, dtype=bool)
    return np.asarray(ct > np.percentile(body, float(q)))


@register("bone", level=250.0)
def bone_mask(ct: np.ndarray, affine: np.ndarray | None = None, level: float = 250.0) -> np.ndarray:
    """Voxels above ``level`` HU: the skeleton (and contrast-filled vessels on CT angiograms).

    Parameters
    ----------
    ct : numpy.ndarray
        The CT in HU, any voxel order.
    affine : numpy.ndarray or None
        Unused; every recipe takes the voxel-to-world affine.
    level : float
        The threshold, HU.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the CT's shape.
    """
    return np.asarray(ct) > level


def superior_axis(affine: np.ndarray | None) -> int:
    """The array axis most aligned with the world superior-inferior (z) direction.

    Parameters
    ----------
    affine : numpy.ndarray or None
        The 4x4 voxel-to-world affine (RAS+); None for the last axis.

    Returns
    -------
    int
        The array axis, 0, 1 or 2.
    """
    if affine is None:
        return 2
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3])))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty).

    SimpleITK's multi-threaded connected components, with the same result as
    ``scipy.ndimage.label`` + arg-max of sizes (tested) and, with :func:`fill_holes_slicewise`,
    2-3.5x faster ``body`` masks on a 512 x 512 x 200 CT (``benchmarks/RESULTS.md``).

    Parameters
    ----------
    mask : numpy.ndarray
        A 3D boolean mask.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the largest component, same shape.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if not mask.any():
        return mask
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), True)
    return np.asarray(sitk.GetArrayFromImage(sitk.RelabelComponent(components, sortByObjectSize=True)) == 1)


def fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill the holes of every 2D slice across ``axis`` (4-connected background, like
    ``scipy.ndimage.binary_fill_holes`` per slice) in one labelling pass over the volume.

    Parameters
    ----------
    mask : numpy.ndarray
        A 3D boolean mask.
    axis : int
        The array axis across which slices are taken.

    Returns
    -------
    numpy.ndarray
        The filled boolean mask, same shape.
    """
    moved = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(~moved, structure=in_plane)
    edges = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    is_hole = np.ones(n + 1, dtype=bool)
    is_hole[0] = False
    is_hole[np.unique(edges)] = False
    return np.moveaxis(moved | is_hole[labels], 0, axis)


# ----------------------------------------------------------------------------------------------
# Recipe: a named, parameterised, serialisable recipe


# HU levels: anything a CT can hold (12-bit CT spans -1024..3071, extended scales to ~30000)
_PARAM_RULES = {"level": real(-10000.0, 100000.0), "bins": integer(2, 65536), "q": real(0.0, 100.0, hi_open=True)}
_ANY_NUMBER = real()


@dataclass(frozen=True)
class Recipe:
    """A recipe name with its parameters; ``Recipe.parse('threshold:-200')`` or ``'body:level=-400'``.

    Attributes
    ----------
    name : str
        A registered recipe's name.
    params : dict[str, Any]
        Its parameters; after construction every parameter, defaults included, checked and typed.
    """

    name: str = DEFAULT_RECIPE
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in _RECIPES:
            raise GlobalmaskError(f"unknown GBM recipe {self.name!r}; choose one of {', '.join(sorted(_RECIPES))}")
        _, defaults = _RECIPES[self.name]
        unknown = set(self.params) - set(defaults)
        if unknown:
            raise GlobalmaskError(
                f"recipe {self.name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(defaults)}"
            )
        # store the full parameter set so a checkpoint records exactly what was applied
        checked = {
            k: _PARAM_RULES.get(k, _ANY_NUMBER)(v, f"recipe {self.name!r} parameter {k!r}")
            for k, v in self.params.items()
        }
        object.__setattr__(self, "params", {**defaults, **{k: type(defaults[k])(v) for k, v in checked.items()}})

    @classmethod
    def parse(cls, spec: str | Recipe | dict[str, Any] | None) -> Recipe:
        """Parse ``name``, ``name:value`` (first parameter) or ``name:key=value,key=value``.

        Parameters
        ----------
        spec : str or Recipe or dict or None
            A text spec, a recipe (returned as is), a dict from :meth:`to_dict`, or None for the default.

        Returns
        -------
        Recipe
            The parsed recipe.
        """
        if spec is None:
            return cls()
        if isinstance(spec, Recipe):
            return spec
        if isinstance(spec, dict):
            return cls(spec["name"], dict(spec.get("params", {})))
        name, sep, rest = str(spec).strip().partition(":")
        if name not in _RECIPES:
            raise GlobalmaskError(f"unknown GBM recipe {name!r}; choose one of {', '.join(sorted(_RECIPES))}")
        params: dict[str, Any] = {}
        if sep and not rest.strip():  # 'threshold:' would silently mean the default level
            first = next(iter(_RECIPES[name][1]), None)
            example = f"{name}:{_fmt(_RECIPES[name][1][first])}" if first else name
            raise GlobalmaskError(
                f"recipe {spec!r} has an empty parameter after ':'; write {name} for the defaults or {example}"
            )
        if rest:
            first = next(iter(_RECIPES[name][1]), None)
            for item in rest.split(","):
                key, eq, value = item.partition("=")
                if not eq:
                    if first is None:
                        raise GlobalmaskError(f"recipe {name!r} takes no parameters")
                    key, value = first, key
                try:
                    params[key.strip()] = float(value)
                except ValueError as exc:
                    raise GlobalmaskError(f"recipe parameter {key.strip()!r} must be a number, got {value!r}") from exc
        return cls(name, params)

    @property
    def spec(self) -> str:
        """Round-trippable text form, e.g. 'threshold:level=-300'.

        Returns
        -------
        str
            ``name`` or ``name:key=value,...``, which :meth:`parse` reads back.
        """
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict (how checkpoints store it; :meth:`parse` reads it back).

        Returns
        -------
        dict[str, Any]
            ``{'name': ..., 'params': {...}}``.
        """
        return {"name": self.name, "params": dict(self.params)}

    def __call__(self, ct: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        fn, _ = _RECIPES[self.name]
        return np.asarray(fn(ct, affine, **self.params), dtype=bool)

    def uses_hounsfield(self) -> bool:
        """True for recipes whose parameters are HU levels (meaningless on non-HU data).

        Returns
        -------
        bool
            Whether the parameters include an HU ``level``.
        """
        return "level" in self.params


def _fmt(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def check_ct(ct: Volume, recipe: Recipe) -> None:
    """Refuse NaN/inf voxels, and non-HU data when the recipe applies HU levels.

    Parameters
    ----------
    ct : Volume
        The CT; its path is named in errors.
    recipe : Recipe
        The recipe about to be applied.
    """
    check_finite(ct.array, ct.path)
    if recipe.uses_hounsfield():
        check_hounsfield(ct.array, ct.path, f"recipe {recipe.spec!r}")


def make_gbm(ct: Volume, recipe: Recipe | str | None = None) -> Volume:
    """GBM of a CT volume: uint8 0/1 with exactly the CT's shape and affine.

    A public entry point, so a recipe spec string (or None: the default) is parsed here.

    Parameters
    ----------
    ct : Volume
        The CT, in HU for the recipes with HU levels.
    recipe : Recipe or str or None
        The recipe or its spec; None for :data:`DEFAULT_RECIPE`.

    Returns
    -------
    Volume
        The GBM (uint8 0/1) on the CT's grid, with no path.
    """
    recipe = Recipe.parse(recipe)
    check_ct(ct, recipe)
    return Volume(recipe(ct.array, ct.affine).astype(np.uint8), ct.affine.copy(), None)
