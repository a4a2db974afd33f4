"""The one check of numeric arguments behind the public API: the same rule and error everywhere.

Python and NumPy numbers pass (as Python int / float); bools, strings, tensors and other objects
are a TypeError; NaN, inf and values outside the allowed range are a ValueError that names the
argument, the limit and the value given.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

# The range of finite positive float32 values: parameters and coordinates are float32.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def number(name: str, value, *, integer: bool = False, low: float | None = None, high: float | None = None,
           above: float | None = None, why: str = "") -> int | float:
    """`value` as a Python int (integer=True) or float, checked to be finite and in range.

    low/high: inclusive bounds; above: exclusive lower bound; why: appended to a range error.
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a real number'}, got {value!r} "
                        f"({type(value).__name__})")
    try:
        value = int(value) if integer else float(value)
    except OverflowError:  # a Python int beyond float range
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    for bad, rule in ((low is not None and value < low, f">= {low}"), (high is not None and value > high, f"<= {high}"),
                      (above is not None and not value > above, f"> {above}")):
        if bad:
            raise ValueError(f"{name} must be {rule}, got {value!r}{': ' + why if why else ''}")
    return value
