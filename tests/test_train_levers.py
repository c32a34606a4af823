"""Training levers of the convergence study: learning-rate schedules, optimisers, CPU bf16."""

from __future__ import annotations

import math

import pytest
import torch

from globalmask.errors import GlobalmaskError
from globalmask.train import TrainConfig, lr_factor


def test_schedules_by_hand():
    # poly (power 0.9): 1 at the start, (1/2)^0.9 half-way, 0 at the end
    assert lr_factor(0, 100, "poly") == 1.0
    assert lr_factor(50, 100, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, "poly") == 0.0
    # cosine: 1, 1/2, 0
    assert lr_factor(0, 100, "cosine") == 1.0
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(70, 100, "constant") == 1.0
    # linear warm-up over 10 steps (1/10 ... 10/10), then the schedule runs over the remaining 90
    assert [lr_factor(s, 100, "poly", warmup=10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, 100, "poly", warmup=10) == 1.0
    assert lr_factor(55, 100, "cosine", warmup=10) == pytest.approx(0.5)
    assert lr_factor(500, 100, "poly") == 0.0  # past the maximum it stays at zero


@pytest.mark.parametrize("bad", [dict(optimizer="adam2"), dict(schedule="step"), dict(warmup_steps=-1), dict(warmup_steps=20, steps=20), dict(lr=0.0), dict(lr=math.inf)])
def test_bad_levers_are_refused(bad):
    with pytest.raises(GlobalmaskError):
        TrainConfig(**{"steps": 20, **bad})


def test_sgd_and_cpu_bf16_train_a_tiny_net(tmp_path):
    """The nnU-Net optimiser is SGD + Nesterov 0.99; bf16 autocast on CPU must still give a finite loss that falls."""
    import numpy as np

    from globalmask.checkpoint import ModelSpec
    from globalmask.masks import Recipe
    from globalmask.model import NetConfig
    from globalmask.preprocess import PreparedCase, PreprocessConfig
    from globalmask.train import Trainer

    shape = (16, 16, 16)
    ct = np.full(shape, -1.0, np.float32)
    ct[4:12, 4:12, 4:12] = 0.3
    label = np.zeros(shape, np.uint8)
    label[6:10, 6:10, 6:10] = 1
    case = PreparedCase(id="c", ct=ct, gbm=(ct > -0.5).astype(np.uint8), label=label, geometry=None)
    net = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    for overrides in (dict(optimizer="sgd", lr=1e-2), dict(bf16=True)):
        cfg = TrainConfig(mode="ct", steps=30, batch_size=1, net=net, channels_last=False, **overrides)
        spec = ModelSpec(mode="ct", recipe=Recipe.parse("bone"), preprocess=PreprocessConfig(spacing=(1.0, 1.0, 1.0)), labels={"background": 0, "box": 1}, net=net, patch_size=shape)
        torch.manual_seed(0)
        trainer = Trainer(spec, cfg, [case], (1.0, 1.0, 1.0), torch.device("cpu"))
        if cfg.optimizer == "sgd":
            assert isinstance(trainer.opt, torch.optim.SGD) and trainer.opt.defaults["nesterov"] and trainer.opt.defaults["momentum"] == 0.99
        losses = [trainer.step() for _ in range(30)]
        assert all(math.isfinite(v) for v in losses)
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), overrides
