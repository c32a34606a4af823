"""Checkpoint round trips with non-default settings: what was saved is what predict applies.

Every setting here differs from its default (recipe, spacing, window, crop margin, labels, mode,
network, patch, overlap), so a loader or trainer that falls back to a default anywhere fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from globalmask import __version__
from globalmask.checkpoint import FORMAT_VERSION, ModelSpec, load_model, read_checkpoint, save_model
from globalmask.dataset import load_dataset
from globalmask.errors import CheckpointError
from globalmask.infer import Predictor
from globalmask.io import Volume, read_volume
from globalmask.masks import Recipe
from globalmask.model import NetConfig
from globalmask.preprocess import PreprocessConfig

NET = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def odd_spec() -> ModelSpec:
    return ModelSpec(
        mode="ct+gbm",
        recipe=Recipe.parse("threshold:-150"),
        preprocess=PreprocessConfig(spacing=(2.0, 2.5, 3.0), window=(-400.0, 600.0), crop_margin_mm=4.0),
        labels={"background": 0, "liver": 1, "tumour": 3},
        net=NET,
        patch_size=(8, 8, 8),
        sw_overlap=0.5,
        info={"dataset": "x", "best_step": 7},
    )


def test_spec_and_weights_survive_the_round_trip(tmp_path):
    torch.manual_seed(1)
    spec = odd_spec()
    weights = spec.build().state_dict()
    save_model(tmp_path / "m.pt", spec, weights)
    back, net = load_model(tmp_path / "m.pt")
    assert back.mode == "ct+gbm"
    assert back.recipe.spec == "threshold:level=-150"
    assert back.preprocess.spacing == (2.0, 2.5, 3.0) and back.preprocess.window == (-400.0, 600.0)
    assert back.preprocess.crop_margin_mm == 4.0 and back.preprocess.crop_level == -500.0
    assert back.labels == {"background": 0, "liver": 1, "tumour": 3} and back.n_classes == 4
    assert back.net == NET and back.patch_size == (8, 8, 8) and back.sw_overlap == 0.5
    assert back.info == {"dataset": "x", "best_step": 7}
    assert not net.training  # ready for inference
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k
    # the network has 2 input channels (CT, GBM) and 4 output classes (0..3, value 2 unused)
    out = net(torch.zeros(1, 2, 8, 8, 8))
    assert out.shape == (1, 4, 8, 8, 8)
    # written with plain types only: loads with weights_only=True
    payload = read_checkpoint(tmp_path / "m.pt")
    assert payload["format"] == "globalmask-model"
    assert payload["spec"]["recipe"] == {"name": "threshold", "params": {"level": -150.0}}


def test_predictor_prepares_with_the_checkpoint_settings(tmp_path):
    """Hand-computed network inputs: GBM at -150 HU, CT window (-400, 600) -> [-1, 1]."""
    spec = odd_spec()
    save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    predictor = Predictor(tmp_path / "m.pt", device="cpu")
    assert predictor.spec.recipe.spec == "threshold:level=-150"
    ct = np.full((20, 16, 8), -1000, np.int16)  # air
    ct[2:10, 2:8, :] = [-200, -100, 100, 350, 600, 900, 40, 40]  # a body whose slices differ in HU
    vol = Volume(ct, np.diag([2.0, 2.5, 3.0, 1.0]))  # the checkpoint's spacing: no resampling
    pc = predictor.prepare(vol)
    # crop: body (i 2..9, j 2..7, every k) plus 4 mm (ceil(4/2) = 2 voxels along i, ceil(4/2.5) = 2
    # along j) plus one voxel of slack, clipped to the volume
    assert pc.geometry.crop_start == (0, 0, 0) and pc.geometry.crop_stop == (13, 11, 8)
    assert pc.shape == (13, 11, 8)
    inside = pc.ct[5, 5]  # one column through the body, k = 0..7
    np.testing.assert_allclose(inside, [-0.6, -0.4, 0.0, 0.5, 1.0, 1.0, -0.12, -0.12], atol=1e-6)
    assert pc.ct[0, 0, 0] == -1.0  # air clips to the window's low end
    np.testing.assert_array_equal(pc.gbm[5, 5], [0, 1, 1, 1, 1, 1, 1, 1])  # -200 HU is below -150
    assert pc.gbm[0, 0].sum() == 0


def test_predictor_refuses_a_checkpoint_of_another_mode(tmp_path):
    spec = odd_spec()
    save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    with pytest.raises(CheckpointError, match="'ct\\+gbm', not 'gbm'"):
        Predictor(tmp_path / "m.pt", device="cpu", expect_mode="gbm")
    Predictor(tmp_path / "m.pt", device="cpu", expect_mode="ct+gbm")  # the right mode loads


def test_older_specs_without_overlap_or_info_load_with_defaults():
    d = odd_spec().to_dict()
    del d["sw_overlap"], d["info"]
    spec = ModelSpec.from_dict(d)
    assert spec.sw_overlap == 0.25 and spec.info == {} and spec.recipe.spec == "threshold:level=-150"


def _rewrite(path, **changes):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


@pytest.mark.parametrize(
    "version, accepted",
    [
        (__version__, True),
        ("0.1.9", True),  # a newer patch release keeps the format: accepted
        ("0.0.7", True),  # older
        ("0.2.0", False),  # a newer minor release may have changed the format
        ("0.10.0", False),  # compared as numbers: 10 > 1 (as text '0.10' < '0.2')
        ("1.0", False),
        ("v2.0.0rc1", False),  # digits are read out of decorated parts
    ],
)
def test_checkpoints_from_newer_releases_are_refused(tmp_path, version, accepted):
    assert __version__.startswith("0.1.")  # the cases above are written for 0.1.x
    spec = odd_spec()
    path = save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    assert (
        read_checkpoint(path)["globalmask_version"] == __version__
        and read_checkpoint(path)["format_version"] == FORMAT_VERSION
    )
    _rewrite(path, globalmask_version=version)
    if accepted:
        assert load_model(path)[0].mode == "ct+gbm"
    else:
        with pytest.raises(CheckpointError, match=f"written by globalmask {version}"):
            load_model(path)


def test_missing_and_unsafe_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found") as err:
        load_model(tmp_path / "nothing.pt")
    assert "nothing.pt" in str(err.value)
    spec = odd_spec()
    path = save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    _rewrite(path, info=Unpicklable())  # arbitrary objects never load: opening a model runs no code
    with pytest.raises(
        CheckpointError, match="cannot read checkpoint, corrupt or not a globalmask model\\? \\(UnpicklingError"
    ):
        load_model(path)


def test_broken_specs_weights_and_formats_name_the_file(tmp_path):
    spec = odd_spec()
    path = save_model(tmp_path / "m.pt", spec, spec.build().state_dict())
    _rewrite(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(
        CheckpointError, match=f"checkpoint format version {FORMAT_VERSION + 1} written by globalmask"
    ) as err:
        load_model(path)
    assert "m.pt" in str(err.value)
    path = save_model(tmp_path / "s.pt", spec, spec.build().state_dict())
    broken = spec.to_dict()
    del broken["mode"]
    _rewrite(path, spec=broken)
    with pytest.raises(CheckpointError, match="checkpoint specification is incomplete or invalid") as err:
        load_model(path)
    assert "s.pt" in str(err.value)
    other = ModelSpec(**{**spec.__dict__, "net": NetConfig(channels=(2, 4), strides=(2,), num_res_units=0)})
    path = save_model(tmp_path / "w.pt", spec, other.build().state_dict())  # weights of another network
    with pytest.raises(CheckpointError, match="weights do not fit the network described in the checkpoint") as err:
        load_model(path)
    assert "w.pt" in str(err.value)


class Unpicklable:
    """Any class outside torch's allowlist: weights_only loading must refuse it."""


@pytest.mark.slow
def test_training_stores_its_own_recipe_spacing_window_and_labels(tmp_path):
    """A run with non-default settings writes a model.pt that carries exactly those settings."""
    from globalmask.training import DataConfig, TrainConfig, train

    from .conftest import make_tiny_dataset

    ds = load_dataset(make_tiny_dataset(tmp_path / "tiny", n=5, shape=(16, 16, 12)))
    cfg = TrainConfig(mode="gbm", train_cases=2, steps=1, val_every=1, net=NET, batch_size=1)
    res = train(
        ds,
        tmp_path / "run",
        cfg,
        DataConfig(recipe="body:-400", spacing=(3.0, 3.5, 4.0), window=(-300.0, 500.0)),
        progress=False,
        device="cpu",
    )
    spec, _ = load_model(res.model_path)
    assert spec.mode == "gbm"
    assert spec.recipe.spec == "body:level=-400"
    assert spec.preprocess.spacing == (3.0, 3.5, 4.0) and spec.preprocess.window == (-300.0, 500.0)
    assert spec.labels == {"background": 0, "left": 1, "right": 2}
    assert spec.net == NET and spec.info["train_ids"] == res.train_ids
    assert Predictor(res.model_path, device="cpu").spec.recipe.spec == "body:level=-400"


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_predictions(trained, phantom_ds, tmp_path):
    from globalmask.checkpoint import save_model

    spec, net = load_model(trained.model_path)
    save_model(tmp_path / "copy.pt", spec, net.state_dict())
    ct = read_volume(phantom_ds.cases[phantom_ds.load_split().test[0]].image)
    a = Predictor(trained.model_path, device="cpu").predict(ct)
    b = Predictor(tmp_path / "copy.pt", device="cpu").predict(ct)
    np.testing.assert_array_equal(a.array, b.array)
