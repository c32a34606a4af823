"""Thorax phantom: chest wall and bones, spine, lungs, heart (optionally four chambers), great vessels.

:func:`build_thorax` draws the subject and paints the parts in a fixed order; later parts overwrite
earlier ones (the heart over the mediastinal fat, the aorta over the heart's base), so the order is
part of the anatomy. Labels: heart, lung_left, lung_right, aorta, spinal_cord; with
``chambers=True`` the heart is split into heart_lv, heart_rv, heart_la and heart_ra.

The ``thorax-varied`` kind is the same subjects (labels identical bit for bit) seen through a
per-case :class:`Acquisition`: contrast phase, tube voltage, dose and reconstruction kernel drawn
from published CT figures (see the last section), instead of the ``thorax`` kind's linear HU
"scanner".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np

from ..io import Volume
from ..shift import REFERENCE_VOXEL_MM, VARIATION_SUITE, Dose, Kernel, TubeVoltage, inplane_filter
from .scene import FULL, Block, Scene
from .shapes import Coords, Draw, bounds, mirror, sd_ellipse, sd_ellipsoid, sd_tube

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

_CAV_C = (0.0, 2.0)  # pleural cavity centre (x, y), mm
_WALL = 20.0  # chest wall thickness (muscle and ribs), mm


@dataclass(frozen=True)
class _Tissue:
    """Subject HU levels (and subcutaneous fat thickness, mm); blood is contrast-enhanced.

    The fields with defaults are the ``thorax`` kind's fixed levels; ``thorax-varied`` sets them
    per case from its contrast phase (:meth:`Acquisition.tissue`). ``ao_scaled``: the aorta and arch
    branches take ``blood_l`` times the subject's aorta size factor (the ``thorax`` kind's quirk,
    kept bit for bit there) instead of ``blood_l`` itself."""

    fat_t: float
    soft: float
    fat: float
    lung_hu: float
    bone: float
    canc: float
    blood_l: float
    blood_r: float
    svc_hu: float
    myo: float = 60.0
    liver: float = 58.0
    lung_vessel: float = 30.0
    ao_scaled: bool = True

    def aorta_blood(self, A: _Anatomy) -> float:
        """Blood level of the aorta and its arch branches.

        Parameters
        ----------
        A : _Anatomy
            The subject's anatomy (its aorta scale).

        Returns
        -------
        float
            HU.
        """
        return self.blood_l * A.aorta_k if self.ao_scaled else self.blood_l


@dataclass(frozen=True)
class _Anatomy:
    """Subject sizes, diaphragm domes (z, mm), heart pose and small organ offsets (mm)."""

    aorta_k: float
    cav_r: np.ndarray
    dome_r: float
    dome_l: float
    heart_k: float
    heart_c: np.ndarray
    heart_u: np.ndarray
    aorta_o: np.ndarray
    cord_o: np.ndarray
    lung_sep: float

    @property
    def front(self) -> float:
        """The anterior inner chest wall (y, mm), behind the sternum.

        Returns
        -------
        float
            Anatomy y (mm).
        """
        return _CAV_C[1] + self.cav_r[1]


@dataclass(frozen=True)
class _Heart:
    """Heart ellipsoid: centre, long axis ``u`` (base to apex), ``v``, frame rows, radii, block and
    its whole-grid signed distance."""

    c: np.ndarray
    u: np.ndarray
    v: np.ndarray
    frame: np.ndarray
    r: np.ndarray
    block: Block | None
    sd: np.ndarray


@dataclass(frozen=True)
class _Vessels:
    """Great vessels: signed distances ``ao``, ``br`` (arch branches), ``pa``, ``svc`` in ``block``,
    and on the whole grid the aorta and the union of all of them."""

    block: Block | None
    sd: dict[str, np.ndarray]
    ao_full: np.ndarray
    union: np.ndarray


def build_thorax(S: Scene, D: Draw, chambers: bool, acquisition: Acquisition | None = None) -> None:
    """Draw one thorax subject and paint it into ``S`` (``chambers``: label the four chambers).

    With an ``acquisition`` (``thorax-varied``) its contrast phase sets the blood, myocardium,
    liver and lung-vessel levels; every draw from ``D`` and every shape stay as they are, so the
    labels are those of the ``thorax`` kind bit for bit.

    Parameters
    ----------
    S : Scene
        The case's canvas.
    D : Draw
        The case's draws.
    chambers : bool
        Label the heart's four chambers instead of the whole heart.
    acquisition : Acquisition, optional
        The ``thorax-varied`` case's acquisition.
    """
    labels = THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS
    T = _draw_tissue(D)
    A = _draw_anatomy(D)
    if acquisition is not None:
        T = acquisition.tissue(T)
    sd_body = _chest_wall(S, T, A)
    sd_cav, z_dia = _pleural_cavity(S, T, A)
    _stomach(S, A, sd_cav, z_dia)
    _ribs(S, T, A, sd_body)
    _sternum(S, T, A, sd_body)
    _shoulder_girdle(S, T, A, sd_body)
    _spine(S, T, A, sd_body, labels)
    heart = _heart(S, A)
    vessels = _great_vessels(S, A)
    sd_med = _mediastinum(S, A, heart, vessels)
    _lungs(S, T, A, sd_cav, z_dia, sd_med, labels)
    _airway_and_oesophagus(S, T)
    _paint_vessels(S, T, A, vessels, sd_cav)
    _paint_heart(S, T, heart, vessels, sd_cav, labels, chambers)
    _paint_aorta(S, T, A, vessels, sd_cav, labels)


# ----------------------------------------------------------------------------------------------
# the subject (draw order fixed: it is the random stream of every case)


def _draw_tissue(D: Draw) -> _Tissue:
    """HU levels around textbook values; left-heart blood brighter than right (arterial phase)."""
    return _Tissue(
        fat_t=D.u(5.0, 16.0),
        soft=45.0 + D.n(4.0),
        fat=-100.0 + D.n(8.0),
        lung_hu=-850.0 + D.n(25.0),
        bone=1000.0 + D.n(80.0),
        canc=500.0 + D.n(40.0),
        blood_l=D.u(250.0, 400.0),
        blood_r=D.u(150.0, 350.0),
        svc_hu=D.u(100.0, 600.0),
    )


def _draw_anatomy(D: Draw) -> _Anatomy:
    """Organ sizes and positions: small per-organ jitter around one shared anatomy."""
    return _Anatomy(
        aorta_k=D.u(0.92, 1.05),
        cav_r=np.array([110.0 * D.u(0.95, 1.05), 72.0 * D.u(0.95, 1.05)]),
        dome_r=-78.0 + D.n(6.0),
        dome_l=-92.0 + D.n(6.0),
        heart_k=D.u(0.92, 1.1),
        heart_c=np.array([-22.0, 28.0, -48.0]) + D.v(3.0),
        heart_u=np.array([-0.6, 0.5, -0.45]) + D.v(0.06),
        aorta_o=D.v(2.5),
        cord_o=D.v(1.0),
        lung_sep=D.n(3.0),
    )


def _apex_factor(z: np.ndarray | np.floating | float) -> np.ndarray:
    """Scale of the pleural cavity's cross-section at height z: 1 below 40 mm, closing to the apex."""
    return np.sqrt(np.clip(1 - (np.clip(z - 40.0, 0, None) / 95.0) ** 2, 0.02, 1)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# body wall, cavity, abdomen


def _chest_wall(S: Scene, T: _Tissue, A: _Anatomy) -> np.ndarray:
    """Body as an elliptic cylinder (pleural cavity + chest wall + subcutaneous fat): soft tissue,
    a fat layer under the skin and marbled fat under that; returns the body's signed distance."""
    qx, qy, _ = S.q
    sd_body = sd_ellipse(qx, qy, _CAV_C[0], _CAV_C[1] - 2.0, A.cav_r[0] + _WALL + T.fat_t, A.cav_r[1] + _WALL + T.fat_t)
    inside = sd_body < 0
    S.put(FULL, inside, T.soft + 6.0 * S.tex)
    S.put(FULL, inside & (sd_body > -2 - T.fat_t) & (sd_body < -2), T.fat + 8.0 * S.tex)
    S.put(FULL, inside & (sd_body < -2 - T.fat_t) & (sd_body > -2 - T.fat_t - 5) & (S.lobules > 1.2), T.fat)
    return sd_body


def _pleural_cavity(S: Scene, T: _Tissue, A: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """The cavity inside the ribs (narrowing to the apex) split by the two diaphragm domes into
    mediastinal fat above and abdomen (liver) below; returns its signed distance and the
    diaphragm height z_dia (mm) at every voxel."""
    qx, qy, qz = S.q
    af = _apex_factor(qz)
    sd_cav = sd_ellipse(qx, qy, _CAV_C[0], _CAV_C[1], np.float32(A.cav_r[0]) * af, np.float32(A.cav_r[1]) * af)
    z_dia = np.maximum(
        A.dome_r - 0.012 * (qx - 55.0) ** 2 - 0.004 * (qy - 5.0) ** 2,
        A.dome_l - 0.012 * (qx + 55.0) ** 2 - 0.004 * (qy - 5.0) ** 2,
    ).astype(np.float32)
    cavity = sd_cav < 0
    above = qz > z_dia
    S.put(FULL, cavity & above, -70.0 + 25.0 * S.tex)
    S.put(FULL, cavity & ~above, T.liver + 5.0 * S.tex)
    return sd_cav, z_dia


def _stomach(S: Scene, A: _Anatomy, sd_cav: np.ndarray, z_dia: np.ndarray) -> None:
    """Stomach under the left dome, with an air bubble at its top."""
    sc = np.array([-62.0, 8.0, A.dome_l - 58.0])
    sl = S.box(sc - 55, sc + 55)
    if sl is None:
        return
    sq = S.sub(sl)
    sd_st = sd_ellipsoid(sq, sc, (38, 42, 50))
    st = (sd_st < 0) & (sd_cav[sl] < -3) & (sq[2] < z_dia[sl] - 4)
    S.put(sl, st, 25.0 + 5.0 * S.tex[sl])
    S.put(sl, st & (sq[2] > sc[2] + 36), -1000.0)


# ----------------------------------------------------------------------------------------------
# bones


def _ribs(S: Scene, T: _Tissue, A: _Anatomy, sd_body: np.ndarray) -> None:
    """Eleven rib pairs: bands just outside the cavity, sloping down anteriorly, with costal
    cartilage in front and a gap for the sternum and the spine."""
    for i in range(11):
        z_post = 105.0 - 21.0 * i
        r_scale = _apex_factor(np.float32(z_post + 8.0))
        sl = S.box((-170, -120, z_post - 75), (170, 120, z_post + 12))
        if sl is None:
            continue
        sq = S.sub(sl)
        sd_ring = sd_ellipse(sq[0], sq[1], _CAV_C[0], _CAV_C[1], A.cav_r[0] * r_scale, A.cav_r[1] * r_scale)
        z_rib = z_post - 0.35 * (sq[1] + 60.0)
        band = (np.abs(sd_ring - 7.0) < 3.5) & (np.abs(sq[2] - z_rib) < 5.5)
        ax_ = np.abs(sq[0])
        rib = band & ~((sq[1] > 0) & (ax_ < 26)) & ~((sq[1] < 0) & (ax_ < 20))
        cart = band & (sq[1] > 0) & (ax_ >= 12) & (ax_ < 26)
        S.put(sl, cart & (sd_body[sl] < -4), 140.0)
        S.put(sl, rib & (sd_body[sl] < -4), 0.6 * T.bone + 60.0 * S.tex[sl])


def _sternum(S: Scene, T: _Tissue, A: _Anatomy, sd_body: np.ndarray) -> None:
    """Sternum in front of the cavity (wider manubrium on top): marrow inside a cortical shell."""
    front = A.front
    sl = S.box((-30, front - 5, -100), (30, front + 20, 120))
    if sl is None:
        return
    sq = S.sub(sl)
    half = np.where(sq[2] > 60, 22.0, 13.0)
    sternum = (np.abs(sq[0]) < half) & (sq[1] > front + 1) & (sq[1] < front + 11) & (sq[2] > -85) & (sq[2] < 110)
    S.put(sl, sternum & (sd_body[sl] < -3), T.canc + 60.0 * S.tex[sl])
    S.put(sl, sternum & (sd_body[sl] < -3) & ((sq[1] < front + 2.5) | (sq[1] > front + 9.5)), 0.8 * T.bone)


def _shoulder_girdle(S: Scene, T: _Tissue, A: _Anatomy, sd_body: np.ndarray) -> None:
    """Per side: the clavicle (a tube from the sternum to the shoulder) and the scapula (a curved
    plate behind the ribs)."""
    for side in (-1.0, 1.0):
        cl = [mirror((14, A.front + 2, 100), side), mirror((60, A.front - 20, 110), side), mirror((115, 8, 112), side)]
        sl = S.box(*bounds(cl, 12))
        if sl is not None:
            sq = S.sub(sl)
            S.put(sl, (sd_tube(sq, cl, 6.5) < 0) & (sd_body[sl] < -3), 0.8 * T.bone)
        sl = S.box((side * 120 if side < 0 else 40, -110, -20), (-40 if side < 0 else 120, -10, 110))
        if sl is not None:
            sq = S.sub(sl)
            sdr = sd_ellipse(sq[0], sq[1], _CAV_C[0], _CAV_C[1], A.cav_r[0], A.cav_r[1])
            scap = (sdr > 13) & (sdr < 17) & (side * sq[0] > 45) & (side * sq[0] < 112) & (sq[1] < -15)
            scap &= (sq[2] > -5 + 0.2 * (side * sq[0] - 45)) & (sq[2] < 100) & (sd_body[sl] < -3)
            S.put(sl, scap, 0.7 * T.bone)


def _spine(S: Scene, T: _Tissue, A: _Anatomy, sd_body: np.ndarray, labels: dict[str, int]) -> None:
    """Thoracic spine along a kyphotic centre-line: vertebral bodies and discs, arches, spinous and
    transverse processes, the canal (CSF) and the labelled cord."""
    zs = np.array([-400.0, -120.0, 0.0, 120.0, 400.0])
    ys = np.array([-62.0, -64.0, -68.0, -64.0, -60.0]) + A.cord_o[1]
    ssl = S.box((-45, -100, -400), (45, -20, 400))
    if ssl is None:
        return
    sq = S.sub(ssl)
    cy = np.interp(sq[2], zs, ys).astype(np.float32)
    ddx, ddy = sq[0] - np.float32(A.cord_o[0]), sq[1] - cy
    frac = np.mod(140.0 - sq[2], 26.0)  # position within one vertebra (period 26 mm)
    in_body, in_disc = frac < 21.0, frac >= 21.0
    vb = sd_ellipse(ddx, ddy, 0.0, 22.0, 17.0, 13.0)
    S.put(ssl, (vb < 0) & in_disc, 85.0)
    S.put(ssl, (vb < 0) & in_body, T.canc + 60.0 * S.tex[ssl])
    S.put(ssl, (vb < 0) & (vb > -2.0) & in_body, T.bone - 150.0)
    canal = sd_ellipse(ddx, ddy, 0.0, 0.0, 8.0, 7.5)
    arch = (canal > 0) & (canal < 5.0) & (ddy < 10)
    spinous = (np.abs(ddx) < 3.5) & (ddy < -6) & (ddy > -22) & (frac > 3) & (frac < 18)
    transverse = (np.abs(ddx) > 8) & (np.abs(ddx) < 30) & (ddy > -3) & (ddy < 6) & (frac > 3) & (frac < 16)
    S.put(ssl, in_body & (arch | spinous | transverse) & (sd_body[ssl] < -4), T.bone - 250.0 + 60.0 * S.tex[ssl])
    S.put(ssl, canal < 0, 10.0)
    S.put(ssl, sd_ellipse(ddx, ddy, 0.0, 0.0, 5.0, 4.0) < 0, 38.0 + 3.0 * S.tex[ssl], labels["spinal_cord"])


# ----------------------------------------------------------------------------------------------
# mediastinum and lungs (shapes first: the lungs stop where the mediastinum begins)


def _heart(S: Scene, A: _Anatomy) -> _Heart:
    """Heart ellipsoid with its long axis from base to apex (left, anterior, inferior)."""
    u = A.heart_u / np.linalg.norm(A.heart_u)
    v = np.array([0.6, 0.8, 0.0]) - (np.array([0.6, 0.8, 0.0]) @ u) * u
    v /= np.linalg.norm(v)
    frame = np.stack([u, v, np.cross(u, v)])
    r = np.array([60.0, 46.0, 42.0]) * A.heart_k
    hsl = S.box(A.heart_c - 75 * A.heart_k, A.heart_c + 75 * A.heart_k)
    sd = S.far()
    if hsl is not None:
        sd[hsl] = sd_ellipsoid(S.sub(hsl), A.heart_c, r, frame)
    return _Heart(A.heart_c, u, v, frame, r, hsl, sd)


def _great_vessels(S: Scene, A: _Anatomy) -> _Vessels:
    """Aorta (root, arch, descending) with three arch branches, pulmonary trunk and arteries, and
    the superior vena cava, as tubes along poly-lines."""
    ao = np.array(
        [(0, 14, -22), (4, 18, 10), (4, 14, 40), (-6, -2, 56), (-22, -20, 52)]  # root and arch
        + [(-30, -30, 30), (-30, -32, -20), (-22, -25, -90), (-12, -18, -150), (-8, -15, -400)],  # descending
        dtype=float,
    ) + A.aorta_o
    ao_r = np.array([13.5, 14.0, 13.0, 12.0, 12.0, 11.5, 11.0, 10.5, 10.0, 10.0]) * A.aorta_k
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
    union, ao_full = S.far(), S.far()
    if vsl is None:
        return _Vessels(None, {}, ao_full, union)
    sq = S.sub(vsl)
    sd = {
        "ao": sd_tube(sq, ao, ao_r),
        "br": np.minimum.reduce([sd_tube(sq, np.asarray(pts, float) + A.aorta_o, r) for pts, r in branches]),
        "pa": np.minimum.reduce(
            [sd_tube(sq, pa, 13.0), sd_tube(sq, pa_l, [10.0, 9.0, 7.0]), sd_tube(sq, pa_r, [10.0, 9.0, 7.0])]
        ),
        "svc": sd_tube(sq, svc, 9.0),
    }
    ao_full[vsl] = sd["ao"]
    union[vsl] = np.minimum.reduce([sd["ao"], sd["br"], sd["pa"], sd["svc"]])
    return _Vessels(vsl, sd, ao_full, union)


def _mediastinum(S: Scene, A: _Anatomy, heart: _Heart, vessels: _Vessels) -> np.ndarray:
    """Signed distance of the space between the lungs: a central column (narrower above the heart),
    the heart and great vessels with a margin, and a block around the spine."""
    qx, qy, qz = S.q
    half_x = np.where(qz > 55.0, 18.0, 23.0).astype(np.float32)
    column = sd_ellipse(qx, qy, -4.0, 8.0, half_x, 64.0)
    spine_block = sd_ellipse(qx, qy, A.cord_o[0], -52.0, 26.0, 26.0)
    return np.minimum.reduce([column, heart.sd - 6.0, vessels.union - 4.0, spine_block])


def _lungs(
    S: Scene, T: _Tissue, A: _Anatomy, sd_cav: np.ndarray, z_dia: np.ndarray, sd_med: np.ndarray, labels: dict[str, int]
) -> None:
    """Lungs (left = patient left = smaller x): bumpy ellipsoids clipped to the cavity, above the
    diaphragm and outside the mediastinum, denser posteriorly (gravity), with vessels inside."""
    mid = -4.0 + A.lung_sep
    for side, name in ((-1.0, "lung_left"), (1.0, "lung_right")):
        c = np.array([side * 58.0, -2.0, -5.0])
        sl = S.box((min(side * 140, mid), -90, -140), (max(side * 140, mid), 90, 125))
        if sl is None:
            continue
        sq = S.sub(sl)
        lung = (sd_ellipsoid(sq, c, (70, 90, 118)) + 2.0 * S.bump[sl] < 0) & (sd_cav[sl] < -1.5)
        lung &= (sq[2] > z_dia[sl] + 3.0) & (sd_med[sl] > 2.0) & (side * (sq[0] - np.float32(mid)) > 0)
        hu = T.lung_hu + 30.0 * (-(sq[1] / 80.0)) + 12.0 * S.tex[sl]
        S.put(sl, lung, hu, labels[name])
        vessels = (np.abs(S.vessel_a[sl]) < 0.28) & (np.abs(S.vessel_b[sl]) < 0.28)
        S.put(sl, lung & vessels, T.lung_vessel + 10.0 * S.tex[sl], None)


def _airway_and_oesophagus(S: Scene, T: _Tissue) -> None:
    """Oesophagus (with some air), trachea with its cartilage wall, and main bronchi; unlabelled,
    and the bronchi keep the lung label around them."""
    tr = [(0, -14, 400), (0, -14, 15)]
    br_r = [(0, -14, 15), (35, -16, -2), (55, -20, -15)]
    br_l = [(0, -14, 15), (-40, -16, -8), (-62, -20, -20)]
    oe = [(-6, -30, 400), (-8, -30, -40), (-15, -15, -130)]
    sl = S.box((-80, -50, -140), (80, 10, 400))
    if sl is None:
        return
    sq = S.sub(sl)
    sd_oe = sd_tube(sq, oe, 6.5)
    S.put(sl, sd_oe < 0, T.soft)
    S.put(sl, sd_oe < -5.0, -900.0)
    sd_tr = sd_tube(sq, tr, 9.0, scale=(1.1, 1.0, 1.0))
    sd_bro = np.minimum(sd_tube(sq, br_r, [7.0, 6.0, 4.0]), sd_tube(sq, br_l, [6.5, 5.5, 3.5]))
    S.put(sl, (sd_tr > 0) & (sd_tr < 2.0), T.soft + 40.0)
    S.put(sl, sd_tr < 0, -1000.0)
    S.put(sl, (sd_bro < 0) & (sd_tr >= 0), -1000.0, None)


# ----------------------------------------------------------------------------------------------
# blood: vessels outside the heart, the heart, then the aorta on top


def _paint_vessels(S: Scene, T: _Tissue, A: _Anatomy, vessels: _Vessels, sd_cav: np.ndarray) -> None:
    """Pulmonary arteries (right-heart blood), SVC (undiluted contrast) and arch branches; unlabelled."""
    vsl, sd = vessels.block, vessels.sd
    if vsl is None:
        return
    S.put(vsl, (sd["pa"] < 0) & (sd_cav[vsl] < 0), T.blood_r + 10.0 * S.tex[vsl])
    S.put(vsl, (sd["svc"] < 0) & (sd_cav[vsl] < 0), T.svc_hu)
    S.put(vsl, sd["br"] < 0, T.aorta_blood(A) + 10.0 * S.tex[vsl])


def _paint_heart(
    S: Scene, T: _Tissue, H: _Heart, vessels: _Vessels, sd_cav: np.ndarray, labels: dict[str, int], chambers: bool
) -> None:
    """Pericardial fat, myocardium (label heart), and blood pools inside each chamber's wall; with
    ``chambers`` each chamber gets its own label (wall included)."""
    hsl = H.block
    if hsl is None:
        return
    sd_h = H.sd[hsl]
    in_cav = sd_cav[hsl] < -1.0
    S.put(hsl, (sd_h >= 0) & (sd_h < 4.0) & in_cav & (vessels.ao_full[hsl] > 0), T.fat + 20.0)  # pericardial fat
    heart = (sd_h < 0) & in_cav
    S.put(hsl, heart, T.myo + 6.0 * S.tex[hsl], labels.get("heart", 0))
    walls = {"heart_lv": 9.0, "heart_rv": 4.0, "heart_la": 3.0, "heart_ra": 3.0}
    blood = {"heart_lv": T.blood_l, "heart_rv": T.blood_r, "heart_la": T.blood_l, "heart_ra": T.blood_r}
    for name, sd_p in _chambers(S.sub(hsl), H, sd_h).items():
        if chambers:
            S.put(hsl, heart & (sd_p < 0), None, labels[name])
        S.put(hsl, heart & (sd_p < -walls[name]), blood[name] + 10.0 * S.tex[hsl], None)


def _chambers(hq: Coords, H: _Heart, sd_h: np.ndarray) -> dict[str, np.ndarray]:
    """Signed distances of the four chambers: the atrioventricular plane (across the long axis)
    splits atria from ventricles; the LV is an inner ellipsoid posterior-left of the RV; a plane
    along the axis splits left from right atrium."""
    c, u, v, r = H.c, H.u, H.v, H.r
    d = [hq[i] - np.float32(c[i]) for i in range(3)]
    la = d[0] * np.float32(u[0]) + d[1] * np.float32(u[1]) + d[2] * np.float32(u[2])
    lb = d[0] * np.float32(v[0]) + d[1] * np.float32(v[1]) + d[2] * np.float32(v[2])
    a_av = -0.25 * r[0]
    sd_lve = sd_ellipsoid(
        hq, c + (0.15 * r[0]) * u - (0.22 * r[1]) * v, (0.8 * r[0], 0.62 * r[1], 0.75 * r[2]), H.frame
    )
    b_split = -0.1 * r[1]
    b_lv = np.float32(-0.22 * r[1])  # the LV's own axis: posterior-left of it is all LV (wall)
    sd_v, sd_a = np.float32(a_av) - la, la - np.float32(a_av)
    sd_rv_side = np.maximum(-sd_lve, b_lv - lb)
    return {
        "heart_lv": np.maximum.reduce([sd_h, sd_v, -sd_rv_side]),
        "heart_rv": np.maximum.reduce([sd_h, sd_v, sd_rv_side]),
        "heart_la": np.maximum.reduce([sd_h, sd_a, lb - np.float32(b_split)]),
        "heart_ra": np.maximum.reduce([sd_h, sd_a, np.float32(b_split) - lb]),
    }


def _paint_aorta(
    S: Scene, T: _Tissue, A: _Anatomy, vessels: _Vessels, sd_cav: np.ndarray, labels: dict[str, int]
) -> None:
    """The aorta (labelled) with a thin wall, painted last so it cuts through the heart's base."""
    vsl = vessels.block
    if vsl is None:
        return
    sd_ao = vessels.sd["ao"]
    ao_mask = (sd_ao < 0) & (sd_cav[vsl] < 0)
    S.put(vsl, ao_mask, T.aorta_blood(A) + 10.0 * S.tex[vsl], labels["aorta"])
    S.put(vsl, ao_mask & (sd_ao > -1.5), 70.0)  # vessel wall


# ----------------------------------------------------------------------------------------------
# thorax-varied: a per-case acquisition (contrast phase, tube voltage, dose, kernel)
#
# Every range below was fixed from the cited figures before any model was trained on this kind.
# Levels are "at 120 kVp" (the reference of shift.TubeVoltage); the drawn tube voltage then maps
# everything above 100 HU. Where no published frequency exists (how often each phase, voltage or
# kernel occurs in a cohort) the weights are a stated design choice, not data.

#: Contrast phases and their weights (design choice: equal thirds, a cohort that mixes unenhanced
#: planning CTs, routine contrast-enhanced chest CTs and CT angiograms, as a multi-site heart
#: dataset does; with 1-12 training cases a model often meets a phase it never saw).
PHASES: tuple[tuple[str, float], ...] = (("non-contrast", 1 / 3), ("venous", 1 / 3), ("arterial", 1 / 3))
#: Tube voltages (kVp) and their weights (design choice: 120 kVp the standard adult setting; 100
#: and 80 kVp used for contrast studies and slim patients, 140 kVp for large ones: Yu et al.,
#: RadioGraphics 2011;31:835). The 80, 100 and 140 kVp levels are shift.VARIATION_SUITE's.
VOLTAGES: tuple[tuple[int, float], ...] = ((80, 0.125), (100, 0.25), (120, 0.5), (140, 0.125))
#: Reconstruction kernels and their weights (design choice); ``smooth`` and ``sharp`` are
#: shift.VARIATION_SUITE's :class:`~globalmask.shift.Kernel` levels, ``standard`` its reference.
KERNELS: tuple[tuple[str, float], ...] = (("smooth", 0.25), ("standard", 0.5), ("sharp", 0.25))
#: Dose fractions of the reference protocol, drawn log-uniformly: from the routine dose down to the
#: quarter dose of the AAPM Low Dose CT Grand Challenge (McCollough et al., Med Phys 2017;44:e339).
DOSE_RANGE = (0.25, 1.0)
#: Water CT-number error of a calibrated scanner, HU (drawn uniformly): the ACR CT accreditation
#: phantom test accepts water within 0 +- 7 HU (McCollough et al., Med Phys 2004;31:2423).
CALIBRATION_HU = 5.0
#: Unenhanced blood, HU: ~40-50 HU in adults with a normal haematocrit, lower in anaemia (blood
#: attenuation follows haemoglobin: Di Giandomenico et al., Radiol Med 1993;85:786; the
#: interventricular septum sign of anaemia, Foster et al., Can Assoc Radiol J 2003;54:26).
BLOOD_UNENHANCED_HU = (35.0, 50.0)
#: Unenhanced myocardium, HU: isodense with normal blood (the septum shows against the cavity only
#: in anaemia: Foster et al. 2003).
MYOCARDIUM_UNENHANCED_HU = (40.0, 50.0)
#: Left-heart and aortic blood at 120 kVp in the two enhanced phases, HU: ~150-200 HU in a
#: portal-venous (60-70 s) phase, 250-400 HU in CT angiography (Bae, Radiology 2010;256:32;
#: across institutions the portal-phase aorta spans ~100-360 HU: Herts et al., AJR 1995;164:327).
BLOOD_LEFT_HU = {"venous": (120.0, 200.0), "arterial": (250.0, 400.0)}
#: Right heart and pulmonary arteries in an arterial phase, HU: a bolus timed for the aorta leaves
#: the right heart anywhere from washed out by the saline chaser to still dense (the ``thorax``
#: kind's range); in a venous phase it is the left heart's level within 10%.
BLOOD_RIGHT_ARTERIAL_HU = (150.0, 350.0)
#: Superior vena cava in an arterial phase, HU: inflowing, barely diluted contrast (300-370 mg I/mL
#: at ~25 HU per mg I/mL undiluted) reaches several hundred to over 1000 HU; the streaks it causes
#: are not modelled.
SVC_ARTERIAL_HU = (300.0, 1000.0)
#: Myocardial enhancement as a fraction of the blood's: near equilibrium (venous phase) it tends to
#: ECV / (1 - haematocrit) ~ 0.27 / 0.58 ~ 0.45 (normal myocardial ECV ~0.25-0.28: Cundari et al.,
#: Insights Imaging 2023;14:156); at first pass (arterial) normal myocardium is ~80-105 HU against a
#: 300-400 HU blood pool (Ko et al., Korean J Radiol 2019;20:333), a fraction of ~0.12-0.22.
MYOCARDIUM_FRACTION = {"venous": (0.30, 0.45), "arterial": (0.12, 0.22)}
#: Liver enhancement, HU: 28-50 HU at 45-60 s after injection (Herts et al., AJR 1995;164:327);
#: little in an arterial phase (the hepatic artery brings a quarter of the liver's blood: Bae 2010).
LIVER_ENHANCEMENT_HU = {"venous": (30.0, 50.0), "arterial": (5.0, 20.0)}
#: Unenhanced liver, HU (the ``thorax`` kind's level; normal liver 55-65 HU).
LIVER_HU = 58.0
#: Lung vessels are sub-voxel at the phantom's grid (~6 mm): they take half the right-heart
#: blood's enhancement (design choice; 30 HU unenhanced, as in the ``thorax`` kind).
LUNG_VESSEL_HU, LUNG_VESSEL_FRACTION = 30.0, 0.5

_VOLTAGE_LEVELS: dict[int, TubeVoltage] = {
    int(v.level.removesuffix("kVp")): v for v in VARIATION_SUITE if isinstance(v, TubeVoltage)
}
_KERNEL_LEVELS: dict[str, Kernel] = {v.level: v for v in VARIATION_SUITE if isinstance(v, Kernel)}
_DOSE = Dose("reference")  # its reference noise (12 HU at shift.REFERENCE_VOXEL_MM) and NPS peak
#: Draws per acquisition: a fixed number, so one phase's levels never shift another draw.
_N_DRAWS = 14


def acquisition_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of case ``index``'s acquisition, apart from the subject's stream.

    The subject's stays the ``thorax`` kind's (``[seed, index, 2]``), so the subject does not
    depend on it.

    Parameters
    ----------
    seed : int
        The cohort's seed.
    index : int
        The case's index.

    Returns
    -------
    numpy.random.Generator
        The acquisition's generator.
    """
    return np.random.default_rng([seed, index, 2, 1])


def _pick(u: float, table: tuple[tuple[Any, float], ...]) -> Any:
    """The entry of ``table`` (value, weight) that the uniform ``u`` falls in."""
    edge = 0.0
    for value, weight in table:
        edge += weight
        if u < edge:
            return value
    return table[-1][0]


def _between(u: float, lo_hi: tuple[float, float]) -> float:
    return float(lo_hi[0] + u * (lo_hi[1] - lo_hi[0]))


@dataclass(frozen=True)
class Acquisition:
    """How one ``thorax-varied`` case was scanned.

    Contrast phase, blood and organ levels (HU at 120 kVp), tube voltage, dose, kernel and
    calibration offset. The ranges and their sources are the module constants above.

    Attributes
    ----------
    phase : str
        Contrast phase (``non-contrast``, ``arterial``, ``venous``).
    blood_unenhanced : float
        Unenhanced blood (HU).
    blood_l : float
        Left-heart and aortic blood (HU).
    blood_r : float
        Right-heart blood (HU).
    svc_hu : float
        Superior vena cava (HU).
    myo : float
        Myocardium (HU).
    liver : float
        Liver (HU).
    lung_vessel : float
        Lung vessels (HU).
    kvp : int
        Tube voltage (kVp).
    dose_fraction : float
        Dose as a fraction of the reference.
    kernel : str
        Reconstruction kernel (``standard``, ``smooth``, ``sharp``).
    offset_hu : float
        Calibration offset (HU).
    """

    phase: str
    blood_unenhanced: float
    blood_l: float
    blood_r: float
    svc_hu: float
    myo: float
    liver: float
    lung_vessel: float
    kvp: int
    dose_fraction: float
    kernel: str
    offset_hu: float

    @property
    def voltage(self) -> TubeVoltage | None:
        """The tube-voltage change from 120 kVp (None at 120 kVp).

        Returns
        -------
        TubeVoltage or None
            The suite's level for :attr:`kvp`.
        """
        return _VOLTAGE_LEVELS.get(self.kvp)

    @property
    def kernel_change(self) -> Kernel | None:
        """The kernel change from the standard kernel (None for ``standard``).

        Returns
        -------
        Kernel or None
            The suite's level for :attr:`kernel`.
        """
        return _KERNEL_LEVELS.get(self.kernel)

    def at_kvp(self, hu: float) -> float:
        """A 120 kVp level ``hu`` as this acquisition's voltage shows it (before noise and offset).

        Parameters
        ----------
        hu : float
            Level at 120 kVp (HU).

        Returns
        -------
        float
            Level at :attr:`kvp` (HU).
        """
        v = self.voltage
        if v is None or hu <= v.soft_max_hu:
            return float(hu)
        return float(v.soft_max_hu + (hu - v.soft_max_hu) * float(v.ratio(np.array([hu], np.float32))[0]))

    def tissue(self, T: _Tissue) -> _Tissue:
        """The subject's levels with this acquisition's contrast phase (blood, myocardium, liver, lung vessels).

        Parameters
        ----------
        T : _Tissue
            The subject's drawn levels.

        Returns
        -------
        _Tissue
            A copy with the phase's levels.
        """
        return replace(
            T, blood_l=self.blood_l, blood_r=self.blood_r, svc_hu=self.svc_hu, myo=self.myo,
            liver=self.liver, lung_vessel=self.lung_vessel, ao_scaled=False,
        )

    @property
    def reference_noise_hu(self) -> float:
        """Noise std (HU) of this scan at its native voxel (shift.REFERENCE_VOXEL_MM) and kernel.

        shift.Dose's reference noise over sqrt(dose fraction) (noise goes as dose^-1/2), with the
        sharp kernel's added noise in quadrature (its smoothing or boost of the quantum noise is
        left out here; :meth:`noise_hu` includes it).

        Returns
        -------
        float
            Noise standard deviation (HU).
        """
        k = self.kernel_change
        added = k.added_noise_hu if k is not None else 0.0
        return math.hypot(_DOSE.reference_noise_hu / math.sqrt(self.dose_fraction), added)

    def noise_hu(self) -> float:
        """Noise std (HU) on the phantom's grid.

        The native scan's noise (dose and kernel, with shift.ct_noise's texture) as trilinear
        resampling leaves it (see :func:`trilinear_keep`).

        Returns
        -------
        float
            Noise standard deviation (HU).
        """
        k = self.kernel_change
        sigma_dose = _DOSE.reference_noise_hu / math.sqrt(self.dose_fraction)
        var = sigma_dose**2 * trilinear_keep(self.kernel if k is not None else "standard", _DOSE.nps_peak_per_mm)
        if k is not None and k.added_noise_hu > 0:
            var += k.added_noise_hu**2 * trilinear_keep("standard", k.nps_peak_per_mm)
        return math.sqrt(var)

    def scan(self, hu: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The scanner for ``hu`` (the painted 120 kVp picture).

        Tube voltage (shift.TubeVoltage), kernel sharpness (shift.Kernel's transfer function, in mm),
        noise (:meth:`noise_hu`), calibration offset, clip to the 12-bit scale, int16.

        Parameters
        ----------
        hu : numpy.ndarray
            The painted picture (HU at 120 kVp).
        affine : numpy.ndarray
            4x4 voxel-to-RAS affine (mm) of the grid.
        rng : numpy.random.Generator
            Source of the noise (the acquisition's stream, after its draws).

        Returns
        -------
        numpy.ndarray
            The scanned image (int16 HU).
        """
        img = np.asarray(hu, dtype=np.float32)
        if self.voltage is not None:
            img = self.voltage.apply(Volume(img, affine)).array
        k = self.kernel_change
        if k is not None:
            img = inplane_filter(img, affine, k.transfer)
        else:
            img = img.copy()
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise_hu())
        img += np.float32(self.offset_hu)
        np.clip(img, -1024, 3071, out=img)
        return np.rint(img).astype(np.int16)

    def to_dict(self) -> dict[str, Any]:
        """For dataset.json: the draws (HU to 0.1, fractions to 3 decimals).

        Also the blood pool as the image shows it before noise (``blood_lv_image_hu``).

        Returns
        -------
        dict
            JSON-ready description of the acquisition.
        """
        return {
            "phase": self.phase,
            "kvp": self.kvp,
            "kernel": self.kernel,
            "dose_fraction": round(self.dose_fraction, 3),
            "reference_noise_hu": round(self.reference_noise_hu, 1),
            "offset_hu": round(self.offset_hu, 1),
            "blood_lv_hu": round(self.blood_l, 1),
            "blood_rv_hu": round(self.blood_r, 1),
            "svc_hu": round(self.svc_hu, 1),
            "myocardium_hu": round(self.myo, 1),
            "liver_hu": round(self.liver, 1),
            "blood_lv_image_hu": round(self.at_kvp(self.blood_l) + self.offset_hu, 1),
        }


def draw_acquisition(rng: np.random.Generator) -> Acquisition:
    """One case's acquisition from ``rng`` (:func:`acquisition_stream`).

    Always :data:`_N_DRAWS` uniforms, each with one meaning whatever the phase (u[12:] spare, for
    later draws that must not move these); the image noise is drawn from ``rng`` after them
    (:meth:`Acquisition.scan`).

    Parameters
    ----------
    rng : numpy.random.Generator
        The acquisition's stream.

    Returns
    -------
    Acquisition
        The drawn acquisition.
    """
    u = [float(x) for x in rng.random(_N_DRAWS)]
    phase = _pick(u[0], PHASES)
    b0 = _between(u[1], BLOOD_UNENHANCED_HU)
    myo0 = _between(u[2], MYOCARDIUM_UNENHANCED_HU)
    if phase == "non-contrast":
        blood_l = blood_r = svc = b0
        myo, liver = myo0, LIVER_HU
    else:
        blood_l = _between(u[3], BLOOD_LEFT_HU[phase])
        if phase == "arterial":
            blood_r = _between(u[4], BLOOD_RIGHT_ARTERIAL_HU)
            svc = _between(u[5], SVC_ARTERIAL_HU)
        else:
            blood_r = blood_l * _between(u[4], (0.9, 1.1))
            svc = blood_r
        myo = myo0 + _between(u[6], MYOCARDIUM_FRACTION[phase]) * (blood_l - b0)
        liver = LIVER_HU + _between(u[7], LIVER_ENHANCEMENT_HU[phase])
    lung_vessel = LUNG_VESSEL_HU + LUNG_VESSEL_FRACTION * (blood_r - b0)
    lo, hi = DOSE_RANGE
    return Acquisition(
        phase=phase,
        blood_unenhanced=b0,
        blood_l=blood_l,
        blood_r=blood_r,
        svc_hu=svc,
        myo=myo,
        liver=liver,
        lung_vessel=lung_vessel,
        kvp=_pick(u[8], VOLTAGES),
        dose_fraction=float(lo * (hi / lo) ** u[9]),
        kernel=_pick(u[10], KERNELS),
        offset_hu=(2.0 * u[11] - 1.0) * CALIBRATION_HU,
    )


@cache
def trilinear_keep(kernel: str, nps_peak_per_mm: float) -> float:
    """Fraction of the noise variance of a native scan that trilinear resampling keeps.

    The phantom's grid (~6 mm at 64^3) stands for a native scan (shift.REFERENCE_VOXEL_MM) brought
    onto it as globalmask brings every CT onto its grid: trilinear interpolation, no anti-aliasing
    (preprocess.resize). Each grid value is then a weighted sum of 2 x 2 native pixels and of 2
    slices, and keeps sum_ij w_i w_j C(x_i - x_j) of the native variance, C the noise's
    autocorrelation. Averaged over the sample's position (uniform), the weights give
    (4 + 2 C(1,0) + 2 C(0,1) + C(1,1)) / 9 in-plane, with C from shift.ct_noise's power spectrum
    f exp(-f^2 / 2p^2) times the kernel's transfer squared, and 2/3 across independent slices
    and the kernel's own change of the variance (a smooth kernel lowers it, a sharp one raises it).
    Std kept: 0.58 (standard kernel), 0.38 (smooth), 0.91 (sharp), 0.51 for the sharp kernel's
    added noise (p = 0.5 /mm); resampling shift.ct_noise itself from 1 x 1 x 2.5 mm to ~6 mm grids
    with preprocess.resize agrees within 0.003 (at integer spacing ratios the sample positions
    repeat and the kept fraction differs). Grid samples are several native pixels apart, so the
    noise on the grid is drawn white. An area-averaging resampler would keep far less
    (shift.noise_on_grid); this is what the study's own pipeline does to real CT.

    Parameters
    ----------
    kernel : str
        Reconstruction kernel (``standard``, ``smooth``, ``sharp``).
    nps_peak_per_mm : float
        Peak of the noise power spectrum (cycles/mm).

    Returns
    -------
    float
        The fraction of the variance kept.
    """
    n = 256
    px = REFERENCE_VOXEL_MM[0]
    fa = np.fft.fftfreq(n, d=px)[:, None]
    fb = np.fft.rfftfreq(n, d=px)[None, :]
    f = np.sqrt(fa**2 + fb**2)
    base = f * np.exp(-(f**2) / (2.0 * nps_peak_per_mm**2))
    k = _KERNEL_LEVELS.get(kernel)
    nps = base if k is None else base * np.asarray(k.transfer(f)) ** 2
    acf = np.fft.irfft2(nps, s=(n, n))
    r = acf / acf[0, 0]
    inplane = (4.0 + 2.0 * r[1, 0] + 2.0 * r[0, 1] + r[1, 1]) / 9.0
    # the kernel's change of the native variance itself (a smoother kernel lowers it, a sharper one raises it)
    gain = acf[0, 0] / np.fft.irfft2(base, s=(n, n))[0, 0]
    return float(gain * inplane * 2.0 / 3.0)
