"""Sanity checks on what users feed in, run before any heavy work.

Each check raises a :class:`~globalmask.errors.GlobalmaskError` subclass whose message names the
file and says what to do, rather than letting a bad scan become a silently wrong result.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import IntensityError, ResourceError

#: Air is about -1000 HU; a CT in Hounsfield units has plenty of voxels below this level.
HU_AIR_CHECK = -500.0

#: What a user who chooses the recipe (masks, train) can do about data that is not in HU; commands
#: whose recipe comes from elsewhere (predict: the checkpoint's) replace it with advice they can follow.
RECIPE_SUGGESTION = "use --recipe otsu (no HU calibration needed), or convert the data to Hounsfield units"


def available_memory_bytes() -> int:
    """Memory the process can still take (MemAvailable on Linux, else physical memory).

    Returns
    -------
    int
        Bytes (2**62 when it cannot be told).
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(n_bytes: float, what: str, path: str | Path | None = None, hint: str = "") -> None:
    """Refuse work whose estimated footprint exceeds the memory available now.

    Parameters
    ----------
    n_bytes : float
        The estimated footprint, bytes.
    what : str
        What needs the memory, in the message.
    path : str or Path or None
        The file named in the error.
    hint : str
        What the user can do about it, appended to the message.

    Raises
    ------
    ResourceError
        When ``n_bytes`` exceeds the available memory.
    """
    avail = available_memory_bytes()
    if n_bytes > avail:
        raise ResourceError(
            f"{what} needs about {n_bytes / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB of memory is available"
            + (f"; {hint}" if hint else ""),
            path,
        )


def check_finite(array: np.ndarray, path: str | Path | None = None) -> None:
    """NaN or infinite voxels poison normalisation and thresholds: refuse them.

    Parameters
    ----------
    array : numpy.ndarray
        The voxels (integer arrays are always finite).
    path : str or Path or None
        The file named in the error.

    Raises
    ------
    IntensityError
        When any voxel is NaN or infinite.
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        n = int(bad.sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise IntensityError(
            f"{n} voxel(s) are NaN or infinite (first at index {first}); fix or mask them before segmentation", path
        )


def check_hounsfield(array: np.ndarray, path: str | Path | None = None, recipe: str = "") -> None:
    """Refuse data that clearly is not CT in Hounsfield units when HU levels will be applied.

    A real CT field of view contains air (about -1000 HU): if fewer than 0.1 % of the voxels are
    below -500 HU, or the whole range spans less than 50 units (e.g. data scaled to [0, 1]), an HU
    threshold or window is meaningless.

    Parameters
    ----------
    array : numpy.ndarray
        The voxels.
    path : str or Path or None
        The file named in the error.
    recipe : str
        The recipe's spec, named in the message.

    Raises
    ------
    IntensityError
        When the values do not look like HU.
    """
    a = np.asarray(array)
    sample = a[::2, ::2, ::2] if a.size > 4_000_000 else a
    lo, hi = float(sample.min()), float(sample.max())
    suggestion = RECIPE_SUGGESTION
    if hi - lo < 50:
        raise IntensityError(
            f"values span only [{lo:.4g}, {hi:.4g}]: this looks like normalised or non-CT data, not Hounsfield units, "
            f"so the HU levels of {recipe or 'the recipe'} are meaningless; {suggestion}",
            path,
        )
    air_fraction = float((sample < HU_AIR_CHECK).mean())
    if air_fraction < 1e-3:
        kind = "an MR-like range" if lo >= 0 else "no air"
        raise IntensityError(
            f"values span [{lo:.4g}, {hi:.4g}] with {air_fraction:.2%} of voxels below {HU_AIR_CHECK:g} HU ({kind}): "
            "this does not look like a CT in Hounsfield units (air is about -1000 HU; unsigned CT may need its "
            "rescale "
            f"intercept applied), so the HU levels of {recipe or 'the recipe'} are meaningless; {suggestion}",
            path,
        )
