"""All of csrc/cpu (the path solver, the coordinate and ResMLP ops, their bindings) built with
AddressSanitizer and UndefinedBehaviorSanitizer, fuzzed through the library: every property of
tests/_fuzz.py (solve, lower_bound, cost, path_order, rejected inputs, fill_coordinates,
inr_forward[_separable], generate) and the tests of the solver's pieces (tests/test_tsp_parts.py) run
on the sanitized build in a child process (tests/_sanitize.py). Any sanitizer report, failed property
or hung example fails the test.

The first run builds into build/sanitize (about a minute on 2 cores); later runs recompile only
changed sources, and the default run (20 examples per property) takes seconds. A longer run, on
demand, with a seed of your choice (the same seed replays the same examples):

    NEUMETA_SANITIZE_EXAMPLES=2000 NEUMETA_SANITIZE_SEED=7 .venv/bin/python -m pytest -q tests/test_sanitize.py

Skips where the C++ compiler has no ASan/UBSan runtime.
"""
import os

import pytest

import _sanitize

EXAMPLES = int(os.environ.get("NEUMETA_SANITIZE_EXAMPLES", "20"))
SEED = int(os.environ.get("NEUMETA_SANITIZE_SEED", "0"))
BUILD_SECONDS = 1800  # the first build, on a busy 2-core machine


def test_fuzz_under_sanitizers():
    reason = _sanitize.unavailable()
    if reason:
        pytest.skip(reason)
    timeout = BUILD_SECONDS + EXAMPLES * _sanitize.EXAMPLE_SECONDS
    done = _sanitize.fuzz(EXAMPLES, SEED, timeout)
    assert done.returncode == 0, f"sanitized fuzz failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-12000:]}"
    assert f"clean: {EXAMPLES} examples" in done.stdout
