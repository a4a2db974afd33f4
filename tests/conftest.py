"""Test set-up for the whole run.

Without a GPU, Triton kernels can only run in its interpreter, which must be chosen before triton is
first imported (by any test module): set it here, for the whole run.

Property-based tests draw the same examples on every run (derandomized), so CI cannot fail on a draw
the last run did not make; NEUMETA_FUZZ_RANDOM=1 draws fresh ones for exploring.
"""
import os

import torch
from hypothesis import settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile("explore" if os.environ.get("NEUMETA_FUZZ_RANDOM") == "1" else "repeatable")
