"""The reference's `device="cuda"` defaults, made safe for machines without CUDA."""
from __future__ import annotations

import warnings

import torch
from torch import nn

_warned = False


def resolve_device(device, hyper_model: nn.Module) -> torch.device:
    """The device to compute on: `device`, or the hyper-model's where CUDA was asked for but is absent.

    The reference moves coordinates to `device` and expects the hyper-model there already; a
    mismatch is reported here instead of as a device error deep inside a matmul.
    """
    global _warned
    wanted = torch.device(device)
    try:
        actual = next(hyper_model.parameters()).device
    except StopIteration:
        raise ValueError(f"hyper_model {type(hyper_model).__name__} has no parameters") from None
    if wanted.type == "cuda" and not torch.cuda.is_available():
        if not _warned:
            warnings.warn(f"device={device!r} but CUDA is not available: computing on the hyper-model's device "
                          f"({actual}) instead (warned once)", RuntimeWarning, stacklevel=3)
            _warned = True
        return actual
    if wanted.type != actual.type or (wanted.index is not None and wanted != actual):
        raise ValueError(f"device={device!r} but the hyper-model's parameters are on {actual}: "
                         f"move it with hyper_model.to({str(wanted)!r}) or pass device={str(actual)!r}")
    return actual
