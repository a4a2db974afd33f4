"""Models and checkpoints of the authors' NeuMeta code, used with this package's own API.

Their target models name the tensors the INR generates in a `learnable_parameter` property (a dict
name -> tensor, in the order of the INR's MLPs); their training scripts save the hyper-model as a
checkpoint dict (`model_state_dict`, `ema_shadow`, `optimizer_state_dict`, `epoch`, `best_acc`).
Neither holds the coordinate normaliser `norm` of `generate`: it is the training config's
`dimensions.norm` (64 in the authors' CIFAR ResNet-20 configs).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .compat.coordinates import learnable_layout
from .inr import INR, FreqSpec
from .layout import Layout

try:
    from numpy._core.multiarray import scalar as _scalar
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import scalar as _scalar

# The authors' `best_acc` is a NumPy float64 (sklearn's accuracy_score): plain data, which
# `weights_only=True` refuses unless allowed. NumPy 1.x and 2 files name the scalar's module differently.
_NUMPY_SCALARS = [(_scalar, "numpy.core.multiarray.scalar"), (_scalar, "numpy._core.multiarray.scalar"), np.dtype,
                  *(type(np.dtype(t)) for t in (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64))]


def model_layout(model: nn.Module) -> Layout:
    """The Layout of `model.learnable_parameter`: its tensors in that order, so tensor i is the INR's MLP i.

    The same names and shapes give the same Layout object (its coordinate table and the backends' plans
    are built once). Raises AttributeError when the model has no `learnable_parameter`.
    """
    return learnable_layout(model)


def load_inr(path: str | os.PathLike, *, weights: str = "ema", num_freqs: FreqSpec | None = None) -> INR:
    """The INR saved at `path`: an authors' checkpoint, this package's Trainer checkpoint or a state dict.

    Loaded on the CPU with `weights_only=True` (no code in the file runs; NumPy scalars are allowed).
    `weights`: "ema" (the averaged weights the authors evaluate) or "model" (the raw trained ones);
    `num_freqs`: see `INR.from_state_dict`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    with torch.serialization.safe_globals(_NUMPY_SCALARS):
        state = torch.load(path, map_location="cpu", weights_only=True)
    return INR.from_state_dict(state, weights=weights, num_freqs=num_freqs)
