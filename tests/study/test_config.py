"""study/config.py: the study configuration accepts the "percentile" window and refuses other words."""

from __future__ import annotations

import pytest

from globalmask.errors import GlobalmaskError
from globalmask.study.config import StudyConfig


def test_study_config_accepts_percentile_and_refuses_other_words():
    assert StudyConfig().window == "percentile" and StudyConfig().steps == 3000  # the defaults: per-run window, steps a maximum
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
    mixed = StudyConfig(shifts=[{"name": "mild", "offset": 40.0, "scale": 1.05, "noise": 15.0, "blur_mm": 0.5}, VARIATION_SUITE[0].to_dict()])
    assert [type(v).__name__ for v in mixed.shift_levels()] == ["ScannerShift", "TubeVoltage"]
    assert variation_from_dict(mixed.shifts[1]) == VARIATION_SUITE[0]
    # at their defaults the new settings stay out of the plan (committed plans keep their hashes)
    assert "shift_sizes" not in StudyConfig().plan_dict() and cfg.plan_dict()["shift_sizes"] == [2, "all"]


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"shifts": "everything"}, "shifts"),
        ({"shifts": [{"family": "voltage", "level": "80kVp", "iodine_ratio": 1.6, "bone_ratio": 1.3, "wattage": 3}]}, "wattage"),
        ({"shifts": [{"family": "warp", "level": "x"}]}, "unknown variation family"),
        ({"shifts": [{"name": "none", "offset": 1.0}]}, "other than 'none'"),
        ({"shift_sizes": [3]}, "shift_sizes"),
    ],
)
def test_bad_shift_settings_are_refused_naming_them(settings, fragment):
    with pytest.raises(GlobalmaskError, match="shift") as err:
        StudyConfig(**settings)
    assert fragment in str(err.value)
