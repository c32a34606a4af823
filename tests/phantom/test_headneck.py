"""phantom/headneck.py: the head-and-neck anatomy lies where RAS+ says (superior, anterior, left/right)."""

from __future__ import annotations

import numpy as np

from globalmask.phantom import (
    HEADNECK_LABELS,
)

from .conftest import _case, _centroid_world


def test_headneck_orientation():
    for i in range(5):
        _, lab = _case("headneck", i)
        left = _centroid_world(lab, HEADNECK_LABELS["parotid_left"])
        right = _centroid_world(lab, HEADNECK_LABELS["parotid_right"])
        cord = _centroid_world(lab, HEADNECK_LABELS["spinal_cord"])
        stem = _centroid_world(lab, HEADNECK_LABELS["brainstem"])
        mandible = _centroid_world(lab, HEADNECK_LABELS["mandible"])
        assert left[0] < right[0] - 50  # patient left is nibabel's 'L': smaller x in RAS+
        assert cord[1] < mandible[1] - 40  # cord posterior to the mandible
        assert stem[2] > cord[2] + 30  # brainstem above the bulk of the cord
        assert abs(stem[0] - cord[0]) < 15  # both midline
        assert min(left[0], right[0]) < mandible[0] < max(left[0], right[0])
        # brainstem sits just on top of the cord: the cord's top slice touches the brainstem's bottom
        zc = np.argwhere(lab.array == HEADNECK_LABELS["spinal_cord"])[:, 2].max()
        zb = np.argwhere(lab.array == HEADNECK_LABELS["brainstem"])[:, 2].min()
        assert zb <= zc + 2
