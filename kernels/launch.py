"""Launch heuristics of the INR kernels, in one place: tile sizes, warps, precision names."""
from __future__ import annotations

import os
from dataclasses import dataclass

# Tensor-core input precisions the forward kernel knows; accumulation is float32 in all of them.
PRECISIONS = ("ieee", "tf32", "bf16", "fp16")


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (decided when triton is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int  # coordinates per program
    block_d: int  # Fourier features built per step of the first layer's K loop
    block_n: int  # hidden columns produced per step of a residual layer (the K dim stays whole)
    hidden_pad: int  # hidden width padded to a power of two (>= 16: tl.dot's minimum)
    out_pad: int  # output width padded likewise
    num_warps: int


def config(hidden_dim: int, output_dim: int, block_m: int | None = None) -> LaunchConfig:
    """Tile sizes for one INR shape.

    A residual layer keeps the whole [block_m, hidden] activation tile in registers and multiplies
    it by [hidden, block_n] weight slices, so block_m * hidden and hidden * block_n are each capped
    at 16K floats (64 KiB of shared memory per dot operand at hidden 512).
    """
    hp = max(16, next_pow2(hidden_dim))
    op = max(16, next_pow2(output_dim))
    if block_m is None:
        # The interpreter runs programs one at a time: fewer, larger tiles are much faster there.
        block_m = 64 if interpreting() else max(16, min(64, 16384 // hp))
    block_n = max(16, min(hp, 16384 // hp))
    return LaunchConfig(block_m=block_m, block_d=32, block_n=block_n, hidden_pad=hp, out_pad=op,
                        num_warps=4 if hp <= 128 else 8)
