"""End to end through the CLI: phantom or real data -> train -> predict -> evaluate, geometry kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from globalmask.cli import main
from globalmask.dataset import load_dataset
from globalmask.infer import Predictor
from globalmask.io import read_volume
from globalmask.training import DataConfig, TrainConfig, train

from ..conftest import OPENKBP, SMALL_NET, needs_openkbp


@pytest.mark.slow
def test_cli_train_predict_evaluate(phantom_ds, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(phantom_ds.root), "--mode", "gbm", "--train-cases", "2", "--seed", "0", "--steps", "4",
                 "--val-every", "2", "--channels", "8", "16", "32", "--res-units", "1", "--out", str(run),
                 "--device", "cpu"]) == 0
    test_ids = phantom_ds.load_split().test
    inputs = tmp_path / "in"
    inputs.mkdir()
    for cid in test_ids:
        shutil.copy(phantom_ds.cases[cid].image, inputs / phantom_ds.cases[cid].image.name)
    assert main(["predict", str(run / "model.pt"), str(inputs), "--out", str(tmp_path / "pred")]) == 0
    # (hidden: globalmask's output marker)
    preds = sorted(p.name for p in (tmp_path / "pred").iterdir() if not p.name.startswith("."))
    assert preds == sorted(f"{c}.nii.gz" for c in test_ids)  # nnU-Net naming: channel tag dropped
    labels = tmp_path / "labels"
    labels.mkdir()
    for cid in test_ids:
        shutil.copy(phantom_ds.cases[cid].label, labels / f"{cid}.nii.gz")
    shutil.copy(phantom_ds.root / "dataset.json", labels / "dataset.json")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pred"), str(labels), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "brainstem" in out and (tmp_path / "ev" / "metrics.csv").exists()


@needs_openkbp
@pytest.mark.slow
def test_openkbp_train_and_predict_one_case_keeps_geometry(tmp_path):
    """A tiny model on 2 real cases at coarse spacing; prediction on a test case has its geometry."""
    ds = load_dataset(OPENKBP)
    cfg = TrainConfig(mode="ct+gbm", train_cases=2, steps=3, val_every=3, net=SMALL_NET, max_patch_voxels=48**3)
    res = train(
        ds,
        tmp_path / "run",
        cfg,
        DataConfig(spacing=(8.0, 8.0, 8.0), split_file=_small_split(ds, tmp_path)),
        progress=False,
        device="cpu",
    )
    case = ds.cases[ds.load_split().test[0]]
    ct = read_volume(case.image)
    Predictor(res.model_path, device="cpu").predict_files([case.image], tmp_path / "pred", progress=False)
    pred = read_volume(tmp_path / "pred" / f"{case.id}.nii.gz")
    assert pred.shape == ct.shape == (128, 128, 128)
    np.testing.assert_allclose(pred.affine, ct.affine, atol=1e-5)
    assert pred.array.dtype == np.uint8 and pred.array.max() <= 5


def _small_split(ds, tmp_path):
    """The official split with a 2-case validation list, to keep this test fast."""
    split = ds.load_split()
    path = tmp_path / "splits.json"
    path.write_text(
        json.dumps({"train": list(split.train), "validation": list(split.validation[:2]), "test": list(split.test)})
    )
    return path
