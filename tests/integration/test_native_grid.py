"""The native-grid training path of issue 24 at a tiny size: cases with their own spacings, trained
at the training split's median spacing on patches smaller than every volume (foreground
oversampled), validated and predicted with Gaussian sliding windows, and mapped back onto each
scan's own shape and affine."""

from __future__ import annotations

import json

import numpy as np
import pytest

import globalmask.training as train_mod
from globalmask.checkpoint import load_model
from globalmask.dataset import Split, load_dataset, save_split
from globalmask.infer import Predictor
from globalmask.io import Volume, read_volume, write_volume
from globalmask.model import NetConfig
from globalmask.training import DataConfig, TrainConfig, train

#: per case (in-plane, slice) spacing in mm: the median over the 4 training cases is (2.0, 2.0, 2.75);
#: with the validation and test cases it would be (2.1, 2.1, 3.0)
SPACINGS = [(1.8, 2.5), (2.0, 2.5), (2.0, 3.0), (2.2, 3.0), (2.4, 3.0), (2.4, 3.0)]


@pytest.fixture(scope="module")
def mixed_spacing_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("native") / "mixed"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i, (inplane, slab) in enumerate(SPACINGS):
        shape = (int(round(56 / inplane)), int(round(48 / inplane)), int(round(50 / slab)))  # the same body in mm
        x, y, z = np.meshgrid(
            *[(np.arange(n) + 0.5) * s for n, s in zip(shape, (inplane, inplane, slab))], indexing="ij"
        )
        body = (x - 28) ** 2 + (y - 24) ** 2 < 20**2
        ct = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-15, 15, size=shape).astype(np.int16)
        lab = np.zeros(shape, np.uint8)
        lab[(np.abs(x - 22) < 5) & (np.abs(y - 24) < 5) & (np.abs(z - 25) < 12)] = 1
        ct[lab == 1] += 60
        aff = np.diag([inplane, inplane, slab, 1.0])
        aff[:3, 3] = (-30.0, 12.0, 5.0 * i)
        write_volume(Volume(ct, aff), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_volume(Volume(lab, aff), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "organ": 1},
                "numTraining": 6,
                "file_ending": ".nii.gz",
            }
        )
    )
    save_split(
        Split(("case_000", "case_001", "case_002", "case_003"), ("case_004",), ("case_005",)), root / "splits.json"
    )
    return load_dataset(root)


@pytest.mark.slow  # 30 steps of a tiny network on 16^3 patches
def test_training_at_the_median_spacing_on_patches_predicts_on_each_scans_own_grid(
    mixed_spacing_ds, tmp_path, monkeypatch
):
    windows: list[tuple] = []
    real = train_mod.sliding_window_probs

    def spy(net, x, patch, *args, **kwargs):
        windows.append((tuple(x.shape[1:]), tuple(patch)))
        return real(net, x, patch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "sliding_window_probs", spy)
    net = NetConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    cfg = TrainConfig(
        mode="ct", steps=30, val_every=10, patience=None, net=net, patch_size=(16, 16, 16), fg_prob=0.5, batch_size=2
    )
    result = train(
        mixed_spacing_ds,
        tmp_path / "run",
        cfg,
        DataConfig(spacing=None, window=(-200.0, 300.0)),
        progress=False,
        device="cpu",
    )
    spec, _ = load_model(result.model_path)
    # the grid is the training split's median spacing (validation and test cases play no part)
    assert spec.preprocess.spacing == pytest.approx((2.0, 2.0, 2.75))
    assert tuple(spec.patch_size) == (16, 16, 16)
    # validation ran on whole volumes larger than the patch, by sliding windows of the patch
    assert windows and all(patch == (16, 16, 16) and any(v > p for v, p in zip(vol, patch)) for vol, patch in windows)
    # prediction: each scan back on its own shape and affine, a binary label map
    predictor = Predictor(result.model_path, device="cpu")
    for case_id in ("case_004", "case_005"):
        ct = read_volume(mixed_spacing_ds.cases[case_id].image)
        out = predictor.predict(ct)
        assert out.shape == ct.shape and np.allclose(out.affine, ct.affine)
        assert set(np.unique(out.array)) <= {0, 1}
