"""Plateau stopping: scripted validation scores with known stopping steps, and resume keeps the state."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import globalmask.train as train_mod
from globalmask.dataset import load_dataset, make_split, save_split
from globalmask.model import NetConfig
from globalmask.train import Plateau, TrainConfig, train

from .conftest import make_tiny_dataset

TINY_NET = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def test_plateau_counts_checks_without_a_min_delta_rise():
    p = Plateau(patience=3, min_delta=0.01)
    # 0.1 and 0.3 improve; 0.305 and 0.302 rise less than 0.01 over 0.3; 0.2 falls: third check without improvement
    assert [p.update(s) for s in (0.1, 0.3, 0.305, 0.302, 0.2)] == [False, False, False, False, True]
    assert p.state() == {"reference": 0.3, "waited": 3}
    q = Plateau(patience=2, min_delta=0.0)
    assert [q.update(s) for s in (0.5, 0.5, 0.4)] == [False, False, True]  # an equal score is not an improvement
    assert q.state() == {"reference": 0.5, "waited": 2}
    never = Plateau(patience=None, min_delta=0.01)
    assert not any(never.update(0.1) for _ in range(50))
    nan = Plateau(patience=2, min_delta=0.0)
    assert [nan.update(float("nan")) for _ in range(5)] == [False] * 5  # no score yet: nothing to wait on
    stuck = Plateau(patience=2, min_delta=0.002)
    assert [stuck.update(0.0) for _ in range(10)] == [False] * 10  # Dice 0 throughout: not started, not a plateau
    assert [stuck.update(s) for s in (0.3, 0.3, 0.3)] == [False, False, True]  # once it scores, the count begins


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_tiny_dataset(tmp_path_factory.mktemp("pl") / "tiny", n=5)
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(3, 1, 1)), root / "splits.json")
    return root


def scripted(monkeypatch, scores):
    """Replace validation by a script: the k-th check returns scores[k]; returns the call log."""
    calls = []

    def fake_validate(net, cases, mode, patch, cfg, labels, device):
        calls.append([pc.id for pc in cases])
        s = scores[len(calls) - 1]
        return s, {"left": s, "right": s}

    monkeypatch.setattr(train_mod, "_validate", fake_validate)
    return calls


def _cfg(**kw):
    base = dict(mode="ct", seed=0, steps=20, val_every=1, patience=3, min_delta=0.01, checkpoint_every=1, net=TINY_NET, batch_size=1)
    return TrainConfig(**{**base, **kw})


def test_a_run_that_plateaus_stops_early_with_the_best_checkpoint(tiny, tmp_path, monkeypatch):
    calls = scripted(monkeypatch, [0.1, 0.3, 0.305, 0.302, 0.2] + [0.9] * 20)
    result = train(tiny, tmp_path / "run", _cfg(), progress=False, device="cpu")
    assert (result.steps, result.best_step, result.converged, result.stop_reason) == (5, 3, True, "plateau")
    done = json.loads((tmp_path / "run" / "done.json").read_text(encoding="utf-8"))
    assert done["steps"] == 5 and done["max_steps"] == 20 and done["best_step"] == 3 and done["converged"] is True
    assert done["best_val_dice"] == pytest.approx(0.305)
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(hist["step"]) == [1, 2, 3, 4, 5] and hist["elapsed_s"].is_monotonic_increasing
    split = json.loads((tiny / "splits.json").read_text(encoding="utf-8"))
    assert all(ids == split["validation"] for ids in calls)  # validation reads the validation split, nothing else


def test_a_run_that_keeps_improving_runs_to_the_maximum(tiny, tmp_path, monkeypatch):
    scripted(monkeypatch, [0.1 + 0.05 * k for k in range(8)])
    result = train(tiny, tmp_path / "run", _cfg(steps=8), progress=False, device="cpu")
    assert (result.steps, result.best_step, result.converged, result.stop_reason) == (8, 8, False, "max_steps")
    assert json.loads((tmp_path / "run" / "done.json").read_text(encoding="utf-8"))["converged"] is False


def test_without_patience_the_run_is_not_judged(tiny, tmp_path, monkeypatch):
    scripted(monkeypatch, [0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    result = train(tiny, tmp_path / "run", _cfg(steps=6, patience=None), progress=False, device="cpu")
    assert (result.steps, result.best_step, result.converged) == (6, 1, None)


def test_resume_keeps_the_patience_state(tiny, tmp_path, monkeypatch):
    script = [0.1, 0.3, 0.305, 0.302, 0.2] + [0.9] * 20
    calls = scripted(monkeypatch, script)
    part = train(tiny, tmp_path / "run", _cfg(), progress=False, device="cpu", stop_after=4)
    assert part.steps == 4 and part.stop_reason == "interrupted" and len(calls) == 4
    resumed = train(tiny, tmp_path / "run", _cfg(), progress=False, device="cpu", resume=True)
    # two checks without improvement were saved; the fifth check is the third: stop at step 5, as uninterrupted
    assert (resumed.steps, resumed.best_step, resumed.converged) == (5, 3, True)


@pytest.mark.parametrize("bad", [dict(patience=0), dict(min_delta=-0.1), dict(min_delta=float("nan")), dict(val_every=0)])
def test_bad_plateau_settings_are_refused(bad):
    from globalmask.errors import GlobalmaskError

    with pytest.raises(GlobalmaskError):
        _cfg(**bad)
