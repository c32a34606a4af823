"""One phantom case: argument checks, the label maps per kind, and :func:`make_phantom_case`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GlobalmaskError
from ..io import Volume
from .headneck import HEADNECK_LABELS, build_headneck
from .scene import Scene, scan
from .shapes import Draw
from .thorax import THORAX_CHAMBER_LABELS, THORAX_LABELS, acquisition_stream, build_thorax, draw_acquisition

KINDS = ("headneck", "thorax", "thorax-varied")
_KIND_CODE = {"headneck": 1, "thorax": 2}
#: Kinds that are another kind's subjects under other acquisitions: same geometry, labels and stream.
_BASE_KIND = {"thorax-varied": "thorax"}
#: Bumped whenever the generator changes what a given (kind, index, seed, shape, chambers) produces.
PHANTOM_VERSION = 1
MIN_SIDE = 16


def phantom_labels(kind: str, chambers: bool = False) -> dict[str, int]:
    """The label map {name: value} (background included) of a phantom kind.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    chambers : bool, optional
        Label the heart's four chambers (thorax kinds) instead of the whole heart.

    Returns
    -------
    dict of str to int
        Label name -> value, ``background: 0`` included.
    """
    kind = check_kind(kind, chambers)
    if kind == "headneck":
        return dict(HEADNECK_LABELS)
    return dict(THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS)


def phantom_case_id(kind: str, index: int) -> str:
    """'phantom_headneck_000' style case id.

    Parameters
    ----------
    kind : str
        The phantom kind (hyphens become underscores).
    index : int
        The case's index in its cohort.

    Returns
    -------
    str
        The case id.
    """
    return f"phantom_{kind.replace('-', '_')}_{int(index):03d}"


def make_phantom_case(
    kind: str,
    index: int,
    seed: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    chambers: bool = False,
) -> tuple[Volume, Volume]:
    """Return (ct, label) for case `index` of the cohort `seed`.

    Deterministic: depends only on (kind, index, seed, shape, chambers). ``ct`` is int16 HU and
    ``label`` uint8 with the values of :func:`phantom_labels`; both share one RAS+ affine.
    ``chambers`` only changes how the heart is labelled (thorax), never the image.
    ``thorax-varied`` is the ``thorax`` case of the same arguments (identical label and affine)
    scanned with its own drawn :class:`~globalmask.phantom.thorax.Acquisition` (contrast phase,
    tube voltage, dose, kernel) instead of the linear HU "scanner".

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    index : int
        The case's index in the cohort (>= 0).
    seed : int
        The cohort's seed (>= 0).
    shape : tuple of int, optional
        Grid shape, each side :data:`MIN_SIDE`..512 voxels (the field of view in mm does not depend on it).
    chambers : bool, optional
        Label the heart's four chambers (thorax kinds).

    Returns
    -------
    ct : Volume
        The CT (int16 HU).
    label : Volume
        The label map (uint8) on the same grid.
    """
    kind = check_kind(kind, chambers)
    shape = check_shape(shape)
    index, seed = check_int(index, "index"), check_int(seed, "seed")
    base = _BASE_KIND.get(kind, kind)
    rng = np.random.default_rng([seed, index, _KIND_CODE[base]])
    draw = Draw(rng)
    scene = Scene(base, shape, draw)
    scanner = dict(  # drawn for every kind: the subject's stream must not depend on the kind
        scale=draw.u(0.85, 1.15), offset=draw.u(-60.0, 60.0), noise=draw.u(10.0, 40.0), blur=draw.u(0.0, 1.0)
    )
    stream = acquisition_stream(seed, index) if kind == "thorax-varied" else None
    acquisition = draw_acquisition(stream) if stream is not None else None
    scene.make_fields(draw)
    if base == "headneck":
        build_headneck(scene, draw)
    else:
        build_thorax(scene, draw, chambers, acquisition)
    if acquisition is not None and stream is not None:
        ct = acquisition.scan(scene.hu, scene.affine, stream)
    else:
        ct = scan(scene.hu, scanner, rng)
    return Volume(ct, scene.affine.copy()), Volume(scene.lab, scene.affine.copy())


def check_kind(kind: str, chambers: bool) -> str:
    """``kind`` if it is a phantom kind that allows ``chambers``, else a clear error.

    Parameters
    ----------
    kind : str
        The phantom kind asked for.
    chambers : bool
        Whether heart chambers are asked for (thorax kinds only).

    Returns
    -------
    str
        ``kind``.
    """
    if kind not in KINDS:
        raise GlobalmaskError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    if chambers and kind == "headneck":
        raise GlobalmaskError("chambers=True only applies to the thorax phantoms (thorax, thorax-varied)")
    return kind


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as three ints in MIN_SIDE..512, else a clear error.

    Parameters
    ----------
    shape : sequence of int
        The grid shape asked for.

    Returns
    -------
    tuple of int
        The shape as three ints.
    """
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise GlobalmaskError(f"phantom shape must be three integers, got {shape!r}") from None
    if len(out) != 3 or any(s != t for s, t in zip(out, shape)):
        raise GlobalmaskError(f"phantom shape must be three integers, got {shape!r}")
    if min(out) < MIN_SIDE or max(out) > 512:
        raise GlobalmaskError(f"phantom shape {out} is out of range: each side must be {MIN_SIDE}..512 voxels")
    return out


def check_int(value: int, name: str) -> int:
    """``value`` as a non-negative int (bools and fractions refused), else a clear error.

    Parameters
    ----------
    value : int
        The number to check.
    name : str
        Its name in the error message.

    Returns
    -------
    int
        ``value`` as an int.
    """
    if isinstance(value, bool) or int(value) != value:
        raise GlobalmaskError(f"{name} must be an integer, got {value!r}")
    if int(value) < 0:
        raise GlobalmaskError(f"{name} must be >= 0, got {value}")
    return int(value)
