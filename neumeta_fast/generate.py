"""generate(): weights of every layout tensor from an INR, on any backend."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import noise as _noise
from .backends import resolve
from .backends.request import Request
from .inr import INR
from .layout import Layout

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check(inr: INR, layout: Layout, norm: float, noise: float, samples: int, noise_mode: str,
           noise_tensor: torch.Tensor | None, dtype: torch.dtype) -> None:
    if not isinstance(inr, INR):
        raise TypeError(f"inr must be a neumeta_fast.INR, got {type(inr).__name__}")
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a neumeta_fast.Layout, got {type(layout).__name__}")
    if layout.num_tensors != inr.num_tensors:
        raise ValueError(f"the layout describes L={layout.num_tensors} tensors but the INR has "
                         f"{inr.num_tensors} MLPs: build INR(num_tensors={layout.num_tensors}, ...)")
    layout.check_output_dim(inr.output_dim)
    if not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0:
        raise ValueError(f"norm must be a finite number > 0, got {norm!r}")
    _noise.check_noise(float(noise), noise_mode, samples)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES} (MLP compute precision), got {dtype}")
    if noise_tensor is not None:
        expected = (samples, layout.num_rows, 6)
        if tuple(noise_tensor.shape) != expected or noise_tensor.dtype != torch.float32:
            raise ValueError(f"noise_tensor must be float32 of shape {expected}, got "
                             f"{noise_tensor.dtype} {tuple(noise_tensor.shape)}")
        if not _all_finite(noise_tensor):
            raise ValueError("noise_tensor contains NaN or inf")


def _raise_non_finite(inr: INR) -> None:
    bad = [n for n, p in inr.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"INR parameters contain NaN or inf: {bad[:5]}")
    raise ValueError("generated weights contain NaN or inf although the INR parameters are finite "
                     "(overflow in the MLP: check the INR's scale and the dtype)")


def generate(inr: INR, layout: Layout, *, norm: float, noise: float = 0.0, samples: int = 1,
             noise_mode: str = "reference", generator: torch.Generator | None = None, backend: str = "auto",
             dtype: torch.dtype = torch.float32, noise_tensor: torch.Tensor | None = None,
             check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Generate every tensor of `layout` with `inr`; returns name -> view of one flat float32 buffer.

    norm:         coordinate normaliser of SPEC 2 (64 for the CIFAR ResNet20 runs).
    noise:        coordinate noise scale s (0 = exact coordinates).
    samples:      K > 1 averages the weights of K samples; sample 0 is noise-free.
    noise_mode:   "reference" (all six columns, bit-compatible) or "channels" (channel positions only).
    generator:    torch.Generator for the noise (reproducible weights).
    backend:      "auto", "torch", "triton" or "cuda" (see `neumeta_fast.backends()`).
    dtype:        MLP compute precision (float32 default; bfloat16/float16 trade accuracy for speed).
    noise_tensor: explicit float32 [samples, rows, 6] noise used as given (restricted to the mode's columns).
    check_finite: raise if a generated weight is NaN/inf (one reduction over the output).
    With grad enabled the result is differentiable w.r.t. the INR's parameters.
    """
    _check(inr, layout, norm, noise, samples, noise_mode, noise_tensor, dtype)
    device = next(inr.parameters()).device
    if noise_tensor is not None:
        noise_tensor = noise_tensor.to(device)
    request = Request(float(norm), samples, float(noise), noise_mode, generator, noise_tensor, dtype, device)
    needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in inr.parameters())
    flat = resolve(backend, device, dtype, needs_grad).generate_flat(inr, layout, request)
    if check_finite and not _all_finite(flat):
        _raise_non_finite(inr)
    return layout.views(flat)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/inf in t: min and max propagate both, in one pass without a bool copy (15x cheaper than isfinite)."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def generate_into(inr: INR, module: nn.Module, layout: Layout, **kwargs) -> nn.Module:
    """Generate the layout's tensors and copy them into `module`'s tensors of the same names, in place."""
    state = _writable_state(module, ((s.name, s.shape) for s in layout.segments))  # fail before generating
    with torch.no_grad():  # the copies are outside autograd, so no graph is built for them
        _copy_into(state, generate(inr, layout, **kwargs))
    return module


def write_weights(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy `weights` into `module`'s state-dict tensors (parameters or buffers) of the same names, in
    place and outside autograd; returns `module`."""
    _copy_into(_writable_state(module, ((name, w.shape) for name, w in weights.items())), weights)
    return module


def _copy_into(state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, w in weights.items():
            state[name].copy_(w)


def _writable_state(module: nn.Module, shapes: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """`module.state_dict(keep_vars=True)`, checked to hold a tensor of each (name, shape) to be written."""
    state = module.state_dict(keep_vars=True)
    for name, shape in shapes:
        if name not in state:
            raise KeyError(f"tensor {name!r} is not in {type(module).__name__}.state_dict(): cannot write the "
                           "generated tensor")
        if tuple(state[name].shape) != tuple(shape):
            raise ValueError(f"tensor {name!r}: {type(module).__name__} has shape {tuple(state[name].shape)}, "
                             f"generated {tuple(shape)}")
    return state
