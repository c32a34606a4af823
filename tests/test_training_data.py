"""training_data.py: the "percentile" CT window, nnU-Net's 0.5-99.5 percentile range of the training
cases' labelled voxels, from hand-made volumes whose labelled voxels hold known values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from globalmask.dataset import Case
from globalmask.errors import DatasetError
from globalmask.io import Volume, write_volume
from globalmask.masks import Recipe
from globalmask.preprocess import PreprocessConfig
from globalmask.training_data import PatchSampler, load_case, percentile_window, prepare_cases

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


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of training_data.py asked for


def test_percentile_window_takes_about_ten_thousand_voxels_per_case_by_default(tmp_path):
    """20,000 labelled voxels (values 0..19999): every second one is sampled, so the top sample is 19998."""
    ct = np.arange(20000, dtype=np.float32).reshape(20, 20, 50)
    img, seg = tmp_path / "big_0000.nii.gz", tmp_path / "big.nii.gz"
    write_volume(Volume(ct, AFF_2MM), img)
    write_volume(Volume(np.ones((20, 20, 50), np.uint8), AFF_2MM), seg)
    assert percentile_window([Case("big", img, seg)], percentiles=(0.0, 100.0)) == (0.0, 19998.0)


def test_percentile_window_and_load_case_refusals_name_the_file(tmp_path):
    a = _case(tmp_path, "a", np.arange(10, dtype=np.float32))
    with pytest.raises(DatasetError) as err:
        percentile_window([Case("a", a.image, None)])
    assert str(err.value) == f"{a.image}: a percentile CT window needs labelled training cases"
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[0, 0, :3] = (1, 2, 5)
    write_volume(Volume(lab, AFF_2MM), a.label)
    with pytest.raises(DatasetError) as err:
        load_case(a, {"background": 0, "liver": 1})
    assert str(err.value) == f"{a.label}: label values [2, 5] are not declared in dataset.json labels [0, 1]"
    ct, label = load_case(a, {"background": 0, "a": 1, "b": 2, "c": 5})
    assert label.array.dtype == np.uint8 and sorted(np.unique(label.array).tolist()) == [0, 1, 2, 5]


def test_prepare_cases_fills_and_reuses_the_cache(tmp_path):
    cases = [_case(tmp_path, name, np.full(300, 40.0, np.float32), background=-1000.0) for name in ("a", "b")]
    config, recipe = PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop=False), Recipe.parse("threshold:-500")
    fresh = prepare_cases(cases, recipe, config)
    cached = prepare_cases(cases, recipe, config, cache_dir=tmp_path / "cache")
    files = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert files == ["a", "b"]  # one file per case
    again = prepare_cases(cases, recipe, config, cache_dir=tmp_path / "cache")
    for f, c, g in zip(fresh, cached, again):
        assert f.id == c.id == g.id
        np.testing.assert_array_equal(c.gbm, f.gbm)
        np.testing.assert_array_equal(g.gbm, f.gbm)
        np.testing.assert_array_equal(c.label, f.label)
        np.testing.assert_allclose(c.ct, f.ct, atol=5e-4)  # float16 in the cache
        np.testing.assert_array_equal(g.ct, c.ct)
    assert fresh[0].gbm.sum() == 301  # the 300 voxels at 40 HU and the one at 3000 HU


def test_patch_sampler_centres_on_foreground_pads_small_cases_and_resumes_its_draws():
    img = np.stack([np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.ones((4, 4, 4), np.float32)])
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[3, 0, 2] = 7
    sampler = PatchSampler([img], [lab], (8, 8, 8), pad_values=[-1.0, 0.0], fg_prob=1.0,
                           rng=np.random.default_rng(0))
    x, y = sampler.sample(6)
    assert x.shape == (6, 2, 8, 8, 8) and x.dtype == np.float32 and y.shape == (6, 1, 8, 8, 8)
    for b in range(6):
        inside = np.argwhere(x[b, 1] == 1.0)  # the case's own voxels: a 4x4x4 block somewhere in the patch
        lo = inside.min(axis=0)
        assert len(inside) == 64 and np.all(inside.max(axis=0) - lo == 3)
        block = tuple(slice(int(v), int(v) + 4) for v in lo)
        np.testing.assert_array_equal(x[b, 0][block], img[0])
        np.testing.assert_array_equal(y[b, 0][block], lab)
        assert np.all(x[b, 0][x[b, 1] == 0] == -1.0) and y[b].sum() == 7  # padding: the pad values, no label
    state = sampler.state()
    first = sampler.sample(3)
    sampler.set_state(state)
    second = sampler.sample(3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_patch_sampler_centres_patches_on_the_structure_in_a_large_case():
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[30:33, 5:8, 20:23] = 1
    img = lab[None].astype(np.float32)
    sampler = PatchSampler([img], [lab], (16, 16, 16), pad_values=[0.0], fg_prob=1.0, rng=np.random.default_rng(1))
    _, y = sampler.sample(20)
    assert all(y[b].sum() > 0 for b in range(20))  # a foreground voxel +- a quarter patch: always inside
    starts = set()
    for b in range(20):
        starts.add(tuple(np.argwhere(y[b, 0]).min(axis=0)))
    assert len(starts) > 3  # the jitter moves the structure within the patch
