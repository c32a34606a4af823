"""Shared by the phantom tests: label maps per kind, world centroids, volumes in mL, and a cache of generated cases."""

from __future__ import annotations

import numpy as np

from globalmask.phantom import (
    HEADNECK_LABELS,
    THORAX_CHAMBER_LABELS,
    THORAX_LABELS,
    make_phantom_case,
)

SMALL = (48, 48, 48)


VARIANTS = [("headneck", False), ("thorax", False), ("thorax", True)]


def _labels(kind: str, chambers: bool) -> dict[str, int]:
    return HEADNECK_LABELS if kind == "headneck" else (THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS)


def _centroid_world(label, value: int) -> np.ndarray:
    idx = np.argwhere(label.array == value)
    assert len(idx), f"label {value} is empty"
    return (label.affine @ np.r_[idx.mean(axis=0), 1.0])[:3]


def _volume_ml(label, value: int) -> float:
    return float((label.array == value).sum() * np.prod(label.spacing) / 1000.0)


_CACHE: dict = {}


def _case(kind, index, seed=0, shape=SMALL, chambers=False):
    key = (kind, index, seed, shape, chambers)
    if key not in _CACHE:
        _CACHE[key] = make_phantom_case(kind, index, seed, shape, chambers)
    return _CACHE[key]
