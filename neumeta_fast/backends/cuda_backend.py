"""The CUDA C++ backend: the whole generate() in one fused kernel launch (csrc/cuda/inr_forward.cu).

Layers, each small: the torch ops `neumeta_fast::inr_forward` / `philox_noise` (csrc/cuda/bindings.cpp,
CUDA and Meta kernels) <- `_launch` (the INR's stacked weights and the layout's segment table) <-
`_InrForward` (autograd: the fused backends' shared backward, kernels/inr_backward.py, on the same
noise) <- `inr_forward`, the backend entry point of `neumeta_fast.generate`.

The extension `neumeta_fast._C_cuda` is built by setup.py where CUDA is usable. Without it the
backend reports why; with NEUMETA_CUDA_JIT=1 it is compiled on first use instead (ninja + nvcc).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch

from .. import noise as _noise
from ..encoding import frequencies
from ..inr import INR
from ..kernels.inr_backward import inr_backward
from ..layout import Layout
from .request import Request

NAME = "cuda"

_COMPUTE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_NOISE_MODES = {"reference": 0, "channels": 1}
_CSRC = Path(__file__).resolve().parents[2] / "csrc"
_BUILD_HINT = ("build it with `NEUMETA_FORCE_CUDA=1 pip install --no-build-isolation -e .` where nvcc and a CUDA "
               "build of torch are installed, or set NEUMETA_CUDA_JIT=1 to compile it on first use")


def _jit_build() -> None:
    from torch.utils.cpp_extension import load

    sources = sorted(str(p) for p in (_CSRC / "cuda").iterdir() if p.suffix in (".cu", ".cpp"))
    load(name="neumeta_fast_C_cuda", sources=sources, extra_include_paths=[str(_CSRC / "include")],
         extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=["-O3", "-std=c++17"], is_python_module=False)


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
    """Register the extension's ops (once). None on success, else why they are unavailable."""
    spec = importlib.util.find_spec("neumeta_fast._C_cuda")
    try:
        if spec is not None and spec.origin:
            torch.ops.load_library(spec.origin)
        elif os.environ.get("NEUMETA_CUDA_JIT", "0") == "1":
            _jit_build()
        else:
            return f"the CUDA extension neumeta_fast._C_cuda was not built; {_BUILD_HINT}"
    except (OSError, RuntimeError, ImportError) as exc:
        return f"the CUDA extension neumeta_fast._C_cuda failed to load ({exc}); {_BUILD_HINT}"
    return None


def unavailable_reason(device: torch.device) -> str | None:
    reason = _load()
    if reason is not None:
        return reason
    if device.type != "cuda":
        return f"runs on CUDA devices only, got {device}"
    return None


def _launch(inr: INR, layout: Layout, req: Request, seed: int) -> torch.Tensor:
    compute = _COMPUTE[req.dtype]
    tile_rows, column_multiple = torch.ops.neumeta_fast.kernel_config(compute)
    table = layout.segment_table(inr.output_dim, tile_rows)
    noise = None if req.noise_tensor is None else req.noise_tensor.to(req.device, torch.float32).contiguous()
    return torch.ops.neumeta_fast.inr_forward(
        *inr.stacked(req.dtype, column_multiple=column_multiple), table.tensor(req.device), noise, seed, req.noise,
        req.samples, _NOISE_MODES[req.noise_mode], req.norm, inr.freq_low, inr.num_freqs, layout.num_rows,
        table.num_tiles, layout.numel)


def _materialised_noise(layout: Layout, req: Request, seed: int) -> torch.Tensor | None:
    """The noise the kernel added, as an explicit [samples, rows, 6] tensor restricted to the mode's columns."""
    if req.noise_tensor is not None:
        return _noise.restricted(req.noise_tensor, req.noise_mode)
    if not any(_noise.noisy_samples(req.samples, req.noise)):
        return None
    out = torch.empty(req.samples, layout.num_rows, 6, dtype=torch.float32, device=req.device)
    torch.ops.neumeta_fast.philox_noise(out, seed, req.noise, _NOISE_MODES[req.noise_mode])
    return out


class _InrForward(torch.autograd.Function):
    """Fused forward; backward = the fused backends' shared backward (kernels/inr_backward.py) on the
    same noise, w.r.t. the stacked weights, then through the stacking to the parameters."""

    @staticmethod
    def forward(ctx, inr, layout, req, seed, *params):
        ctx.inr, ctx.layout, ctx.req, ctx.seed = inr, layout, req, seed
        return _launch(inr, layout, req, seed)

    @staticmethod
    def backward(ctx, grad):
        inr, layout, req = ctx.inr, ctx.layout, ctx.req
        params = list(inr.parameters())
        with torch.enable_grad():
            stacked = inr.stacked()
        grads = inr_backward(grad, stacked, layout.segment_table(inr.output_dim).rows,
                             layout.coordinates(req.device), frequencies(inr.freq_low, inr.freq_high, req.device),
                             _materialised_noise(layout, req, ctx.seed), norm=req.norm, samples=req.samples,
                             noise_mode=req.noise_mode)
        wanted = [p for p in params if p.requires_grad]
        found = iter(torch.autograd.grad(stacked, wanted, grads, allow_unused=True))
        return (None, None, None, None) + tuple(next(found) if p.requires_grad else None for p in params)


def inr_forward(inr: INR, layout: Layout, req: Request) -> torch.Tensor:
    """Generated weights of every layout tensor in one flat float32 buffer (averaged over req.samples)."""
    reason = unavailable_reason(req.device)
    if reason is not None:
        raise RuntimeError(f"backend 'cuda' cannot run on {req.device}: {reason}")
    philox = req.noise_tensor is None and any(_noise.noisy_samples(req.samples, req.noise))
    seed = req.seed() if philox else 0
    params = list(inr.parameters())
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _InrForward.apply(inr, layout, req, seed, *params)
    return _launch(inr, layout, req, seed)
