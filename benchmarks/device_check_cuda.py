"""CUDA backend check: correctness against the torch backend at real sizes, then timings.

    python benchmarks/device_check_cuda.py [--case a|b|p|all] [--skip-grad]
    TRITON_INTERPRET=1 python benchmarks/device_check_cuda.py --dry-run     no GPU: checks the script itself

Cases: a and b of bench_inr_forward.py (ResNet20 last block with the paper INR 512/8/32; ResNet18 convs +
BatchNorms, 1.4M coordinates, INR 256/4/16) and p: the ResNet18 layout with the paper INR (the
"~1M coordinates, paper INR" target). Needs a CUDA device and the extension: built by
`pip install --no-build-isolation -e .` on the GPU machine, else compiled here on first use
(NEUMETA_CUDA_JIT=1, needs ninja). Timings are CUDA-event medians from `triton.testing.do_bench`
(a perf_counter median when triton is absent) beside the torch backend and, when usable, triton.
Prints a markdown table, writes it to $OUT/device_check_cuda.md when OUT is set, and exits 1 when
a correctness check fails (the speed target is reported, not enforced). A dry run takes every step
on the CPU for bench_inr_forward's tiny case, with the triton backend in its interpreter (and its
Philox noise) standing in for the cuda backend, and writes no file.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("NEUMETA_CUDA_JIT", "1")  # before the backend first loads its extension

import torch  # noqa: E402

from neumeta_fast import INR, Layout, backends, generate  # noqa: E402
from neumeta_fast.atomic import atomic_open  # noqa: E402
from neumeta_fast.backends import cuda_backend  # noqa: E402
from neumeta_fast.backends.request import philox_seed  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inr_forward import CASES, TINY, resnet18_convs_and_bns  # noqa: E402
from device_check import exact_gradients, grad_err, gradients  # noqa: E402  (the same gradient checks)
from timing import bench_ms, rel_err  # noqa: E402

CASES = dict(CASES, p=dict(shapes=resnet18_convs_and_bns, inr=dict(hidden_dim=512, num_layers=8, num_freqs=32),
                           norm=64.0))
FWD_TOL, GRAD_TOL = 1e-4, 1e-3  # fp32 vs cuBLAS fp32: only the summation order differs


@dataclass(frozen=True)
class Target:
    """The backend under test, where it runs, its low-precision MLP dtypes and its Philox noise
    (fill_philox(out [samples, rows, 6], seed, scale): reference-mode noise as its kernel draws it)."""

    device: torch.device
    backend: str
    low_dtypes: tuple[torch.dtype, ...]
    fill_philox: Callable[[torch.Tensor, int, float], None]
    repeat: int  # timed calls per median where do_bench is not used


def cuda_target() -> Target:
    def fill_philox(out: torch.Tensor, seed: int, scale: float) -> None:
        torch.ops.neumeta_fast.philox_noise(out, seed, scale, 0)  # mode 0: reference

    return Target(torch.device("cuda"), "cuda", (torch.bfloat16, torch.float16), fill_philox, 5)


def dry_run_target() -> Target:
    """The triton backend on the CPU (interpreter: no bfloat16 arithmetic), one timed call each."""
    from neumeta_fast.kernels.inr_forward import philox_noise as triton_philox_noise

    def fill_philox(out: torch.Tensor, seed: int, scale: float) -> None:
        out.copy_(triton_philox_noise(out.shape[1], out.shape[0], scale, "reference", seed, out.device))

    return Target(torch.device("cpu"), "triton", (torch.float16,), fill_philox, 1)


def flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.reshape(-1) for w in weights.values()])


def philox_noise(target: Target, layout: Layout, samples: int, scale: float, seed: int) -> torch.Tensor:
    """The reference-mode noise the backend under test draws for a generator seeded with `seed`."""
    out = torch.empty(samples, layout.num_rows, 6, device=target.device)
    target.fill_philox(out, philox_seed(torch.Generator().manual_seed(seed)), scale)
    return out


def check_case(name: str, c: dict, target: Target, skip_grad: bool) -> tuple[list[str], list[str], bool]:
    layout = Layout.from_shapes(c["shapes"]())
    torch.manual_seed(0)
    inr = INR(len(layout), **c["inr"]).to(target.device)
    norm = c["norm"]
    size = f"{layout.num_rows} coords, INR {inr.hidden_dim}/{inr.num_layers}/{inr.num_freqs}"
    checks, ok = [], True

    def check(what: str, err: float, limit: float) -> None:
        nonlocal ok
        ok &= err <= limit
        checks.append(f"| {name} | {what} | {err:.1e} | {limit:.0e} | {'ok' if err <= limit else 'FAIL'} |")

    with torch.no_grad():
        ref = flat(generate(inr, layout, norm=norm, backend="torch"))
        check("fp32 forward vs torch", rel_err(flat(generate(inr, layout, norm=norm, backend=target.backend)), ref),
              FWD_TOL)
        for dtype in target.low_dtypes:
            torch_err = rel_err(flat(generate(inr, layout, norm=norm, backend="torch", dtype=dtype)), ref)
            cuda_err = rel_err(flat(generate(inr, layout, norm=norm, backend=target.backend, dtype=dtype)), ref)
            check(f"{str(dtype)[6:]} vs fp32 (torch {dtype} error {torch_err:.1e}; limit 2x + 1e-4)",
                  cuda_err, 2 * torch_err + 1e-4)
        noise = philox_noise(target, layout, 3, 1.0, 1)
        want = flat(generate(inr, layout, norm=norm, noise=1.0, samples=3, noise_tensor=noise, backend="torch"))
        got = flat(generate(inr, layout, norm=norm, noise=1.0, samples=3, generator=torch.Generator().manual_seed(1),
                            backend=target.backend))
        check("K=3 Philox reference-mode noise vs torch given that noise", rel_err(got, want), FWD_TOL)
    if not skip_grad and layout.num_rows < 100_000:
        probe = {s.name: torch.randn(s.shape, device=target.device) for s in layout.segments}
        exact = exact_gradients(inr, layout, norm, probe)
        limit = max(2 * grad_err(gradients(inr, layout, norm, "eager", probe), exact), GRAD_TOL)
        check("gradients vs float64 (limit: 2x eager float32 autograd's error)",
              grad_err(gradients(inr, layout, norm, target.backend, probe), exact), limit)

    timings = []
    with torch.no_grad():
        low = target.low_dtypes[0]
        runs = [("torch", torch.float32), ("torch", low), (target.backend, torch.float32)]
        runs += [(target.backend, dtype) for dtype in target.low_dtypes]
        if target.backend != "triton" and backends(target.device)["triton"] == "ok":
            runs += [("triton", torch.float32), ("triton", low)]
        ms = {}
        for backend, dtype in runs:
            ms[backend, dtype] = bench_ms(lambda: generate(inr, layout, norm=norm, backend=backend, dtype=dtype,
                                                           check_finite=False), target.device, target.repeat)
        for (backend, dtype), t in ms.items():
            vs = ms[("torch", torch.float32)] / t
            extra = ""
            if backend == target.backend != "triton" and ("triton", dtype) in ms:
                extra = f"; {t / ms[('triton', dtype)]:.2f}x triton's time (target <= 1.1)"
            timings.append(f"| {name} | {size} | {backend} {str(dtype)[6:]} | {t:.2f} ms | "
                           f"{vs:.2f}x faster than torch fp32{extra} |")
    return checks, timings, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["a", "b", "p", "all"], default="all")
    parser.add_argument("--skip-grad", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="the tiny case on the CPU, triton standing in for cuda")
    args = parser.parse_args(argv)
    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--dry-run needs TRITON_INTERPRET=1 in the environment (set before triton loads)")
        target, cases = dry_run_target(), {"tiny": TINY}
        card = "CPU (dry run: the triton backend in its interpreter stands in for cuda)"
    else:
        if not torch.cuda.is_available():
            print("device_check_cuda: no CUDA device; the cuda backend runs only on a GPU", file=sys.stderr)
            return 2
        reason = cuda_backend.unavailable_reason(torch.device("cuda"))
        if reason is not None:
            print(f"device_check_cuda: {reason}", file=sys.stderr)
            return 2
        target = cuda_target()
        cases = {name: CASES[name] for name in (["a", "b", "p"] if args.case == "all" else [args.case])}
        card = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    lines = [f"device: {card}", "", "| case | check | max error of max abs | limit | |", "|---|---|---|---|---|"]
    timing_lines = ["", "| case | size | backend, MLP dtype | median | ratio |", "|---|---|---|---|---|"]
    all_ok = True
    for name, case in cases.items():
        checks, timings, ok = check_case(name, case, target, args.skip_grad)
        lines += checks
        timing_lines += timings
        all_ok &= ok
        print("\n".join(checks + timings), flush=True)
    report = "\n".join(lines + timing_lines) + "\n"
    print(report)
    if os.environ.get("OUT") and not args.dry_run:
        with atomic_open(os.path.join(os.environ["OUT"], "device_check_cuda.md")) as f:
            f.write(report)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
