"""Command line: `python -m neumeta_fast demo | train --config FILE | sample`.

Bad input (unknown dataset, missing files, a width the family cannot build, config typos)
ends with one line on stderr naming the problem and exit code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import torch

from .atomic import OutputError
from .checkpoint import CheckpointError
from .data import DataError
from .errors import first_line
from .models.family import WidthError
from .trainer import ConfigError

USAGE_ERRORS = (ConfigError, DataError, WidthError, CheckpointError, OutputError, FileNotFoundError)
_DEVICE_HELP = "trainer device: cpu (default), cuda, cuda:N or auto (cuda when available)"


def _demo(args: argparse.Namespace) -> int:
    from . import demo
    from .runs import MAX_FULL_WIDTH
    config = demo.quick_config(args.task) if args.quick else demo.DemoConfig(task=args.task)
    overrides = {k: v for k, v in (("noise_mode", args.noise_mode), ("recon", args.recon),
                                   ("prefit_steps", args.prefit_steps), ("steps", args.steps),
                                   ("device", args.device)) if v is not None}
    trainer = replace(config.trainer, **overrides)
    config = replace(config, trainer=trainer, seeds=config.seeds if args.seeds is None else args.seeds,
                     model=config.model if args.model is None else args.model,
                     full_width=config.full_width if args.full_width is None else args.full_width)
    if config.full_width > MAX_FULL_WIDTH:
        raise ConfigError(f"--full-width must be <= {MAX_FULL_WIDTH}, got {config.full_width}")
    if config.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {config.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    demo.run(config, args.out, jobs=args.jobs, progress=not args.no_progress)
    print(f"wrote {os.path.join(args.out, 'results.json')} and the plot")
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import runs
    run = runs.RunConfig.from_file(args.config)
    if args.out:
        run = replace(run, out=args.out)
    if args.device:
        run = replace(run, trainer={**run.trainer, "device": args.device})
    runs.train(run, progress=not args.no_progress)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from . import runs
    path = runs.sample(args.checkpoint, args.width, args.out, samples=args.samples)
    print(f"wrote the width-{args.width} state_dict to {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neumeta_fast")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: these small models run fastest single-threaded)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="NeuMeta vs baselines on sklearn digits: table, results.json, plot")
    demo.add_argument("--out", default=os.path.join(".", "out", "demo"))
    demo.add_argument("--quick", action="store_true", help="one seed, short schedules (CI)")
    demo.add_argument("--task", choices=("classify", "vae"), default="classify")
    demo.add_argument("--seeds", type=int, default=None)
    demo.add_argument("--model", default=None, help="model family (default: resnet8_all; see neumeta_fast.models.named_family)")
    demo.add_argument("--full-width", type=int, default=None, help="the family's full width")
    demo.add_argument("--steps", type=int, default=None, help="INR training steps")
    demo.add_argument("--noise-mode", choices=("channels", "reference"), default=None)
    demo.add_argument("--recon", choices=("normalised", "reference"), default=None)
    demo.add_argument("--prefit-steps", type=int, default=None)
    demo.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="worker processes (default: up to 2; each seed is two jobs)")
    demo.add_argument("--device", default=None, help=_DEVICE_HELP)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train a NeuMeta INR from a JSON/TOML config (resumes from out/checkpoint.pt)")
    train.add_argument("--config", required=True)
    train.add_argument("--out", default=None, help="overrides the config's out")
    train.add_argument("--device", default=None, help=_DEVICE_HELP + "; overrides the config's trainer.device")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    sample = sub.add_parser("sample", help="write the state_dict of one generated width")
    sample.add_argument("--checkpoint", required=True)
    sample.add_argument("--width", type=int, required=True)
    sample.add_argument("--out", required=True)
    sample.add_argument("--samples", type=int, default=None, help="K-sample averaging (default: the run's)")
    sample.set_defaults(func=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # More threads than CPUs only slows these models down; tens of thousands crash libgomp.
    cpus = os.cpu_count() or 1
    if not 1 <= args.threads <= cpus:
        print(f"error: --threads must be in [1, {cpus}] (the CPUs here), got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except USAGE_ERRORS as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
