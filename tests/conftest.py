"""Without a GPU, Triton kernels can only run in its interpreter, which must be chosen before
triton is first imported (by any test module): set it here, for the whole session."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
