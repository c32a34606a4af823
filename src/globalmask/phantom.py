"""Digital phantom cohorts: synthetic CTs with organ labels, the built-in default data.

Real patient scans cannot ship with globalmask, so this module builds a seeded cohort of CT-like
volumes with label maps, laid out as an nnU-Net v2 raw dataset. The phantoms are built to test the
claim behind global binary masks: **anatomy (shape and position) is consistent across subjects while
intensity is not reliable across scanners**.

Two kinds:

``headneck``
    skull with brain, cerebellum and ventricles, face with orbits, sinuses, nasal cavity, teeth and
    hard palate, neck with cervical spine, airway, larynx, hyoid and thyroid. Labels: brainstem,
    spinal_cord, parotid_left, parotid_right, mandible.
``thorax``
    chest wall with subcutaneous fat, ribs, costal cartilage, sternum, clavicles, scapulae,
    thoracic spine, lungs with vessels and bronchi, a contrast-filled heart (four chambers in a
    myocardium), aorta with arch branches, pulmonary artery, SVC, trachea, oesophagus, diaphragm,
    liver and stomach. Labels: heart, lung_left, lung_right, aorta, spinal_cord; with
    ``chambers=True`` the heart is split into heart_lv, heart_rv, heart_la and heart_ra.

How a case is made (everything seeded by ``np.random.default_rng([seed, index, kind_code])``, so
case *i* is the same whatever the cohort size):

1. **Geometry**: a positive-diagonal RAS+ affine with per-case voxel spacing (in-plane and slice
   drawn separately) and origin. Spacing scales with ``64 / shape`` so the field of view in
   millimetres, and therefore the anatomy, does not depend on the grid size.
2. **Subject**: every voxel centre is mapped to *anatomy coordinates* (millimetres, RAS+: +x toward
   the patient's right, +y anterior, +z superior) by a random pose (rotation about each axis), an
   overall size scale, a shift within the field of view and a smooth random displacement field of a
   few millimetres. Organs are analytic shapes (ellipsoids, tubes along poly-lines, elliptic
   cylinders, planes) evaluated at those coordinates, each with its own small size and position
   jitter, so spacing changes sampling, never anatomy.
3. **Scanner**: the HU image is blurred (Gaussian, sigma in [0, 1] voxel), put through a linear
   transform (scale 0.85-1.15, offset +-60 HU), given Gaussian noise (sigma 10-40 HU), clipped to
   [-1024, 3071] and stored as int16. Air stays below -700 HU, soft tissue and fat above -300 HU and
   bone above 250 HU for every case, so a -300 HU threshold GBM is always meaningful.

Labels are mutually exclusive (later structures take precedence) and stored as uint8.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import GlobalmaskError, OutputError
from .io import Volume, write_json, write_volume

HEADNECK_LABELS: dict[str, int] = {
    "background": 0,
    "brainstem": 1,
    "spinal_cord": 2,
    "parotid_left": 3,
    "parotid_right": 4,
    "mandible": 5,
}
THORAX_LABELS: dict[str, int] = {
    "background": 0,
    "heart": 1,
    "lung_left": 2,
    "lung_right": 3,
    "aorta": 4,
    "spinal_cord": 5,
}
THORAX_CHAMBER_LABELS: dict[str, int] = {
    "background": 0,
    "heart_lv": 1,
    "heart_rv": 2,
    "heart_la": 3,
    "heart_ra": 4,
    "lung_left": 5,
    "lung_right": 6,
    "aorta": 7,
    "spinal_cord": 8,
}

KINDS = ("headneck", "thorax")
_KIND_CODE = {"headneck": 1, "thorax": 2}
#: Bumped whenever the generator changes what a given (kind, index, seed, shape, chambers) produces.
PHANTOM_VERSION = 1
MIN_SIDE = 16

# Per kind, at 64 voxels per axis: (in-plane spacing range, slice spacing range) in mm, the anatomy
# point placed at the centre of the field of view, the pose range (degrees about x, y, z).
_GEOMETRY = {
    "headneck": dict(inplane=(3.9, 4.6), slice=(3.7, 4.5), centre=(0.0, 8.0, 30.0), angles=(8.0, 8.0, 8.0)),
    "thorax": dict(inplane=(5.6, 6.6), slice=(4.2, 5.0), centre=(0.0, 0.0, 5.0), angles=(4.0, 4.0, 6.0)),
}
_BIG = np.float32(1e4)


# ----------------------------------------------------------------------------------------------
# public API


def phantom_labels(kind: str, chambers: bool = False) -> dict[str, int]:
    """The label map {name: value} (background included) of a phantom kind."""
    kind = _check_kind(kind, chambers)
    if kind == "headneck":
        return dict(HEADNECK_LABELS)
    return dict(THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS)


def phantom_case_id(kind: str, index: int) -> str:
    """'phantom_headneck_000' style case id."""
    return f"phantom_{kind}_{int(index):03d}"


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
    """
    kind = _check_kind(kind, chambers)
    shape = _check_shape(shape)
    index, seed = _check_int(index, "index"), _check_int(seed, "seed")
    rng = np.random.default_rng([seed, index, _KIND_CODE[kind]])
    draw = _Draw(rng)
    scene = _Scene(kind, shape, draw)
    scanner = dict(
        scale=draw.u(0.85, 1.15), offset=draw.u(-60.0, 60.0), noise=draw.u(10.0, 40.0), blur=draw.u(0.0, 1.0)
    )
    scene.make_fields(draw)
    if kind == "headneck":
        _build_headneck(scene, draw)
    else:
        _build_thorax(scene, draw, chambers)
    ct = _scan(scene.hu, scanner, rng)
    return Volume(ct, scene.affine.copy()), Volume(scene.lab, scene.affine.copy())


def make_phantom_dataset(
    out: str | Path,
    kind: str = "headneck",
    cases: int = 20,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 64),
    chambers: bool = False,
    progress: bool = False,
) -> Path:
    """Write an nnU-Net v2 raw dataset folder and return its path.

    Writes ``out/dataset.json``, ``out/imagesTr/<case>_0000.nii.gz`` (int16 HU) and
    ``out/labelsTr/<case>.nii.gz`` (uint8). ``out`` must not exist or be empty; a folder already
    holding the dataset of the identical call is returned as it is (missing case files are
    regenerated), and an interrupted run of the identical call is resumed. Anything else in ``out``
    raises :class:`~globalmask.errors.OutputError`. No splits.json is written.
    """
    kind = _check_kind(kind, chambers)
    shape = _check_shape(shape)
    seed = _check_int(seed, "seed")
    cases = _check_int(cases, "cases")
    if cases < 1:
        raise GlobalmaskError(f"a phantom cohort needs at least one case, got cases={cases}")
    out = Path(out)
    block = {"kind": kind, "seed": seed, "cases": cases, "shape": list(shape), "chambers": bool(chambers)}
    meta = _dataset_meta(block)
    marker = out / ".phantom-incomplete.json"
    if out.exists():
        if not out.is_dir():
            raise OutputError("phantom output exists and is not a folder", out)
        existing = out / "dataset.json"
        if existing.exists():
            old = _read_json_or_none(existing)
            if old is None or old.get("phantom") != block or old.get("globalmask_phantom_version") != PHANTOM_VERSION:
                raise OutputError(
                    "folder already holds a different dataset (dataset.json is not from the identical phantom "
                    "call); choose an empty or new folder",
                    out,
                )
        elif marker.exists() and _read_json_or_none(marker) == {**block, "version": PHANTOM_VERSION}:
            pass  # an interrupted run of this very call: resume it
        elif any(out.iterdir()):
            raise OutputError("folder exists and is not empty; choose an empty or new folder for the phantom dataset", out)
    images, labels = out / "imagesTr", out / "labelsTr"
    todo = [
        i
        for i in range(cases)
        if not (images / f"{phantom_case_id(kind, i)}_0000.nii.gz").exists()
        or not (labels / f"{phantom_case_id(kind, i)}.nii.gz").exists()
    ]
    if not todo and (out / "dataset.json").exists():
        return out
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for folder in (images, labels):  # leftovers of a crashed atomic write
        for tmp in folder.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
    if not (out / "dataset.json").exists():
        write_json(marker, {**block, "version": PHANTOM_VERSION})
    iterator = todo
    if progress:
        from tqdm import tqdm

        iterator = tqdm(todo, desc=f"phantom {kind}", unit="case")
    for i in iterator:
        cid = phantom_case_id(kind, i)
        ct, lab = make_phantom_case(kind, i, seed, shape, chambers)
        write_volume(ct, images / f"{cid}_0000.nii.gz")
        write_volume(lab, labels / f"{cid}.nii.gz")
    write_json(out / "dataset.json", meta)
    marker.unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------------------------
# argument checks and dataset.json


def _check_kind(kind: str, chambers: bool) -> str:
    if kind not in KINDS:
        raise GlobalmaskError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    if chambers and kind != "thorax":
        raise GlobalmaskError("chambers=True only applies to the thorax phantom")
    return kind


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise GlobalmaskError(f"phantom shape must be three integers, got {shape!r}") from None
    if len(out) != 3 or any(s != t for s, t in zip(out, shape)):
        raise GlobalmaskError(f"phantom shape must be three integers, got {shape!r}")
    if min(out) < MIN_SIDE or max(out) > 512:
        raise GlobalmaskError(f"phantom shape {out} is out of range: each side must be {MIN_SIDE}..512 voxels")
    return out  # type: ignore[return-value]


def _check_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise GlobalmaskError(f"{name} must be an integer, got {value!r}")
    if int(value) < 0:
        raise GlobalmaskError(f"{name} must be >= 0, got {value}")
    return int(value)


def _dataset_meta(block: dict) -> dict:
    kind, seed, shape = block["kind"], block["seed"], block["shape"]
    chambers = block["chambers"]
    title = {"headneck": "HeadNeck", "thorax": "Thorax"}[kind] + ("Chambers" if chambers else "")
    return {
        "name": f"GlobalmaskPhantom{title}",
        "description": (
            f"globalmask digital phantom cohort (synthetic CT with organ labels): kind={kind}, seed={seed}, "
            f"shape={'x'.join(str(s) for s in shape)}, cases={block['cases']}, chambers={chambers}. "
            "Anatomy (shape and position) is consistent across subjects; intensities vary with the simulated scanner."
        ),
        "reference": "globalmask.phantom (generated, no patient data)",
        "licence": "synthetic data, no restrictions",
        "release": f"globalmask phantom v{PHANTOM_VERSION}",
        "channel_names": {"0": "CT"},
        "labels": phantom_labels(kind, chambers),
        "numTraining": block["cases"],
        "file_ending": ".nii.gz",
        "phantom": dict(block),
        "globalmask_phantom_version": PHANTOM_VERSION,
    }


def _read_json_or_none(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


# ----------------------------------------------------------------------------------------------
# random draws


class _Draw:
    """Seeded scalar draws; the order of calls fixes the stream, so keep it independent of shape."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def n(self, sd: float, lim: float = 2.0) -> float:
        return float(np.clip(self.rng.normal(0.0, sd), -lim * sd, lim * sd))

    def v(self, sd: float, lim: float = 2.0) -> np.ndarray:
        return np.clip(self.rng.normal(0.0, sd, 3), -lim * sd, lim * sd)


# ----------------------------------------------------------------------------------------------
# the scene: world grid, anatomy coordinates, painting


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Scene:
    """Voxel grid of one case, its anatomy coordinates, and the HU / label arrays being painted."""

    def __init__(self, kind: str, shape: tuple[int, int, int], draw: _Draw):
        geo = _GEOMETRY[kind]
        n = np.asarray(shape, dtype=np.float64)
        inplane = draw.u(*geo["inplane"])
        slice_ = draw.u(*geo["slice"])
        base = np.array([inplane, inplane, slice_])
        self.fov = base * 64.0  # mm, the same for every grid size
        self.spacing = self.fov / n
        self.fov_centre = np.array([draw.u(-30, 30), draw.u(-30, 30), draw.u(-200, 200)])
        self.scale = draw.u(0.9, 1.1)
        self.shift = np.array([draw.u(-10, 10) for _ in range(3)])
        self.rot = _rotation(*(draw.u(-a, a) for a in geo["angles"]))
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

    def make_fields(self, draw: _Draw) -> None:
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
        self.q = tuple(q)
        self.pad_mm = float(max(np.abs(f).max() for f in disp)) * self.scale + 2.0

    # -- sub-blocks

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the anatomy-space box [lo, hi] (None when it misses the grid)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
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

    def sub(self, sl):
        return tuple(c[sl] for c in self.q)

    def put(self, sl, mask: np.ndarray, hu=None, lab: int | None = 0) -> None:
        """Paint ``hu`` (scalar or sub-block array) and label ``lab`` (None: keep labels) where ``mask``."""
        if sl is None or not mask.any():
            return
        if hu is not None:
            target = self.hu[sl]
            target[mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        if lab is not None:
            self.lab[sl][mask] = lab


# ----------------------------------------------------------------------------------------------
# signed-distance-like primitives (mm, negative inside; approximate away from the surface)


def _sd_ellipsoid(q, c, r, frame: np.ndarray | None = None) -> np.ndarray:
    x, y, z = (q[0] - np.float32(c[0]), q[1] - np.float32(c[1]), q[2] - np.float32(c[2]))
    if frame is not None:  # rows: the ellipsoid's unit axes in anatomy coordinates
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


def _sd_ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    """Elliptic cylinder along z."""
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    rx, ry = np.asarray(rx, dtype=np.float32), np.asarray(ry, dtype=np.float32)
    k0 = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    k1 = np.sqrt((dx / (rx * rx)) ** 2 + (dy / (ry * ry)) ** 2)
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / np.maximum(k1, 1e-6), -np.minimum(rx, ry)).astype(np.float32)


def _sd_tube(q, pts, radii, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Chain of capsules along a poly-line with linearly varying radius; ``scale`` stretches axes."""
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
    return best


def _polyline2(x, y, pts, attrs: np.ndarray):
    """Distance in the xy plane to a 2D poly-line, and per-vertex attributes interpolated at the
    nearest point (attrs: (n_vertices, k))."""
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
            out = [np.where(closer, v, o) for v, o in zip(vals, out)]
    return best, out


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two signed distances (polynomial smooth minimum, blend width k mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0, 1)
    return b + (a - b) * h - np.float32(k) * h * (1 - h)


def _bounds(pts, pad: float):
    pts = np.asarray(pts, dtype=np.float64)
    return pts.min(axis=0) - pad, pts.max(axis=0) + pad


def _mirror(p, side: float):
    return [side * p[0], p[1], p[2]]


# ----------------------------------------------------------------------------------------------
# head and neck


def _build_headneck(S: _Scene, D: _Draw) -> None:
    L = HEADNECK_LABELS
    qx, qy, qz = S.q
    full = (slice(None),) * 3
    tex = S.tex

    # --- subject parameters (fixed draw order)
    fat_t = D.u(4.0, 11.0)
    soft = 45.0 + D.n(4.0)
    fat = -100.0 + D.n(8.0)
    brain_hu = 34.0 + D.n(3.0)
    csf = 8.0 + D.n(3.0)
    bone = 1100.0 + D.n(80.0)
    canc = 520.0 + D.n(40.0)
    parotid_hu = 18.0 + D.n(7.0)
    head_k = D.u(0.95, 1.05)
    brain_c = np.array([0.0, 8.0, 58.0]) + D.v(2.0)
    brain_r = np.array([66.0, 84.0, 62.0]) * head_k * np.array([D.u(0.96, 1.04) for _ in range(3)])
    cereb_c = np.array([0.0, -40.0, 20.0]) + D.v(2.0)
    cereb_r = np.array([50.0, 35.0, 25.0]) * head_k
    face_k = D.u(0.94, 1.06)
    neck_r = np.array([54.0, 60.0]) * D.u(0.92, 1.08)
    mand_k = D.u(0.93, 1.07)
    mand_o = D.v(2.0)
    par_o = [D.v(2.5), D.v(2.5)]
    par_k = [D.u(0.92, 1.08), D.u(0.92, 1.08)]
    cord_o = D.v(1.0)
    stem_o = D.v(1.5)
    stem_k = D.u(0.92, 1.08)
    lordosis = D.u(-6.0, 6.0)
    airway_k = D.u(0.8, 1.2)

    # --- body outline: smooth union of head, face, ear region, neck, nose, jaw envelope
    sd_cere = _sd_ellipsoid(S.q, brain_c, brain_r)
    sd_cereb = _sd_ellipsoid(S.q, cereb_c, cereb_r)
    body = _smin(sd_cere - 13.0, sd_cereb - 13.0, 10.0)
    body = _smin(body, _sd_ellipsoid(S.q, (0, 40, -5), np.array([62, 60, 45]) * face_k), 12.0)
    # ear / upper-neck region, as wide as the mandible plus the parotids and skin over them
    body = _smin(body, _sd_ellipsoid(S.q, (0, -8, -20), (44.0 * mand_k + 26.0 * face_k, 62.0 * face_k, 45.0 * face_k)), 12.0)
    neck = np.maximum(_sd_ellipse(qx, qy, 0.0, -4.0, *neck_r), qz + 10.0)
    body = _smin(body, neck, 15.0)
    body = _smin(body, _sd_ellipsoid(S.q, (0, 96 * face_k, 14), (11, 12, 20)), 6.0)
    body = _smin(body, _sd_ellipsoid(S.q, (0, 38, -52), np.array([46, 44, 22]) * face_k), 12.0)

    # mandible (computed early: its soft-tissue envelope shapes the chin)
    m_c = mand_o
    u = np.linspace(-1, 1, 13)
    chin_y, angle_y, half_w = 80.0 * mand_k, 22.0 * mand_k, 44.0 * mand_k
    body_pts = np.stack([half_w * u, angle_y + (chin_y - angle_y) * (1 - u**2)], axis=1) + m_c[:2]
    z_bot = -66.0 + 8.0 * u**2 + m_c[2]
    height = (26.0 - 4.0 * u**2) * mand_k
    half_t = 4.5 - 1.0 * u**2
    attrs = np.stack([z_bot, height, half_t, np.abs(u)], axis=1)
    mand_lo, mand_hi = (-60 * mand_k - 5 + m_c[0], -15 + m_c[1], -80 + m_c[2]), (60 * mand_k + 5 + m_c[0], 100 + m_c[1], 20 + m_c[2])
    msl = S.box(mand_lo, mand_hi)
    sd_mand_full = np.full(S.shape, _BIG, dtype=np.float32)
    teeth_mask = None
    if msl is not None:
        mq = S.sub(msl)
        dist, (zb, hh, ht, au) = _polyline2(mq[0], mq[1], body_pts, attrs)
        sd_body = np.maximum(dist - ht, np.maximum(zb - mq[2], mq[2] - (zb + hh)))
        sd_m = sd_body
        for side in (-1.0, 1.0):
            angle = np.array([side * half_w, angle_y, -58.0 * mand_k]) + m_c
            condyle = np.array([side * (half_w + 3.0), 1.0, 2.0]) + m_c
            axis = condyle - angle
            length = float(np.linalg.norm(axis))
            axis /= length
            ey = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
            ey /= np.linalg.norm(ey)
            ex = np.cross(axis, ey)
            d = [mq[i] - np.float32(angle[i]) for i in range(3)]
            ta = d[0] * np.float32(axis[0]) + d[1] * np.float32(axis[1]) + d[2] * np.float32(axis[2])
            tx = d[0] * np.float32(ex[0]) + d[1] * np.float32(ex[1]) + d[2] * np.float32(ex[2])
            ty = d[0] * np.float32(ey[0]) + d[1] * np.float32(ey[1]) + d[2] * np.float32(ey[2])
            width = 14.0 - 5.0 * np.clip(ta / np.float32(length), 0, 1)
            ramus = np.maximum(np.maximum(np.abs(tx) - 3.5, np.abs(ty) - width), np.maximum(-ta - 4.0, ta - length))
            head = _sd_ellipsoid(mq, condyle + np.array([0, -2.0, 0]), (9.0, 5.5, 6.0))
            # coronoid process: a thin blade rising anteriorly from the ramus
            coro = _sd_tube(mq, [angle + np.array([0, 14, 20]), condyle + np.array([0, 24, -4])], [4.0, 2.5], scale=(0.6, 1, 1))
            sd_m = np.minimum(sd_m, np.minimum(np.minimum(ramus, head), coro))
        sd_mand_full[msl] = sd_m
        # teeth: a row of crowns on the alveolar ridge (lower) and a mirrored upper row, not labelled
        arc = np.cumsum(np.r_[0, np.linalg.norm(np.diff(body_pts, axis=0), axis=1)])
        _, (s_arc,) = _polyline2(mq[0], mq[1], body_pts, arc[:, None])
        gaps = np.cos(2 * np.pi * s_arc / 8.5) > -0.35
        top = zb + hh
        lower = (dist < ht - 0.5) & (mq[2] > top) & (mq[2] < top + 9) & (au < 0.85) & gaps
        upper = (dist < ht) & (mq[2] >= top + 9) & (mq[2] < top + 18) & (au < 0.85) & gaps
        teeth_mask = lower | upper
    body = _smin(body, sd_mand_full - 9.0, 10.0)

    # --- soft tissue, skin, subcutaneous fat, fat planes in the neck
    inside = body < 0
    S.put(full, inside, soft + 6.0 * tex)
    head_w = np.clip((qz - 25.0) / 30.0, 0, 1)
    fat_local = fat_t * (1 - 0.65 * head_w)
    S.put(full, inside & (body > -2.5 - fat_local) & (body < -2.5), fat + 8.0 * tex)
    S.put(full, inside & (body < -2.5 - fat_local) & (qz < 0) & (S.lobules > 1.0), fat + 8.0 * tex)

    # --- skull, brain, cerebellum, ventricles
    # cranial base: posterior fossa lowest, middle fossa, anterior fossa over the orbits (whose roofs
    # bulge up on each side of the midline); the plate under the brain thins anteriorly
    ramp = np.clip((qy - 18.0) / 20.0, 0, 1)
    z_floor = np.interp(qy, [-200, -12, 18, 38, 200], [-2.0, -2.0, 18.0, 36.0, 36.0]).astype(np.float32)
    z_floor += 7.0 * ramp * np.exp(-(((np.abs(qx) - 30.0) / 14.0) ** 2))
    floor = z_floor - qz
    plate = 9.0 - 4.0 * ramp
    sd_brain_raw = np.minimum(sd_cere, sd_cereb)
    sd_brain = np.maximum(sd_brain_raw, floor)
    skull = np.maximum(sd_brain_raw - 7.0, floor - plate) < 0
    S.put(full, skull & inside, bone + 60.0 * tex)
    S.put(full, sd_brain < 0, brain_hu + 2.5 * tex)
    S.put(full, (sd_brain > -2.5) & (sd_brain < 0), 0.5 * (brain_hu + csf))  # subarachnoid CSF
    vsl = S.box((-30, -30, 40), (30, 50, 95))
    if vsl is not None:
        vq = S.sub(vsl)
        vent = np.minimum(
            _sd_ellipsoid(vq, brain_c + (-9, 4, 8), (5.5, 22, 9)), _sd_ellipsoid(vq, brain_c + (9, 4, 8), (5.5, 22, 9))
        )
        S.put(vsl, vent < 0, csf)

    # --- mastoids (bone with air cells)
    for side in (-1.0, 1.0):
        c = np.array([side * 50.0, -32.0, -4.0])
        sl = S.box(c - 16, c + 16)
        if sl is not None:
            sq = S.sub(sl)
            S.put(sl, _sd_ellipsoid(sq, c, (9, 11, 14)) < 0, 380.0 + 150.0 * S.tex[sl])

    # --- orbits, eyes, sinuses, nasal cavity, hard palate
    for side in (-1.0, 1.0):
        oc = np.array([side * 31.0, 62.0 * face_k, 28.0])
        sl = S.box(oc - 30, oc + 30)
        if sl is not None:
            sq = S.sub(sl)
            sd_o = _sd_ellipsoid(sq, oc, (17, 24, 16))
            S.put(sl, (sd_o > 0) & (sd_o < 2.5), 650.0)
            S.put(sl, sd_o < 0, fat + 15.0)
            S.put(sl, _sd_ellipsoid(sq, oc + (0, 11, 0), (11.5, 11.5, 11.5)) < 0, 12.0)
        mc = np.array([side * 24.0, 50.0 * face_k, 5.0])
        sl = S.box(mc - 20, mc + 20)
        if sl is not None:
            sq = S.sub(sl)
            sd_s = _sd_ellipsoid(sq, mc, (13, 16, 15))
            S.put(sl, (sd_s > 0) & (sd_s < 2.0), 650.0)
            S.put(sl, sd_s < 0, -1000.0)
    sl = S.box((-15, 30, -20), (15, 100, 40))
    if sl is not None:
        sq = S.sub(sl)
        palate = (np.abs(sq[0]) < 28) & (sq[1] > 30) & (sq[1] < 84 * face_k) & (sq[2] > -12) & (sq[2] < -7)
        S.put(sl, palate, 700.0)
        nasal = (np.abs(sq[0]) < 8) & (sq[1] > 36) & (sq[1] < 90 * face_k) & (sq[2] > -6) & (sq[2] < 32) & (body[sl] < -2)
        S.put(sl, nasal & (np.abs(sq[0]) > 1.2), -1000.0)
        sph = _sd_ellipsoid(sq, (0, 24, 18), (12, 10, 10))
        S.put(sl, (sph > 0) & (sph < 2.0) & (floor[sl] < 0), 650.0)
        S.put(sl, sph < 0, -1000.0)

    # --- cervical spine: canal centre-line with lordosis; bodies, discs, arches, processes
    zs = np.array([-400.0, -170.0, -130.0, -100.0, -70.0, -40.0, -10.0, 8.0])
    ys = np.array([-30.0, -27.0, -20.0, -15.0, -13.0 - 0.5 * lordosis, -15.0 - lordosis, -19.0, -20.0]) + cord_o[1]
    xs = np.zeros_like(zs) + cord_o[0]
    ssl = S.box((-40, -80, -400), (40, 40, 10))
    if ssl is not None:
        sq = S.sub(ssl)
        cy = np.interp(sq[2], zs, ys).astype(np.float32)
        cx = np.interp(sq[2], zs, xs).astype(np.float32)
        dx, dy = sq[0] - cx, sq[1] - cy
        below_skull = sq[2] < -10.0
        period, z0 = 18.0, -10.0
        frac = np.mod(z0 - sq[2], period)
        in_body = below_skull & (frac < 13.0)
        in_disc = below_skull & (frac >= 13.0)
        vb = _sd_ellipse(dx, dy, 0.0, 18.5, 11.0, 8.0)
        S.put(ssl, (vb < 0) & in_disc, 85.0)
        S.put(ssl, (vb < 0) & in_body, canc + 60.0 * S.tex[ssl])
        S.put(ssl, (vb < 0) & (vb > -1.8) & in_body, bone - 150.0)
        canal = _sd_ellipse(dx, dy, 0.0, 0.0, 9.0, 7.5)
        arch = (canal > 0) & (canal < 4.5) & (dy < 9)
        spinous = (np.abs(dx) < 3.0) & (dy < -6) & (dy > -32) & (frac > 2) & (frac < 11)
        transverse = (np.abs(dx) > 8) & (np.abs(dx) < 24) & (dy > 4) & (dy < 13) & (frac > 2) & (frac < 11)
        S.put(ssl, in_body & (arch | spinous | transverse), bone - 250.0 + 60.0 * S.tex[ssl])
        # C1 ring and dens just below the skull base
        atlas = (sq[2] < -2) & (sq[2] > -10) & (canal > 0) & (canal < 5)
        S.put(ssl, atlas, bone - 250.0)
        S.put(ssl, (canal < 0) & (sq[2] < 8.0), csf)
        cord = _sd_ellipse(dx, dy, 0.0, 0.0, 6.0, 4.5)
        S.put(ssl, (cord < 0) & (sq[2] <= 0.0 + cord_o[2]), 38.0 + 3.0 * S.tex[ssl], L["spinal_cord"])
        cord_top = 0.0 + cord_o[2]
    else:  # pragma: no cover - the neck always intersects the grid
        cord_top = 0.0

    # --- airway (nasopharynx -> trachea), larynx cartilage, hyoid, thyroid
    aw = [
        (0, 62, 12), (0, 38, 5), (0, 27, -10), (0, 25 + 0.5 * lordosis, -35), (0, 29, -62), (0, 31, -90), (0, 29, -120), (0, 24, -200)
    ]
    aw_r = np.array([6.0, 8.0, 9.0, 8.0, 6.5, 8.0, 8.0, 8.0]) * airway_k
    sl = S.box(*_bounds(aw, 20))
    if sl is not None:
        sq = S.sub(sl)
        sd_aw = _sd_tube(sq, aw, aw_r, scale=(1.3, 1.0, 1.0))
        larynx = (sq[2] > -78) & (sq[2] < -50) & (sd_aw > 2.5) & (sd_aw < 5.0) & (sq[1] > 24)
        S.put(sl, larynx, 220.0)
        S.put(sl, sd_aw < 0, -1000.0)
        thy = np.minimum(_sd_ellipsoid(sq, (-17, 33, -108), (8, 9, 18)), _sd_ellipsoid(sq, (17, 33, -108), (8, 9, 18)))
        S.put(sl, (thy < 0) & (sd_aw > 1), 95.0 + 5.0 * S.tex[sl])
    hy = [(-19, 30), (-13, 40), (0, 45), (13, 40), (19, 30)]
    sl = S.box((-25, 25, -52), (25, 50, -42))
    if sl is not None:
        sq = S.sub(sl)
        dh, _ = _polyline2(sq[0], sq[1], hy, np.zeros((5, 1)))
        S.put(sl, (dh < 3.0) & (sq[2] > -50) & (sq[2] < -45), 700.0)

    # --- parotid glands (superficial lobe lateral/behind the ramus, deep lobe medial to it)
    for side, name, off, k in ((-1.0, "parotid_left", par_o[0], par_k[0]), (1.0, "parotid_right", par_o[1], par_k[1])):
        off = off * (0.5, 1.0, 1.0)
        c1 = np.array([side * (44.0 * mand_k + 5.0), -9.0, -22.0]) + off
        c2 = np.array([side * (44.0 * mand_k - 7.0), -3.0, -29.0]) + off
        sl = S.box(c1 - 32, c1 + 32)
        if sl is None:
            continue
        sq = S.sub(sl)
        sd_p = np.minimum(_sd_ellipsoid(sq, c1, np.array([12.0, 16.0, 24.0]) * k), _sd_ellipsoid(sq, c2, np.array([8.0, 9.0, 14.0]) * k))
        sd_p = sd_p + 1.5 * S.vessel_a[sl]  # fine-scale lobulation
        S.put(sl, (sd_p < 0) & (body[sl] < -3), parotid_hu + 6.0 * S.tex[sl], L[name])

    # --- brainstem with a thin CSF sheath (cisterns), from the foramen magnum upward
    b0 = np.array([0.0, -19.0, cord_top]) + stem_o
    b1 = np.array([0.0, -6.0, 46.0 * stem_k]) + stem_o
    sl = S.box(np.minimum(b0, b1) - 20, np.maximum(b0, b1) + 20)
    if sl is not None:
        sq = S.sub(sl)
        sd_b = _sd_tube(sq, [b0 - (0, 0, 6), b1], [12.0 * stem_k, 12.0 * stem_k], scale=(1.1, 0.95, 1.0))
        above = sq[2] > cord_top
        S.put(sl, (sd_b < 2.5) & (sd_b >= 0) & above & (sd_brain[sl] < 0), csf + 4.0)
        S.put(sl, (sd_b < 0) & above, brain_hu - 2.0 + 2.5 * S.tex[sl], L["brainstem"])

    # --- mandible (cortex + marrow) and teeth
    if msl is not None:
        sd_m = sd_mand_full[msl]
        S.put(msl, sd_m < 0, bone + 80.0 * S.tex[msl], L["mandible"])
        S.put(msl, sd_m < -2.5, canc + 100.0, None)
        if teeth_mask is not None:
            S.put(msl, teeth_mask & (sd_m >= 0), 2200.0)


# ----------------------------------------------------------------------------------------------
# thorax


def _build_thorax(S: _Scene, D: _Draw, chambers: bool) -> None:
    L = THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS
    qx, qy, qz = S.q
    full = (slice(None),) * 3
    tex = S.tex

    # --- subject parameters (fixed draw order)
    fat_t = D.u(5.0, 16.0)
    soft = 45.0 + D.n(4.0)
    fat = -100.0 + D.n(8.0)
    lung_hu = -850.0 + D.n(25.0)
    bone = 1000.0 + D.n(80.0)
    canc = 500.0 + D.n(40.0)
    blood_l = D.u(250.0, 400.0)
    blood_r = D.u(150.0, 350.0)
    svc_hu = D.u(100.0, 600.0)
    aorta_k = D.u(0.92, 1.05)
    cav_r = np.array([110.0 * D.u(0.95, 1.05), 72.0 * D.u(0.95, 1.05)])
    cav_c = (0.0, 2.0)
    wall = 20.0
    dome_r = -78.0 + D.n(6.0)
    dome_l = -92.0 + D.n(6.0)
    heart_k = D.u(0.92, 1.1)
    heart_c = np.array([-22.0, 28.0, -48.0]) + D.v(3.0)
    heart_u = np.array([-0.6, 0.5, -0.45]) + D.v(0.06)
    aorta_o = D.v(2.5)
    cord_o = D.v(1.0)
    lung_sep = D.n(3.0)

    def apex_factor(z):
        return np.sqrt(np.clip(1 - (np.clip(z - 40.0, 0, None) / 95.0) ** 2, 0.02, 1)).astype(np.float32)

    # --- body: elliptic cylinder = pleural cavity + chest wall + subcutaneous fat
    sd_body = _sd_ellipse(qx, qy, cav_c[0], cav_c[1] - 2.0, cav_r[0] + wall + fat_t, cav_r[1] + wall + fat_t)
    inside = sd_body < 0
    S.put(full, inside, soft + 6.0 * tex)
    S.put(full, inside & (sd_body > -2 - fat_t) & (sd_body < -2), fat + 8.0 * tex)
    S.put(full, inside & (sd_body < -2 - fat_t) & (sd_body > -2 - fat_t - 5) & (S.lobules > 1.2), fat)

    af = apex_factor(qz)
    sd_cav = _sd_ellipse(qx, qy, cav_c[0], cav_c[1], np.float32(cav_r[0]) * af, np.float32(cav_r[1]) * af)
    z_dia = np.maximum(
        dome_r - 0.012 * (qx - 55.0) ** 2 - 0.004 * (qy - 5.0) ** 2,
        dome_l - 0.012 * (qx + 55.0) ** 2 - 0.004 * (qy - 5.0) ** 2,
    ).astype(np.float32)
    cavity = sd_cav < 0
    above = qz > z_dia
    # mediastinal fat above the diaphragm, abdomen (liver) below it
    S.put(full, cavity & above, -70.0 + 25.0 * tex)
    S.put(full, cavity & ~above, 58.0 + 5.0 * tex)

    # --- stomach with an air bubble (left upper abdomen)
    sc = np.array([-62.0, 8.0, dome_l - 58.0])
    sl = S.box(sc - 55, sc + 55)
    if sl is not None:
        sq = S.sub(sl)
        sd_st = _sd_ellipsoid(sq, sc, (38, 42, 50))
        st = (sd_st < 0) & (sd_cav[sl] < -3) & (sq[2] < z_dia[sl] - 4)
        S.put(sl, st, 25.0 + 5.0 * S.tex[sl])
        S.put(sl, st & (sq[2] > sc[2] + 36), -1000.0)

    # --- chest wall bones: ribs, costal cartilage, sternum, clavicles, scapulae
    for i in range(11):
        z_post = 105.0 - 21.0 * i
        r_scale = apex_factor(np.float32(z_post + 8.0))
        sl = S.box((-170, -120, z_post - 75), (170, 120, z_post + 12))
        if sl is None:
            continue
        sq = S.sub(sl)
        sd_ring = _sd_ellipse(sq[0], sq[1], cav_c[0], cav_c[1], cav_r[0] * r_scale, cav_r[1] * r_scale)
        z_rib = z_post - 0.35 * (sq[1] + 60.0)
        band = (np.abs(sd_ring - 7.0) < 3.5) & (np.abs(sq[2] - z_rib) < 5.5)
        ax_ = np.abs(sq[0])
        rib = band & ~((sq[1] > 0) & (ax_ < 26)) & ~((sq[1] < 0) & (ax_ < 20))
        cart = band & (sq[1] > 0) & (ax_ >= 12) & (ax_ < 26)
        S.put(sl, cart & (sd_body[sl] < -4), 140.0)
        S.put(sl, rib & (sd_body[sl] < -4), 0.6 * bone + 60.0 * S.tex[sl])
    front = cav_c[1] + cav_r[1]
    sl = S.box((-30, front - 5, -100), (30, front + 20, 120))
    if sl is not None:
        sq = S.sub(sl)
        half = np.where(sq[2] > 60, 22.0, 13.0)
        sternum = (np.abs(sq[0]) < half) & (sq[1] > front + 1) & (sq[1] < front + 11) & (sq[2] > -85) & (sq[2] < 110)
        S.put(sl, sternum & (sd_body[sl] < -3), canc + 60.0 * S.tex[sl])
        S.put(sl, sternum & (sd_body[sl] < -3) & ((sq[1] < front + 2.5) | (sq[1] > front + 9.5)), 0.8 * bone)
    for side in (-1.0, 1.0):
        cl = [_mirror((14, front + 2, 100), side), _mirror((60, front - 20, 110), side), _mirror((115, 8, 112), side)]
        sl = S.box(*_bounds(cl, 12))
        if sl is not None:
            sq = S.sub(sl)
            S.put(sl, (_sd_tube(sq, cl, 6.5) < 0) & (sd_body[sl] < -3), 0.8 * bone)
        sl = S.box((side * 120 if side < 0 else 40, -110, -20), (-40 if side < 0 else 120, -10, 110))
        if sl is not None:
            sq = S.sub(sl)
            sdr = _sd_ellipse(sq[0], sq[1], cav_c[0], cav_c[1], cav_r[0], cav_r[1])
            scap = (sdr > 13) & (sdr < 17) & (side * sq[0] > 45) & (side * sq[0] < 112) & (sq[1] < -15)
            scap &= (sq[2] > -5 + 0.2 * (side * sq[0] - 45)) & (sq[2] < 100) & (sd_body[sl] < -3)
            S.put(sl, scap, 0.7 * bone)

    # --- thoracic spine, canal and cord
    zs = np.array([-400.0, -120.0, 0.0, 120.0, 400.0])
    ys = np.array([-62.0, -64.0, -68.0, -64.0, -60.0]) + cord_o[1]
    ssl = S.box((-45, -100, -400), (45, -20, 400))
    if ssl is not None:
        sq = S.sub(ssl)
        cy = np.interp(sq[2], zs, ys).astype(np.float32)
        ddx, ddy = sq[0] - np.float32(cord_o[0]), sq[1] - cy
        frac = np.mod(140.0 - sq[2], 26.0)
        in_body, in_disc = frac < 21.0, frac >= 21.0
        vb = _sd_ellipse(ddx, ddy, 0.0, 22.0, 17.0, 13.0)
        S.put(ssl, (vb < 0) & in_disc, 85.0)
        S.put(ssl, (vb < 0) & in_body, canc + 60.0 * S.tex[ssl])
        S.put(ssl, (vb < 0) & (vb > -2.0) & in_body, bone - 150.0)
        canal = _sd_ellipse(ddx, ddy, 0.0, 0.0, 8.0, 7.5)
        arch = (canal > 0) & (canal < 5.0) & (ddy < 10)
        spinous = (np.abs(ddx) < 3.5) & (ddy < -6) & (ddy > -22) & (frac > 3) & (frac < 18)
        transverse = (np.abs(ddx) > 8) & (np.abs(ddx) < 30) & (ddy > -3) & (ddy < 6) & (frac > 3) & (frac < 16)
        S.put(ssl, in_body & (arch | spinous | transverse) & (sd_body[ssl] < -4), bone - 250.0 + 60.0 * S.tex[ssl])
        S.put(ssl, canal < 0, 10.0)
        S.put(ssl, _sd_ellipse(ddx, ddy, 0.0, 0.0, 5.0, 4.0) < 0, 38.0 + 3.0 * S.tex[ssl], L["spinal_cord"])

    # --- heart frame (long axis base -> apex: left, anterior, inferior)
    u = heart_u / np.linalg.norm(heart_u)
    v = np.array([0.6, 0.8, 0.0]) - (np.array([0.6, 0.8, 0.0]) @ u) * u
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    frame = np.stack([u, v, w])
    h_r = np.array([60.0, 46.0, 42.0]) * heart_k
    hsl = S.box(heart_c - 75 * heart_k, heart_c + 75 * heart_k)

    # --- great vessels: aorta (+ arch branches), pulmonary artery, SVC, as tubes
    ao = np.array(
        [(0, 14, -22), (4, 18, 10), (4, 14, 40), (-6, -2, 56), (-22, -20, 52), (-30, -30, 30), (-30, -32, -20), (-22, -25, -90), (-12, -18, -150), (-8, -15, -400)],
        dtype=float,
    ) + aorta_o
    ao_r = np.array([13.5, 14.0, 13.0, 12.0, 12.0, 11.5, 11.0, 10.5, 10.0, 10.0]) * aorta_k
    branches = [
        ([(2, 6, 54), (14, 8, 95), (22, 5, 400)], 6.0),
        ([(-8, 0, 56), (-10, 0, 400)], 4.5),
        ([(-18, -12, 54), (-28, -12, 95), (-70, -10, 125)], 5.0),
    ]
    pa = [(-14, 40, -20), (-14, 30, 6), (-8, 8, 14)]
    pa_l = [(-8, 8, 14), (-40, 0, 16), (-62, -5, 8)]
    pa_r = [(-8, 8, 14), (20, -4, 12), (52, -2, 6)]
    svc = [(22, 12, 400), (20, 12, 20), (16, 12, -22)]
    vsl = S.box((-90, -60, -400), (90, 70, 400))
    sd_vessels = np.full(S.shape, _BIG, dtype=np.float32)  # union, for the mediastinum
    sd_ao_full = np.full(S.shape, _BIG, dtype=np.float32)
    if vsl is not None:
        sq = S.sub(vsl)
        sd_ao = _sd_tube(sq, ao, ao_r)
        sd_br = np.minimum.reduce([_sd_tube(sq, np.asarray(pts, float) + aorta_o, r) for pts, r in branches])
        sd_pa = np.minimum.reduce([_sd_tube(sq, pa, 13.0), _sd_tube(sq, pa_l, [10.0, 9.0, 7.0]), _sd_tube(sq, pa_r, [10.0, 9.0, 7.0])])
        sd_svc = _sd_tube(sq, svc, 9.0)
        sd_ao_full[vsl] = sd_ao
        sd_vessels[vsl] = np.minimum.reduce([sd_ao, sd_br, sd_pa, sd_svc])

    # --- mediastinum (between the lungs), heart envelope, spine block
    sd_heart_full = np.full(S.shape, _BIG, dtype=np.float32)
    if hsl is not None:
        sd_heart_full[hsl] = _sd_ellipsoid(S.sub(hsl), heart_c, h_r, frame)
    half_x = np.where(qz > 55.0, 18.0, 23.0).astype(np.float32)
    column = _sd_ellipse(qx, qy, -4.0, 8.0, half_x, 64.0)
    spine_block = _sd_ellipse(qx, qy, cord_o[0], -52.0, 26.0, 26.0)
    sd_med = np.minimum.reduce([column, sd_heart_full - 6.0, sd_vessels - 4.0, spine_block])

    # --- lungs (left = patient left = smaller x), with vessels and a gravity gradient
    mid = -4.0 + lung_sep
    for side, name in ((-1.0, "lung_left"), (1.0, "lung_right")):
        c = np.array([side * 58.0, -2.0, -5.0])
        sl = S.box((min(side * 140, mid), -90, -140), (max(side * 140, mid), 90, 125))
        if sl is None:
            continue
        sq = S.sub(sl)
        lung = (_sd_ellipsoid(sq, c, (70, 90, 118)) + 2.0 * S.bump[sl] < 0) & (sd_cav[sl] < -1.5)
        lung &= (sq[2] > z_dia[sl] + 3.0) & (sd_med[sl] > 2.0) & (side * (sq[0] - np.float32(mid)) > 0)
        hu = lung_hu + 30.0 * (-(sq[1] / 80.0)) + 12.0 * S.tex[sl]
        S.put(sl, lung, hu, L[name])
        vessels = (np.abs(S.vessel_a[sl]) < 0.28) & (np.abs(S.vessel_b[sl]) < 0.28)
        S.put(sl, lung & vessels, 30.0 + 10.0 * S.tex[sl], None)

    # --- airway and oesophagus (not labelled; keep the lung label around intrapulmonary bronchi)
    tr = [(0, -14, 400), (0, -14, 15)]
    br_r = [(0, -14, 15), (35, -16, -2), (55, -20, -15)]
    br_l = [(0, -14, 15), (-40, -16, -8), (-62, -20, -20)]
    oe = [(-6, -30, 400), (-8, -30, -40), (-15, -15, -130)]
    sl = S.box((-80, -50, -140), (80, 10, 400))
    if sl is not None:
        sq = S.sub(sl)
        sd_oe = _sd_tube(sq, oe, 6.5)
        S.put(sl, sd_oe < 0, soft)
        S.put(sl, sd_oe < -5.0, -900.0)
        sd_tr = _sd_tube(sq, tr, 9.0, scale=(1.1, 1.0, 1.0))
        sd_bro = np.minimum(_sd_tube(sq, br_r, [7.0, 6.0, 4.0]), _sd_tube(sq, br_l, [6.5, 5.5, 3.5]))
        S.put(sl, (sd_tr > 0) & (sd_tr < 2.0), soft + 40.0)
        S.put(sl, sd_tr < 0, -1000.0)
        S.put(sl, (sd_bro < 0) & (sd_tr >= 0), -1000.0, None)

    # --- vessels outside the heart: PA, SVC, arch branches (unlabelled), then the heart, then the aorta
    if vsl is not None:
        sq = S.sub(vsl)
        S.put(vsl, (sd_pa < 0) & (sd_cav[vsl] < 0), blood_r + 10.0 * S.tex[vsl])
        S.put(vsl, (sd_svc < 0) & (sd_cav[vsl] < 0), svc_hu)
        S.put(vsl, sd_br < 0, blood_l * aorta_k + 10.0 * S.tex[vsl])
    if hsl is not None:
        hq = S.sub(hsl)
        sd_h = sd_heart_full[hsl]
        in_cav = sd_cav[hsl] < -1.0
        S.put(hsl, (sd_h >= 0) & (sd_h < 4.0) & in_cav & (sd_ao_full[hsl] > 0), fat + 20.0)  # pericardial fat
        heart = (sd_h < 0) & in_cav
        S.put(hsl, heart, 60.0 + 6.0 * S.tex[hsl], L.get("heart", 0))
        d = [hq[i] - np.float32(heart_c[i]) for i in range(3)]
        la = d[0] * np.float32(u[0]) + d[1] * np.float32(u[1]) + d[2] * np.float32(u[2])
        lb = d[0] * np.float32(v[0]) + d[1] * np.float32(v[1]) + d[2] * np.float32(v[2])
        a_av = -0.25 * h_r[0]
        sd_lve = _sd_ellipsoid(hq, heart_c + (0.15 * h_r[0]) * u - (0.22 * h_r[1]) * v, (0.8 * h_r[0], 0.62 * h_r[1], 0.75 * h_r[2]), frame)
        b_split = -0.1 * h_r[1]
        b_lv = np.float32(-0.22 * h_r[1])  # the LV's own axis: posterior-left of it is all LV (wall)
        sd_v, sd_a = np.float32(a_av) - la, la - np.float32(a_av)
        sd_rv_side = np.maximum(-sd_lve, b_lv - lb)
        parts = {
            "heart_lv": np.maximum.reduce([sd_h, sd_v, -sd_rv_side]),
            "heart_rv": np.maximum.reduce([sd_h, sd_v, sd_rv_side]),
            "heart_la": np.maximum.reduce([sd_h, sd_a, lb - np.float32(b_split)]),
            "heart_ra": np.maximum.reduce([sd_h, sd_a, np.float32(b_split) - lb]),
        }
        walls = {"heart_lv": 9.0, "heart_rv": 4.0, "heart_la": 3.0, "heart_ra": 3.0}
        blood = {"heart_lv": blood_l, "heart_rv": blood_r, "heart_la": blood_l, "heart_ra": blood_r}
        for name, sd_p in parts.items():
            if chambers:
                S.put(hsl, heart & (sd_p < 0), None, L[name])
            S.put(hsl, heart & (sd_p < -walls[name]), blood[name] + 10.0 * S.tex[hsl], None)
    if vsl is not None:
        ao_mask = (sd_ao < 0) & (sd_cav[vsl] < 0)
        S.put(vsl, ao_mask, blood_l * aorta_k + 10.0 * S.tex[vsl], L["aorta"])
        S.put(vsl, ao_mask & (sd_ao > -1.5), 70.0)  # vessel wall


# ----------------------------------------------------------------------------------------------
# the simulated scanner


def _scan(hu: np.ndarray, scanner: dict, rng: np.random.Generator) -> np.ndarray:
    img = hu
    if scanner["blur"] > 0.05:
        img = ndimage.gaussian_filter(img, scanner["blur"], truncate=3.0)
    img = img * np.float32(scanner["scale"]) + np.float32(scanner["offset"])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(scanner["noise"])
    np.clip(img, -1024, 3071, out=img)
    return np.rint(img).astype(np.int16)
