"""Type checks of config dataclasses from their annotations.

A config value of the wrong type ("8" or 4.5 for an int, null for a table, NaN for a rate) is
named with its field, never coerced ("12" is not the widths [1, 2]) nor left to fail deep in a run.
"""
from __future__ import annotations

import dataclasses
import math
import numbers


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# annotation -> (test, how the message names it)
_KINDS = {
    "int": (_is_int, "an int"),
    "float": (_is_number, "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "None": (lambda v: v is None, "null"),
    "dict": (lambda v: isinstance(v, dict), "a table of keys"),
    "list[int]": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of ints"),
}


def check_types(obj, error: type[Exception]) -> None:
    """Raise `error` naming the first field of dataclass `obj` whose value does not fit its annotation
    (annotations are strings such as "int", "str | None", "list[int] | None")."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kinds = [_KINDS[k.strip()] for k in str(f.type).split("|")]
        if not any(test(value) for test, _ in kinds):
            expected = " or ".join(name for _, name in kinds)
            raise error(f"{f.name} must be {expected}, got {value!r} ({type(value).__name__})")
