"""study/config.py: the study configuration accepts the "percentile" window and refuses other words."""

from __future__ import annotations

import pytest
import yaml

from globalmask.errors import GlobalmaskError
from globalmask.study.config import StudyConfig


def test_study_config_accepts_percentile_and_refuses_other_words():
    # the defaults: per-run window, steps a maximum
    assert StudyConfig().window == "percentile" and StudyConfig().steps == 3000
    assert StudyConfig(window="percentile").window == "percentile"
    assert StudyConfig(window=[-200, 300]).window == [-200, 300]
    with pytest.raises(GlobalmaskError, match="window"):
        StudyConfig(window="nnunet")
    with pytest.raises(GlobalmaskError, match="window"):
        StudyConfig(window=[300, -200])


def test_shifts_suite_is_written_out_level_by_level_so_the_plan_hashes_the_levels(tmp_path):
    from globalmask.shift import VARIATION_SUITE, variation_from_dict

    path = tmp_path / "study.yaml"
    path.write_text("shifts: suite\nshift_sizes: [2, all]\n", encoding="utf-8")
    cfg = StudyConfig.from_yaml(path)
    assert cfg.shifts == [v.to_dict() for v in VARIATION_SUITE]
    assert [v.name for v in cfg.shift_levels("2")] == [v.name for v in VARIATION_SUITE]
    assert cfg.shift_levels("1") == [] and len(cfg.shift_levels("all")) == len(VARIATION_SUITE)
    # the old scanner shifts and the new families mix, and read back as the same objects
    mixed = StudyConfig(
        shifts=[
            {"name": "mild", "offset": 40.0, "scale": 1.05, "noise": 15.0, "blur_mm": 0.5},
            VARIATION_SUITE[0].to_dict(),
        ]
    )
    assert [type(v).__name__ for v in mixed.shift_levels()] == ["ScannerShift", "TubeVoltage"]
    assert variation_from_dict(mixed.shifts[1]) == VARIATION_SUITE[0]
    # at their defaults the new settings stay out of the plan (committed plans keep their hashes)
    assert "shift_sizes" not in StudyConfig().plan_dict() and cfg.plan_dict()["shift_sizes"] == [2, "all"]


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"shifts": "everything"}, "shifts"),
        (
            {"shifts": [{"family": "voltage", "level": "80kVp", "iodine_ratio": 1.6, "bone_ratio": 1.3, "wattage": 3}]},
            "wattage",
        ),
        ({"shifts": [{"family": "warp", "level": "x"}]}, "unknown variation family"),
        ({"shifts": [{"name": "none", "offset": 1.0}]}, "other than 'none'"),
        ({"shift_sizes": [3]}, "shift_sizes"),
    ],
)
def test_bad_shift_settings_are_refused_naming_them(settings, fragment):
    with pytest.raises(GlobalmaskError, match="shift") as err:
        StudyConfig(**settings)
    assert fragment in str(err.value)


def test_a_run_of_the_study_gets_the_study_training_settings_and_its_own():
    cfg = StudyConfig(
        lr=1e-3,
        weight_decay=0.0,
        optimizer="sgd",
        schedule="cosine",
        warmup_steps=10,
        bf16=True,
        patience=None,
        patch_size=[32, 32, 16],
        steps={"1": 200, "all": 400},
        net={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0},
    )
    run = cfg.train_config("ct+gbm", 1, 7, cfg.steps_for("1"))
    assert (run.mode, run.train_cases, run.seed, run.steps) == ("ct+gbm", 1, 7, 200)
    assert (
        run.lr,
        run.weight_decay,
        run.optimizer,
        run.schedule,
        run.warmup_steps,
        run.bf16,
        run.patience,
        run.patch_size,
    ) == (1e-3, 0.0, "sgd", "cosine", 10, True, None, (32, 32, 16))
    assert (
        run.net.channels == (8, 16, 32)
        and run.val_every == cfg.val_every
        and run.max_patch_voxels == cfg.max_patch_voxels
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lr": 20}, "study.lr: got 20; expected a finite number > 0 and <= 10"),
        ({"batch_size": 1000}, "study.batch_size: got 1000; expected an integer >= 1 and <= 512"),
        ({"patch_size": [96, 64, 40]}, "study.patch_size: got 96 64 40; expected multiples of 16"),
        (
            {"steps": {"1": 100, "all": 400}, "warmup_steps": 100},
            "study.warmup_steps: got 100; expected fewer than the maximum steps (100)",
        ),
        ({"steps": {"1": 0}}, "study.steps.1: got 0; expected an integer >= 1"),
        (
            {"spacing": [6, 6, 60]},
            "study.spacing: got 6 6 60; expected 3 spacings in mm, each a finite number >= 0.1 and <= 20",
        ),
        ({"bf16": "yes"}, "study.bf16: got 'yes'; expected true or false"),
        ({"draws": 0}, "study.draws: got 0; expected an integer >= 1"),
        ({"shift_sizes": [1, 3]}, "study.shift_sizes: got 3; expected a training size of this study"),
        # issue 29: the study's own settings, each refused naming itself and what it accepts
        ({"modes": []}, "study.modes: got nothing; expected a non-empty list of ct, gbm, ct+gbm, ct+coords"),
        (
            {"train_sizes": "all"},
            "study.train_sizes: got 'all'; expected a non-empty list of positive integers or 'all'",
        ),
        ({"train_sizes": [1, 0]}, "study.train_sizes: got 0; expected positive integers or 'all'"),
        (
            {"external_test": "ext"},
            "study.external_test: got 'ext'; expected a list of dataset folders (nnU-Net layout)",
        ),
        ({"external_test": ["a", "a"]}, "study.external_test: got 'a' 'a'; expected each dataset once"),
        (
            {"steps": {}},
            "study.steps: got {}; expected an integer >= 1, or a mapping of training size to integers >= 1",
        ),
        (
            {"shifts": [{"family": "warp", "level": "x"}]},
            "study.shifts: got {'family': 'warp', 'level': 'x'}; expected a variation of globalmask.shift (",
        ),
    ],
)
def test_training_settings_fail_at_load_by_the_rules_of_a_run(settings, message, tmp_path):
    """Refused when the study is loaded (not hours later inside a run), and from YAML with the file's name."""
    with pytest.raises(GlobalmaskError) as err:
        StudyConfig(**settings)
    assert str(err.value).startswith(message)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with pytest.raises(GlobalmaskError) as err:
        StudyConfig.from_yaml(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_unknown_settings_are_refused_naming_the_file_and_the_known_ones(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("lr_rate: 0.01\ndraws: 2\n", encoding="utf-8")
    with pytest.raises(GlobalmaskError) as err:
        StudyConfig.from_yaml(path)
    assert err.value.path == path
    assert str(err.value).startswith(
        f"{path}: unknown study setting(s) ['lr_rate']; known: ['ablation_draws', 'ablation_recipes', 'batch_size', "
    )


def test_the_plan_leaves_out_paths_and_execution_settings():
    """External sets and a split file enter the plan by content, never by path; the device never does."""
    plain = StudyConfig().plan_dict()
    assert plain["split"] is None and "external_test" not in plain and "device" not in plain
    elsewhere = StudyConfig(split="/data/splits.json", external_test=["ext"], device="cpu").plan_dict()
    assert "split" not in elsewhere and "external_test" not in elsewhere
    assert elsewhere == {k: v for k, v in plain.items() if k != "split"}


def test_a_run_gets_its_own_mode_and_the_ablation_its_recipes():
    assert StudyConfig().train_config("ct", None, 0, 100).mode == "ct"
    assert StudyConfig().train_config("gbm", None, 0, 100).mode == "gbm"
    # "auto": no fixed recipe of its own (the ablation's winner is chosen later); else the study's recipe first
    assert StudyConfig(recipe="auto", ablation_recipes=["body"]).candidate_recipes() == [
        "bone:level=250", "body:level=-500"]
    assert StudyConfig(recipe="threshold:-200", ablation_recipes=["body"]).candidate_recipes() == [
        "threshold:level=-200", "bone:level=250", "body:level=-500"]
