"""Launch heuristics of the INR kernels, in one place: tile sizes, warps, grid size, precision names."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Tensor-core input precisions the forward kernel knows; accumulation is float32 in all of them.
PRECISIONS = ("ieee", "tf32", "bf16", "fp16")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int  # coordinates per tile
    block_k: int  # K and N step of every GEMM (and features built per step)
    out_pad: int  # output width padded to a power of two (>= 16: tl.dot's minimum)
    num_warps: int
    programs_per_sm: int

    def scratch_width(self, in_features: int, hidden: int) -> int:
        """Row length of a program's scratch tiles: every K/N step stays inside it."""
        return -(-max(in_features, hidden) // self.block_k) * self.block_k

    def max_programs(self, device: torch.device, compiled: bool) -> int:
        """Persistent grid size (each program owns a scratch slot); unbounded where the kernels are
        interpreted (compiled False: see kernels.inr_forward.interpreted)."""
        if device.type != "cuda" or not compiled:
            return 1 << 30
        return self.programs_per_sm * _sm_count(device.index if device.index is not None else 0)


BLOCK_M = 64  # coordinates per tile unless a caller asks for other tiles


def config(output_dim: int, precision: str = "ieee", block_m: int = BLOCK_M) -> LaunchConfig:
    """Tile sizes for one INR shape and input precision.

    Every GEMM is tiled in K and N, so registers hold only [block_m, block_k] x [block_k, block_k]
    operands whatever the hidden width. Chosen from sm_90 builds (ptxas resource usage, no spills
    outside the reference-noise variant): the fp32 FMA path (ieee) with block_k 32 and 4 warps
    (~160 registers; Triton's FMA dot holds a thread's whole K strip of both operands), the
    tensor-core paths with block_k 64 and 8 warps (~240 registers).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    fma = precision == "ieee"
    return LaunchConfig(block_m=block_m, block_k=32 if fma else 64, out_pad=max(16, next_pow2(output_dim)),
                        num_warps=4 if fma else 8, programs_per_sm=4)
