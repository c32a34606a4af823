"""demo.py: the one-command demo runs end to end and says how each model stopped."""

from __future__ import annotations

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
