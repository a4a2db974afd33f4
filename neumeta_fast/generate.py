"""generate(): weights of every layout tensor from an INR, on any backend."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import noise as _noise
from .backends import resolve
from .backends.request import Request
from .encoding import check_norm
from .inr import INR
from .layout import Layout

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check(inr: INR, layout: Layout, norm: float, noise: float, samples: int, noise_mode: str,
           noise_tensor: torch.Tensor | None, dtype: torch.dtype) -> tuple[float, float, int, torch.device]:
    """Every argument checked; returns (norm, noise, samples) as Python numbers and the INR's device."""
    if not isinstance(inr, INR):
        raise TypeError(f"inr must be a neumeta_fast.INR, got {type(inr).__name__}")
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a neumeta_fast.Layout, got {type(layout).__name__}")
    if layout.num_tensors != inr.num_tensors:
        raise ValueError(f"the layout describes L={layout.num_tensors} tensors but the INR has "
                         f"{inr.num_tensors} MLPs: build INR(num_tensors={layout.num_tensors}, ...)")
    device = _inr_device(inr)
    layout.check_output_dim(inr.output_dim)
    norm = check_norm("norm", norm)
    noise, samples = _noise.check_noise(noise, noise_mode, samples, layout.num_rows)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES} (MLP compute precision), got {dtype}")
    if noise_tensor is not None:
        if not isinstance(noise_tensor, torch.Tensor):
            raise TypeError(f"noise_tensor must be a torch.Tensor, got {type(noise_tensor).__name__}")
        expected = (samples, layout.num_rows, 6)
        if tuple(noise_tensor.shape) != expected or noise_tensor.dtype != torch.float32:
            raise ValueError(f"noise_tensor must be float32 of shape {expected}, got "
                             f"{noise_tensor.dtype} {tuple(noise_tensor.shape)}")
        if not _all_finite(noise_tensor):
            raise ValueError("noise_tensor contains NaN or inf")
    return norm, noise, samples, device


def _inr_device(inr: INR) -> torch.device:
    """The one device of the INR's parameters, which must hold float32 data."""
    params = list(inr.parameters())
    devices = {p.device for p in params}
    if len(devices) != 1:
        raise ValueError(f"the INR's parameters are on several devices {sorted(map(str, devices))}: move it with "
                         "inr.to(device)")
    device = params[0].device
    if device.type == "meta":
        raise ValueError("the INR's parameters are on the meta device (shapes only, no values): load or "
                         "materialise them first")
    dtypes = {p.dtype for p in params}
    if dtypes != {torch.float32}:
        raise ValueError(f"the INR's parameters must be float32 (`dtype=` picks the compute precision), got "
                         f"{sorted(map(str, dtypes))}: use inr.float()")
    return device


def _check_finite_parameters(inr: INR) -> None:
    """Refuse NaN/inf in the INR before generating: fused kernels' ReLU may turn NaN into 0, so the
    output check alone can pass finite but wrong weights. One fused max-abs over every tensor (a few
    launches on a GPU, not one per tensor: that doubled a small generate()), one sync in all."""
    params = [p.detach() for p in inr.parameters() if p.numel()]
    if params and not bool(torch.isfinite(torch.stack(torch._foreach_norm(params, float("inf")))).all()):
        bad = [n for n, p in inr.named_parameters() if not torch.isfinite(p).all()]
        raise ValueError(f"INR parameters contain NaN or inf: {bad[:5]}")


def generate(inr: INR, layout: Layout, *, norm: float, noise: float = 0.0, samples: int = 1,
             noise_mode: str = "reference", generator: torch.Generator | None = None, backend: str = "auto",
             dtype: torch.dtype = torch.float32, noise_tensor: torch.Tensor | None = None,
             check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Generate every tensor of `layout` with `inr`; returns name -> view of one flat float32 buffer.

    norm:         coordinate normaliser (docs/spec.md §6; 64 for the CIFAR ResNet20 runs).
    noise:        coordinate noise scale s (0 = exact coordinates).
    samples:      K > 1 averages the weights of K samples; sample 0 is noise-free.
    noise_mode:   "reference" (all six columns, bit-compatible) or "channels" (channel positions only).
    generator:    torch.Generator for the noise (reproducible weights).
    backend:      "auto", "torch", "triton" or "cuda" (see `neumeta_fast.backends()`).
    dtype:        MLP compute precision (float32 default; bfloat16/float16 trade accuracy for speed).
    noise_tensor: explicit float32 [samples, rows, 6] noise used as given (restricted to the mode's columns;
                  in reference mode it may move a row to its own or the previous tensor's MLP only).
    check_finite: raise if an INR parameter (checked first) or a generated weight is NaN/inf.
    With grad enabled the result is differentiable w.r.t. the INR's parameters.
    Numbers may be Python or NumPy scalars; anything else (bool, str, tensor) is a TypeError.
    """
    norm, noise, samples, device = _check(inr, layout, norm, noise, samples, noise_mode, noise_tensor, dtype)
    layout.check_fits(device)
    if check_finite:
        _check_finite_parameters(inr)
    if noise_tensor is not None:
        noise_tensor = noise_tensor.to(device)
        if noise_mode == "reference":  # the one routing rule of every backend
            error = _noise.routing_error(layout.coordinates(device)[:, 0], noise_tensor[..., 0])
            if error is not None:
                raise ValueError(error)
    request = Request(norm, samples, noise, noise_mode, generator, noise_tensor, dtype, device)
    needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in inr.parameters())
    flat = resolve(backend, device, dtype, needs_grad).inr_forward(inr, layout, request)
    if check_finite and not _all_finite(flat):
        raise ValueError("generated weights contain NaN or inf although the INR parameters are finite "
                         "(overflow in the MLP: check the INR's scale and the dtype)")
    return layout.views(flat)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/inf in t: min and max propagate both, in one pass without a bool copy (15x cheaper than isfinite)."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def generate_into(inr: INR, module: nn.Module, layout: Layout, **kwargs) -> nn.Module:
    """Generate the layout's tensors and copy them into `module`'s tensors of the same names, in place.

    The module's tensors must be floating point and on the INR's device."""
    if not isinstance(inr, INR):
        raise TypeError(f"inr must be a neumeta_fast.INR, got {type(inr).__name__}")
    device = _inr_device(inr)
    state = _writable_state(module, ((s.name, s.shape, device) for s in layout.segments))  # fail before generating
    with torch.no_grad():  # the copies are outside autograd, so no graph is built for them
        _copy_into(state, generate(inr, layout, **kwargs))
    return module


def write_weights(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy `weights` into `module`'s state-dict tensors (parameters or buffers) of the same names, in
    place and outside autograd (across devices where they differ); returns `module`."""
    _copy_into(_writable_state(module, ((name, w.shape, None) for name, w in weights.items())), weights)
    return module


def _copy_into(state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, w in weights.items():
            state[name].copy_(w)


def _writable_state(module: nn.Module, targets: Iterable[tuple[str, Sequence[int], torch.device | None]]
                    ) -> dict[str, torch.Tensor]:
    """`module.state_dict(keep_vars=True)`, checked to hold a floating-point tensor with storage of each
    (name, shape, device) to be written; device None = any device."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    state = module.state_dict(keep_vars=True)
    owner = type(module).__name__
    for name, shape, device in targets:
        if name not in state:
            raise KeyError(f"tensor {name!r} is not in {owner}.state_dict(): cannot write the generated tensor")
        t = state[name]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r}: {owner} has shape {tuple(t.shape)}, generated {tuple(shape)}")
        if t.device.type == "meta":  # copy_ into a meta tensor is a silent no-op
            raise ValueError(f"tensor {name!r} of {owner} is on the meta device (no storage): materialise the "
                             "module first, e.g. module.to_empty(device=...)")
        if device is not None and t.device != device:
            raise ValueError(f"tensor {name!r} of {owner} is on {t.device}, the INR generates on {device}: "
                             f"move the module with module.to({str(device)!r})")
        if not t.is_floating_point():  # copy_ would truncate the weights
            raise TypeError(f"tensor {name!r} of {owner} is {t.dtype}: generated weights need a floating-point "
                            "tensor")
    return state
