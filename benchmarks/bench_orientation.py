"""How much the demo's unseen-width result depends on which way each smoothed path is read.

A shortest path and its reverse are equally short, and smooth() returns one of them; generated
widths sample the path from its start, so the reading changes the small networks. This script
trains the demo's NeuMeta part (same setting, same seeds) once per orientation rule of
`smooth(orientation=...)` and prints NeuMeta's accuracy at every evaluated width, per seed, with
the mean and a 95% t-interval over seeds.

    python benchmarks/bench_orientation.py [--seeds 3] [--jobs 2] [--orientations heavy_first,light_first,solver]
    python benchmarks/bench_orientation.py --dry-run     # a tiny configuration, seconds
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neumeta_fast.demo import DemoConfig, quick_config  # noqa: E402
from neumeta_fast.demo import _job as demo_job  # noqa: E402
from neumeta_fast.objective import task as _task  # noqa: E402
from neumeta_fast.smoothing import ORIENTATIONS  # noqa: E402
from neumeta_fast.stats import mean_interval  # noqa: E402


def _run(job):
    """The demo's NeuMeta job for one seed with the given path orientation: accuracy by table width."""
    config, seed, orientation = job
    scores, _, _ = demo_job((replace(config, orientation=orientation), seed, "neumeta"))
    return {w: m[_task(config.task).primary] for w, m in scores["neumeta"].items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each")
    parser.add_argument("--orientations", default=",".join(ORIENTATIONS),
                        help=f"comma-separated subset of {', '.join(ORIENTATIONS)}")
    parser.add_argument("--json", help="also write the per-seed scores to this file")
    parser.add_argument("--dry-run", action="store_true", help="the quick demo configuration, one seed")
    args = parser.parse_args(argv)
    orientations = args.orientations.split(",")
    for o in orientations:
        if o not in ORIENTATIONS:
            parser.error(f"unknown orientation {o!r}; choose from {', '.join(ORIENTATIONS)}")
    config, seeds, jobs = DemoConfig(), args.seeds, args.jobs
    if args.dry_run:  # every step on the quick demo's network, with schedules cut to a few steps
        quick = quick_config()
        config = replace(quick, base_steps=10, trainer=replace(quick.trainer, steps=4, prefit_steps=2))
        seeds, jobs = 1, 1
    work = [(config, seed, o) for o in orientations for seed in range(seeds)]
    start = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            done = list(pool.map(_run, work))
    else:
        done = [_run(w) for w in work]
    scores: dict[str, dict[int, list[float]]] = {}
    for (_, _, o), by_width in zip(work, done):
        for w, v in by_width.items():
            scores.setdefault(o, {}).setdefault(w, []).append(100.0 * v)
    widths = sorted(next(iter(scores.values())), reverse=True)
    print(f"NeuMeta accuracy (%) by orientation, seeds 0..{seeds - 1}: per seed; mean [95% interval]")
    print("| orientation | " + " | ".join(f"width {w}" for w in widths) + " |")
    print("|---|" + "---|" * len(widths))
    for o in orientations:
        cells = []
        for w in widths:
            values = scores[o][w]
            mean, low, high = mean_interval(values)
            cells.append(" / ".join(f"{v:.2f}" for v in values) + f"; {mean:.2f} [{low:.2f}, {high:.2f}]")
        print(f"| {o} | " + " | ".join(cells) + " |")
    print(f"total {time.perf_counter() - start:.0f} s with {jobs} process(es)")
    if args.json:
        Path(args.json).write_text(json.dumps({o: {str(w): v for w, v in s.items()} for o, s in scores.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
