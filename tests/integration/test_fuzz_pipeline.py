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

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

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
@given(ct=ct_volumes(), aff=affines(), level=st.floats(-900.0, 2500.0), recipe=st.sampled_from(["threshold", "bone", "body"]))
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
@given(st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(st.integers(-300, 300), st.booleans(), st.text(max_size=3), st.floats()), max_size=6))
def test_label_maps_are_valid_or_refused(raw):
    try:
        labels = parse_labels(raw, __import__("pathlib").Path("dataset.json"))
    except GlobalmaskError as exc:
        assert "dataset.json" in str(exc)
        return
    values = list(labels.values())
    assert 0 in values and len(set(values)) == len(values) and all(isinstance(v, int) and 0 <= v <= 255 for v in values)
