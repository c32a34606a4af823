"""train.py: which cases each stage sees, which checkpoint is kept, when a run stops, the levers, resume.

Sections: split and selection (the validation function of the training loop is replaced by a
scripted one that records the case ids and weights it is given and returns a fixed sequence of
Dice values, so the best step is known in advance); plateau stopping; optimiser, schedule and
bf16 levers; interrupted and resumed runs; short real trainings on the phantom (slow).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import globalmask.training as train_mod
from globalmask.checkpoint import load_model
from globalmask.dataset import Split, load_dataset, make_split, save_split, select_training_cases
from globalmask.errors import CheckpointError, GlobalmaskError, OutputError
from globalmask.infer import Predictor
from globalmask.io import read_volume
from globalmask.metrics import dice
from globalmask.model import NetConfig
from globalmask.training import DataConfig, Plateau, TrainConfig, lr_factor, prepare_data, train

from .conftest import SMALL_NET, make_tiny_dataset, percentile_dataset

TINY_NET = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
# a hand-made split of the 8 tiny cases: every stage's ids are known by name
SPLIT = Split(
    train=("case_000", "case_001", "case_002", "case_003"),
    validation=("case_004", "case_005"),
    test=("case_006", "case_007"),
)


SCRIPT = [0.2, 0.5, 0.4, 0.45]  # validation Dice at steps 1..4: the best is step 2


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    root = make_tiny_dataset(tmp_path_factory.mktemp("sel") / "tiny", n=8, shape=(16, 16, 12))
    save_split(SPLIT, root / "splits.json")
    return load_dataset(root)


class ScriptedValidation:
    """Stands in for train._validate: records ids and weights, returns the scripted Dice values."""

    def __init__(self, script):
        self.script = list(script)
        self.ids: list[list[str]] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.calls: list[tuple] = []  # (mode, patch, device) of each call

    def __call__(self, net, cases, mode, patch, cfg, labels, device):
        self.ids.append([pc.id for pc in cases])
        self.calls.append((mode, tuple(patch), device))
        self.weights.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        dice = self.script[len(self.ids) - 1]
        return dice, {n: dice for n, v in labels.items() if v != 0}


@pytest.fixture
def spies(monkeypatch):
    """Scripted validation plus a record of every case the run preprocesses and trains on."""
    val = ScriptedValidation(SCRIPT)
    prepared_ids: list[str] = []
    trained_ids: list[str] = []
    real_prepare, real_trainer = train_mod.prepare_cases, train_mod.Trainer

    def prepare_spy(cases, *args, **kwargs):
        prepared_ids.extend(c.id for c in cases)
        return real_prepare(cases, *args, **kwargs)

    class TrainerSpy(real_trainer):
        def __init__(self, spec, cfg, cases, *args, **kwargs):
            trained_ids.extend(pc.id for pc in cases)
            super().__init__(spec, cfg, cases, *args, **kwargs)

    monkeypatch.setattr(train_mod, "_validate", val)
    monkeypatch.setattr(train_mod, "prepare_cases", prepare_spy)
    monkeypatch.setattr(train_mod, "Trainer", TrainerSpy)
    return val, prepared_ids, trained_ids


def _cfg(**kw):
    return TrainConfig(
        **{
            "mode": "gbm",
            "train_cases": 2,
            "seed": 0,
            "steps": 4,
            "val_every": 1,
            "checkpoint_every": 2,
            "net": TINY_NET,
            "batch_size": 1,
            **kw,
        }
    )


# ----------------------------------------------------------------------------------------------
# split and selection (scripted validation)


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_each_stage_sees_only_its_own_split(tiny_ds, tmp_path, spies):
    val, prepared_ids, trained_ids = spies
    result = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu")
    # training: 2 of the 4 training cases, nothing else
    assert len(trained_ids) == 2 and set(trained_ids) <= set(SPLIT.train)
    assert sorted(trained_ids) == result.train_ids
    # validation: exactly the validation split, at every one of the 4 validations
    assert val.ids == [list(SPLIT.validation)] * 4
    # the test cases are never even read
    assert not set(prepared_ids) & set(SPLIT.test)
    assert set(prepared_ids) == set(trained_ids) | set(SPLIT.validation)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert cfg["validation_ids"] == list(SPLIT.validation) and cfg["train_ids"] == result.train_ids
    # median of the train split
    assert cfg["dataset_name"] == "tiny" and cfg["preprocess"]["spacing"] == [2.0, 2.0, 2.5]
    assert cfg["train"]["steps"] == 4 and cfg["recipe"] == {"name": "bone", "params": {"level": 250.0}}
    assert json.loads((tmp_path / "run" / "splits.json").read_text(encoding="utf-8"))["test"] == list(SPLIT.test)


def test_shared_preprocessing_for_a_study_leaves_the_test_split_out(tiny_ds, spies):
    _, prepared_ids, _ = spies
    prepared = prepare_data(tiny_ds, DataConfig(recipe="threshold"), progress=False)
    assert sorted(prepared.cases) == sorted(SPLIT.train + SPLIT.validation)
    assert sorted(prepared_ids) == sorted(SPLIT.train + SPLIT.validation)
    assert prepared.split == SPLIT and prepared.split_source.endswith("splits.json")


def test_prepare_data_takes_the_split_it_is_given(tiny_ds, tmp_path, spies):
    """An explicit split file wins over the dataset's; without either, a seeded 60:20:20 split (seed 0)."""
    _, prepared_ids, _ = spies
    other = Split(train=("case_004", "case_005", "case_006"), validation=("case_007",), test=SPLIT.train)
    save_split(other, tmp_path / "other.json")
    prepared = prepare_data(tiny_ds, DataConfig(recipe="threshold", split_file=tmp_path / "other.json"), progress=False)
    assert prepared.split == other and sorted(prepared.cases) == ["case_004", "case_005", "case_006", "case_007"]
    assert not set(prepared_ids) & set(SPLIT.train)  # now the test cases: never read
    # the same cases without any splits.json: round(8 x 0.2) = 2 validation and 2 test cases, 4 to train
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_ds.root, bare)
    (bare / "splits.json").unlink()
    a = prepare_data(bare, DataConfig(recipe="threshold"), case_ids=[], progress=False)
    b = prepare_data(bare, DataConfig(recipe="threshold", split_seed=0), case_ids=[], progress=False)
    c = prepare_data(bare, DataConfig(recipe="threshold", split_seed=1), case_ids=[], progress=False)
    assert a.split == b.split != c.split and a.split_source == "seeded split (seed 0)"
    assert (len(a.split.train), len(a.split.validation), len(a.split.test)) == (4, 2, 2)


def test_prepare_data_fills_and_reuses_the_cache_folder(tiny_ds, tmp_path):
    cache = tmp_path / "cache"
    data = DataConfig(recipe="threshold", spacing=(4.0, 4.0, 5.0), cache_dir=cache)
    first = prepare_data(tiny_ds, data, case_ids=["case_000", "case_004"], progress=False)
    files = sorted(p.name.split("-")[0] for p in cache.glob("*.npz"))
    assert files == ["case_000", "case_004"]
    # cached CT is stored as float16: what comes back is exactly the float16 values
    ct = first.cases["case_000"].ct
    np.testing.assert_array_equal(ct, ct.astype(np.float16).astype(np.float32))
    again = prepare_data(tiny_ds, data, case_ids=["case_000"], progress=False)
    np.testing.assert_array_equal(again.cases["case_000"].ct, ct)
    assert len(list(cache.glob("*.npz"))) == 2  # read back, not written again


def test_a_cache_folder_inside_the_dataset_is_refused_before_anything_is_written(tiny_ds, tmp_path):
    cache = tiny_ds.root / "cache"
    with pytest.raises(OutputError, match="cache folder must not be inside the dataset folder") as err:
        train(tiny_ds, tmp_path / "run", _cfg(), DataConfig(cache_dir=cache), progress=False, device="cpu")
    assert str(cache) in str(err.value)
    assert not cache.exists() and not (tmp_path / "run").exists()


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_the_kept_checkpoint_is_the_best_validation_step(tiny_ds, tmp_path, spies):
    val, _, _ = spies
    result = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu")
    run = tmp_path / "run"
    assert result.best_step == 2 and result.best_val_dice == 0.5
    done = json.loads((run / "done.json").read_text(encoding="utf-8"))
    assert done["best_step"] == 2 and done["best_val_dice"] == 0.5 and done["steps"] == 4
    spec, net = load_model(run / "model.pt")
    assert spec.info["best_step"] == 2 and spec.info["best_val_dice"] == 0.5
    assert spec.info["steps"] == 4 and spec.info["train_ids"] == result.train_ids
    saved = net.state_dict()
    # the weights are those the validation saw at step 2, not those of any later step
    for k, v in val.weights[1].items():
        torch.testing.assert_close(saved[k], v, rtol=0, atol=0)
    assert any(not torch.equal(saved[k], val.weights[3][k]) for k in saved)
    # last.pt (the resumable state) holds the final step's weights instead
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert last["step"] == 4 and last["best_step"] == 2
    for k, v in val.weights[3].items():
        torch.testing.assert_close(last["model"][k], v, rtol=0, atol=0)
    import csv

    with open(run / "history.csv", encoding="utf-8") as fh:
        history = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in history] == [1, 2, 3, 4]
    assert [float(r["val_dice"]) for r in history] == SCRIPT and [float(r["val_left"]) for r in history] == SCRIPT
    assert result.model_path == run / "model.pt" and result.run_dir == run and result.steps == 4


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_a_tie_keeps_the_earlier_step(tiny_ds, tmp_path, spies, monkeypatch):
    """Later validations must be strictly better to replace the kept model."""
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation([0.3, 0.6, 0.6, 0.1]))
    result = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu")
    assert result.best_step == 2
    assert load_model(tmp_path / "run" / "model.pt")[0].info["best_step"] == 2


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_validation_every_k_steps_and_at_the_end(tiny_ds, tmp_path, spies, monkeypatch):
    """steps=5, val_every=2: validations at steps 2, 4 and 5 (the last step always validates)."""
    scripted = ScriptedValidation([0.1, 0.3, 0.2])
    monkeypatch.setattr(train_mod, "_validate", scripted)
    result = train(tiny_ds, tmp_path / "run", _cfg(steps=5, val_every=2), progress=False, device="cpu")
    assert len(scripted.ids) == 3 and result.best_step == 4 and result.best_val_dice == 0.3


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_without_structures_in_validation_the_final_weights_are_kept(tiny_ds, tmp_path, spies, monkeypatch):
    """All validations NaN (no structure present): no 'best' exists, the last step is the model."""
    scripted = ScriptedValidation([float("nan")] * 4)
    monkeypatch.setattr(train_mod, "_validate", scripted)
    result = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu")
    assert result.best_step == 4
    spec, net = load_model(tmp_path / "run" / "model.pt")
    assert spec.info["best_step"] == 4 and spec.info["best_val_dice"] is None
    assert _strict_json(tmp_path / "run" / "done.json")["best_val_dice"] is None  # null, not NaN
    for k, v in scripted.weights[3].items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)


def _strict_json(path):
    """JSON as the standard has it: Python's json accepts NaN and Infinity, which other readers refuse."""
    def refuse(token):
        raise ValueError(f"{path.name} holds {token}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_an_empty_validation_split_trains_to_steps_and_says_so(tiny_ds, tmp_path, spies):
    """Issue 25: an empty validation split trained and wrote NaN into done.json (invalid JSON)."""
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps({"train": ["case_000", "case_001", "case_002"], "validation": [], "test": ["case_005"]}),
        encoding="utf-8",
    )
    result = train(tiny_ds, tmp_path / "run", _cfg(), DataConfig(split_file=split), progress=False, device="cpu")
    done = _strict_json(tmp_path / "run" / "done.json")
    assert done["steps"] == 4 and done["best_val_dice"] is None and done["converged"] is None
    assert "validation split is empty" in done["note"] and result.best_step == 4
    assert spies[0].ids == []  # never validated


@pytest.mark.slow  # 2 + 2 + 4 steps of a 4-channel network: a few seconds
def test_an_interrupted_run_resumes_to_the_same_result(tiny_ds, tmp_path, spies, monkeypatch):
    from globalmask.errors import OutputError

    val, _, _ = spies
    part = train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu", stop_after=2)
    assert part.steps == 2 and part.best_step == 2 and not (tmp_path / "part" / "done.json").exists()
    so_far = pd.read_csv(tmp_path / "part" / "history.csv")  # a running job can be followed
    assert so_far["step"].tolist() == [1, 2] and so_far["val_dice"].notna().all()
    with pytest.raises(OutputError, match="--resume"):
        train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu")
    with pytest.raises(OutputError, match=r"different settings \(train.steps: stored 4, given 3"):
        train(tiny_ds, tmp_path / "part", _cfg(steps=3), progress=False, device="cpu", resume=True)
    resumed = train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu", resume=True)
    assert resumed.steps == 4 and resumed.best_step == 2 and resumed.best_val_dice == 0.5
    assert len(val.ids) == 4  # validations at steps 1, 2 (first call) and 3, 4 (resumed)
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation(SCRIPT))
    full = train(tiny_ds, tmp_path / "full", _cfg(), progress=False, device="cpu")
    a = load_model(tmp_path / "part" / "model.pt")[1].state_dict()
    b = load_model(tmp_path / "full" / "model.pt")[1].state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # a finished run is not trained again: its recorded result comes back
    again = train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu", resume=True)
    done = json.loads((tmp_path / "part" / "done.json").read_text(encoding="utf-8"))
    assert (again.steps, again.best_step, again.best_val_dice, again.seconds) == (4, 2, 0.5, done["seconds"])
    assert (
        (again.max_steps, again.converged, again.stop_reason)
        == (4, False, "max_steps")
        == (done["max_steps"], done["converged"], done["stop_reason"])
    )
    assert again.model_path == tmp_path / "part" / "model.pt" and len(val.ids) == 4
    assert full.best_step == 2


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_the_log_reports_the_smoothed_loss_and_the_kept_step(tiny_ds, tmp_path, spies):
    """The log lines, recomputed from history.csv: loss as an EMA (0.95), the best Dice and its step."""
    val, _, _ = spies
    lines: list[str] = []
    result = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu", log=lines.append)
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    expected, ema, best, best_step = [], None, -math.inf, 0
    for step, loss, score in zip(hist["step"], hist["loss"], SCRIPT):
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        best, best_step = (score, step) if score > best else (best, best_step)
        expected.append(f"step {step}: loss {ema:.4f} val Dice {score:.4f} (best {best:.4f} @ {best_step})")
    expected.append("stopped at step 4 (max_steps); best validation Dice 0.5000 at step 2")
    assert lines == expected
    # the run's wall time is reported (history, done.json and the result agree) ...
    done = json.loads((tmp_path / "run" / "done.json").read_text(encoding="utf-8"))
    assert (
        result.seconds == done["seconds"] > 0
        and 0 < hist["elapsed_s"].iloc[0] <= hist["elapsed_s"].iloc[-1] <= result.seconds
    )
    # ... and validation ran in the run's mode, on the patch stored in the checkpoint, on the run's device
    spec = load_model(result.model_path)[0]
    assert val.calls == [("gbm", tuple(spec.patch_size), torch.device("cpu"))] * 4


@pytest.mark.slow  # 4 steps of a 4-channel network: about a second
def test_the_progress_bar_names_the_run_and_shows_the_best_dice(tiny_ds, tmp_path, spies, capsys, monkeypatch):
    monkeypatch.setattr(train_mod, "bars_enabled", lambda progress=True, stream=None: progress)  # as on a terminal
    train(tiny_ds, tmp_path / "run", _cfg(), progress=True, device="cpu")
    err = capsys.readouterr().err
    assert ("train gbm n=2" in err and "4/4" in err and "step/s" in err) or "s/step" in err
    assert "val=0.450" in err and "best=0.500" in err  # the last and the best of SCRIPT
    assert re.search(r"loss=\d\.\d{3}", err)
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation(SCRIPT))
    train(tiny_ds, tmp_path / "quiet", _cfg(), progress=False, device="cpu")
    assert "train gbm" not in capsys.readouterr().err


@pytest.mark.slow  # 2 + 2 steps of a 4-channel network
def test_an_interrupted_run_reports_its_time_and_resumes_its_bar(tiny_ds, tmp_path, spies, capsys, monkeypatch):
    part = train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu", stop_after=2)
    assert part.stop_reason == "interrupted" and part.converged is None and part.max_steps == 4 and part.seconds > 0
    assert part.run_dir == tmp_path / "run" and part.model_path == tmp_path / "run" / "model.pt"
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["elapsed"] == pytest.approx(part.seconds, abs=0.05)
    capsys.readouterr()
    monkeypatch.setattr(train_mod, "bars_enabled", lambda progress=True, stream=None: progress)  # as on a terminal
    resumed = train(tiny_ds, tmp_path / "run", _cfg(), progress=True, device="cpu", resume=True)
    assert "2/4" in capsys.readouterr().err  # the bar starts where the run stopped
    assert resumed.seconds > part.seconds  # the whole run's time, both calls
    # a resume state of an older release has no wall time and no plateau state: it resumes all the same
    older = tmp_path / "older"
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation(SCRIPT))
    train(tiny_ds, older, _cfg(), progress=False, device="cpu", stop_after=2)
    state = torch.load(older / "last.pt", map_location="cpu", weights_only=False)
    del state["elapsed"], state["plateau"]
    torch.save(state, older / "last.pt")
    started = time.perf_counter()
    again = train(tiny_ds, older, _cfg(), progress=False, device="cpu", resume=True)
    wall = time.perf_counter() - started
    # no stored time to add: the run's time is this call's alone (bounded by its wall time; comparing it with
    # the other runs' times raced under load)
    assert (again.steps, again.stop_reason) == (4, "max_steps") and 0 < again.seconds <= wall


@pytest.mark.slow  # 2 steps of a 4-channel network
def test_a_resume_state_of_other_settings_is_refused_naming_it(tiny_ds, tmp_path, spies):
    train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu", stop_after=2)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    state["config"]["train"]["lr"] = 1.0  # config.json still matches: only last.pt is foreign
    torch.save(state, last)
    with pytest.raises(CheckpointError, match="different settings") as err:
        train(tiny_ds, tmp_path / "run", _cfg(), progress=False, device="cpu", resume=True)
    assert str(last) in str(err.value)


@pytest.mark.slow  # 2 steps of a 2D network on 16x16 slices
@pytest.mark.parametrize("patch", [None, (16, 8, 4)])
def test_a_two_d_run_trains_on_single_slices(tiny_ds, tmp_path, spies, patch):
    """A 2D network stores an in-plane patch and trains and validates on (x, y, 1) patches."""
    val, _, _ = spies
    net = NetConfig(spatial_dims=2, channels=(4, 8), strides=(2,), num_res_units=0)
    result = train(tiny_ds, tmp_path / "run", _cfg(steps=2, net=net, patch_size=patch), progress=False, device="cpu")
    spec = load_model(result.model_path)[0]
    assert len(spec.patch_size) == 2 and spec.net.spatial_dims == 2
    if patch is not None:  # a given patch keeps its in-plane sides, in order; its third side becomes 1
        assert tuple(spec.patch_size) == (16, 8)
    assert [c[1] for c in val.calls] == [(*spec.patch_size, 1)] * 2


@pytest.mark.slow  # 2 steps of a 4-channel network
def test_before_any_scored_validation_no_step_is_the_best(tiny_ds, tmp_path, spies, monkeypatch, capsys):
    """Validation without a score (NaN) keeps nothing: an interrupted run reports best step 0, Dice -inf."""
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation([float("nan")] * 4))
    monkeypatch.setattr(train_mod, "bars_enabled", lambda progress=True, stream=None: progress)  # as on a terminal
    lines: list[str] = []
    part = train(tiny_ds, tmp_path / "run", _cfg(), progress=True, device="cpu", stop_after=2, log=lines.append)
    assert (part.steps, part.best_step, part.best_val_dice) == (2, 0, -math.inf)
    assert lines[-1].endswith("val Dice nan (best -inf @ 0)")
    err = capsys.readouterr().err
    assert re.search(r"best=-[,\]]", err) and "best=-inf" not in err  # the bar shows no best yet as "-"
    assert torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["best_step"] == 0


@pytest.mark.slow  # 1 step of a 4-channel network
def test_the_run_holds_its_folder_lock_as_train(tiny_ds, tmp_path, spies, monkeypatch):
    """While it trains, the folder's lock names this process and the command; afterwards it is gone."""
    from globalmask.guard import read_lock

    scripted, seen = ScriptedValidation(SCRIPT), []

    def validate(*args):
        seen.append(read_lock(tmp_path / "run"))
        return scripted(*args)

    monkeypatch.setattr(train_mod, "_validate", validate)
    train(tiny_ds, tmp_path / "run", _cfg(steps=1), progress=False, device="cpu")
    assert seen[0]["command"] == "train" and seen[0]["pid"] == os.getpid()
    assert read_lock(tmp_path / "run") is None


@pytest.mark.slow  # 1 step of a 4-channel network
def test_prepared_data_carries_its_own_recipe_and_spacing(tiny_ds, tmp_path, spies):
    from globalmask.errors import DatasetError

    prepared = prepare_data(tiny_ds, DataConfig(recipe="threshold:-400", spacing=(4.0, 4.0, 5.0)), progress=False)
    result = train(prepared, tmp_path / "run", _cfg(steps=1), progress=False, device="cpu")
    spec = load_model(result.model_path)[0]
    assert spec.recipe.spec == "threshold:level=-400" and spec.preprocess.spacing == (4.0, 4.0, 5.0)
    for kw in ({"recipe": "bone"}, {"spacing": (1.0, 1.0, 1.0)}):
        with pytest.raises(DatasetError, match="come from the PreparedData"):
            train(prepared, tmp_path / "other", _cfg(steps=1), DataConfig(**kw), progress=False, device="cpu")


# ----------------------------------------------------------------------------------------------
# plateau stopping: Plateau, TrainConfig.patience/min_delta, done.json


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


def _plateau_cfg(**kw):
    base = dict(
        mode="ct",
        seed=0,
        steps=20,
        val_every=1,
        patience=3,
        min_delta=0.01,
        checkpoint_every=1,
        net=TINY_NET,
        batch_size=1,
    )
    return TrainConfig(**{**base, **kw})


def test_a_run_that_plateaus_stops_early_with_the_best_checkpoint(tiny, tmp_path, monkeypatch):
    calls = scripted(monkeypatch, [0.1, 0.3, 0.305, 0.302, 0.2] + [0.9] * 20)
    result = train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu")
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
    result = train(tiny, tmp_path / "run", _plateau_cfg(steps=8), progress=False, device="cpu")
    assert (result.steps, result.best_step, result.converged, result.stop_reason) == (8, 8, False, "max_steps")
    assert json.loads((tmp_path / "run" / "done.json").read_text(encoding="utf-8"))["converged"] is False


def test_without_patience_the_run_is_not_judged(tiny, tmp_path, monkeypatch):
    scripted(monkeypatch, [0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    result = train(tiny, tmp_path / "run", _plateau_cfg(steps=6, patience=None), progress=False, device="cpu")
    assert (result.steps, result.best_step, result.converged) == (6, 1, None)


def test_resume_keeps_the_patience_state(tiny, tmp_path, monkeypatch):
    script = [0.1, 0.3, 0.305, 0.302, 0.2] + [0.9] * 20
    calls = scripted(monkeypatch, script)
    part = train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu", stop_after=4)
    assert part.steps == 4 and part.stop_reason == "interrupted" and len(calls) == 4
    resumed = train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu", resume=True)
    # two checks without improvement were saved; the fifth check is the third: stop at step 5, as uninterrupted
    assert (resumed.steps, resumed.best_step, resumed.converged) == (5, 3, True)
    # the finished run is not trained again: its recorded result comes back, stop reason included
    done = train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu", resume=True)
    assert (done.steps, done.best_step, done.converged, done.stop_reason, done.max_steps) == (5, 3, True, "plateau", 20)
    assert len(calls) == 5


def test_resume_from_a_state_without_plateau_bookkeeping_waits_a_full_patience_from_its_best(tiny, tmp_path,
                                                                                           monkeypatch):
    """A resume state of an older release has no plateau state: the best Dice so far is the reference, and the
    patience counts afresh from the resume (3 more checks without a rise), never from an invented count."""
    calls = scripted(monkeypatch, [0.1, 0.3, 0.305, 0.302] + [0.2] * 20)
    train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu", stop_after=4)
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    del state["plateau"]
    torch.save(state, tmp_path / "run" / "last.pt")
    resumed = train(tiny, tmp_path / "run", _plateau_cfg(), progress=False, device="cpu", resume=True)
    # checks 5, 6 and 7 (0.2 each) are the three without a rise over 0.305
    assert (resumed.steps, resumed.best_step, resumed.converged, resumed.stop_reason) == (7, 3, True, "plateau")
    assert len(calls) == 7


@pytest.mark.parametrize(
    "bad", [dict(patience=0), dict(min_delta=-0.1), dict(min_delta=float("nan")), dict(val_every=0)]
)
def test_bad_plateau_settings_are_refused(bad):
    from globalmask.errors import GlobalmaskError

    with pytest.raises(GlobalmaskError):
        _plateau_cfg(**bad)


# ----------------------------------------------------------------------------------------------
# levers: optimiser, learning-rate schedule, warm-up, bf16


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


@pytest.mark.parametrize("bad", [dict(optimizer="adam2"), dict(schedule="step"), dict(warmup_steps=-1),
                                 dict(warmup_steps=20, steps=20), dict(lr=0.0), dict(lr=math.inf)])
def test_bad_levers_are_refused(bad):
    with pytest.raises(GlobalmaskError):
        TrainConfig(**{"steps": 20, **bad})


@pytest.mark.parametrize(
    "setting, value, flag",
    [
        ("lr", 20, ["--lr", "20"]),
        ("batch_size", 1000, ["--batch-size", "1000"]),
        # not a multiple of 16 (the default U-Net's divisor)
        ("patch_size", [24, 32, 32], ["--patch-size", "24", "32", "32"]),
        ("warmup_steps", 3000, ["--warmup-steps", "3000"]),  # the maximum steps are 3000
        ("optimizer", "adam", ["--optimizer", "adam"]),
    ],
)
def test_one_rule_per_setting_whether_given_in_python_a_study_or_the_cli(setting, value, flag):
    """check_train_settings is every entry point's rule: the same 'got ...; expected ...', named as each spells it."""
    from globalmask import cli
    from globalmask.study import StudyConfig
    from globalmask.validate import SettingError

    def problem(call) -> str:
        with pytest.raises(SettingError) as err:
            call()
        return str(err.value)

    args = cli.build_parser().parse_args(["train", "DS", "--out", "RUN", *flag])
    messages = {
        "train.": problem(lambda: TrainConfig(**{setting: value})),
        "study.": problem(lambda: StudyConfig(**{setting: value})),
        "argument --": problem(lambda: cli._check_train_args(args)),
    }
    for prefix, message in messages.items():
        assert message.startswith(
            prefix + (setting.replace("_", "-") if prefix == "argument --" else setting) + ": got "
        )
    assert len({m.split(": got ", 1)[1] for m in messages.values()}) == 1


def test_from_settings_takes_the_fields_it_knows_and_the_overrides():
    study_like = {
        "modes": ["ct"],
        "lr": 1e-3,
        "patience": None,
        "net": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
        "patch_size": [16, 16, 16],
        "steps": {"1": 5},
    }
    cfg = TrainConfig.from_settings(study_like, mode="gbm", steps=50)
    assert (cfg.mode, cfg.lr, cfg.patience, cfg.steps, cfg.patch_size) == ("gbm", 1e-3, None, 50, (16, 16, 16))
    assert (
        cfg.net == NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
        and cfg.batch_size == TrainConfig().batch_size
    )
    with pytest.raises(TypeError, match="modes"):
        TrainConfig.from_settings({}, modes=["ct"])


def test_sgd_and_cpu_bf16_train_a_tiny_net(tmp_path):
    """The nnU-Net optimiser is SGD + Nesterov 0.99; bf16 autocast on CPU must still give a finite loss that falls."""
    import numpy as np

    from globalmask.checkpoint import ModelSpec
    from globalmask.masks import Recipe
    from globalmask.model import NetConfig
    from globalmask.preprocess import PreparedCase, PreprocessConfig
    from globalmask.training import Trainer

    shape = (16, 16, 16)
    ct = np.full(shape, -1.0, np.float32)
    ct[4:12, 4:12, 4:12] = 0.3
    label = np.zeros(shape, np.uint8)
    label[6:10, 6:10, 6:10] = 1
    case = PreparedCase(id="c", ct=ct, gbm=(ct > -0.5).astype(np.uint8), label=label, geometry=None)
    net = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    for overrides in (dict(optimizer="sgd", lr=1e-2), dict(bf16=True)):
        cfg = TrainConfig(mode="ct", steps=30, batch_size=1, net=net, channels_last=False, **overrides)
        spec = ModelSpec(
            mode="ct",
            recipe=Recipe.parse("bone"),
            preprocess=PreprocessConfig(spacing=(1.0, 1.0, 1.0)),
            labels={"background": 0, "box": 1},
            net=net,
            patch_size=shape,
        )
        torch.manual_seed(0)
        trainer = Trainer(spec, cfg, [case], (1.0, 1.0, 1.0), torch.device("cpu"))
        if cfg.optimizer == "sgd":
            assert (
                isinstance(trainer.opt, torch.optim.SGD)
                and trainer.opt.defaults["nesterov"]
                and trainer.opt.defaults["momentum"] == 0.99
            )
        losses = [trainer.step() for _ in range(30)]
        assert all(math.isfinite(v) for v in losses)
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), overrides


# ----------------------------------------------------------------------------------------------
# real trainings (slow): resume after SIGKILL, phantom runs, 2D slices


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    from globalmask.dataset import load_dataset, make_split, save_split
    from globalmask.phantom import make_phantom_dataset

    root = make_phantom_dataset(tmp_path / "ph", kind="headneck", cases=6, seed=5, shape=(32, 32, 32))
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(4, 1, 1)), root / "splits.json")
    args = ["train", str(root), "--mode", "ct+gbm", "--train-cases", "3", "--seed", "2", "--steps", "60",
            "--val-every", "20", "--checkpoint-every", "5", "--channels", "8", "16", "32", "--res-units", "1",
            "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "globalmask.cli"]

    # uninterrupted reference run
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)

    # the same run, killed as soon as a resumable checkpoint exists
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "run" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "done.json").exists(), "the run finished before it could be killed"
    killed_at = torch.load(last, weights_only=False)["step"]
    assert 0 < killed_at < 60

    done = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path / "run"), "--resume"],
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["step"] == b["step"] == 60
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    assert a["best_step"] == b["best_step"] and abs(a["best"] - b["best"]) < 1e-6


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
    cfg = TrainConfig(
        mode="gbm",
        train_cases=2,
        steps=6,
        val_every=3,
        net=NetConfig(spatial_dims=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
    )
    res = train(phantom_ds, tmp_path / "r2d", cfg, progress=False, device="cpu")
    ct = read_volume(phantom_ds.cases[phantom_ds.load_split().test[0]].image)
    pred = Predictor(res.model_path, device="cpu").predict(ct)
    assert pred.shape == ct.shape and np.array_equal(pred.affine, ct.affine)
    assert set(np.unique(pred.array)) <= {0, *phantom_ds.structures.values()}
    spec, _ = load_model(res.model_path)
    assert spec.net.spatial_dims == 2 and len(spec.patch_size) == 2


# ----------------------------------------------------------------------------------------------
# the "percentile" CT window of a run comes from its own training cases only


@pytest.mark.slow
def test_train_takes_the_window_from_its_own_training_cases(tmp_path):
    root = percentile_dataset(tmp_path / "ds")
    ds = load_dataset(root)
    ids = select_training_cases(ds.load_split().train, 2, seed=0)
    values = np.concatenate([100.0 * int(i[-3:]) + np.arange(60) for i in ids])
    expected = tuple(np.percentile(values, [0.5, 99.5]))  # validation (400-559 HU) and test cases excluded
    cfg = TrainConfig(
        mode="ct",
        train_cases=2,
        seed=0,
        steps=2,
        val_every=1,
        batch_size=1,
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
    )
    # the default window
    result = train(
        root,
        tmp_path / "run",
        cfg,
        DataConfig(recipe="threshold:-300", spacing=(4.0, 4.0, 4.0)),
        device="cpu",
        progress=False,
    )
    spec, _ = load_model(result.model_path)
    assert spec.preprocess.window == pytest.approx(expected)
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert saved["preprocess"]["window"] == pytest.approx(list(expected))


def test_data_config_window_is_two_numbers_or_percentile():
    assert DataConfig().window == "percentile"  # the default (benchmarks/convergence.md)
    assert DataConfig(window=[-200, 300]).window == (-200, 300)
    assert DataConfig(window="percentile").window == "percentile"
    with pytest.raises(
        GlobalmaskError, match=r"^data.window: got 'Percentile'; expected LO HI in HU .* or 'percentile'$"
    ):
        DataConfig(window="Percentile")


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"TQDM_DISABLE": "1"}])
def test_training_output_to_a_file_is_one_short_line_per_validation_check(tiny_ds, tmp_path, env):
    """Redirected output: no progress bar (no carriage returns), one line per validation check, few bytes per step."""
    steps = 12
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "globalmask.cli", "train", str(tiny_ds.root), "--mode", "ct", "--steps", str(steps),
           "--val-every", "3", "--patience", "0", "--channels", "4", "8", "--res-units", "0", "--batch-size", "1",
           "--device", "cpu", "--out", str(tmp_path / "run")]
    with log.open("wb") as f:
        done = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300
        )
    text = log.read_bytes()
    assert done.returncode == 0, text.decode()
    assert b"\r" not in text
    lines = text.decode().splitlines()
    checks = [ln for ln in lines if "validation Dice" in ln and ": step " in ln]
    assert [int(re.search(r"step (\d+)/", ln).group(1)) for ln in checks] == [3, 6, 9, 12]
    assert all(re.search(r"loss \d\.\d{4}, validation Dice \d\.\d{4}, best \d\.\d{4} at step \d+", ln) for ln in checks)
    assert len(text) / steps < 200, text.decode()  # a default run of 3000 steps: ~600 KB of bar updates before
    quiet = tmp_path / "quiet.log"
    with quiet.open("wb") as f:
        done = subprocess.run(
            [*cmd[:3], "--quiet", *cmd[3:-1], str(tmp_path / "run_q")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    assert done.returncode == 0
    assert ": step " not in quiet.read_text() and len(quiet.read_text().splitlines()) <= 2  # the result line only


# ----------------------------------------------------------------------------------------------
# extending a run: resume with a larger maximum; other mismatches named, before any preprocessing


def _no_preprocessing(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("preprocessed before the run folder was checked")

    monkeypatch.setattr(train_mod, "prepare_cases", refuse)


@pytest.mark.slow  # 4 + 2 steps of a 4-channel network
def test_resume_with_a_larger_maximum_extends_an_unconverged_run(tiny_ds, tmp_path, spies, monkeypatch):
    # still rising at step 4
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation([0.1, 0.2, 0.3, 0.4, 0.5, 0.45]))
    run = tmp_path / "run"
    first = train(tiny_ds, run, _cfg(), progress=False, device="cpu")
    assert (first.steps, first.converged, first.stop_reason) == (4, False, "max_steps")
    more = train(tiny_ds, run, _cfg(steps=6), progress=False, device="cpu", resume=True)
    assert (more.steps, more.max_steps, more.best_step, more.already_finished) == (6, 6, 5, False)
    done = json.loads((run / "done.json").read_text(encoding="utf-8"))
    assert (done["steps"], done["max_steps"]) == (6, 6)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["train"]["steps"] == 6
    assert pd.read_csv(run / "history.csv")["step"].tolist() == [1, 2, 3, 4, 5, 6]
    _no_preprocessing(monkeypatch)  # every check below comes before any preprocessing
    again = train(tiny_ds, run, _cfg(steps=6), progress=False, device="cpu", resume=True)
    assert again.already_finished and again.steps == 6 and again.best_val_dice == 0.5
    with pytest.raises(OutputError, match=r"train.steps: stored 6, given 5.*raised, never lowered"):
        train(tiny_ds, run, _cfg(steps=5), progress=False, device="cpu", resume=True)
    with pytest.raises(OutputError, match=r"train.lr: stored 0.002, given 0.001"):
        train(tiny_ds, run, _cfg(steps=6, lr=1e-3), progress=False, device="cpu", resume=True)
    with pytest.raises(OutputError, match=r"recipe.params.level: stored 250.0, given 300.0"):
        train(tiny_ds, run, _cfg(steps=6), DataConfig(recipe="bone:300"), progress=False, device="cpu", resume=True)
    with pytest.raises(OutputError, match=r"already holds a run; pass --resume"):
        train(tiny_ds, run, _cfg(steps=6), progress=False, device="cpu")


@pytest.mark.slow  # 4 steps of a 4-channel network
def test_a_converged_run_says_it_finished_and_is_not_extended(tiny_ds, tmp_path, spies, monkeypatch):
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation([0.5, 0.5, 0.5, 0.5]))
    run = tmp_path / "run"
    first = train(tiny_ds, run, _cfg(steps=10, patience=2), progress=False, device="cpu")
    assert (first.converged, first.stop_reason) == (True, "plateau")
    _no_preprocessing(monkeypatch)
    with pytest.raises(OutputError, match=r"converged at step 3 .*train.steps: stored 10, given 20"):
        train(tiny_ds, run, _cfg(steps=20, patience=2), progress=False, device="cpu", resume=True)
    assert train(tiny_ds, run, _cfg(steps=10, patience=2), progress=False, device="cpu", resume=True).already_finished


@pytest.mark.slow  # 4 steps of a 4-channel network, then the CLI's answers
def test_cli_resume_says_the_run_had_finished_and_names_a_mismatch(tiny_ds, tmp_path, capsys):
    from globalmask.cli import main

    argv = ["train", str(tiny_ds.root), "--mode", "gbm", "--train-cases", "2", "--steps", "3", "--val-every", "1",
            "--batch-size", "1", "--channels", "4", "8", "--res-units", "0", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "had already finished" in out and "stopped at its maximum of 3 steps" in out
    assert main([*argv, "--resume", "--lr", "0.01"]) == 2
    assert "train.lr: stored 0.002, given 0.01" in capsys.readouterr().err


@pytest.mark.slow  # 3 + 4 steps of a 4-channel network
def test_keep_last_false_drops_the_resume_state_of_a_converged_run_only(tiny_ds, tmp_path, spies, monkeypatch):
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation([0.5, 0.5, 0.5, 0.5]))
    converged = train(
        tiny_ds, tmp_path / "c", _cfg(steps=10, patience=2), progress=False, device="cpu", keep_last=False
    )
    assert converged.converged and not (tmp_path / "c" / "last.pt").exists() and (tmp_path / "c" / "model.pt").exists()
    assert train(
        tiny_ds, tmp_path / "c", _cfg(steps=10, patience=2), progress=False, device="cpu", resume=True
    ).already_finished
    monkeypatch.setattr(train_mod, "_validate", ScriptedValidation(SCRIPT))
    stopped = train(tiny_ds, tmp_path / "m", _cfg(), progress=False, device="cpu", keep_last=False)
    assert stopped.converged is False and (tmp_path / "m" / "last.pt").exists()  # kept: it may be extended
