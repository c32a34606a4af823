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
