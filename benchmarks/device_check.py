"""Triton backend check: correctness against the torch backend at real sizes, then timings.

    python benchmarks/device_check.py              GPU: cases a and b of bench_inr_forward.py
    python benchmarks/device_check.py --cpu-smoke  same code path, tiny, Triton interpreter on the CPU
    python benchmarks/device_check.py --dry-run    the smoke run on bench_inr_forward's tiny case, one repeat

Timings are `triton.testing.do_bench` medians on the GPU (perf_counter medians in the smoke run).
Prints a markdown table and writes it to $OUT/device_check.md when OUT is set. Exits 1 when a
correctness check fails; the speed targets are reported, not enforced.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

from neumeta_fast import INR, Layout, backends, generate
from neumeta_fast.atomic import atomic_open
from neumeta_fast.backends import torch_backend
from neumeta_fast.backends.request import Request, philox_seed
from neumeta_fast.encoding import fourier_features, frequencies, norm_tensor, normalise
from neumeta_fast.kernels import launch
from neumeta_fast.kernels.inr_forward import inr_forward, philox_noise
from neumeta_fast.reference import reference_generate, reference_mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inr_forward import CASES, TINY  # noqa: E402  (the same two real-size cases as the core benchmark)
from timing import bench_ms, gemm_floor, rel_err  # noqa: E402

SMOKE = dict(shapes=lambda: [("conv", (5, 9, 3, 3)), ("proj", (4, 5, 1, 1)), ("fc", (7, 4)), ("bias", (37,))],
             inr=dict(hidden_dim=32, num_layers=3, num_freqs=4), norm=48.0)
FWD_TOL, GRAD_TOL = 1e-4, 1e-4  # fp32 on the GPU: GEMM summation order differs from cuBLAS


def grad_err(got: dict, want: dict) -> float:
    """Worst gradient error: per tensor against its largest entry; the residual scalars (0-d) together,
    against the largest of them (each sums every hidden unit and can cancel far below its terms)."""
    tensors = [((got[n] - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() for n, w in want.items() if w.dim()]
    scalars = [n for n, w in want.items() if not w.dim()]
    if scalars:
        g, w = torch.stack([got[n] for n in scalars]), torch.stack([want[n] for n in scalars])
        tensors.append(((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item())
    return max(tensors)


def exact_gradients(inr: INR, layout: Layout, norm: float, probe: dict) -> dict:
    """The gradients generate() approximates, to float64 rounding: the method's float32 features, then
    every MLP in float64. Two float32 orders of an 8-layer MLP differ by far more than rounding where a
    pre-activation within rounding of 0 flips a ReLU, so fast paths are held to this, not to each other."""
    exact = copy.deepcopy(inr).double()
    coords = layout.coordinates(probe[layout.names[0]].device)
    device = coords.device
    pe = fourier_features(normalise(coords, norm_tensor(norm, device)),
                          frequencies(inr.freq_low, inr.freq_high, device)).double()
    loss = 0.0
    for s in layout.segments:
        rows = slice(s.row_offset, s.row_offset + s.rows)
        y = reference_mlp(exact.model[s.index], pe[rows]) / coords[rows, 5:6].double()
        cs = s.col_start(inr.output_dim)
        loss = loss + (y[:, cs:cs + s.kernel_numel].reshape(s.shape) * probe[s.name].double()).sum()
    loss.backward()
    return {n: p.grad.float() for n, p in exact.named_parameters()}


def tf32_forward(inr: INR, layout: Layout, norm: float):
    """The kernel with TF32 tensor-core inputs (not reachable through generate(): measured here only)."""
    device = next(inr.parameters()).device
    cfg = launch.config(inr.output_dim, "tf32")
    table = layout.segment_table(inr.output_dim, cfg.block_m)
    segs, tiles = table.tensor(device), table.tiles(device)
    freqs = frequencies(inr.freq_low, inr.freq_high, device)
    weights = inr.stacked()
    return lambda: layout.views(inr_forward(
        weights, segs, tiles, freqs, numel=layout.numel, num_rows=layout.num_rows, num_tensors=layout.num_tensors,
        norm=norm, samples=1, noise_scale=0.0, noise_mode="reference", seed=0, noise=None, precision="tf32", cfg=cfg))


def gradients(inr: INR, layout: Layout, norm: float, backend: str, probe: dict, **kw) -> dict:
    """Parameter gradients of sum(generated * probe); backend "eager": the torch backend's per-segment
    eager autograd path (the training op's baseline) instead of generate()."""
    inr.zero_grad(set_to_none=True)
    if backend == "eager":
        device = next(inr.parameters()).device
        req = Request(float(norm), 1, 0.0, "reference", None, None, torch.float32, device)
        out = layout.views(torch_backend.inr_forward_eager(inr, layout, req, True))
    else:
        out = generate(inr, layout, norm=norm, backend=backend, check_finite=False, **kw)
    sum((out[n] * probe[n]).sum() for n in out).backward()
    return {n: p.grad.clone() for n, p in inr.named_parameters()}


def run_case(name: str, case: dict, device: torch.device, rows: list, failures: list, reference_fb: bool,
             repeat: int = 3) -> None:
    shapes = case["shapes"]()
    layout, norm = Layout.from_shapes(shapes), case["norm"]
    torch.manual_seed(0)
    inr = INR(len(shapes), **case["inr"]).to(device)
    size = f"{layout.num_rows} coords, INR {inr.hidden_dim}/{inr.num_layers}/{inr.num_freqs}"

    def bench(fn):
        return bench_ms(fn, device, repeat)

    def gen(backend, **kw):
        return generate(inr, layout, norm=norm, backend=backend, check_finite=False, **kw)

    def check(what, err, tol):
        rows.append(f"| {name} | | check: {what} | | max err {err:.1e} of max abs (tol {tol:.0e}) |")
        if not err <= tol:
            failures.append(f"{name}: {what}: {err:.2e} > {tol:.0e}")

    # -- correctness ---------------------------------------------------------------------------------
    with torch.no_grad():
        want = gen("torch")
        check("triton fp32 forward vs torch", rel_err(gen("triton"), want), FWD_TOL)
        eps = torch.rand(2, layout.num_rows, 6, device=device, generator=torch.Generator(device).manual_seed(0)) - 0.5
        check("K=2 reference-mode noise vs torch",
              rel_err(gen("triton", samples=2, noise_tensor=eps), gen("torch", samples=2, noise_tensor=eps)), FWD_TOL)
        seed = philox_seed(torch.Generator().manual_seed(1))
        drawn = philox_noise(layout.num_rows, 3, 1.0, "reference", seed, device)
        philox = gen("triton", samples=3, noise=1.0, generator=torch.Generator().manual_seed(1))
        check("K=3 in-kernel Philox noise vs torch given the drawn noise",
              rel_err(philox, gen("torch", samples=3, noise_tensor=drawn)), FWD_TOL)
        # the interpreter has no bfloat16 arithmetic: the smoke run measures float16 instead
        low = torch.float16 if device.type == "cpu" else torch.bfloat16
        low_name = str(low).split(".")[-1]
        err_low, err_tf32 = rel_err(gen("triton", dtype=low), want), rel_err(tf32_forward(inr, layout, norm)(), want)
        err_torch_low = rel_err(gen("torch", dtype=low), want)
        rows.append(f"| {name} | | accuracy cost | | {low_name} {err_low:.1e} (torch backend {low_name} "
                    f"{err_torch_low:.1e}), tf32 {err_tf32:.1e} (of max abs) |")
    probe = {s.name: torch.randn(s.shape, device=device) for s in layout.segments}
    g_tri, g_ref = gradients(inr, layout, norm, "triton", probe), gradients(inr, layout, norm, "torch", probe)
    g_exact = exact_gradients(inr, layout, norm, probe)
    eager_err = grad_err(gradients(inr, layout, norm, "eager", probe), g_exact)
    limit = max(2 * eager_err, GRAD_TOL)  # eager float32 autograd's own error, with room for another order
    rows.append(f"| {name} | | eager float32 autograd's gradient error vs float64 | | {eager_err:.1e} of max abs |")
    check("torch backend (training op) gradients vs float64", grad_err(g_ref, g_exact), limit)
    check("triton gradients (shared backward) vs float64", grad_err(g_tri, g_exact), limit)

    # -- timings -------------------------------------------------------------------------------------
    with torch.no_grad():
        t_torch = bench(lambda: gen("torch"))
        t_tri = bench(lambda: gen("triton"))
        t_bf16 = bench(lambda: gen("triton", dtype=low))
        t_tf32 = bench(tf32_forward(inr, layout, norm))
        floor32, flops = gemm_floor(inr, [layout.num_rows], device, torch.float32)
        t_gemm = bench(floor32)
        t_gemm16 = bench(gemm_floor(inr, [layout.num_rows], device, low)[0])
    t_tri_fb = bench(lambda: gradients(inr, layout, norm, "triton", probe))
    t_torch_fb = bench(lambda: gradients(inr, layout, norm, "torch", probe))
    if device.type == "cuda":  # the training path with TF32 tensor cores: its speed and its gradients' error
        torch.backends.cuda.matmul.allow_tf32 = True
        g_tf32 = gradients(inr, layout, norm, "torch", probe)
        t_tf32_fb = bench(lambda: gradients(inr, layout, norm, "torch", probe))
        torch.backends.cuda.matmul.allow_tf32 = False
        err = grad_err(g_tf32, g_exact)
        rows.append(f"| {name} | | torch backend fwd+bwd, TF32 matmuls | {t_tf32_fb:.2f} | gradients' error vs "
                    f"float64 {err:.1e} of max abs |")
    rate = lambda ms: flops / ms / 1e9  # noqa: E731  (TFLOP/s when ms are milliseconds)
    rows += [
        f"| {name} | {size} | torch backend fwd | {t_torch:.2f} | {rate(t_torch):.1f} TFLOP/s |",
        f"| {name} | | triton fwd (fp32 ieee) | {t_tri:.2f} | {rate(t_tri):.1f} TFLOP/s, "
        f"{t_gemm / t_tri:.0%} of the fp32 GEMM rate, {t_torch / t_tri:.2f}x torch |",
        f"| {name} | | triton fwd ({low_name} inputs) | {t_bf16:.2f} | "
        f"{t_gemm16 / t_bf16:.0%} of the {low_name} GEMM rate |",
        f"| {name} | | triton fwd (tf32 inputs) | {t_tf32:.2f} | {t_tri / t_tf32:.2f}x fp32 |",
        f"| {name} | | bare GEMMs fp32 / {low_name} (floor) | {t_gemm:.2f} / {t_gemm16:.2f} | {rate(t_gemm):.1f} / "
        f"{rate(t_gemm16):.1f} TFLOP/s |",
        f"| {name} | | triton fwd+bwd | {t_tri_fb:.2f} | torch backend fwd+bwd {t_torch_fb:.2f} ms |",
    ]
    # -- the literal reference implementation on the same device ------------------------------------
    start = time.perf_counter()
    with torch.no_grad():
        reference_generate(inr, shapes, norm)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_ref = 1e3 * (time.perf_counter() - start)
    rows.append(f"| {name} | | reference fwd (one run) | {t_ref:.1f} | triton {t_ref / t_tri:.0f}x faster |")
    if reference_fb:
        def ref_step():
            inr.zero_grad(set_to_none=True)
            out = reference_generate(inr, shapes, norm)
            sum((out[n] * probe[n]).sum() for n in out).backward()
        t_ref_fb = bench(ref_step)
        rows.append(f"| {name} | | reference fwd+bwd (training step) | {t_ref_fb:.1f} | triton fwd+bwd "
                    f"{t_ref_fb / t_tri_fb:.1f}x faster, torch backend fwd+bwd {t_ref_fb / t_torch_fb:.1f}x |")


def overflow_checks(device: torch.device, rows: list, failures: list) -> None:
    """Hidden units that overflow to +inf and -inf sum to NaN: a fused ReLU must keep it (max(x, 0) on a
    GPU returns 0), so generate() reports the overflow instead of returning finite, wrong weights."""
    layout = Layout.from_shapes([("w", (4, 3))])
    inr = INR(1, hidden_dim=8, num_layers=2, num_freqs=1).to(device)
    with torch.no_grad():
        inr.model[0].initial_layer.bias.fill_(1e30)
        inr.model[0].residual_blocks[0].weight.copy_(torch.tensor([3e38, -3e38]).repeat(8, 4))
    usable = [b for b, status in backends(device).items() if status == "ok"]
    for backend in usable:
        try:
            generate(inr, layout, norm=16, backend=backend)
            reported = False
        except ValueError as exc:
            reported = "overflow" in str(exc)
        rows.append(f"| overflow | | check: NaN from a hidden overflow reported ({backend}) | | "
                    f"{'yes' if reported else 'NO'} |")
        if not reported:
            failures.append(f"{backend}: a NaN from a hidden overflow came out as finite weights")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny case in the Triton interpreter")
    parser.add_argument("--dry-run", action="store_true", help="--cpu-smoke on a tinier case, one repeat, no file")
    args = parser.parse_args(argv)
    if args.cpu_smoke or args.dry_run:
        device, cases = torch.device("cpu"), {"tiny": TINY} if args.dry_run else {"smoke": SMOKE}
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--cpu-smoke and --dry-run need TRITON_INTERPRET=1 in the environment "
                             "(set before triton loads)")
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-smoke (and TRITON_INTERPRET=1) on a CPU-only machine")
    else:
        device, cases = torch.device("cuda"), CASES
    torch.backends.cuda.matmul.allow_tf32 = False  # the torch baselines stay true fp32
    import triton
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    lines = [f"device: {card}; torch {torch.__version__}, triton {triton.__version__}", "",
             "| case | size | what | median (ms) | note |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    failures: list[str] = []
    for name, case in cases.items():
        rows: list[str] = []
        run_case(name, case, device, rows, failures, reference_fb=name != "b", repeat=1 if args.dry_run else 3)
        print("\n".join(rows), flush=True)
        lines += rows
    rows = []
    overflow_checks(device, rows, failures)
    print("\n".join(rows), flush=True)
    lines += rows
    lines += ["", "correctness: " + ("all checks passed" if not failures else "FAILED: " + "; ".join(failures))]
    print(lines[-1])
    if os.environ.get("OUT") and not args.dry_run:
        with atomic_open(os.path.join(os.environ["OUT"], "device_check.md")) as f:
            f.write("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
