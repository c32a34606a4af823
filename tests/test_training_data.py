"""training_data.py: the "percentile" CT window, nnU-Net's 0.5-99.5 percentile range of the training
cases' labelled voxels, from hand-made volumes whose labelled voxels hold known values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from globalmask.dataset import Case
from globalmask.errors import DatasetError
from globalmask.io import Volume, write_volume
from globalmask.training_data import percentile_window

from .conftest import AFF_2MM


def _case(root: Path, name: str, labelled: np.ndarray, background: float = -1000.0) -> Case:
    """A 10x10x10 CT whose first ``labelled.size`` voxels (C order) are labelled with these values."""
    ct = np.full(1000, background, dtype=np.float32)
    lab = np.zeros(1000, dtype=np.uint8)
    ct[: labelled.size] = labelled
    lab[: labelled.size] = 1
    ct[-1] = 3000.0  # unlabelled extremes must not count
    ct[-2] = -3000.0
    img, seg = root / f"{name}_0000.nii.gz", root / f"{name}.nii.gz"
    write_volume(Volume(ct.reshape(10, 10, 10), AFF_2MM), img)
    write_volume(Volume(lab.reshape(10, 10, 10), AFF_2MM), seg)
    return Case(name, img, seg)


def test_percentile_window_of_pooled_labelled_voxels(tmp_path):
    a = _case(tmp_path, "a", np.arange(0, 100, dtype=np.float32))
    b = _case(tmp_path, "b", np.arange(100, 200, dtype=np.float32))
    # pooled values 0..199: the q-th percentile (linear) is q/100 * 199
    lo, hi = percentile_window([a, b])
    assert lo == pytest.approx(0.995)
    assert hi == pytest.approx(198.005)
    assert percentile_window([b, a]) == (lo, hi)  # the order of the cases does not matter


def test_percentile_window_samples_each_case_evenly(tmp_path):
    # 100 labelled voxels sampled to 10 per case: every 10th value, 0, 10, ..., 90
    a = _case(tmp_path, "a", np.arange(100, dtype=np.float32))
    lo, hi = percentile_window([a], percentiles=(0.0, 100.0), samples_per_case=10)
    assert (lo, hi) == (0.0, 90.0)


def test_percentile_window_refuses_cases_without_labels(tmp_path):
    empty = _case(tmp_path, "e", np.zeros(0, dtype=np.float32))
    with pytest.raises(DatasetError, match="no labelled voxels"):
        percentile_window([empty])
    flat = _case(tmp_path, "f", np.full(50, 40.0, dtype=np.float32))
    with pytest.raises(DatasetError, match="one value"):
        percentile_window([flat])
    with pytest.raises(DatasetError, match="at least one"):
        percentile_window([])
