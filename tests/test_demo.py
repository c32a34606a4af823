"""demo.py: the one-command demo runs end to end and says how each model stopped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from globalmask.demo import DEMO, run_demo


@pytest.mark.slow
def test_quick_demo_writes_its_table_and_says_how_training_stopped(tmp_path):
    lines: list[str] = []
    table = run_demo(tmp_path / "demo", quick=True, modes=("gbm",), device="cpu", echo=lines.append)
    assert list(table["mode"]) == ["gbm"] and int(table["missed"].iloc[0]) >= 0
    per_case = pd.read_csv(tmp_path / "demo" / "demo_per_case.csv")
    assert set(per_case["mode"]) == {"gbm"} and len(per_case) == 5 * 2  # 2 test cases x 5 structures, none dropped
    text = "\n".join(lines)
    assert "gbm: best validation Dice" in text and "stopped at 20 (fixed budget)" in text  # --quick: a fixed 20 steps


def test_full_demo_trains_each_model_to_a_validated_plateau():
    assert DEMO.patience is not None and DEMO.steps > 10 * DEMO.val_every  # room for a plateau before the maximum


# ----------------------------------------------------------------------------------------------
# issue 29: the demo's wiring, fast. The cohort is the tiny dataset of tests/conftest.py, training is a
# recorder, and the "models" predict the reference itself (ct) or nothing (gbm): known scores.


def _fake_demo(monkeypatch, seen):
    import shutil

    import globalmask.demo as demo
    from globalmask.io import Volume, read_volume, write_volume
    from globalmask.training import TrainResult

    from .conftest import make_tiny_dataset

    def cohort(out, **kw):
        seen.setdefault("cohort", []).append((out, kw))
        if not out.exists():
            make_tiny_dataset(out, n=10, shape=(16, 16, 12))
        return out

    def train(ds, run, cfg, data_cfg, device, resume):
        seen.setdefault("train", []).append((run, cfg, data_cfg, device, resume))
        converged = {None: None, 5: True}[cfg.patience]
        return TrainResult(run, run / f"{cfg.mode.value}.pt", 0.9, 10, cfg.steps, 1.0, ["x"], converged,
                           "max_steps", cfg.steps)

    class Predictor:  # "ct.pt" predicts the reference, "gbm.pt" nothing
        def __init__(self, model, device):
            self.model, self.device = model, device

        def predict_files(self, images, out, progress):
            seen.setdefault("predict", []).append((self.device, out, progress))
            out.mkdir(parents=True, exist_ok=True)
            for image in images:
                case = image.name.replace("_0000.nii.gz", "")
                label = image.parents[1] / "labelsTr" / f"{case}.nii.gz"
                if self.model.name == "ct.pt":
                    shutil.copy(label, out / f"{case}.nii.gz")
                else:
                    ref = read_volume(label)
                    write_volume(Volume(ref.array * 0, ref.affine), out / f"{case}.nii.gz")

    monkeypatch.setattr(demo, "make_phantom_dataset", cohort)
    monkeypatch.setattr(demo, "train", train)
    monkeypatch.setattr(demo, "Predictor", Predictor)


def test_the_quick_demo_trains_each_mode_on_its_cohort_and_scores_the_test_cases(tmp_path, monkeypatch):
    import json

    from globalmask.dataset import make_split
    from globalmask.demo import demo_net
    from globalmask.model import InputMode

    seen: dict = {}
    _fake_demo(monkeypatch, seen)
    lines: list[str] = []
    out = tmp_path / "demo"
    with pytest.warns(UserWarning, match="predictions/gbm is empty"):  # the gbm "model" found nothing
        table = run_demo(out, kind="thorax", seed=2, device="cpu", quick=True, modes=("ct", "gbm"),
                         echo=lines.append)
    data = out / "phantom_thorax"
    assert seen["cohort"] == [(data, dict(kind="thorax", cases=9, seed=2, shape=(48, 48, 48), progress=True))]
    split = make_split([f"case_{i:03d}" for i in range(10)], seed=2)  # the cohort had none: a seeded one, saved
    saved = json.loads((data / "splits.json").read_text(encoding="utf-8"))
    assert (saved["test"], saved["train"]) == (list(split.test), list(split.train))
    assert "seeded 60:20:20 split (seed 2)" in (data / "splits.json").read_text(encoding="utf-8")
    assert [run for run, *_ in seen["train"]] == [out / "runs" / "ct", out / "runs" / "gbm"]
    for (_, cfg, data_cfg, device, resume), mode in zip(seen["train"], ("ct", "gbm")):
        assert (cfg.mode, cfg.steps, cfg.val_every, cfg.patience, cfg.train_cases, cfg.seed, cfg.net) == (
            InputMode.parse(mode), 20, 10, None, 2, 2, demo_net())
        assert (data_cfg.cache_dir, device, resume) == (out / "cache", "cpu", True)
    assert table.to_dict(orient="records") == [
        {"mode": "ct", "Dice": "1.000 ± 0.000", "CoM error (mm)": "0.00 ± 0.00", "HD95 (mm)": "0.00 ± 0.00",
         "missed": 0},
        {"mode": "gbm", "Dice": "0.000 ± 0.000", "CoM error (mm)": "n/a", "HD95 (mm)": "n/a",
         "missed": 2 * len(split.test)},
    ]
    # each mode's test cases predicted on the device asked for, with a progress bar, into predictions/<mode>
    assert seen["predict"] == [("cpu", out / "predictions" / m, True) for m in ("ct", "gbm")]
    per_case = pd.read_csv(out / "demo_per_case.csv")
    assert list(per_case["mode"]) == ["ct"] * 4 + ["gbm"] * 4  # 2 test cases x 2 structures per mode
    assert sorted(p.name for p in (out / "predictions" / "ct").glob("*.nii.gz")) == [
        f"{c}.nii.gz" for c in sorted(split.test)]
    md = (out / "demo_results.md").read_text(encoding="utf-8").splitlines()
    assert md[:3] == ["| mode | Dice | CoM error (mm) | HD95 (mm) | missed |", "|---|---|---|---|---|",
                      "| ct | 1.000 ± 0.000 | 0.00 ± 0.00 | 0.00 ± 0.00 | 0 |"]
    assert lines[0] == ("phantom cohort: 10 thorax cases at 48^3 (6 train / 2 validation / 2 test); each mode trains "
                        "on the same 2 case(s) for 20 steps")
    assert lines[1].startswith("\nTest-set results (2 held-out phantom cases; mean ± std over cases and structures)")
    assert lines[2] == table.to_string(index=False)
    assert lines[3].startswith("\nper-structure Dice:\n") and "left" in lines[3]
    assert lines[4] == ("\ntraining: ct: best validation Dice 0.900 at step 10, stopped at 20 (fixed budget); "
                        "gbm: best validation Dice 0.900 at step 10, stopped at 20 (fixed budget)")
    assert lines[5].startswith("\nwall time ") and lines[5].endswith(f" s; results in {out}")


def test_the_full_demo_trains_to_a_plateau_with_the_settings_given(tmp_path, monkeypatch):
    """Without --quick: the full demo's cohort (30 cases at 64^3) and plateau rule, with the steps and training
    cases given; a cohort that has its split keeps it."""
    import json

    seen: dict = {}
    _fake_demo(monkeypatch, seen)
    data = tmp_path / "demo" / "phantom_headneck"
    from .conftest import make_tiny_dataset

    make_tiny_dataset(data, n=10, shape=(16, 16, 12))
    split = {"train": [f"case_{i:03d}" for i in range(7)], "validation": ["case_007"], "test": ["case_008", "case_009"]}
    (data / "splits.json").write_text(json.dumps(split), encoding="utf-8")
    lines: list[str] = []
    table = run_demo(tmp_path / "demo", train_cases=3, steps=7, device="cpu", modes=("ct",), echo=lines.append)
    assert seen["cohort"][0][1] == dict(kind="headneck", cases=30, seed=0, shape=(64, 64, 64), progress=True)
    (_, cfg, *_), = seen["train"]
    assert (cfg.steps, cfg.val_every, cfg.patience, cfg.train_cases, cfg.seed) == (7, 50, 5, 3, 0)
    assert lines[0] == ("phantom cohort: 10 headneck cases at 64^3 (7 train / 1 validation / 2 test); each mode trains "
                        "on the same 3 case(s) to a validated plateau (at most 7 steps)")
    assert "stopped at 7 (plateau)" in lines[4]
    assert json.loads((data / "splits.json").read_text(encoding="utf-8")) == split
    assert list(table["mode"]) == ["ct"]


def test_the_demos_per_structure_table_and_its_markdown():
    from globalmask.demo import _markdown, structure_table

    per_case = pd.DataFrame({"mode": ["ct", "ct", "gbm", "gbm"], "structure": ["s", "t", "s", "s"],
                             "dice": [0.6, 0.8, 0.5, 0.0]})
    table = structure_table(per_case)
    assert list(table.index) == ["s", "t"] and list(table.columns) == ["ct", "gbm"]
    assert table.loc["s"].tolist() == [0.6, 0.25] and table.loc["t", "ct"] == 0.8 and np.isnan(table.loc["t", "gbm"])
    assert _markdown(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})) == "| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |\n"
