"""Core-engine benchmark: torch backend vs the literal reference vs the bare-GEMM floor.

    python benchmarks/bench_inr_forward.py [--device cpu|cuda] [--case a|b|all] [--skip-reference]
    python benchmarks/bench_inr_forward.py --dry-run     every step once on a tiny layout (CPU, seconds)

Cases:
  a  ResNet20 last block (conv1 [64,64,3,3], bn1, conv2 [64,64,3,3], bn2), paper INR 512/8/32, norm 64
  b  every conv + BatchNorm weight/bias of ResNet18 except the 7x7 stem (~1.4M coordinates), INR 256/4/16
Prints a markdown table of medians; every ratio is against a baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from neumeta_fast import INR, Layout, generate
from neumeta_fast.reference import reference_coordinates, reference_generate


def resnet20_last_block() -> list[tuple[str, tuple[int, ...]]]:
    return [("conv1.weight", (64, 64, 3, 3)), ("bn1.weight", (64,)), ("bn1.bias", (64,)),
            ("conv2.weight", (64, 64, 3, 3)), ("bn2.weight", (64,)), ("bn2.bias", (64,))]


def resnet18_convs_and_bns() -> list[tuple[str, tuple[int, ...]]]:
    shapes = [("bn1.weight", (64,)), ("bn1.bias", (64,))]  # the 7x7 stem itself is excluded
    in_ch = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride_block = block == 0 and stage > 1
            shapes += [(f"{p}.conv1.weight", (width, in_ch, 3, 3)), (f"{p}.bn1.weight", (width,)),
                       (f"{p}.bn1.bias", (width,)), (f"{p}.conv2.weight", (width, width, 3, 3)),
                       (f"{p}.bn2.weight", (width,)), (f"{p}.bn2.bias", (width,))]
            if stride_block:
                shapes += [(f"{p}.downsample.0.weight", (width, in_ch, 1, 1)),
                           (f"{p}.downsample.1.weight", (width,)), (f"{p}.downsample.1.bias", (width,))]
            in_ch = width
    return shapes


CASES = {
    "a": dict(shapes=resnet20_last_block, inr=dict(hidden_dim=512, num_layers=8, num_freqs=32), norm=64.0),
    "b": dict(shapes=resnet18_convs_and_bns, inr=dict(hidden_dim=256, num_layers=4, num_freqs=16), norm=64.0),
}
# The benchmark scripts' --dry-run case: every code path on a few rows, so that a rename cannot break them unseen.
TINY = dict(shapes=lambda: [("conv", (3, 2, 3, 3)), ("fc", (2, 3)), ("bias", (3,))],
            inr=dict(hidden_dim=16, num_layers=2, num_freqs=2), norm=8.0)


def case_named(name: str) -> dict:
    return TINY if name == "tiny" else CASES[name]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device: torch.device, repeat: int, warmup: int = 1) -> float:
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


def gemm_floor(inr: INR, layout: Layout, device: torch.device, chunk: int, first_layer: bool = True):
    """The evaluation's matmuls alone (same shapes and chunking as the torch backend, random inputs).

    first_layer=False leaves out the dense first layer, which exact coordinates replace by
    u[a] + v[b] (A + B rows per tensor, not A * B): the floor of that path (its tiny u, v GEMMs
    are left out too, so this floor is a little below the GEMM work the path really does).
    """
    mats = []
    for s in layout.segments:
        for r in range(0, s.rows, chunk):
            mats.append(min(chunk, s.rows - r))
    h = inr.hidden_dim
    w0 = torch.randn(inr.in_features, h, device=device)
    wr = torch.randn(h, h, device=device)
    wo = torch.randn(h, inr.output_dim, device=device)
    x = torch.randn(chunk, inr.in_features, device=device)
    y = torch.randn(chunk, h, device=device)
    buf_h = torch.empty(chunk, h, device=device)
    buf_o = torch.empty(chunk, inr.output_dim, device=device)

    def run():
        for n in mats:
            if first_layer:
                torch.mm(x[:n], w0, out=buf_h[:n])
            for _ in range(inr.num_layers - 1):
                torch.mm(y[:n], wr, out=buf_h[:n])
            torch.mm(y[:n], wo, out=buf_o[:n])
    flops = 2 * layout.num_rows * h * (inr.in_features * first_layer + (inr.num_layers - 1) * h + inr.output_dim)
    return run, flops


def peak_extra_memory_mb(case: str) -> tuple[float, float]:
    """Peak RSS growth of one generate() call on the CPU, measured in a fresh process (MB), and output size."""
    code = (
        "import torch, sys; sys.path.insert(0, 'benchmarks');"
        "from bench_inr_forward import case_named; from neumeta_fast import INR, Layout, generate;"
        f"c = case_named('{case}'); layout = Layout.from_shapes(c['shapes']()); inr = INR(len(layout), **c['inr']);"
        "torch.set_grad_enabled(False); generate(inr, layout, norm=c['norm']);"  # warm-up
        "layout = Layout.from_shapes(c['shapes']());"  # fresh layout: the coordinate table counts as extra
        "open('/proc/self/clear_refs', 'w').write('5');"
        "rss = lambda key: int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1]);"
        "base = rss('VmRSS:'); w = generate(inr, layout, norm=c['norm']);"
        "print((rss('VmHWM:') - base) / 1024, layout.numel * 4 / 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    extra, size = map(float, out.stdout.split())
    return extra, size


@torch.no_grad()
def run_case(name: str, device: torch.device, skip_reference: bool, repeat: int) -> list[str]:
    c = case_named(name)
    shapes = c["shapes"]()
    layout = Layout.from_shapes(shapes)
    torch.manual_seed(0)
    inr = INR(len(shapes), **c["inr"]).to(device)
    norm = c["norm"]
    rows = []

    def fresh_generate(dtype=torch.float32):
        layout._coords.clear()  # end to end: the coordinate table is rebuilt every call
        return generate(inr, layout, norm=norm, backend="torch", dtype=dtype)

    t_torch = median_time(fresh_generate, device, repeat)
    # Noisy coordinates take the dense first layer (no u[a] + v[b] split): K-sample averaging pays this.
    jitter = (torch.rand(1, layout.num_rows, 6, device=device) - 0.5) * 0.5
    t_noisy = median_time(lambda: generate(inr, layout, norm=norm, backend="torch", noise_tensor=jitter,
                                           noise_mode="channels"), device, repeat)
    chunk = max(1024, ((1 << 24) if device.type == "cuda" else (1 << 21)) // inr.hidden_dim)
    floor_fn, flops = gemm_floor(inr, layout, device, chunk)
    t_floor = median_time(floor_fn, device, repeat)
    sep_floor_fn, sep_flops = gemm_floor(inr, layout, device, chunk, first_layer=False)
    t_sep_floor = median_time(sep_floor_fn, device, repeat)
    t_bf16 = median_time(lambda: fresh_generate(torch.bfloat16), device, repeat)
    exact = fresh_generate()
    low = fresh_generate(torch.bfloat16)
    scale = max(w.abs().max().item() for w in exact.values())
    bf16_err = max((low[n] - exact[n]).abs().max().item() for n in exact) / scale
    t_coords = median_time(lambda: (layout._coords.clear(), layout.coordinates(device)), device, repeat)

    rows.append(f"| {name} | {layout.num_rows} coords, INR {inr.hidden_dim}/{inr.num_layers}/{inr.num_freqs} | "
                f"torch backend | {t_torch * 1e3:.1f} ms | {t_torch / t_floor:.2f}x GEMM floor, "
                f"{t_torch / t_sep_floor:.2f}x the floor without the first layer |")
    rows.append(f"| {name} | | torch backend, noisy coordinates (1 sample) | {t_noisy * 1e3:.1f} ms | "
                f"{t_noisy / t_floor:.2f}x GEMM floor |")
    rows.append(f"| {name} | | bare GEMMs (floor) | {t_floor * 1e3:.1f} ms | {flops / t_floor / 1e9:.0f} GFLOP/s |")
    rows.append(f"| {name} | | bare GEMMs without the first layer (floor of exact coordinates) | "
                f"{t_sep_floor * 1e3:.1f} ms | {sep_flops / t_sep_floor / 1e9:.0f} GFLOP/s |")
    rows.append(f"| {name} | | torch backend, bf16 MLP | {t_bf16 * 1e3:.1f} ms | {t_torch / t_bf16:.2f}x vs fp32, "
                f"max err {bf16_err:.1e} of max abs |")
    if not skip_reference:
        t0 = time.perf_counter()
        reference_coordinates(shapes)
        t_loop = time.perf_counter() - t0
        rows.append(f"| {name} | | coordinate table | {t_coords * 1e3:.2f} ms | {t_loop / t_coords:.0f}x faster "
                    f"than the per-element loop ({t_loop:.2f} s) |")
        t0 = time.perf_counter()
        ref = reference_generate(inr, shapes, norm, batch_size=1 << 16)
        sync(device)
        t_ref = time.perf_counter() - t0
        err = max((ref[n] - exact[n]).abs().max().item() for n in exact) / scale
        rows.append(f"| {name} | | reference implementation | {t_ref * 1e3:.0f} ms | torch backend {t_ref / t_torch:.1f}x "
                    f"faster; max diff {err:.1e} of max abs |")
    if device.type == "cpu":
        extra, size = peak_extra_memory_mb(name)
        rows.append(f"| {name} | | peak extra memory | {extra:.0f} MB | output {size:.0f} MB; "
                    f"budget 1.25x output + 256 = {1.25 * size + 256:.0f} MB |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", choices=["a", "b", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="the tiny case once on the CPU (checks the script)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.case, args.repeat = "cpu", "tiny", 1
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print("| case | size | what | median | ratio |")
    print("|---|---|---|---|---|")
    for name in (["a", "b"] if args.case == "all" else [args.case]):
        for row in run_case(name, device, args.skip_reference, args.repeat):
            print(row, flush=True)


if __name__ == "__main__":
    main()
