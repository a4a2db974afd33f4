"""Intervals for results over a few seeds: a mean with its Student-t interval, and paired differences."""
from __future__ import annotations

import math
from typing import Sequence


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its two-sided Student-t confidence interval.

    With one value there is no spread to estimate: low and high are NaN.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    from scipy.stats import t

    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """mean_interval of a[i] - b[i]: pairs share a seed, so the seed's own effect cancels."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b)], confidence)
