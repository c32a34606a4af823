"""phantom/shapes.py: the signed-distance primitives and the rotation, against distances worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from globalmask.phantom.shapes import rotation, sd_ellipse, sd_ellipsoid, smin


def test_rotation_is_rz_ry_rx_in_degrees():
    assert rotation(0, 90, 0) == pytest.approx(np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]]), abs=1e-12)
    assert rotation(90, 0, 0) @ np.array([0, 1, 0]) == pytest.approx([0, 0, 1], abs=1e-12)
    assert rotation(0, 0, 90) @ np.array([1, 0, 0]) == pytest.approx([0, 1, 0], abs=1e-12)
    r = rotation(30, 40, 50)
    assert r @ r.T == pytest.approx(np.eye(3), abs=1e-12) and np.linalg.det(r) == pytest.approx(1.0)
    assert r == pytest.approx(rotation(0, 0, 50) @ rotation(0, 40, 0) @ rotation(30, 0, 0))


def test_a_circle_s_signed_distance_is_exact():
    """Radius 10 about (1, 2): 5 mm outside, 5 mm inside, the centre at minus the radius."""
    x = np.array([16.0, 6.0, 1.0], np.float32)
    y = np.array([2.0, 2.0, 2.0], np.float32)
    assert sd_ellipse(x, y, 1, 2, 10, 10) == pytest.approx([5.0, -5.0, -10.0], abs=1e-4)


def test_an_ellipsoid_in_its_own_frame():
    """Semi-axes 5, 20, 5 along the frame's rows x, z, y: the long axis lies along z."""
    frame = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], float)
    q = (np.zeros(2, np.float32), np.array([15, 0], np.float32), np.array([0, 15], np.float32))  # (0,15,0), (0,0,15)
    d = sd_ellipsoid(q, (0, 0, 0), (5, 20, 5), frame)
    assert d == pytest.approx([10.0, -5.0], abs=1e-4)  # 10 mm beyond the short axis, 5 mm inside the long one


def test_smooth_union_is_the_minimum_far_apart_and_dips_by_a_quarter_of_k_where_equal():
    a = np.array([10.0, 0.0, 3.0], np.float32)
    b = np.array([0.0, 10.0, 3.0], np.float32)
    assert smin(a, b, 2.0) == pytest.approx([0.0, 0.0, 2.5])
