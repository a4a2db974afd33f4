"""Command line: `python -m neumeta_fast demo` (the README's main job)."""
from __future__ import annotations

import argparse
import sys
import time

import torch

from .backends import backends
from .generate import generate
from .inr import INR
from .layout import Layout


def _last_block(width: int) -> Layout:
    """ResNet20's last block with hidden width `width` (the tensors NeuMeta morphs in the paper)."""
    return Layout.from_shapes([
        ("conv1.weight", (width, 64, 3, 3)), ("bn1.weight", (width,)), ("bn1.bias", (width,)),
        ("conv2.weight", (64, width, 3, 3)), ("bn2.weight", (64,)), ("bn2.bias", (64,)),
    ])


def _demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    inr = INR(6, hidden_dim=args.hidden, num_layers=args.layers, num_freqs=args.freqs)
    print(f"neumeta_fast demo: weight generation for ResNet20's last block; backends: {backends()}")
    print(f"| width | coordinates | weights | time (ms) | mean |W| |")
    print(f"|---|---|---|---|---|")
    for width in args.widths:
        layout = _last_block(width)
        with torch.no_grad():
            start = time.perf_counter()
            weights = generate(inr, layout, norm=64)
            ms = 1e3 * (time.perf_counter() - start)
        mean_abs = torch.cat([w.flatten() for w in weights.values()]).abs().mean().item()
        print(f"| {width} | {layout.num_rows} | {layout.numel} | {ms:.1f} | {mean_abs:.4g} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neumeta_fast")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate weights at several widths and print a table")
    demo.add_argument("--widths", type=int, nargs="+", default=[64, 48, 32, 16])
    demo.add_argument("--hidden", type=int, default=256)
    demo.add_argument("--layers", type=int, default=4)
    demo.add_argument("--freqs", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
