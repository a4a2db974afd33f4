"""The fused INR forward (generate()) on one provider vs the literal reference vs the bare-GEMM floor.

    python benchmarks/bench_inr_forward.py [--provider torch|triton|cuda|reference] [--device cpu|cuda]
                                           [--case a|b|all] [--skip-reference] [--csv PATH]
    python benchmarks/bench_inr_forward.py --dry-run     every step once on a tiny layout (CPU, seconds)

Cases:
  a  ResNet20 last block (conv1 [64,64,3,3], bn1, conv2 [64,64,3,3], bn2), paper INR 512/8/32, norm 64
  b  every conv + BatchNorm weight/bias of ResNet18 except the 7x7 stem (~1.4M coordinates), INR 256/4/16
Prints a markdown table of medians (and writes it as CSV with --csv); every ratio is against a baseline
measured in the same run. --provider reference times the reference implementation alone.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

import torch

from neumeta_fast import INR, Layout, generate
from neumeta_fast.reference import reference_coordinates, reference_generate
from timing import gemm_floor, median_time, sync

PROVIDERS = ("torch", "triton", "cuda", "reference")
COLUMNS = ("case", "size", "what", "median", "ratio")


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


def chunk_rows(layout: Layout, chunk: int) -> list[int]:
    """The GEMM row counts of the torch backend: each tensor's rows in chunks of at most `chunk`."""
    return [min(chunk, s.rows - r) for s in layout.segments for r in range(0, s.rows, chunk)]


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
def run_case(name: str, device: torch.device, skip_reference: bool, repeat: int,
             provider: str = "torch") -> list[tuple[str, str, str, str, str]]:
    c = case_named(name)
    shapes = c["shapes"]()
    layout = Layout.from_shapes(shapes)
    torch.manual_seed(0)
    inr = INR(len(shapes), **c["inr"]).to(device)
    norm = c["norm"]
    rows = []
    size = f"{layout.num_rows} coords, INR {inr.hidden_dim}/{inr.num_layers}/{inr.num_freqs}"
    backend = "torch" if provider == "reference" else provider

    def fresh_generate(dtype=torch.float32):
        layout._coords.clear()  # end to end: the coordinate table is rebuilt every call
        return generate(inr, layout, norm=norm, backend=backend, dtype=dtype)

    exact = fresh_generate()
    scale = max(w.abs().max().item() for w in exact.values())
    if provider != "reference":
        t_gen = median_time(fresh_generate, device, repeat)
        # Noisy coordinates take the dense first layer (no u[a] + v[b] split): K-sample averaging pays this.
        jitter = (torch.rand(1, layout.num_rows, 6, device=device) - 0.5) * 0.5
        t_noisy = median_time(lambda: generate(inr, layout, norm=norm, backend=backend, noise_tensor=jitter,
                                               noise_mode="channels"), device, repeat)
        chunk = max(1024, ((1 << 24) if device.type == "cuda" else (1 << 21)) // inr.hidden_dim)
        floor_fn, flops = gemm_floor(inr, chunk_rows(layout, chunk), device)
        t_floor = median_time(floor_fn, device, repeat)
        sep_floor_fn, sep_flops = gemm_floor(inr, chunk_rows(layout, chunk), device, first_layer=False)
        t_sep_floor = median_time(sep_floor_fn, device, repeat)
        t_bf16 = median_time(lambda: fresh_generate(torch.bfloat16), device, repeat)
        low = fresh_generate(torch.bfloat16)
        bf16_err = max((low[n] - exact[n]).abs().max().item() for n in exact) / scale
        rows.append((name, size, f"{provider} backend", f"{t_gen * 1e3:.1f} ms",
                     f"{t_gen / t_floor:.2f}x GEMM floor, {t_gen / t_sep_floor:.2f}x the floor without the first layer"))
        rows.append((name, "", f"{provider} backend, noisy coordinates (1 sample)", f"{t_noisy * 1e3:.1f} ms",
                     f"{t_noisy / t_floor:.2f}x GEMM floor"))
        rows.append((name, "", "bare GEMMs (floor)", f"{t_floor * 1e3:.1f} ms", f"{flops / t_floor / 1e9:.0f} GFLOP/s"))
        rows.append((name, "", "bare GEMMs without the first layer (floor of exact coordinates)",
                     f"{t_sep_floor * 1e3:.1f} ms", f"{sep_flops / t_sep_floor / 1e9:.0f} GFLOP/s"))
        rows.append((name, "", f"{provider} backend, bf16 MLP", f"{t_bf16 * 1e3:.1f} ms",
                     f"{t_gen / t_bf16:.2f}x vs fp32, max err {bf16_err:.1e} of max abs"))
    if not skip_reference or provider == "reference":
        t_coords = median_time(lambda: (layout._coords.clear(), layout.coordinates(device)), device, repeat)
        t0 = time.perf_counter()
        reference_coordinates(shapes)
        t_loop = time.perf_counter() - t0
        rows.append((name, "", "coordinate table", f"{t_coords * 1e3:.2f} ms",
                     f"{t_loop / t_coords:.0f}x faster than the per-element loop ({t_loop:.2f} s)"))
        t0 = time.perf_counter()
        ref = reference_generate(inr, shapes, norm, batch_size=1 << 16)
        sync(device)
        t_ref = time.perf_counter() - t0
        err = max((ref[n] - exact[n]).abs().max().item() for n in exact) / scale
        ratio = f"max diff {err:.1e} of max abs vs the {backend} backend"
        if provider != "reference":
            ratio = f"{provider} backend {t_ref / t_gen:.1f}x faster; " + ratio
        rows.append((name, "", "reference implementation", f"{t_ref * 1e3:.0f} ms", ratio))
    if device.type == "cpu" and provider == "torch":
        extra, out_size = peak_extra_memory_mb(name)
        rows.append((name, "", "peak extra memory", f"{extra:.0f} MB",
                     f"output {out_size:.0f} MB; budget 1.25x output + 256 = {1.25 * out_size + 256:.0f} MB"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=PROVIDERS, default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", choices=["a", "b", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--dry-run", action="store_true", help="the tiny case once on the CPU (checks the script)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.case, args.repeat = "cpu", "tiny", 1
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, torch {torch.__version__}, provider {args.provider}")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---" * len(COLUMNS) + "|")
    table = []
    for name in (["a", "b"] if args.case == "all" else [args.case]):
        for row in run_case(name, device, args.skip_reference, args.repeat, args.provider):
            print("|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|", flush=True)
            table.append(row)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            writer.writerows(table)


if __name__ == "__main__":
    main()
