"""Seed statistics: the t-interval against scipy's own, and paired differences."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from neumeta_fast.stats import mean_interval, paired_difference


@pytest.mark.parametrize("values", [[1.0, 2.0], [95.1, 96.3, 95.8], list(np.random.default_rng(0).normal(size=7))])
def test_mean_interval_matches_scipy(values):
    mean, low, high = mean_interval(values)
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((lo, hi))


def test_one_value_has_no_interval():
    mean, low, high = mean_interval([3.5])
    assert mean == 3.5 and math.isnan(low) and math.isnan(high)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_paired_difference_removes_the_shared_seed_effect():
    a, b = [90.0, 95.0, 99.0], [89.0, 94.1, 98.0]
    mean, low, high = paired_difference(a, b)
    assert mean == pytest.approx(0.9667, abs=1e-4)
    assert 0 < low < mean < high < 1.2  # an unpaired interval would span zero
