"""Head-and-neck phantom: skull and brain, face, neck, cervical spine, glands and mandible.

:func:`build_headneck` draws the subject (tissue HU, organ sizes and offsets) and paints the parts
in a fixed order; later parts overwrite earlier ones, so that order is part of the anatomy (the
mandible and brainstem go last, over the soft tissue around them). Labels: brainstem, spinal_cord,
parotid_left, parotid_right, mandible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import FULL, Block, Scene
from .shapes import Coords, Draw, bounds, polyline2, sd_ellipse, sd_ellipsoid, sd_tube, smin

HEADNECK_LABELS: dict[str, int] = {
    "background": 0,
    "brainstem": 1,
    "spinal_cord": 2,
    "parotid_left": 3,
    "parotid_right": 4,
    "mandible": 5,
}


@dataclass(frozen=True)
class _Tissue:
    """Subject HU levels (and subcutaneous fat thickness, mm)."""

    fat_t: float
    soft: float
    fat: float
    brain_hu: float
    csf: float
    bone: float
    canc: float
    parotid_hu: float


@dataclass(frozen=True)
class _Anatomy:
    """Subject sizes (``*_k`` scale factors, ``*_r`` radii) and offsets (``*_o``, mm)."""

    brain_c: np.ndarray
    brain_r: np.ndarray
    cereb_c: np.ndarray
    cereb_r: np.ndarray
    face_k: float
    neck_r: np.ndarray
    mand_k: float
    mand_o: np.ndarray
    par_o: list[np.ndarray]
    par_k: list[float]
    cord_o: np.ndarray
    stem_o: np.ndarray
    stem_k: float
    lordosis: float
    airway_k: float


@dataclass(frozen=True)
class _Mandible:
    """The mandible's block, its whole-grid signed distance and the (unlabelled) teeth in the block."""

    block: Block | None
    sd: np.ndarray
    teeth: np.ndarray | None


def build_headneck(S: Scene, D: Draw) -> None:
    """Draw one head-and-neck subject and paint it into ``S``.

    Parameters
    ----------
    S : Scene
        The case's canvas.
    D : Draw
        The case's draws.
    """
    T = _draw_tissue(D)
    A = _draw_anatomy(D)
    sd_cere = sd_ellipsoid(S.q, A.brain_c, A.brain_r)
    sd_cereb = sd_ellipsoid(S.q, A.cereb_c, A.cereb_r)
    mand = _mandible(S, A)
    body = smin(_outline(S, A, sd_cere, sd_cereb), mand.sd - 9.0, 10.0)  # the jaw shapes the chin
    _soft_tissue(S, T, body)
    floor, sd_brain = _skull_and_brain(S, T, body < 0, sd_cere, sd_cereb)
    _ventricles(S, T, A)
    _mastoids(S)
    _orbits_and_sinuses(S, T, A)
    _nasal_cavity(S, A, body, floor)
    cord_top = _cervical_spine(S, T, A)
    _airway(S, A)
    _hyoid(S)
    _parotids(S, T, A, body)
    _brainstem(S, T, A, cord_top, sd_brain)
    _paint_mandible(S, T, mand)


# ----------------------------------------------------------------------------------------------
# the subject (draw order fixed: it is the random stream of every case)


def _draw_tissue(D: Draw) -> _Tissue:
    """HU levels around textbook values; the scanner transform varies them further per case."""
    return _Tissue(
        fat_t=D.u(4.0, 11.0),
        soft=45.0 + D.n(4.0),
        fat=-100.0 + D.n(8.0),
        brain_hu=34.0 + D.n(3.0),
        csf=8.0 + D.n(3.0),
        bone=1100.0 + D.n(80.0),
        canc=520.0 + D.n(40.0),
        parotid_hu=18.0 + D.n(7.0),
    )


def _draw_anatomy(D: Draw) -> _Anatomy:
    """Organ sizes and positions: small per-organ jitter around one shared anatomy."""
    head_k = D.u(0.95, 1.05)
    brain_c = np.array([0.0, 8.0, 58.0]) + D.v(2.0)
    brain_r = np.array([66.0, 84.0, 62.0]) * head_k * np.array([D.u(0.96, 1.04) for _ in range(3)])
    return _Anatomy(
        brain_c=brain_c,
        brain_r=brain_r,
        cereb_c=np.array([0.0, -40.0, 20.0]) + D.v(2.0),
        cereb_r=np.array([50.0, 35.0, 25.0]) * head_k,
        face_k=D.u(0.94, 1.06),
        neck_r=np.array([54.0, 60.0]) * D.u(0.92, 1.08),
        mand_k=D.u(0.93, 1.07),
        mand_o=D.v(2.0),
        par_o=[D.v(2.5), D.v(2.5)],
        par_k=[D.u(0.92, 1.08), D.u(0.92, 1.08)],
        cord_o=D.v(1.0),
        stem_o=D.v(1.5),
        stem_k=D.u(0.92, 1.08),
        lordosis=D.u(-6.0, 6.0),
        airway_k=D.u(0.8, 1.2),
    )


# ----------------------------------------------------------------------------------------------
# body outline and soft tissue


def _outline(S: Scene, A: _Anatomy, sd_cere: np.ndarray, sd_cereb: np.ndarray) -> np.ndarray:
    """Skin surface (signed distance) without the chin: smooth union of head, face, ear region,
    neck, nose and jaw envelope, so the outline has no creases a body mask would trip over."""
    qx, qy, qz = S.q
    body = smin(sd_cere - 13.0, sd_cereb - 13.0, 10.0)
    body = smin(body, sd_ellipsoid(S.q, (0, 40, -5), np.array([62, 60, 45]) * A.face_k), 12.0)
    # ear / upper-neck region, as wide as the mandible plus the parotids and skin over them
    ear_r = (44.0 * A.mand_k + 26.0 * A.face_k, 62.0 * A.face_k, 45.0 * A.face_k)
    body = smin(body, sd_ellipsoid(S.q, (0, -8, -20), ear_r), 12.0)
    neck = np.maximum(sd_ellipse(qx, qy, 0.0, -4.0, *A.neck_r), qz + 10.0)
    body = smin(body, neck, 15.0)
    body = smin(body, sd_ellipsoid(S.q, (0, 96 * A.face_k, 14), (11, 12, 20)), 6.0)
    return smin(body, sd_ellipsoid(S.q, (0, 38, -52), np.array([46, 44, 22]) * A.face_k), 12.0)


def _soft_tissue(S: Scene, T: _Tissue, body: np.ndarray) -> None:
    """Soft tissue inside the skin, subcutaneous fat (thinner over the scalp), fat planes in the neck."""
    qz = S.q[2]
    inside = body < 0
    S.put(FULL, inside, T.soft + 6.0 * S.tex)
    head_w = np.clip((qz - 25.0) / 30.0, 0, 1)
    fat_local = T.fat_t * (1 - 0.65 * head_w)
    S.put(FULL, inside & (body > -2.5 - fat_local) & (body < -2.5), T.fat + 8.0 * S.tex)
    S.put(FULL, inside & (body < -2.5 - fat_local) & (qz < 0) & (S.lobules > 1.0), T.fat + 8.0 * S.tex)


# ----------------------------------------------------------------------------------------------
# skull and face


def _skull_and_brain(
    S: Scene, T: _Tissue, inside: np.ndarray, sd_cere: np.ndarray, sd_cereb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Skull vault and cranial base, brain with cerebellum and a CSF rim; returns the signed
    distances of the cranial floor and of the brain (the nasal cavity and brainstem need them).

    The cranial base steps up from the posterior fossa over the middle fossa to the anterior fossa
    over the orbits (whose roofs bulge up on each side of the midline); it thins anteriorly.
    """
    qx, qy, qz = S.q
    ramp = np.clip((qy - 18.0) / 20.0, 0, 1)
    z_floor = np.interp(qy, [-200, -12, 18, 38, 200], [-2.0, -2.0, 18.0, 36.0, 36.0]).astype(np.float32)
    z_floor += 7.0 * ramp * np.exp(-(((np.abs(qx) - 30.0) / 14.0) ** 2))
    floor = z_floor - qz
    plate = 9.0 - 4.0 * ramp
    sd_brain_raw = np.minimum(sd_cere, sd_cereb)
    sd_brain = np.maximum(sd_brain_raw, floor)
    skull = np.maximum(sd_brain_raw - 7.0, floor - plate) < 0
    S.put(FULL, skull & inside, T.bone + 60.0 * S.tex)
    S.put(FULL, sd_brain < 0, T.brain_hu + 2.5 * S.tex)
    S.put(FULL, (sd_brain > -2.5) & (sd_brain < 0), 0.5 * (T.brain_hu + T.csf))  # subarachnoid CSF
    return floor, sd_brain


def _ventricles(S: Scene, T: _Tissue, A: _Anatomy) -> None:
    """The two lateral ventricles (CSF) inside the brain."""
    vsl = S.box((-30, -30, 40), (30, 50, 95))
    if vsl is None:
        return
    vq = S.sub(vsl)
    vent = np.minimum(
        sd_ellipsoid(vq, A.brain_c + (-9, 4, 8), (5.5, 22, 9)), sd_ellipsoid(vq, A.brain_c + (9, 4, 8), (5.5, 22, 9))
    )
    S.put(vsl, vent < 0, T.csf)


def _mastoids(S: Scene) -> None:
    """Mastoid processes behind the ears: bone with air cells, i.e. lower, mottled HU."""
    for side in (-1.0, 1.0):
        c = np.array([side * 50.0, -32.0, -4.0])
        sl = S.box(c - 16, c + 16)
        if sl is not None:
            sq = S.sub(sl)
            S.put(sl, sd_ellipsoid(sq, c, (9, 11, 14)) < 0, 380.0 + 150.0 * S.tex[sl])


def _orbits_and_sinuses(S: Scene, T: _Tissue, A: _Anatomy) -> None:
    """Per side: a bony orbit filled with fat around the eye, and an air-filled maxillary sinus."""
    for side in (-1.0, 1.0):
        oc = np.array([side * 31.0, 62.0 * A.face_k, 28.0])
        sl = S.box(oc - 30, oc + 30)
        if sl is not None:
            sq = S.sub(sl)
            sd_o = sd_ellipsoid(sq, oc, (17, 24, 16))
            S.put(sl, (sd_o > 0) & (sd_o < 2.5), 650.0)
            S.put(sl, sd_o < 0, T.fat + 15.0)
            S.put(sl, sd_ellipsoid(sq, oc + (0, 11, 0), (11.5, 11.5, 11.5)) < 0, 12.0)
        mc = np.array([side * 24.0, 50.0 * A.face_k, 5.0])
        sl = S.box(mc - 20, mc + 20)
        if sl is not None:
            sq = S.sub(sl)
            sd_s = sd_ellipsoid(sq, mc, (13, 16, 15))
            S.put(sl, (sd_s > 0) & (sd_s < 2.0), 650.0)
            S.put(sl, sd_s < 0, -1000.0)


def _nasal_cavity(S: Scene, A: _Anatomy, body: np.ndarray, floor: np.ndarray) -> None:
    """Hard palate, the nasal cavity split by the septum, and the sphenoid sinus under the skull base."""
    sl = S.box((-15, 30, -20), (15, 100, 40))
    if sl is None:
        return
    sq = S.sub(sl)
    palate = (np.abs(sq[0]) < 28) & (sq[1] > 30) & (sq[1] < 84 * A.face_k) & (sq[2] > -12) & (sq[2] < -7)
    S.put(sl, palate, 700.0)
    nasal = (np.abs(sq[0]) < 8) & (sq[1] > 36) & (sq[1] < 90 * A.face_k) & (sq[2] > -6) & (sq[2] < 32) & (body[sl] < -2)
    S.put(sl, nasal & (np.abs(sq[0]) > 1.2), -1000.0)
    sph = sd_ellipsoid(sq, (0, 24, 18), (12, 10, 10))
    S.put(sl, (sph > 0) & (sph < 2.0) & (floor[sl] < 0), 650.0)
    S.put(sl, sph < 0, -1000.0)


# ----------------------------------------------------------------------------------------------
# neck


def _cervical_spine(S: Scene, T: _Tissue, A: _Anatomy) -> float:
    """Cervical spine along a canal centre-line with lordosis: vertebral bodies and discs, arches,
    spinous and transverse processes, the C1 ring, CSF and the labelled cord. Returns the cord's
    top (anatomy z, mm), where the brainstem takes over."""
    zs = np.array([-400.0, -170.0, -130.0, -100.0, -70.0, -40.0, -10.0, 8.0])
    ys = (
        np.array([-30.0, -27.0, -20.0, -15.0, -13.0 - 0.5 * A.lordosis, -15.0 - A.lordosis, -19.0, -20.0]) + A.cord_o[1]
    )
    xs = np.zeros_like(zs) + A.cord_o[0]
    ssl = S.box((-40, -80, -400), (40, 40, 10))
    if ssl is None:  # pragma: no cover - the neck always intersects the grid
        return 0.0
    sq = S.sub(ssl)
    dx = sq[0] - np.interp(sq[2], zs, xs).astype(np.float32)
    dy = sq[1] - np.interp(sq[2], zs, ys).astype(np.float32)
    frac = np.mod(-10.0 - sq[2], 18.0)  # position within one vertebra (period 18 mm from z = -10)
    below_skull = sq[2] < -10.0
    in_body = below_skull & (frac < 13.0)
    in_disc = below_skull & (frac >= 13.0)
    vb = sd_ellipse(dx, dy, 0.0, 18.5, 11.0, 8.0)
    S.put(ssl, (vb < 0) & in_disc, 85.0)
    S.put(ssl, (vb < 0) & in_body, T.canc + 60.0 * S.tex[ssl])
    S.put(ssl, (vb < 0) & (vb > -1.8) & in_body, T.bone - 150.0)
    canal = sd_ellipse(dx, dy, 0.0, 0.0, 9.0, 7.5)
    arch = (canal > 0) & (canal < 4.5) & (dy < 9)
    spinous = (np.abs(dx) < 3.0) & (dy < -6) & (dy > -32) & (frac > 2) & (frac < 11)
    transverse = (np.abs(dx) > 8) & (np.abs(dx) < 24) & (dy > 4) & (dy < 13) & (frac > 2) & (frac < 11)
    S.put(ssl, in_body & (arch | spinous | transverse), T.bone - 250.0 + 60.0 * S.tex[ssl])
    atlas = (sq[2] < -2) & (sq[2] > -10) & (canal > 0) & (canal < 5)  # C1 ring just below the skull base
    S.put(ssl, atlas, T.bone - 250.0)
    S.put(ssl, (canal < 0) & (sq[2] < 8.0), T.csf)
    cord = sd_ellipse(dx, dy, 0.0, 0.0, 6.0, 4.5)
    S.put(ssl, (cord < 0) & (sq[2] <= 0.0 + A.cord_o[2]), 38.0 + 3.0 * S.tex[ssl], HEADNECK_LABELS["spinal_cord"])
    return 0.0 + A.cord_o[2]


def _airway(S: Scene, A: _Anatomy) -> None:
    """Airway from the nasopharynx to the trachea (air), the larynx cartilage around it and the
    two thyroid lobes beside the trachea."""
    aw = [(0, 62, 12), (0, 38, 5), (0, 27, -10), (0, 25 + 0.5 * A.lordosis, -35)]
    aw += [(0, 29, -62), (0, 31, -90), (0, 29, -120), (0, 24, -200)]
    aw_r = np.array([6.0, 8.0, 9.0, 8.0, 6.5, 8.0, 8.0, 8.0]) * A.airway_k
    sl = S.box(*bounds(aw, 20))
    if sl is None:
        return
    sq = S.sub(sl)
    sd_aw = sd_tube(sq, aw, aw_r, scale=(1.3, 1.0, 1.0))
    larynx = (sq[2] > -78) & (sq[2] < -50) & (sd_aw > 2.5) & (sd_aw < 5.0) & (sq[1] > 24)
    S.put(sl, larynx, 220.0)
    S.put(sl, sd_aw < 0, -1000.0)
    thy = np.minimum(sd_ellipsoid(sq, (-17, 33, -108), (8, 9, 18)), sd_ellipsoid(sq, (17, 33, -108), (8, 9, 18)))
    S.put(sl, (thy < 0) & (sd_aw > 1), 95.0 + 5.0 * S.tex[sl])


def _hyoid(S: Scene) -> None:
    """The U-shaped hyoid bone above the larynx."""
    hy = [(-19, 30), (-13, 40), (0, 45), (13, 40), (19, 30)]
    sl = S.box((-25, 25, -52), (25, 50, -42))
    if sl is None:
        return
    sq = S.sub(sl)
    dh, _ = polyline2(sq[0], sq[1], hy, np.zeros((5, 1)))
    S.put(sl, (dh < 3.0) & (sq[2] > -50) & (sq[2] < -45), 700.0)


# ----------------------------------------------------------------------------------------------
# labelled organs


def _parotids(S: Scene, T: _Tissue, A: _Anatomy, body: np.ndarray) -> None:
    """Parotid glands: a superficial lobe lateral to / behind the ramus and a deep lobe medial to
    it, lobulated by a fine random field, kept under the skin."""
    sides = ((-1.0, "parotid_left", A.par_o[0], A.par_k[0]), (1.0, "parotid_right", A.par_o[1], A.par_k[1]))
    for side, name, off, k in sides:
        off = off * (0.5, 1.0, 1.0)
        c1 = np.array([side * (44.0 * A.mand_k + 5.0), -9.0, -22.0]) + off
        c2 = np.array([side * (44.0 * A.mand_k - 7.0), -3.0, -29.0]) + off
        sl = S.box(c1 - 32, c1 + 32)
        if sl is None:
            continue
        sq = S.sub(sl)
        superficial = sd_ellipsoid(sq, c1, np.array([12.0, 16.0, 24.0]) * k)
        sd_p = np.minimum(superficial, sd_ellipsoid(sq, c2, np.array([8.0, 9.0, 14.0]) * k))
        sd_p = sd_p + 1.5 * S.vessel_a[sl]  # fine-scale lobulation
        S.put(sl, (sd_p < 0) & (body[sl] < -3), T.parotid_hu + 6.0 * S.tex[sl], HEADNECK_LABELS[name])


def _brainstem(S: Scene, T: _Tissue, A: _Anatomy, cord_top: float, sd_brain: np.ndarray) -> None:
    """Brainstem from the foramen magnum (the cord's top) upward, with a thin CSF sheath (cisterns)."""
    b0 = np.array([0.0, -19.0, cord_top]) + A.stem_o
    b1 = np.array([0.0, -6.0, 46.0 * A.stem_k]) + A.stem_o
    sl = S.box(np.minimum(b0, b1) - 20, np.maximum(b0, b1) + 20)
    if sl is None:
        return
    sq = S.sub(sl)
    sd_b = sd_tube(sq, [b0 - (0, 0, 6), b1], [12.0 * A.stem_k, 12.0 * A.stem_k], scale=(1.1, 0.95, 1.0))
    above = sq[2] > cord_top
    S.put(sl, (sd_b < 2.5) & (sd_b >= 0) & above & (sd_brain[sl] < 0), T.csf + 4.0)
    S.put(sl, (sd_b < 0) & above, T.brain_hu - 2.0 + 2.5 * S.tex[sl], HEADNECK_LABELS["brainstem"])


# ----------------------------------------------------------------------------------------------
# mandible (shaped early: its soft-tissue envelope shapes the chin; painted last)


def _mandible(S: Scene, A: _Anatomy) -> _Mandible:
    """Mandible shape: a U-shaped body along a poly-line (height and thickness varying along it)
    joined to a ramus with condyle and coronoid process on each side; plus the teeth rows."""
    m_c = A.mand_o
    half_w, angle_y = 44.0 * A.mand_k, 22.0 * A.mand_k
    body_pts, attrs = _mandible_arch(A)
    lo = (-60 * A.mand_k - 5 + m_c[0], -15 + m_c[1], -80 + m_c[2])
    hi = (60 * A.mand_k + 5 + m_c[0], 100 + m_c[1], 20 + m_c[2])
    msl = S.box(lo, hi)
    sd_full = S.far()
    if msl is None:
        return _Mandible(None, sd_full, None)
    mq = S.sub(msl)
    dist, (zb, hh, ht, au) = polyline2(mq[0], mq[1], body_pts, attrs)
    sd_m = np.maximum(dist - ht, np.maximum(zb - mq[2], mq[2] - (zb + hh)))
    for side in (-1.0, 1.0):
        angle = np.array([side * half_w, angle_y, -58.0 * A.mand_k]) + m_c
        condyle = np.array([side * (half_w + 3.0), 1.0, 2.0]) + m_c
        sd_m = np.minimum(sd_m, _ramus(mq, angle, condyle))
    sd_full[msl] = sd_m
    return _Mandible(msl, sd_full, _teeth(mq, body_pts, dist, zb + hh, ht, au))


def _mandible_arch(A: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Centre-line of the mandible's body (xy, mm) from angle to chin to angle, and per vertex:
    bottom z, height, half thickness and |position| along the arch (0 at the chin, 1 at an angle)."""
    m_c = A.mand_o
    u = np.linspace(-1, 1, 13)
    chin_y, angle_y, half_w = 80.0 * A.mand_k, 22.0 * A.mand_k, 44.0 * A.mand_k
    body_pts = np.stack([half_w * u, angle_y + (chin_y - angle_y) * (1 - u**2)], axis=1) + m_c[:2]
    z_bot = -66.0 + 8.0 * u**2 + m_c[2]
    height = (26.0 - 4.0 * u**2) * A.mand_k
    half_t = 4.5 - 1.0 * u**2
    return body_pts, np.stack([z_bot, height, half_t, np.abs(u)], axis=1)


def _ramus(mq: Coords, angle: np.ndarray, condyle: np.ndarray) -> np.ndarray:
    """One ramus: a plate from the mandible's angle up to the condyle (narrowing upward), the
    condylar head, and the coronoid process, a thin blade rising anteriorly."""
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
    head = sd_ellipsoid(mq, condyle + np.array([0, -2.0, 0]), (9.0, 5.5, 6.0))
    coro = sd_tube(mq, [angle + np.array([0, 14, 20]), condyle + np.array([0, 24, -4])], [4.0, 2.5], scale=(0.6, 1, 1))
    return np.minimum(np.minimum(ramus, head), coro)


def _teeth(
    mq: Coords, body_pts: np.ndarray, dist: np.ndarray, top: np.ndarray, ht: np.ndarray, au: np.ndarray
) -> np.ndarray:
    """A row of crowns on the alveolar ridge (lower) and a mirrored upper row, with gaps between
    teeth every 8.5 mm along the arch; not labelled."""
    arc = np.cumsum(np.r_[0, np.linalg.norm(np.diff(body_pts, axis=0), axis=1)])
    _, (s_arc,) = polyline2(mq[0], mq[1], body_pts, arc[:, None])
    gaps = np.cos(2 * np.pi * s_arc / 8.5) > -0.35
    lower = (dist < ht - 0.5) & (mq[2] > top) & (mq[2] < top + 9) & (au < 0.85) & gaps
    upper = (dist < ht) & (mq[2] >= top + 9) & (mq[2] < top + 18) & (au < 0.85) & gaps
    return lower | upper


def _paint_mandible(S: Scene, T: _Tissue, mand: _Mandible) -> None:
    """Mandible cortex (labelled) with marrow inside, then the teeth outside the bone."""
    msl = mand.block
    if msl is None or mand.teeth is None:
        return
    sd_m = mand.sd[msl]
    S.put(msl, sd_m < 0, T.bone + 80.0 * S.tex[msl], HEADNECK_LABELS["mandible"])
    S.put(msl, sd_m < -2.5, T.canc + 100.0, None)
    S.put(msl, mand.teeth & (sd_m >= 0), 2200.0)
