"""Thorax phantom: chest wall and bones, spine, lungs, heart (optionally four chambers), great vessels.

:func:`build_thorax` draws the subject and paints the parts in a fixed order; later parts overwrite
earlier ones (the heart over the mediastinal fat, the aorta over the heart's base), so the order is
part of the anatomy. Labels: heart, lung_left, lung_right, aorta, spinal_cord; with
``chambers=True`` the heart is split into heart_lv, heart_rv, heart_la and heart_ra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """Subject HU levels (and subcutaneous fat thickness, mm); blood is contrast-enhanced."""

    fat_t: float
    soft: float
    fat: float
    lung_hu: float
    bone: float
    canc: float
    blood_l: float
    blood_r: float
    svc_hu: float


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
        """The anterior inner chest wall (y, mm), behind the sternum."""
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


def build_thorax(S: Scene, D: Draw, chambers: bool) -> None:
    """Draw one thorax subject and paint it into ``S`` (``chambers``: label the four chambers)."""
    labels = THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS
    T = _draw_tissue(D)
    A = _draw_anatomy(D)
    sd_body = _chest_wall(S, T, A)
    sd_cav, z_dia = _pleural_cavity(S, A)
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


def _pleural_cavity(S: Scene, A: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
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
    S.put(FULL, cavity & ~above, 58.0 + 5.0 * S.tex)
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
        S.put(sl, lung & vessels, 30.0 + 10.0 * S.tex[sl], None)


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
    S.put(vsl, sd["br"] < 0, T.blood_l * A.aorta_k + 10.0 * S.tex[vsl])


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
    S.put(hsl, heart, 60.0 + 6.0 * S.tex[hsl], labels.get("heart", 0))
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
    sd_lve = sd_ellipsoid(hq, c + (0.15 * r[0]) * u - (0.22 * r[1]) * v, (0.8 * r[0], 0.62 * r[1], 0.75 * r[2]), H.frame)
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


def _paint_aorta(S: Scene, T: _Tissue, A: _Anatomy, vessels: _Vessels, sd_cav: np.ndarray, labels: dict[str, int]) -> None:
    """The aorta (labelled) with a thin wall, painted last so it cuts through the heart's base."""
    vsl = vessels.block
    if vsl is None:
        return
    sd_ao = vessels.sd["ao"]
    ao_mask = (sd_ao < 0) & (sd_cav[vsl] < 0)
    S.put(vsl, ao_mask, T.blood_l * A.aorta_k + 10.0 * S.tex[vsl], labels["aorta"])
    S.put(vsl, ao_mask & (sd_ao > -1.5), 70.0)  # vessel wall
