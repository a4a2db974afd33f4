"""Grouped Triton GEMMs (kernels/grouped_mm.py) vs the per-group torch loops they replace, same run.

    python benchmarks/bench_grouped_mm.py --device cuda [--rows 100000 --groups 20 --hidden 512 --layers 8]
    python benchmarks/bench_grouped_mm.py --dry-run    a tiny case, every step, in Triton's CPU interpreter

Rows are split into ragged groups (one of a single row, the rest of random odd sizes), one MLP each, as
reference-mode noise routes them. Cases: the training op's GPU twin (torch_train._forward_torch and
_backward_torch: 8 layers = 7 residual blocks + the output layer, output 9 wide) with its loops vs
with the grouped kernels, and one residual layer's three GEMM pieces (forward, dx, weight gradients)
against a torch GEMM per group. Precisions: ieee (TF32 off on both sides), tf32 (TF32 on), and
for the pieces bf16 (the loop on bfloat16 copies). Prints a Markdown table of median times and ratios.
"""
from __future__ import annotations

import argparse
import os
from unittest import mock

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors need the interpreter

from timing import bench_ms  # noqa: E402

from neumeta_fast.backends import torch_train  # noqa: E402
from neumeta_fast.kernels import grouped_mm as gm  # noqa: E402

OUT_DIM = 9


def group_sizes(rows: int, groups: int, gen: torch.Generator) -> list[int]:
    """Ragged sizes summing to rows: one single-row group, the others random odd-ish shares."""
    share = torch.rand(groups - 1, generator=gen, dtype=torch.float64) + 0.1
    sizes = [1] + [int(s) | 1 for s in (share / share.sum() * (rows - 1)).tolist()]
    sizes[-1] += rows - sum(sizes)
    return sizes


def make_case(rows: int, groups: int, hidden: int, layers: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    offsets = [0]
    for n in group_sizes(rows, groups, gen):
        offsets.append(offsets[-1] + n)
    nb = layers - 1
    shapes = [(groups, nb, hidden, hidden), (groups, nb, hidden), (groups, nb), (groups, OUT_DIM, hidden),
              (groups, OUT_DIM)]
    wr, br, sc, wo, bo = (torch.randn(*s, generator=gen).to(device) for s in shapes)
    wr, wo, sc = wr / hidden ** 0.5, wo / hidden ** 0.5, sc * 0.1
    z0 = torch.randn(rows, hidden, generator=gen).to(device)
    return offsets, list(range(groups)), (z0, wr, br, sc, wo, bo)


def op_cases(offsets, mlps, tensors):
    """(name, torch loops, grouped kernels) of the training op's forward and backward: the same call, run
    with the twin's kernel switch off for the loops (see main)."""
    z0, wr, br, sc, wo, bo = tensors
    _, h, t = torch_train._forward_torch(z0, offsets, mlps, wr, br, sc, wo, bo)
    gout = torch.randn(z0.shape[0], OUT_DIM, device=z0.device)
    fwd = lambda: torch_train._forward_torch(z0, offsets, mlps, wr, br, sc, wo, bo)  # noqa: E731
    bwd = lambda: torch_train._backward_torch(gout, h, t, offsets, mlps, wr, sc, wo)  # noqa: E731
    return [("training op forward", fwd, fwd), ("training op backward", bwd, bwd)]  # loops: timed unpatched


def piece_cases(offsets, mlps, tensors, precision: str):
    """(name, torch GEMM per group, grouped kernel) of one residual layer's forward, dx and weight gradients."""
    z0, wr, br, sc, *_ = tensors
    x, w, b, s = z0, wr[:, 0].contiguous(), br[:, 0].contiguous(), sc[:, 0].contiguous()
    dy = torch.randn_like(x)
    t, _ = gm.grouped_linear(x, offsets, mlps, w, b, scale=s)
    dw, db, ds = torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(s)
    lx, lw, lb, ldy = (v.to(torch.bfloat16) if precision == "bf16" else v for v in (x, w, b, dy))
    ly, ldx, ldw = torch.empty_like(lx), torch.empty_like(lx), torch.zeros_like(lw)
    ranges = [(offsets[g], offsets[g + 1], m) for g, m in enumerate(mlps)]

    def loop_fwd():
        for r0, r1, m in ranges:
            torch.addmm(lb[m], lx[r0:r1], lw[m].t(), out=ly[r0:r1])

    def loop_dx():
        for r0, r1, m in ranges:
            torch.mm(ldy[r0:r1], lw[m], out=ldx[r0:r1])

    def loop_wgrad():
        for r0, r1, m in ranges:
            ldw[m].addmm_(ldy[r0:r1].t(), lx[r0:r1])

    kw = dict(precision=precision)
    return [("layer forward (ReLU, residual fused)", loop_fwd,
             lambda: gm.grouped_linear(x, offsets, mlps, w, b, scale=s, **kw)),
            ("layer dx (mask, scale fused)", loop_dx,
             lambda: gm.grouped_dx(dy, offsets, mlps, w, gate=(t, s), residual=True, **kw)),
            ("layer weight gradients (+ bias, scalar)", loop_wgrad,
             lambda: gm.grouped_wgrad(dy, x, offsets, mlps, dw, db, gate=(t, s), dscale=ds, **kw))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (cpu runs the interpreter: tiny shapes only)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8, help="INR layers after the first: residual blocks + 1")
    parser.add_argument("--steps", type=int, default=20, help="timed repeats (median)")
    parser.add_argument("--dry-run", action="store_true", help="rows 150, 4 groups, hidden 32, 2 layers, 1 repeat")
    args = parser.parse_args(argv)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if args.dry_run:
        args.rows, args.groups, args.hidden, args.layers, args.steps = 150, 4, 32, 2, 1
        args.device = "cpu" if interpreted else "cuda"
    device = torch.device(args.device)
    if device.type == "cpu" and not interpreted:
        raise SystemExit("grouped kernels on the CPU need TRITON_INTERPRET=1 set before triton is imported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run (Triton's interpreter) on a CPU-only machine")
    offsets, mlps, tensors = make_case(args.rows, args.groups, args.hidden, args.layers, device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    print(f"{args.rows} rows in {args.groups} groups (sizes {min(b - a for a, b in zip(offsets, offsets[1:]))}.."
          f"{max(b - a for a, b in zip(offsets, offsets[1:]))}), hidden {args.hidden}, {args.layers} layers, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (interpreter)'}\n")
    print("| case | precision | torch loop (ms) | grouped (ms) | loop / grouped |")
    print("|---|---|---|---|---|")
    try:
        with mock.patch.object(torch_train, "GROUPED_ON_CPU", device.type == "cpu"):
            for precision in ("ieee", "tf32", "bf16"):
                torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
                cases = piece_cases(offsets, mlps, tensors, precision)
                if precision != "bf16":  # the op's precision follows torch's TF32 switch; it has no bf16
                    cases = op_cases(offsets, mlps, tensors) + cases
                for name, loop, grouped in cases:
                    with mock.patch.object(torch_train, "_grouped", lambda t: None):  # the twin's own loops
                        a = bench_ms(loop, device, args.steps)
                    b = bench_ms(grouped, device, args.steps)
                    print(f"| {name} | {precision} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


if __name__ == "__main__":
    main()
