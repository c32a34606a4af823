"""Which cases each training stage sees, and which checkpoint is kept as the best.

The validation function of the training loop is replaced by a scripted one: it records the case
ids it is given and the weights it sees, and returns a fixed sequence of Dice values, so the best
step is known in advance and the kept checkpoint can be compared with the weights of that step.
"""

from __future__ import annotations

import json

import pytest
import torch

import globalmask.train as train_mod
from globalmask.checkpoint import load_model
from globalmask.dataset import Split, load_dataset, save_split
from globalmask.model import NetConfig
from globalmask.train import DataConfig, TrainConfig, prepare_data, train

from .conftest import make_tiny_dataset

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

    def __call__(self, net, cases, mode, patch, cfg, labels, device):
        self.ids.append([pc.id for pc in cases])
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
    return TrainConfig(**{"mode": "gbm", "train_cases": 2, "seed": 0, "steps": 4, "val_every": 1, "checkpoint_every": 2, "net": TINY_NET, "batch_size": 1, **kw})


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
    assert cfg["dataset_name"] == "tiny" and cfg["preprocess"]["spacing"] == [2.0, 2.0, 2.5]  # median of the train split
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
    for k, v in scripted.weights[3].items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.slow  # 2 + 2 + 4 steps of a 4-channel network: a few seconds
def test_an_interrupted_run_resumes_to_the_same_result(tiny_ds, tmp_path, spies, monkeypatch):
    from globalmask.errors import OutputError

    val, _, _ = spies
    part = train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu", stop_after=2)
    assert part.steps == 2 and part.best_step == 2 and not (tmp_path / "part" / "done.json").exists()
    with pytest.raises(OutputError, match="--resume"):
        train(tiny_ds, tmp_path / "part", _cfg(), progress=False, device="cpu")
    with pytest.raises(OutputError, match="different settings"):
        train(tiny_ds, tmp_path / "part", _cfg(steps=5), progress=False, device="cpu", resume=True)
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
    assert again.model_path == tmp_path / "part" / "model.pt" and len(val.ids) == 4
    assert full.best_step == 2


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
