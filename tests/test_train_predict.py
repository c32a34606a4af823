"""End to end: phantom -> train -> checkpoint -> predict -> evaluate, with known-answer checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from globalmask.checkpoint import load_model
from globalmask.cli import main
from globalmask.dataset import load_dataset, make_split, save_split
from globalmask.errors import CheckpointError, OutputError
from globalmask.infer import Predictor
from globalmask.io import Volume, read_volume
from globalmask.metrics import dice
from globalmask.model import NetConfig
from globalmask.phantom import make_phantom_dataset
from globalmask.train import DataConfig, TrainConfig, train

from .conftest import OPENKBP, needs_openkbp

SMALL_NET = NetConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)
DEMO_NET = NetConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)


@pytest.fixture(scope="session")
def phantom_ds(tmp_path_factory):
    root = make_phantom_dataset(tmp_path_factory.mktemp("ph") / "phantom", kind="headneck", cases=8, seed=3, shape=(48, 48, 48))
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(5, 1, 2)), root / "splits.json")
    return load_dataset(root)


@pytest.fixture(scope="session")
def trained(phantom_ds, tmp_path_factory):
    """A small CT+GBM model trained for 250 steps on 4 phantom cases (about 35 s on 2 cores)."""
    run = tmp_path_factory.mktemp("runs") / "ctgbm"
    cfg = TrainConfig(mode="ct+gbm", train_cases=4, seed=0, steps=250, val_every=50, net=DEMO_NET)
    result = train(phantom_ds, run, cfg, progress=False)
    return result


def mean_test_dice(predictor: Predictor, ds, ids) -> float:
    scores = []
    for cid in ids:
        ct = read_volume(ds.cases[cid].image)
        ref = read_volume(ds.cases[cid].label).array
        pred = predictor.predict(ct).array
        scores += [dice(pred == v, ref == v) for v in ds.structures.values()]
    return float(np.mean(scores))


@pytest.mark.slow
def test_trained_model_clearly_beats_an_untrained_one(trained, phantom_ds, tmp_path):
    split = phantom_ds.load_split()
    trained_dice = mean_test_dice(Predictor(trained.model_path, device="cpu"), phantom_ds, split.test)
    # same architecture and checkpoint format, weights from the untrained initialisation
    spec, net = load_model(trained.model_path)
    torch.manual_seed(123)
    fresh = spec.build()
    from globalmask.checkpoint import save_model

    save_model(tmp_path / "untrained.pt", spec, fresh.state_dict())
    untrained_dice = mean_test_dice(Predictor(tmp_path / "untrained.pt", device="cpu"), phantom_ds, split.test)
    assert trained_dice > 0.3, trained_dice
    assert trained_dice > untrained_dice + 0.25, (trained_dice, untrained_dice)


@pytest.mark.slow
def test_run_folder_and_self_contained_checkpoint(trained, phantom_ds):
    run = trained.run_dir
    for name in ("config.json", "splits.json", "model.pt", "last.pt", "history.csv", "done.json"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert cfg["train_ids"] == trained.train_ids and len(trained.train_ids) == 4
    assert set(trained.train_ids) <= set(phantom_ds.load_split().train)
    spec, _ = load_model(trained.model_path)
    assert spec.mode == "ct+gbm" and spec.recipe.spec == "bone:level=250"  # the default recipe
    assert spec.labels == phantom_ds.labels
    assert spec.preprocess.spacing == tuple(cfg["preprocess"]["spacing"])
    assert spec.info["best_step"] == trained.best_step
    with pytest.raises(CheckpointError, match="input mode 'ct\\+gbm', not 'gbm'"):
        load_model(trained.model_path, expect_mode="gbm")


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_predictions(trained, phantom_ds, tmp_path):
    from globalmask.checkpoint import save_model

    spec, net = load_model(trained.model_path)
    save_model(tmp_path / "copy.pt", spec, net.state_dict())
    ct = read_volume(phantom_ds.cases[phantom_ds.load_split().test[0]].image)
    a = Predictor(trained.model_path, device="cpu").predict(ct)
    b = Predictor(tmp_path / "copy.pt", device="cpu").predict(ct)
    np.testing.assert_array_equal(a.array, b.array)


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["LPS", "PLI", "oblique"])
def test_predictions_keep_the_input_geometry_in_any_orientation(trained, phantom_ds, orientation):
    """The same scan stored in another orientation gives the same labels in world space."""
    cid = phantom_ds.load_split().test[0]
    ct = read_volume(phantom_ds.cases[cid].image)
    predictor = Predictor(trained.model_path, device="cpu")
    ras_pred = predictor.predict(ct)
    if orientation == "LPS":
        arr, flip = ct.array[::-1, ::-1, :], np.diag([-1.0, -1.0, 1.0, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = [ct.shape[0] - 1, ct.shape[1] - 1, 0]
        affine = ct.affine @ shift @ flip
    elif orientation == "PLI":
        arr = np.transpose(ct.array, (1, 0, 2))[::-1, :, ::-1]
        perm = np.zeros((4, 4))
        perm[0, 1] = perm[1, 0] = perm[2, 2] = perm[3, 3] = 1  # i<->j
        flip = np.diag([-1.0, 1.0, -1.0, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = [ct.shape[1] - 1, 0, ct.shape[2] - 1]
        affine = ct.affine @ perm @ shift @ flip
    else:  # a 5-degree rotation of the world frame: still closest to RAS, not axis-aligned
        a = np.deg2rad(5)
        rot = np.eye(4)
        rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        arr, affine = ct.array, rot @ ct.affine
    moved = Volume(np.ascontiguousarray(arr), affine)
    pred = predictor.predict(moved)
    assert pred.shape == moved.shape and np.array_equal(pred.affine, moved.affine)
    if orientation == "oblique":
        # a rotated world frame changes nothing in voxel space: identical labels
        np.testing.assert_array_equal(pred.array, ras_pred.array)
        return
    # map every voxel of the moved prediction to RAS voxel indices and compare
    idx = np.indices(moved.shape).reshape(3, -1)
    world = affine @ np.vstack([idx, np.ones(idx.shape[1])])
    ras_idx = np.round(np.linalg.solve(ct.affine, world)[:3]).astype(int)
    np.testing.assert_array_equal(pred.array.reshape(-1), ras_pred.array[tuple(ras_idx)])


@pytest.mark.slow
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(phantom_ds, tmp_path):
    cfg = TrainConfig(mode="gbm", train_cases=2, seed=1, steps=12, val_every=6, checkpoint_every=4, net=SMALL_NET)
    full = train(phantom_ds, tmp_path / "full", cfg, progress=False, device="cpu")
    part = train(phantom_ds, tmp_path / "part", cfg, progress=False, device="cpu", stop_after=5)
    assert part.steps == 5 and not (tmp_path / "part" / "done.json").exists()
    with pytest.raises(OutputError, match="--resume"):
        train(phantom_ds, tmp_path / "part", cfg, progress=False, device="cpu")
    resumed = train(phantom_ds, tmp_path / "part", cfg, progress=False, device="cpu", resume=True)
    assert resumed.steps == 12 and resumed.best_step == full.best_step
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert abs(resumed.best_val_dice - full.best_val_dice) < 1e-6


@pytest.mark.slow
def test_two_d_slice_model_trains_and_predicts(phantom_ds, tmp_path):
    cfg = TrainConfig(mode="gbm", train_cases=2, steps=6, val_every=3, net=NetConfig(spatial_dims=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1))
    res = train(phantom_ds, tmp_path / "r2d", cfg, progress=False, device="cpu")
    ct = read_volume(phantom_ds.cases[phantom_ds.load_split().test[0]].image)
    pred = Predictor(res.model_path, device="cpu").predict(ct)
    assert pred.shape == ct.shape and np.array_equal(pred.affine, ct.affine)
    assert set(np.unique(pred.array)) <= {0, *phantom_ds.structures.values()}
    spec, _ = load_model(res.model_path)
    assert spec.net.spatial_dims == 2 and len(spec.patch_size) == 2


# ----------------------------------------------------------------------------------------------
# the command line


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("masks", "train", "predict", "evaluate", "phantom", "demo", "study"):
        assert cmd in out


def test_cli_masks_writes_one_mask_per_case(phantom_ds, tmp_path, capsys):
    assert main(["masks", str(phantom_ds.root), "--recipe", "body", "--out", str(tmp_path / "m")]) == 0
    files = sorted(p for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))  # (hidden: globalmask's output marker)
    assert len(files) == len(phantom_ds)
    ct = read_volume(phantom_ds.cases[files[0].name[: -len(".nii.gz")]].image)
    m = read_volume(files[0])
    assert m.shape == ct.shape and np.allclose(m.affine, ct.affine) and m.array.dtype == np.uint8
    assert set(np.unique(m.array)) == {0, 1}
    # a solid body silhouette: every organ inside it, the field-of-view corners (air) outside
    lab = read_volume(phantom_ds.cases[files[0].name[: -len(".nii.gz")]].label).array
    assert m.array[lab > 0].all()
    assert m.array[0, 0, 0] == 0 and m.array[-1, -1, -1] == 0


def test_cli_refuses_to_write_into_the_input_folder(phantom_ds, capsys):
    images = phantom_ds.root / "imagesTr"
    assert main(["masks", str(images), "--out", str(images)]) == 2
    assert "output folder is the input folder" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_predict_evaluate(phantom_ds, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(phantom_ds.root), "--mode", "gbm", "--train-cases", "2", "--seed", "0", "--steps", "4", "--val-every", "2", "--channels", "8", "16", "32", "--res-units", "1", "--out", str(run), "--device", "cpu"]) == 0
    test_ids = phantom_ds.load_split().test
    inputs = tmp_path / "in"
    inputs.mkdir()
    for cid in test_ids:
        shutil.copy(phantom_ds.cases[cid].image, inputs / phantom_ds.cases[cid].image.name)
    assert main(["predict", str(run / "model.pt"), str(inputs), "--out", str(tmp_path / "pred")]) == 0
    preds = sorted(p.name for p in (tmp_path / "pred").iterdir() if not p.name.startswith("."))  # (hidden: globalmask's output marker)
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


# ----------------------------------------------------------------------------------------------
# real data


@needs_openkbp
@pytest.mark.slow
def test_openkbp_train_and_predict_one_case_keeps_geometry(tmp_path):
    """A tiny model on 2 real cases at coarse spacing; prediction on a test case has its geometry."""
    ds = load_dataset(OPENKBP)
    cfg = TrainConfig(mode="ct+gbm", train_cases=2, steps=3, val_every=3, net=SMALL_NET, max_patch_voxels=48**3)
    res = train(ds, tmp_path / "run", cfg, DataConfig(spacing=(8.0, 8.0, 8.0), split_file=_small_split(ds, tmp_path)), progress=False, device="cpu")
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
    path.write_text(json.dumps({"train": list(split.train), "validation": list(split.validation[:2]), "test": list(split.test)}))
    return path
