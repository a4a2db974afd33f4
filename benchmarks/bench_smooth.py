"""smooth() end to end on a CIFAR ResNet-20 (hidden width 64): trace, groups, city rows, solver, permutation.

    python benchmarks/bench_smooth.py [--runs 7]            median and breakdown, as in RESULTS.md
    python benchmarks/bench_smooth.py --dry-run             one run on a narrow ResNet-20 (checks the script)
    pytest benchmarks/bench_smooth.py --benchmark-only      the same call under pytest-benchmark

Each run smooths a fresh copy of one seeded model (smooth() works in place). Target: <= 0.2 s.
"""
import argparse
import copy
import statistics
import time

import torch

from neumeta_fast import smooth
from neumeta_fast.channel_groups import channel_groups
from neumeta_fast.models import cifar_resnet


def _setup(hidden_width: int = 64):
    torch.set_num_threads(1)  # single-thread timings, as the targets are stated
    torch.manual_seed(0)
    return cifar_resnet(20, hidden_width=hidden_width).eval(), torch.randn(1, 3, 32, 32)


def test_smooth_resnet20(benchmark):
    model, x = _setup()
    benchmark.pedantic(smooth, setup=lambda: ((copy.deepcopy(model), x), {}), rounds=7, warmup_rounds=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dry-run", action="store_true", help="one run, hidden width 4 (checks the script)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.runs = 1
    model, x = _setup(4 if args.dry_run else 64)
    smooth(copy.deepcopy(model), x)  # warm-up: first-call imports and allocations
    totals, discovery, per_group, solver, reports = [], [], [], [], []
    for _ in range(args.runs):
        fresh = copy.deepcopy(model)
        start = time.perf_counter()
        channel_groups(fresh, x)
        discovery.append(time.perf_counter() - start)
        start = time.perf_counter()
        report = smooth(fresh, x)
        totals.append(time.perf_counter() - start)
        per_group.append(sum(g.seconds for g in report.groups))
        solver.append(sum(g.solver_seconds for g in report.groups))
        reports.append(report)
    report = reports[-1]
    channels = [g.channels for g in report.groups]
    print(f"torch {torch.__version__}, 1 thread, {args.runs} runs, {len(channels)} groups, channels {channels}")
    print(f"smooth() end to end   median {statistics.median(totals) * 1e3:8.1f} ms  (min {min(totals) * 1e3:.1f})")
    print(f"  channel groups only median {statistics.median(discovery) * 1e3:8.1f} ms")
    print(f"  per-group work      median {statistics.median(per_group) * 1e3:8.1f} ms  (rows, solver, costs, apply)")
    print(f"    of it the solver  median {statistics.median(solver) * 1e3:8.1f} ms  (neumeta_fast.tsp.path_order)")
    outside = [t - s for t, s in zip(totals, solver)]
    print(f"  everything but the solver median {statistics.median(outside) * 1e3:4.1f} ms")
    cost_before = sum(g.cost_before for g in report.groups)
    cost_after = sum(g.cost_after for g in report.groups)
    print(f"  path cost {cost_before:.1f} -> {cost_after:.1f} ({100 * (1 - cost_after / cost_before):.2f}% lower), "
          f"total variation {report.total_variation_before:.1f} -> {report.total_variation_after:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
