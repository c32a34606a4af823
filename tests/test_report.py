"""report.py: the smallest attainable Wilcoxon p-value quoted in the report, checked against scipy."""

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
