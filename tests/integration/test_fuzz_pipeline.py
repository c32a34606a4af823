"""Property-based: random volumes, affines and label maps through io -> masks -> metrics.

Each property has an independent answer: what was written is what is read (voxels exactly,
affine within the one geometry tolerance), a threshold GBM is exactly ``array > level`` on the
same grid, a label map scored against itself gives Dice 1 and the volume from the determinant,
and anything malformed ends in a GlobalmaskError, never in a silently wrong number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from globalmask.dataset import parse_labels
from globalmask.errors import DatasetError, GeometryError, GlobalmaskError
from globalmask.io import GEOMETRY_ATOL_MM, Volume, read_volume, same_geometry, write_volume
from globalmask.masks import make_gbm
from globalmask.metrics import evaluate_volumes, structure_metrics

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

shapes = st.tuples(*[st.integers(2, 7) for _ in range(3)])
dtypes = st.sampled_from([np.int16, np.int32, np.uint8, np.float32, np.float64])
suffixes = st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"])


@st.composite
def affines(draw) -> np.ndarray:
    """Rotated (any axis order and sign), anisotropic, translated voxel-to-world matrices."""
    angles = [draw(st.floats(-math.pi, math.pi)) for _ in range(3)]
    spacing = [draw(st.floats(0.3, 5.0)) for _ in range(3)]
    origin = [draw(st.floats(-400.0, 400.0)) for _ in range(3)]
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


@st.composite
def ct_volumes(draw) -> np.ndarray:
    """CT-like arrays in HU with some air (the HU sanity check must pass)."""
    shape = draw(shapes)
    dtype = draw(st.sampled_from([np.int16, np.int32, np.float32]))
    a = draw(hnp.arrays(dtype, shape, elements=st.integers(-1024, 3000)))
    a.flat[0], a.flat[-1] = -1000, 1000
    return a


@st.composite
def label_maps(draw) -> tuple[np.ndarray, dict[str, int]]:
    values = draw(st.lists(st.integers(1, 255), min_size=1, max_size=4, unique=True))
    labels = {"background": 0, **{f"s{v}": v for v in values}}
    shape = draw(shapes)
    arr = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from([0, *values])))
    return arr, labels


@FUZZ
@given(shape=shapes, dtype=dtypes, aff=affines(), suffix=suffixes, data=st.data())
def test_written_volumes_read_back_exactly(tmp_path_factory, shape, dtype, aff, suffix, data):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (max(info.min, -3000), min(info.max, 3000)) if info else (-3000, 3000)
    arr = data.draw(hnp.arrays(dtype, shape, elements=st.integers(lo, hi)))
    path = tmp_path_factory.mktemp("v") / f"case{suffix}"
    write_volume(Volume(arr, aff), path)
    back = read_volume(path)
    assert back.shape == tuple(shape)
    np.testing.assert_array_equal(np.asarray(back.array), arr)
    assert same_geometry(back, Volume(arr, aff)), np.abs(back.affine - aff).max()


@FUZZ
@given(
    ct=ct_volumes(),
    aff=affines(),
    level=st.floats(-900.0, 2500.0),
    recipe=st.sampled_from(["threshold", "bone", "body"]),
)
def test_gbm_keeps_the_grid_and_thresholds_exactly(ct, aff, level, recipe):
    vol = Volume(ct, aff)
    gbm = make_gbm(vol, f"{recipe}:level={level}")
    assert gbm.shape == vol.shape and np.array_equal(gbm.affine, vol.affine)
    assert gbm.array.dtype == np.uint8 and set(np.unique(gbm.array)) <= {0, 1}
    above = ct > level
    if recipe != "body":
        np.testing.assert_array_equal(gbm.array.astype(bool), above)
    else:  # the largest component of the thresholded volume, holes filled: empty iff nothing is above
        assert gbm.array.any() == above.any()
        assert (gbm.array.astype(bool) & above).sum() >= min(1, above.sum())


@FUZZ
@given(pair=label_maps(), aff=affines())
def test_a_label_map_scored_against_itself(pair, aff):
    arr, labels = pair
    rows = {r["structure"]: r for r in structure_metrics(arr, arr, aff, labels)}
    voxel_ml = abs(np.linalg.det(aff[:3, :3])) / 1000.0
    for name, value in labels.items():
        if value == 0:
            continue
        n = int((arr == value).sum())
        r = rows[name]
        if n:
            assert r["status"] == "ok" and r["dice"] == 1.0 and r["com_mm"] == pytest.approx(0.0, abs=1e-9)
            assert r["hd95_mm"] == 0.0 and r["ref_ml"] == pytest.approx(n * voxel_ml)
        else:
            assert r["status"] == "absent" and math.isnan(r["dice"])


@FUZZ
@given(pair=label_maps(), aff=affines(), extra=st.integers(1, 255), shift=st.floats(0.0, 3.0), axis=st.integers(0, 2))
def test_evaluation_refuses_undeclared_values_and_other_grids(pair, aff, extra, shift, axis):
    arr, labels = pair
    ref = Volume(arr, aff)
    pred = arr.copy()
    if extra not in labels.values():
        pred.flat[0] = extra  # a value neither the label map nor the reference knows
        with pytest.raises(DatasetError, match=str(extra)):
            evaluate_volumes(Volume(pred, aff), ref, labels, "c")
    moved = aff.copy()
    moved[axis, 3] += shift
    if shift > GEOMETRY_ATOL_MM:
        with pytest.raises(GeometryError, match="tolerance"):
            evaluate_volumes(Volume(arr, moved), ref, labels, "c")
    else:
        assert all(r["status"] in ("ok", "absent") for r in evaluate_volumes(Volume(arr, moved), ref, labels, "c"))


@FUZZ
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=6),
        st.one_of(st.integers(-300, 300), st.booleans(), st.text(max_size=3), st.floats()),
        max_size=6,
    )
)
def test_label_maps_are_valid_or_refused(raw):
    try:
        labels = parse_labels(raw, __import__("pathlib").Path("dataset.json"))
    except GlobalmaskError as exc:
        assert "dataset.json" in str(exc)
        return
    values = list(labels.values())
    assert 0 in values and len(set(values)) == len(values) and all(isinstance(v, int) and 0 <= v <= 255 for v in values)


# ----------------------------------------------------------------------------------------------
# DICOM series with random faults and random contour sets: no slice and no contour lost or moved

NX, NY, DZ = 10, 8, 2.0


@st.composite
def series_faults(draw) -> tuple[int, str, int, float]:
    """(slices, fault, where, amount): a missing or duplicated slice, uneven spacing from slice
    ``where`` on, or a gantry tilt shifting each slice by ``amount`` whole pixels."""
    n = draw(st.integers(5, 10))
    fault = draw(st.sampled_from(["none", "missing", "duplicate", "uneven", "tilt"]))
    where = draw(st.integers(1, n - 2))
    amount = 0.0
    if fault == "uneven":
        amount = draw(st.one_of(st.floats(-1.5, -0.1), st.floats(0.1, 3.0)))  # gap of 0.5..5 mm in a 2 mm series
    if fault == "tilt":
        amount = float(draw(st.sampled_from([-1, 1, 2])))
    return n, fault, where, amount


@FUZZ
@given(fault=series_faults(), data=st.data())
def test_random_series_faults_and_contours_lose_or_move_nothing(tmp_path_factory, fault, data):
    pytest.importorskip("pydicom")
    from globalmask.dicom_rt import rasterise_roi, write_ct_series

    n, kind, where, amount = fault
    positions = np.array([[0.0, 0.0, k * DZ] for k in range(n)])  # LPS; array axes are the LPS axes
    if kind == "uneven":
        positions[where:, 2] += amount
    if kind == "tilt":
        positions[:, 1] += np.arange(n) * amount
    i, j = np.meshgrid(np.arange(NX), np.arange(NY), indexing="ij")
    # every voxel of every slice distinct
    pixels = np.stack([-1000 + 40 * k + i + NX * j for k in range(n)], axis=-1).astype(np.int16)
    folder = tmp_path_factory.mktemp("series")
    files = write_ct_series(Volume(pixels, np.diag([-1.0, -1.0, DZ, 1.0])), folder, positions=positions)
    kept = list(range(n))
    if kind == "missing":
        files[where].unlink()
        kept.remove(where)
    if kind == "duplicate":
        (folder / "copy.dcm").write_bytes(files[where].read_bytes())
    vol = read_volume(folder)

    # no slice lost: the grid runs from the first slice to the last, and each slice's pixels are on it
    inv = np.linalg.inv(vol.affine)
    def index_of(lps):  # vol index of an LPS point
        return inv[:3, :3] @ (np.array([-1.0, -1.0, 1.0]) * lps) + inv[:3, 3]
    z_src = positions[kept, 2]
    k_src = np.array([index_of(positions[s])[2] for s in kept])
    assert k_src[0] == pytest.approx(0.0, abs=1e-3) and k_src[-1] == pytest.approx(vol.shape[2] - 1, abs=1e-3)
    for s, kf in zip(kept, k_src):
        a, b, _ = index_of(positions[s])
        if abs(kf - round(kf)) < 1e-3 and abs(a - round(a)) < 1e-3 and abs(b - round(b)) < 1e-3:
            a, b, k = (round(v) for v in (a, b, kf))
            np.testing.assert_allclose(vol.array[a : a + NX, b : b + NY, k], pixels[:, :, s], atol=0.5)
        else:
            assert kind == "uneven", (kind, kf)  # only an uneven series has slices between its planes

    # random contours: one rectangle on some slices, plus contours beyond either end of the series
    rects = {}
    for s in kept:
        if data.draw(st.booleans()):
            i0, j0 = data.draw(st.integers(0, NX - 1)), data.draw(st.integers(0, NY - 1))
            rects[s] = (i0, data.draw(st.integers(i0, NX - 1)), j0, data.draw(st.integers(j0, NY - 1)))
    def square(s, i0, i1, j0, j1, z):
        x0, y0 = positions[s, 0], positions[s, 1]
        return np.array(
            [
                [x0 + i0 - 0.4, y0 + j0 - 0.4, z],
                [x0 + i1 + 0.4, y0 + j0 - 0.4, z],
                [x0 + i1 + 0.4, y0 + j1 + 0.4, z],
                [x0 + i0 - 0.4, y0 + j1 + 0.4, z],
            ]
        )
    contours = [square(s, *r, positions[s, 2]) for s, r in rects.items()]
    beyond = [
        float(z) for z in data.draw(st.lists(st.one_of(st.floats(-12.0, -0.6), st.floats(0.6, 12.0)), max_size=3))
    ]
    beyond_z = [z_src[0] + z if z < 0 else z_src[-1] + z for z in beyond]
    contours += [square(kept[0], 1, 3, 1, 3, z) for z in beyond_z]
    mask, report = rasterise_roi(contours, vol)
    assert report.used == len(rects) and report.outside == 0
    assert sorted(report.off_plane_z) == pytest.approx(sorted(beyond_z))  # reported, never merged into an edge slice

    # each plane holds exactly the rectangle of its nearest slice; every rectangle is on some plane
    def drawn(s):
        plane = np.zeros(vol.shape[:2], bool)
        if s in rects:
            a, b, _ = (int(round(v)) for v in index_of(positions[s]))
            i0, i1, j0, j1 = rects[s]
            plane[a + i0 : a + i1 + 1, b + j0 : b + j1 + 1] = True
        return plane

    shown = set()
    for k in range(vol.shape[2]):
        d = np.abs(k_src - k)
        # (a plane half-way between two slices may take either)
        nearest = [kept[q] for q in np.flatnonzero(d <= d.min() + 1e-3)]
        match = [s for s in nearest if np.array_equal(mask[:, :, k], drawn(s))]
        assert match, (k, nearest)
        shown.update(s for s in match if s in rects)
    assert shown == set(rects)  # no contour lost
