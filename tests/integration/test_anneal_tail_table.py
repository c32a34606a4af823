"""benchmarks/anneal_tail_table.py on a hand-made history: the level before the stop is the mean of the
checks from the study's best to its stop, the level after is every later check's mean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "anneal_tail_table.py"


def _load():
    spec = importlib.util.spec_from_file_location("anneal_tail_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_row_gives_best_against_best_and_the_mean_levels_around_the_stop():
    tail = {
        "stopped": {"best_val_dice": 0.70, "best_step": 200, "steps": 300},
        "tail": {"best_val_dice": 0.75, "best_step": 500},
        # before the best (not counted) | best .. stop: 0.70, 0.66 | after: 0.72, 0.75, 0.74
        "validation_curve": [[100, 0.5], [200, 0.70], [300, 0.66], [400, 0.72], [500, 0.75], [600, 0.74]],
    }
    text, gain, level = _load().row(tail, "CT only, 1 cases, draw 0")
    assert abs(gain - 0.05) < 1e-12 and abs(level - ((0.72 + 0.75 + 0.74) / 3 - 0.68)) < 1e-12
    assert text == ("| CT only, 1 cases, draw 0 | 0.700 at 200 (300) | 0.680 (2 checks) | 0.750 at 500 (**+0.050**) "
                    "| 0.737 (3; +0.057) | 0.740 |")
