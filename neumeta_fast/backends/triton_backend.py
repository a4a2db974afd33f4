"""The Triton backend: one fused launch per generate() (neumeta_fast.kernels.inr_forward).

Layers, each small (as flash-attention does it):
kernel launchers -> `torch.library.custom_op`s `neumeta_fast::triton_generate` and its backward
(fake impls, so torch.compile graphs keep them as single nodes) -> autograd registered on the
forward op -> `generate_flat`, the backend entry point of `neumeta_fast.generate`.
"""
from __future__ import annotations

import os
import weakref
from typing import Optional

import torch

from .. import noise as _noise
from ..encoding import frequencies
from ..inr import INR
from ..kernels import launch
from ..kernels.inr_backward import inr_backward
from ..kernels.inr_forward import SEG_COLUMNS, inr_forward, interpreted, philox_noise
from ..layout import Layout
from . import torch_train
from .request import Request

NAME = "triton"

# Request.dtype -> tensor-core input precision of the kernel (float32 = exact ieee path).
_PRECISION = {torch.float32: "ieee", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _precision(req: Request) -> str:
    """float32 uses TF32 tensor cores only where the user allowed it for torch's own CUDA matmuls."""
    if req.dtype == torch.float32 and req.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return _PRECISION[req.dtype]


def unavailable_reason(device: torch.device) -> str | None:
    if device.type == "cuda":
        # compiled kernels need a GPU; interpreted ones also take CUDA tensors (slowly)
        return None if interpreted() or torch.cuda.is_available() else "CUDA is not available"
    if device.type != "cpu":
        return f"Triton kernels do not run on {device.type} devices"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return ("Triton kernels need a CUDA device; on CPU tensors they run only under the Triton interpreter "
                "(set TRITON_INTERPRET=1 before triton is imported)")
    if not interpreted():
        return ("TRITON_INTERPRET=1 was set after neumeta_fast's Triton kernels were compiled for the GPU: "
                "set it before importing triton or neumeta_fast")
    return None


# -- plan: segment table + tile schedule, built once per (Layout, device, tile rows) ----------------
_PLANS: "weakref.WeakKeyDictionary[Layout, dict]" = weakref.WeakKeyDictionary()


def _plan(layout: Layout, output_dim: int, device: torch.device, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment table int64 [S, 8] in SEG_COLUMNS order, tile schedule int32 [T, 2] = (segment, first row))."""
    cache = _PLANS.setdefault(layout, {})
    key = (device, block_m, output_dim)
    if key not in cache:
        segs = torch_train.segment_table(layout, output_dim)
        assert len(segs[0]) == len(SEG_COLUMNS)
        tiles = [(i, r) for i, s in enumerate(layout.segments) for r in range(0, s.rows, block_m)]
        cache[key] = (torch.tensor(segs, dtype=torch.int64, device=device),
                      torch.tensor(tiles, dtype=torch.int32, device=device))
    return cache[key]


# -- custom ops --------------------------------------------------------------------------------------
@torch.library.custom_op("neumeta_fast::triton_generate", mutates_args=())
def _generate_op(w0: torch.Tensor, b0: torch.Tensor, wr: torch.Tensor, br: torch.Tensor, sc: torch.Tensor,
                 wo: torch.Tensor, bo: torch.Tensor, segs: torch.Tensor, tiles: torch.Tensor, freqs: torch.Tensor,
                 coords: torch.Tensor, noise: Optional[torch.Tensor], numel: int, num_tensors: int, norm: float,
                 samples: int, noise_scale: float, noise_mode: str, seed: int, precision: str,
                 block_m: int) -> torch.Tensor:
    # coords is read only by the backward (the kernel rebuilds coordinates from `segs`)
    cfg = launch.config(wo.shape[1], precision, block_m)
    return inr_forward((w0, b0, wr, br, sc, wo, bo), segs, tiles, freqs, numel=numel, num_rows=coords.shape[0],
                       num_tensors=num_tensors, norm=norm, samples=samples, noise_scale=noise_scale,
                       noise_mode=noise_mode, seed=seed, noise=noise, precision=precision, cfg=cfg)


@_generate_op.register_fake
def _(w0, b0, wr, br, sc, wo, bo, segs, tiles, freqs, coords, noise, numel, num_tensors, norm, samples,
      noise_scale, noise_mode, seed, precision, block_m):
    return w0.new_empty(numel)


@torch.library.custom_op("neumeta_fast::triton_generate_backward", mutates_args=())
def _backward_op(grad: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, wr: torch.Tensor, br: torch.Tensor,
                 sc: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor, segs: torch.Tensor, freqs: torch.Tensor,
                 coords: torch.Tensor, noise: Optional[torch.Tensor], norm: float, samples: int, noise_scale: float,
                 noise_mode: str, seed: int) -> list[torch.Tensor]:
    weights = (w0, b0, wr, br, sc, wo, bo)
    if noise is not None:
        noise = _noise.restricted(noise, noise_mode)
    elif noise_scale > 0:
        noise = philox_noise(coords.shape[0], samples, noise_scale, noise_mode, seed, coords.device)
    return inr_backward(grad, weights, segs.tolist(), coords, freqs, noise, norm=norm, samples=samples,
                        noise_mode=noise_mode)


@_backward_op.register_fake
def _(grad, w0, b0, wr, br, sc, wo, bo, segs, freqs, coords, noise, norm, samples, noise_scale, noise_mode, seed):
    return [torch.empty_like(w) for w in (w0, b0, wr, br, sc, wo, bo)]


def _setup_context(ctx, inputs, output):
    (w0, b0, wr, br, sc, wo, bo, segs, _tiles, freqs, coords, noise, _numel, _num_tensors, norm, samples,
     noise_scale, noise_mode, seed, _precision, _block_m) = inputs
    ctx.save_for_backward(w0, b0, wr, br, sc, wo, bo, segs, freqs, coords, noise)
    ctx.args = (norm, samples, noise_scale, noise_mode, seed)


def _backward(ctx, grad):
    w0, b0, wr, br, sc, wo, bo, segs, freqs, coords, noise = ctx.saved_tensors
    grads = _backward_op(grad.contiguous(), w0, b0, wr, br, sc, wo, bo, segs, freqs, coords, noise, *ctx.args)
    return (*grads,) + (None,) * 14


_generate_op.register_autograd(_backward, setup_context=_setup_context)


# -- backend entry point -----------------------------------------------------------------------------
def _check_routing(coords: torch.Tensor, noise: torch.Tensor) -> None:
    """Reference-mode explicit noise: the kernel evaluates a row with its own or the previous MLP only."""
    own = coords[:, 0].to(torch.int64)
    routed = (coords[:, 0] + noise[..., 0]).to(torch.int64)
    if not ((routed == own) | ((routed == own - 1) & (routed >= 0))).all():
        raise ValueError("noise_tensor moves the layer column of some coordinates by a whole tensor or more "
                         "(int(i + noise) must be i or i - 1); the triton backend supports |noise| < 0.5 on "
                         "column 0 in noise_mode='reference': use backend='torch' for larger noise")


def generate_flat(inr: INR, layout: Layout, req: Request) -> torch.Tensor:
    """Every layout tensor's weights in one flat float32 buffer, differentiable w.r.t. the INR's parameters."""
    precision = _precision(req)
    cfg = launch.config(inr.output_dim, precision)
    segs, tiles = _plan(layout, inr.output_dim, req.device, cfg.block_m)
    coords = layout.coordinates(req.device)
    if req.noise_tensor is not None and req.noise_mode == "reference":
        _check_routing(coords, req.noise_tensor)
    philox = req.noise_tensor is None and req.noise > 0
    freqs = frequencies(inr.freq_low, inr.freq_high, req.device)
    return torch.ops.neumeta_fast.triton_generate(
        *inr.stacked(), segs, tiles, freqs, coords, req.noise_tensor, layout.numel, layout.num_tensors, req.norm,
        req.samples, req.noise, req.noise_mode, req.seed() if philox else 0, precision, cfg.block_m)
