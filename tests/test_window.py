"""The "percentile" CT window: nnU-Net's 0.5-99.5 percentile range of the training cases' labels.

Known answers come from hand-made volumes whose labelled voxels hold known values; the window of a
run must come from its own training cases only (never validation or test cases).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from globalmask.checkpoint import load_model
from globalmask.cli import main
from globalmask.dataset import Case, Split, load_dataset, save_split, select_training_cases
from globalmask.errors import DatasetError, GlobalmaskError
from globalmask.io import Volume, write_volume
from globalmask.model import NetConfig
from globalmask.study.config import StudyConfig
from globalmask.train import DataConfig, TrainConfig, train
from globalmask.training_data import percentile_window

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _case(root: Path, name: str, labelled: np.ndarray, background: float = -1000.0) -> Case:
    """A 10x10x10 CT whose first ``labelled.size`` voxels (C order) are labelled with these values."""
    ct = np.full(1000, background, dtype=np.float32)
    lab = np.zeros(1000, dtype=np.uint8)
    ct[: labelled.size] = labelled
    lab[: labelled.size] = 1
    ct[-1] = 3000.0  # unlabelled extremes must not count
    ct[-2] = -3000.0
    img, seg = root / f"{name}_0000.nii.gz", root / f"{name}.nii.gz"
    write_volume(Volume(ct.reshape(10, 10, 10), AFF), img)
    write_volume(Volume(lab.reshape(10, 10, 10), AFF), seg)
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


def _dataset(root: Path) -> Path:
    """8 cases; case i has its 60 labelled voxels at 100*i .. 100*i + 59 HU."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(8):
        ct = np.full((12, 12, 12), -1000.0, dtype=np.float32)
        lab = np.zeros((12, 12, 12), dtype=np.uint8)
        lab[4:8, 3:8, 3:6] = 1  # 4 x 5 x 3 = 60 voxels
        ct[lab == 1] = 100.0 * i + np.arange(60)
        write_volume(Volume(ct, AFF), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_volume(Volume(lab, AFF), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 8, "file_ending": ".nii.gz"}),
        encoding="utf-8",
    )
    save_split(Split(train=("case_000", "case_001", "case_002", "case_003"), validation=("case_004", "case_005"), test=("case_006", "case_007")), root / "splits.json")
    return root


@pytest.mark.slow
def test_train_takes_the_window_from_its_own_training_cases(tmp_path):
    root = _dataset(tmp_path / "ds")
    ds = load_dataset(root)
    ids = select_training_cases(ds.load_split().train, 2, seed=0)
    values = np.concatenate([100.0 * int(i[-3:]) + np.arange(60) for i in ids])
    expected = tuple(np.percentile(values, [0.5, 99.5]))  # validation (400-559 HU) and test cases excluded
    cfg = TrainConfig(mode="ct", train_cases=2, seed=0, steps=2, val_every=1, batch_size=1, net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0))
    result = train(root, tmp_path / "run", cfg, DataConfig(recipe="threshold:-300", spacing=(4.0, 4.0, 4.0), window="percentile"), device="cpu", progress=False)
    spec, _ = load_model(result.model_path)
    assert spec.preprocess.window == pytest.approx(expected)
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert saved["preprocess"]["window"] == pytest.approx(list(expected))


def test_study_config_accepts_percentile_and_refuses_other_words():
    assert StudyConfig(window="percentile").window == "percentile"
    assert StudyConfig(window=[-200, 300]).window == [-200, 300]
    with pytest.raises(GlobalmaskError, match="window"):
        StudyConfig(window="nnunet")
    with pytest.raises(GlobalmaskError, match="window"):
        StudyConfig(window=[300, -200])


@pytest.mark.parametrize("argv", [["nnunet"], ["1", "2", "3"], ["300", "-200"], ["-100"], ["nan", "100"]])
def test_cli_refuses_a_bad_window(tmp_path, capsys, argv):
    root = _dataset(tmp_path / "ds")
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--window", *argv]) == 2
    err = capsys.readouterr().err
    assert "--window" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
