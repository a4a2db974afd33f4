"""Errors reported on one line (the CLI's contract: `error: <what is wrong>`, exit 2)."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
