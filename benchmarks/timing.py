"""Timing and error helpers shared by the benchmark scripts (one copy of each)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds over `repeat` calls after `warmup` calls (synchronised on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ms(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Median milliseconds of fn(): triton.testing.do_bench on a GPU (where triton is installed), else median_time."""
    if device.type == "cuda":
        try:
            import triton.testing
        except ImportError:
            pass
        else:
            return triton.testing.do_bench(fn, warmup=5, rep=50, return_mode="median")
    return 1e3 * median_time(fn, device, repeat)


def rel_err(got: torch.Tensor | Mapping[str, torch.Tensor], want: torch.Tensor | Mapping[str, torch.Tensor]) -> float:
    """Largest absolute error over the largest |want|; dicts of tensors are compared name by name."""
    if isinstance(want, Mapping):
        got = torch.cat([got[n].reshape(-1) for n in want])
        want = torch.cat([w.reshape(-1) for w in want.values()])
    return (got - want).abs().max().item() / want.abs().max().item()


def gemm_floor(inr, row_counts: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32,
               first_layer: bool = True):
    """The MLP's matmuls alone on GEMMs of `row_counts` rows each (random inputs): (run, flops), the speed floor.

    first_layer=False leaves out the dense first layer, which exact coordinates replace by u[a] + v[b]
    (A + B rows per tensor, not A * B): the floor of that path (its tiny u, v GEMMs are left out too).
    """
    n = max(row_counts)
    h, d, o = inr.hidden_dim, inr.in_features, inr.output_dim
    x, y = torch.randn(n, d, device=device, dtype=dtype), torch.randn(n, h, device=device, dtype=dtype)
    w0, wr = torch.randn(d, h, device=device, dtype=dtype), torch.randn(h, h, device=device, dtype=dtype)
    wo = torch.randn(h, o, device=device, dtype=dtype)
    buf_h, buf_o = torch.empty(n, h, device=device, dtype=dtype), torch.empty(n, o, device=device, dtype=dtype)

    def run():
        for rows in row_counts:
            if first_layer:
                torch.mm(x[:rows], w0, out=buf_h[:rows])
            for _ in range(inr.num_layers - 1):
                torch.mm(y[:rows], wr, out=buf_h[:rows])
            torch.mm(y[:rows], wo, out=buf_o[:rows])
    return run, 2 * sum(row_counts) * h * (d * first_layer + (inr.num_layers - 1) * h + o)
