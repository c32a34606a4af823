"""The canvas of one phantom case: voxel grid, anatomy coordinates, painting, and the scanner.

A :class:`Scene` maps every voxel centre to anatomy coordinates (mm, RAS+) through a random pose,
size, shift and smooth displacement, so organs drawn as analytic shapes in anatomy space land on
any grid with the same millimetre size. Builders paint HU and labels into it with :meth:`Scene.put`;
:func:`scan` then turns the HU picture into a scanner image.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .shapes import FAR, Coords, Draw, rotation

#: A block of voxels: one slice per axis.
Block = tuple[slice, slice, slice]
#: The whole grid as a block.
FULL: Block = (slice(None),) * 3

# Per kind, at 64 voxels per axis: (in-plane spacing range, slice spacing range) in mm, the anatomy
# point placed at the centre of the field of view, the pose range (degrees about x, y, z).
GEOMETRY = {
    "headneck": dict(inplane=(3.9, 4.6), slice=(3.7, 4.5), centre=(0.0, 8.0, 30.0), angles=(8.0, 8.0, 8.0)),
    "thorax": dict(inplane=(5.6, 6.6), slice=(4.2, 5.0), centre=(0.0, 0.0, 5.0), angles=(4.0, 4.0, 6.0)),
}


class Scene:
    """Voxel grid of one case, its anatomy coordinates, and the HU / label arrays being painted.

    Parameters
    ----------
    kind : str
        ``headneck`` or ``thorax`` (a key of :data:`GEOMETRY`).
    shape : tuple of int
        Grid shape (voxels).
    draw : Draw
        The case's draws (spacing, field-of-view centre, pose).
    """

    def __init__(self, kind: str, shape: tuple[int, int, int], draw: Draw):
        """Draw the case geometry (spacing, field-of-view centre) and the subject's pose; blank canvas."""
        geo = GEOMETRY[kind]
        n = np.asarray(shape, dtype=np.float64)
        inplane = draw.u(*geo["inplane"])
        slice_ = draw.u(*geo["slice"])
        base = np.array([inplane, inplane, slice_])
        self.fov = base * 64.0  # mm, the same for every grid size
        self.spacing = self.fov / n
        self.fov_centre = np.array([draw.u(-30, 30), draw.u(-30, 30), draw.u(-200, 200)])
        self.scale = draw.u(0.9, 1.1)
        self.shift = np.array([draw.u(-10, 10) for _ in range(3)])
        self.rot = rotation(*(draw.u(-a, a) for a in geo["angles"]))
        self.disp_amp = draw.u(2.0, 4.0)
        self.centre = np.asarray(geo["centre"], dtype=np.float64)
        self.shape = shape
        self.origin = self.fov_centre - self.spacing * (n - 1) / 2.0
        self.affine = np.eye(4)
        self.affine[:3, :3] = np.diag(self.spacing)
        self.affine[:3, 3] = self.origin
        self.axes = [self.origin[i] + self.spacing[i] * np.arange(shape[i]) for i in range(3)]
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(shape, dtype=np.uint8)

    # -- random smooth fields (defined in world mm, so independent of the grid size)

    def _field(self, coef: np.ndarray) -> np.ndarray:
        """Smooth field on the grid: Gaussian bumps on a c^3 lattice over the field of view."""
        c = coef.shape[0]
        weights = []
        for i in range(3):
            ctrl = self.fov_centre[i] + np.linspace(-0.55, 0.55, c) * self.fov[i]
            width = 0.9 * (ctrl[1] - ctrl[0])
            w = np.exp(-0.5 * ((self.axes[i][:, None] - ctrl[None, :]) / width) ** 2)
            w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
            weights.append(w.astype(np.float32))
        f = np.tensordot(weights[0], coef, axes=(1, 0))  # (nx, cy, cz)
        f = np.tensordot(f, weights[1], axes=(1, 1))  # (nx, cz, ny)
        f = np.tensordot(f, weights[2], axes=(1, 1))  # (nx, ny, nz)
        return np.ascontiguousarray(f, dtype=np.float32)

    def make_fields(self, draw: Draw) -> None:
        """Draw the texture fields and the displacement, and set the anatomy coordinates ``q``.

        Parameters
        ----------
        draw : Draw
            The case's draws (its generator feeds the fields).
        """
        rng = draw.rng
        disp = [self._field(rng.standard_normal((6, 6, 6)).astype(np.float32)) * self.disp_amp for _ in range(3)]
        self.tex = self._field(rng.standard_normal((14, 14, 14)).astype(np.float32))  # tissue texture
        self.lobules = self._field(rng.standard_normal((12, 12, 12)).astype(np.float32))  # fat marbling
        self.bump = self._field(rng.standard_normal((10, 10, 10)).astype(np.float32))  # organ surface bumps
        # fine-scale fields: lung vessels (thorax), gland lobulation (head and neck)
        self.vessel_a = self._field(rng.standard_normal((22, 22, 22)).astype(np.float32))
        self.vessel_b = self._field(rng.standard_normal((22, 22, 22)).astype(np.float32))
        # anatomy coordinates q = R^T (p - T) / s + centre + displacement
        m = self.rot.T / self.scale
        t = self.fov_centre + self.shift
        d = [(self.axes[i] - t[i]).astype(np.float32) for i in range(3)]
        q = []
        for k in range(3):
            qk = (
                (np.float32(m[k, 0]) * d[0])[:, None, None]
                + (np.float32(m[k, 1]) * d[1])[None, :, None]
                + (np.float32(m[k, 2]) * d[2])[None, None, :]
            )
            qk += np.float32(self.centre[k])
            qk += disp[k]
            q.append(qk)
        self.q: Coords = tuple(q)
        self.pad_mm = float(max(np.abs(f).max() for f in disp)) * self.scale + 2.0

    # -- sub-blocks

    def box(self, lo_mm: ArrayLike, hi_mm: ArrayLike) -> Block | None:
        """Voxel slices covering the anatomy-space box [lo, hi] (None when it misses the grid).

        Parameters
        ----------
        lo_mm : array_like
            Lower corner in anatomy coordinates (mm).
        hi_mm : array_like
            Upper corner in anatomy coordinates (mm).

        Returns
        -------
        Block or None
            One slice per axis, grown by the displacement's reach.
        """
        lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        world = (self.scale * (corners - self.centre)) @ self.rot.T + self.fov_centre + self.shift
        idx = (world - self.origin) / self.spacing
        pad = self.pad_mm / self.spacing
        a = np.floor(idx.min(axis=0) - pad).astype(int)
        b = np.ceil(idx.max(axis=0) + pad).astype(int) + 1
        a = np.clip(a, 0, self.shape)
        b = np.clip(b, 0, self.shape)
        if np.any(b <= a):
            return None
        return tuple(slice(int(i), int(j)) for i, j in zip(a, b))  # type: ignore[return-value]

    def sub(self, sl: Block) -> Coords:
        """Anatomy coordinates of a block.

        Parameters
        ----------
        sl : Block
            One slice per axis.

        Returns
        -------
        Coords
            The x, y, z anatomy coordinates (mm) of the block's voxels.
        """
        return tuple(c[sl] for c in self.q)  # type: ignore[return-value]

    def far(self) -> np.ndarray:
        """A whole-grid signed distance that is far outside everywhere (to fill block by block).

        Returns
        -------
        numpy.ndarray
            :data:`~globalmask.phantom.shapes.FAR` on the whole grid (float32).
        """
        return np.full(self.shape, FAR, dtype=np.float32)

    def put(self, sl: Block | None, mask: np.ndarray, hu=None, lab: int | None = 0) -> None:
        """Paint ``hu`` (scalar or sub-block array) and label ``lab`` (None: keep labels) where ``mask``.

        Parameters
        ----------
        sl : Block or None
            The block painted (None: nothing is painted).
        mask : numpy.ndarray
            Boolean mask over the block.
        hu : float or numpy.ndarray, optional
            HU to paint (None: keep the HU).
        lab : int or None, optional
            Label value to paint (None: keep the labels).
        """
        if sl is None or not mask.any():
            return
        if hu is not None:
            target = self.hu[sl]
            target[mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        if lab is not None:
            self.lab[sl][mask] = lab


def scan(hu: np.ndarray, scanner: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """The simulated scanner: blur, linear HU transform, Gaussian noise, clip, int16.

    Parameters
    ----------
    hu : numpy.ndarray
        The painted HU picture.
    scanner : dict of str to float
        ``blur`` (voxels), ``scale``, ``offset`` (HU) and ``noise`` (HU standard deviation).
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    numpy.ndarray
        The scanned image (int16 HU, clipped to -1024..3071).
    """
    img = hu
    if scanner["blur"] > 0.05:
        img = ndimage.gaussian_filter(img, scanner["blur"], truncate=3.0)
    img = img * np.float32(scanner["scale"]) + np.float32(scanner["offset"])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(scanner["noise"])
    np.clip(img, -1024, 3071, out=img)
    return np.rint(img).astype(np.int16)
