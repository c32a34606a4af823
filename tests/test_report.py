"""report.py: the smallest attainable Wilcoxon p-value quoted in the report, checked against scipy;
measured values printed beside a target with enough decimals to tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon


@pytest.mark.parametrize("n", [3, 5, 6, 8])
def test_wilcoxon_floor_is_the_smallest_attainable_p(n):
    """All n differences positive is the most extreme outcome; its exact p is the floor the report quotes."""
    from globalmask.report import wilcoxon_floor

    assert wilcoxon(np.arange(1, n + 1)).pvalue == pytest.approx(wilcoxon_floor(n))
    assert (wilcoxon_floor(n) < 0.05) == (n >= 6)


@pytest.mark.parametrize("value, target, digits, text", [
    (0.8497, 0.85, 3, "0.8497"),    # rounds to the target at 3 decimals: one more tells them apart
    (0.84996, 0.85, 3, "0.84996"),
    (0.8612, 0.85, 3, "0.861"),     # clearly apart: the usual precision
    (0.85, 0.85, 3, "0.850"),       # equal: reached, nothing to tell apart
    (2.504, 2.5, 2, "2.504"),
])
def test_a_value_beside_its_target_shows_the_decimal_that_decides(value, target, digits, text):
    from globalmask.report import against_target

    assert against_target(value, target, digits) == text
