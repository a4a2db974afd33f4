"""The Triton backend: one fused launch per generate() (kernels/inr_forward.py).

Layers, each small (as flash-attention does it):
kernel launchers -> `torch.library.custom_op`s `neumeta_fast::inr_forward_triton` and
`neumeta_fast::inr_backward_triton` (fake impls, so torch.compile graphs keep them as single nodes)
-> autograd registered on the forward op -> `inr_forward`, the backend entry point of `neumeta_fast.generate`.
"""
from __future__ import annotations

import inspect
import os
from typing import Optional

import torch

from .. import noise as _noise
from ..encoding import frequencies
from ..inr import INR
from ..kernels import inr_forward as kernel
from ..kernels import launch
from ..kernels.inr_backward import inr_backward
from ..layout import Layout, SegmentRow
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
        return None if kernel.interpreted() or torch.cuda.is_available() else "CUDA is not available"
    if device.type != "cpu":
        return f"Triton kernels do not run on {device.type} devices"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return ("Triton kernels need a CUDA device; on CPU tensors they run only under the Triton interpreter "
                "(set TRITON_INTERPRET=1 before triton is imported)")
    if not kernel.interpreted():
        return ("TRITON_INTERPRET=1 was set after neumeta_fast's Triton kernels were compiled for the GPU: "
                "set it before importing triton or neumeta_fast")
    return None


# -- custom ops --------------------------------------------------------------------------------------
def _forward(w0: torch.Tensor, b0: torch.Tensor, wr: torch.Tensor, br: torch.Tensor, sc: torch.Tensor,
             wo: torch.Tensor, bo: torch.Tensor, segs: torch.Tensor, tiles: torch.Tensor, freqs: torch.Tensor,
             coords: torch.Tensor, noise: Optional[torch.Tensor], numel: int, num_tensors: int, norm: float,
             samples: int, noise_scale: float, noise_mode: str, seed: int, precision: str,
             block_m: int) -> torch.Tensor:
    # coords is read only by the backward (the kernel rebuilds coordinates from `segs`)
    cfg = launch.config(wo.shape[1], precision, block_m)
    return kernel.inr_forward((w0, b0, wr, br, sc, wo, bo), segs, tiles, freqs, numel=numel,
                              num_rows=coords.shape[0], num_tensors=num_tensors, norm=norm, samples=samples,
                              noise_scale=noise_scale, noise_mode=noise_mode, seed=seed, noise=noise,
                              precision=precision, cfg=cfg)


_FORWARD_ARGS = tuple(inspect.signature(_forward).parameters)  # the one definition of the op's arguments
_WEIGHTS = _FORWARD_ARGS[:7]
_forward_op = torch.library.custom_op("neumeta_fast::inr_forward_triton", _forward, mutates_args=())


@_forward_op.register_fake
def _(*args):
    return args[0].new_empty(args[_FORWARD_ARGS.index("numel")])


@torch.library.custom_op("neumeta_fast::inr_backward_triton", mutates_args=())
def _backward_op(grad: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, wr: torch.Tensor, br: torch.Tensor,
                 sc: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor, segs: torch.Tensor, freqs: torch.Tensor,
                 coords: torch.Tensor, noise: Optional[torch.Tensor], norm: float, samples: int, noise_scale: float,
                 noise_mode: str, seed: int) -> list[torch.Tensor]:
    weights = (w0, b0, wr, br, sc, wo, bo)
    if noise is not None:
        noise = _noise.restricted(noise, noise_mode)
    elif noise_scale > 0:
        noise = kernel.philox_noise(coords.shape[0], samples, noise_scale, noise_mode, seed, coords.device)
    table = [SegmentRow(*row) for row in segs.tolist()]
    return inr_backward(grad, weights, table, coords, freqs, noise, norm=norm, samples=samples, noise_mode=noise_mode)


@_backward_op.register_fake
def _(grad, *args):
    return [torch.empty_like(w) for w in args[:7]]


_SAVED = _WEIGHTS + ("segs", "freqs", "coords", "noise")
_BACKWARD_ARGS = ("norm", "samples", "noise_scale", "noise_mode", "seed")


def _setup_context(ctx, inputs, output):
    args = dict(zip(_FORWARD_ARGS, inputs))
    ctx.save_for_backward(*(args[name] for name in _SAVED))
    ctx.args = tuple(args[name] for name in _BACKWARD_ARGS)


def _backward(ctx, grad):
    grads = _backward_op(grad.contiguous(), *ctx.saved_tensors, *ctx.args)
    return (*grads,) + (None,) * (len(_FORWARD_ARGS) - len(grads))


_forward_op.register_autograd(_backward, setup_context=_setup_context)


# -- backend entry point -----------------------------------------------------------------------------
def inr_forward(inr: INR, layout: Layout, req: Request) -> torch.Tensor:
    """Every layout tensor's weights in one flat float32 buffer, differentiable w.r.t. the INR's parameters."""
    table = layout.segment_table(inr.output_dim, launch.BLOCK_M)
    philox = req.noise_tensor is None and req.noise > 0
    return torch.ops.neumeta_fast.inr_forward_triton(
        *inr.stacked(), table.tensor(req.device), table.tiles(req.device),
        frequencies(inr.freq_low, inr.freq_high, req.device), layout.coordinates(req.device), req.noise_tensor,
        layout.numel, layout.num_tensors, req.norm, req.samples, req.noise, req.noise_mode,
        req.seed() if philox else 0, _precision(req), table.tile_rows)
