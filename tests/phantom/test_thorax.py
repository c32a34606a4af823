"""phantom/thorax.py: the thorax anatomy's orientation in RAS+, and the heart-chamber labelling."""

from __future__ import annotations

import numpy as np

from globalmask.phantom import (
    THORAX_CHAMBER_LABELS,
    THORAX_LABELS,
)

from .conftest import _case, _centroid_world, _volume_ml


def test_chambers_only_change_how_the_heart_is_labelled():
    ct, whole = _case("thorax", 4)
    ct_c, split = _case("thorax", 4, chambers=True)
    np.testing.assert_array_equal(ct.array, ct_c.array)
    heart = whole.array == THORAX_LABELS["heart"]
    chamber_values = [THORAX_CHAMBER_LABELS[k] for k in ("heart_lv", "heart_rv", "heart_la", "heart_ra")]
    np.testing.assert_array_equal(heart, np.isin(split.array, chamber_values))
    for name in ("lung_left", "lung_right", "aorta", "spinal_cord"):
        np.testing.assert_array_equal(whole.array == THORAX_LABELS[name], split.array == THORAX_CHAMBER_LABELS[name])


def test_thorax_orientation():
    for i in range(5):
        _, lab = _case("thorax", i)
        heart = _centroid_world(lab, THORAX_LABELS["heart"])
        cord = _centroid_world(lab, THORAX_LABELS["spinal_cord"])
        left = _centroid_world(lab, THORAX_LABELS["lung_left"])
        right = _centroid_world(lab, THORAX_LABELS["lung_right"])
        assert left[0] < cord[0] < right[0]
        assert heart[0] < cord[0]  # the heart sits on the patient's left
        assert heart[1] > cord[1] + 40  # anterior to the spine
        assert _volume_ml(lab, THORAX_LABELS["lung_left"]) < _volume_ml(lab, THORAX_LABELS["lung_right"])
    _, split = _case("thorax", 0, chambers=True)
    lv = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_lv"])
    rv = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_rv"])
    la = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_la"])
    ra = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_ra"])
    assert rv[1] > lv[1]  # right ventricle anterior
    assert lv[0] < rv[0]  # left ventricle to the patient's left
    assert la[1] < lv[1]  # left atrium posterior
    assert ra[0] > la[0]  # right atrium to the patient's right
