"""Shape primitives shared by the anatomies: seeded draws, rotations and signed distances.

Signed distances are in millimetres, negative inside, and only approximate away from the surface
(enough to threshold a shell or blend two shapes). They are evaluated in float32 on the anatomy
coordinates of a :class:`~globalmask.phantom.scene.Scene`; keep every expression's order of
operations, since the pinned phantom output depends on it bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Anatomy coordinates (x, y, z in mm), each a float32 array over a voxel block.
Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
#: A 3D point or radius triple.
Vec = Sequence[float] | np.ndarray

#: Signed distance "far outside", the fill value of shapes that miss the grid.
FAR = np.float32(1e4)


class Draw:
    """Seeded scalar draws; the order of calls fixes the stream, so keep it independent of shape.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's random stream.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        """Uniform in [lo, hi).

        Parameters
        ----------
        lo : float
            Lower bound.
        hi : float
            Upper bound (excluded).

        Returns
        -------
        float
            The draw.
        """
        return float(self.rng.uniform(lo, hi))

    def n(self, sd: float, lim: float = 2.0) -> float:
        """Normal(0, sd) clipped to +-lim*sd, so no draw produces impossible anatomy.

        Parameters
        ----------
        sd : float
            Standard deviation.
        lim : float, optional
            Clip at this many standard deviations.

        Returns
        -------
        float
            The draw.
        """
        return float(np.clip(self.rng.normal(0.0, sd), -lim * sd, lim * sd))

    def v(self, sd: float, lim: float = 2.0) -> np.ndarray:
        """Three clipped normal draws: a small 3D offset.

        Parameters
        ----------
        sd : float
            Standard deviation of each component.
        lim : float, optional
            Clip at this many standard deviations.

        Returns
        -------
        numpy.ndarray
            (3,) draws.
        """
        return np.clip(self.rng.normal(0.0, sd, 3), -lim * sd, lim * sd)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx for angles in degrees about x, y and z.

    Parameters
    ----------
    ax : float
        Angle about x (degrees).
    ay : float
        Angle about y (degrees).
    az : float
        Angle about z (degrees).

    Returns
    -------
    numpy.ndarray
        3x3 rotation matrix.
    """
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sd_ellipsoid(q: Coords, c: Vec, r: Vec, frame: np.ndarray | None = None) -> np.ndarray:
    """Ellipsoid with centre ``c`` and semi-axes ``r``; ``frame`` rows are its unit axes (else x, y, z).

    Parameters
    ----------
    q : Coords
        Anatomy coordinates (mm) of the voxels.
    c : Vec
        Centre (mm).
    r : Vec
        Semi-axes (mm).
    frame : numpy.ndarray, optional
        3x3 matrix whose rows are the ellipsoid's unit axes.

    Returns
    -------
    numpy.ndarray
        Approximate signed distance (mm, float32, negative inside).
    """
    x, y, z = (q[0] - np.float32(c[0]), q[1] - np.float32(c[1]), q[2] - np.float32(c[2]))
    if frame is not None:
        f = frame.astype(np.float32)
        x, y, z = (
            f[0, 0] * x + f[0, 1] * y + f[0, 2] * z,
            f[1, 0] * x + f[1, 1] * y + f[1, 2] * z,
            f[2, 0] * x + f[2, 1] * y + f[2, 2] * z,
        )
    rx, ry, rz = (np.float32(v) for v in r)
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2)
    k1 = np.sqrt((x / (rx * rx)) ** 2 + (y / (ry * ry)) ** 2 + (z / (rz * rz)) ** 2)
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / np.maximum(k1, 1e-6), -min(r)).astype(np.float32)


def sd_ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx, ry) -> np.ndarray:
    """Elliptic cylinder along z (radii may be arrays, e.g. narrowing toward an apex).

    Parameters
    ----------
    x : numpy.ndarray
        Anatomy x coordinates (mm).
    y : numpy.ndarray
        Anatomy y coordinates (mm).
    cx : float
        Centre x (mm).
    cy : float
        Centre y (mm).
    rx : float or numpy.ndarray
        Radius along x (mm).
    ry : float or numpy.ndarray
        Radius along y (mm).

    Returns
    -------
    numpy.ndarray
        Approximate signed distance (mm, float32, negative inside).
    """
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    rx, ry = np.asarray(rx, dtype=np.float32), np.asarray(ry, dtype=np.float32)
    k0 = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    k1 = np.sqrt((dx / (rx * rx)) ** 2 + (dy / (ry * ry)) ** 2)
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / np.maximum(k1, 1e-6), -np.minimum(rx, ry)).astype(np.float32)


def sd_tube(q: Coords, pts, radii, scale: Vec = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Chain of capsules along a poly-line with linearly varying radius; ``scale`` stretches axes.

    Parameters
    ----------
    q : Coords
        Anatomy coordinates (mm) of the voxels.
    pts : array_like
        (n, 3) vertices of the poly-line (mm).
    radii : float or array_like
        Radius (mm) at each vertex, or one for all.
    scale : Vec, optional
        Per-axis stretch (an elliptic cross-section).

    Returns
    -------
    numpy.ndarray
        Signed distance (mm, negative inside).
    """
    pts = np.asarray(pts, dtype=np.float64) / np.asarray(scale)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
    qx, qy, qz = (q[i] / np.float32(scale[i]) for i in range(3))
    best = None
    for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        d = b - a
        l2 = float(d @ d) or 1e-9
        ex, ey, ez = qx - np.float32(a[0]), qy - np.float32(a[1]), qz - np.float32(a[2])
        t = np.clip((ex * np.float32(d[0]) + ey * np.float32(d[1]) + ez * np.float32(d[2])) / np.float32(l2), 0, 1)
        ex -= t * np.float32(d[0])
        ey -= t * np.float32(d[1])
        ez -= t * np.float32(d[2])
        dist = np.sqrt(ex * ex + ey * ey + ez * ez) - (np.float32(ra) + t * np.float32(rb - ra))
        best = dist if best is None else np.minimum(best, dist)
    assert best is not None  # at least one segment
    return best


def polyline2(x: np.ndarray, y: np.ndarray, pts, attrs) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distance in the xy plane to a 2D poly-line, and per-vertex attributes at the nearest point.

    ``attrs`` is (n_vertices, k), interpolated at the nearest point of the line; lets a curved bone
    vary in height and thickness.

    Parameters
    ----------
    x : numpy.ndarray
        Anatomy x coordinates (mm).
    y : numpy.ndarray
        Anatomy y coordinates (mm).
    pts : array_like
        (n, 2) vertices (mm).
    attrs : array_like
        (n, k) attributes per vertex.

    Returns
    -------
    distance : numpy.ndarray
        Unsigned in-plane distance (mm) to the poly-line.
    values : list of numpy.ndarray
        The k attributes interpolated at the nearest point.
    """
    pts = np.asarray(pts, dtype=np.float64)
    attrs = np.asarray(attrs, dtype=np.float64)
    best = None
    out = None
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        d = b - a
        l2 = float(d @ d) or 1e-9
        ex, ey = x - np.float32(a[0]), y - np.float32(a[1])
        t = np.clip((ex * np.float32(d[0]) + ey * np.float32(d[1])) / np.float32(l2), 0, 1)
        dist = np.sqrt((ex - t * np.float32(d[0])) ** 2 + (ey - t * np.float32(d[1])) ** 2)
        vals = [np.float32(attrs[i, k]) + t * np.float32(attrs[i + 1, k] - attrs[i, k]) for k in range(attrs.shape[1])]
        if best is None:
            best, out = dist, vals
        else:
            closer = dist < best
            best = np.where(closer, dist, best)
            out = [np.where(closer, v, o) for v, o in zip(vals, out or [])]
    assert best is not None and out is not None  # at least one segment
    return best, out


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two signed distances (polynomial smooth minimum, blend width k mm).

    Parameters
    ----------
    a : numpy.ndarray
        First signed distance (mm).
    b : numpy.ndarray
        Second signed distance (mm).
    k : float
        Blend width (mm).

    Returns
    -------
    numpy.ndarray
        The blended signed distance (mm).
    """
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0, 1)
    return b + (a - b) * h - np.float32(k) * h * (1 - h)


def bounds(pts, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi) of points, grown by ``pad`` mm: the box of a tube around them.

    Parameters
    ----------
    pts : array_like
        (n, 3) points (mm).
    pad : float
        Margin (mm).

    Returns
    -------
    lo : numpy.ndarray
        (3,) lower corner (mm).
    hi : numpy.ndarray
        (3,) upper corner (mm).
    """
    pts = np.asarray(pts, dtype=np.float64)
    return pts.min(axis=0) - pad, pts.max(axis=0) + pad


def mirror(p: Vec, side: float) -> list[float]:
    """Point ``p`` on the given side (-1: patient left, +1: right) of the midline.

    Parameters
    ----------
    p : Vec
        A point (mm) given for the right side.
    side : float
        -1 or +1.

    Returns
    -------
    list of float
        The point with x multiplied by ``side``.
    """
    return [side * p[0], p[1], p[2]]
