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
from .demo import DEFAULT_OUT as DEMO_OUT
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
    out = demo.DEFAULT_OUT[args.quick] if args.out is None else args.out
    demo.run(config, out, jobs=args.jobs, progress=not args.no_progress)
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
    print(f"wrote the width-{args.width} model to {path}; load it with neumeta_fast.runs.load_sample({path!r})")
    return 0


def _train_epilog() -> str:
    from .config_help import RUN_KEYS, TRAINER_KEYS, describe
    from .runs import RunConfig
    from .trainer import TrainConfig
    return ("The config file (JSON, or TOML on Python >= 3.11) holds these keys; every one is optional:\n"
            + describe(RunConfig, RUN_KEYS) + "\n\nand in its `trainer` table:\n" + describe(TrainConfig, TRAINER_KEYS)
            + '\n\nExample: {"dataset": "digits", "model": "convnet", "full_width": 32, "trainer": {"steps": 2000}}')


_SAMPLE_EPILOG = """\
The written file holds the model's state_dict and what builds it (family, width, dataset):

  from neumeta_fast.runs import load_sample
  model = load_sample("w24.pt")              # an nn.Module of width 24, in eval mode

or, with your own constructor: torch.load("w24.pt", weights_only=True)["state_dict"]."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neumeta_fast")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these small models run fastest single-threaded)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="demo, train or sample (`COMMAND --help` for its options)")

    demo = sub.add_parser("demo", help="NeuMeta vs baselines on sklearn digits: table, results.json, plot",
                          description="NeuMeta against individually trained, L1-pruned and unsmoothed models on "
                                      "sklearn's digits, over several seeds: prints the plan, progress and a table; "
                                      "writes results.json, a plot and log.txt into --out.")
    demo.add_argument("--out", default=None, help=f"output folder (default {DEMO_OUT[False]}, with --quick "
                                                  f"{DEMO_OUT[True]}); earlier results there are replaced, with a note")
    demo.add_argument("--quick", action="store_true", help="one seed, short schedules, full width 16 (about 30 s)")
    demo.add_argument("--task", choices=("classify", "vae"), default="classify",
                      help="classify (accuracy) or vae (reconstruction MSE) (default classify)")
    demo.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3, 1 with --quick)")
    demo.add_argument("--model", default=None,
                      help="model family (default resnet8_all; see `train --help` for the names)")
    demo.add_argument("--full-width", type=int, default=None, help="the family's full width (default 64, 16 with --quick)")
    demo.add_argument("--steps", type=int, default=None, help="INR training steps (default 2500, 500 with --quick)")
    demo.add_argument("--noise-mode", choices=("channels", "reference"), default=None,
                      help="coordinate noise on channel positions only, or the authors' on all columns (default channels)")
    demo.add_argument("--recon", choices=("normalised", "reference"), default=None,
                      help="reconstruction loss: per-tensor normalised or the paper's (default normalised)")
    demo.add_argument("--prefit-steps", type=int, default=None,
                      help="reconstruction-only INR steps before training (default 600, 400 with --quick)")
    demo.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="worker processes (default: up to 2; each seed is two jobs)")
    demo.add_argument("--device", default=None, help=_DEVICE_HELP)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train a NeuMeta INR from a JSON/TOML config (resumes from out/checkpoint.pt)",
                           description="Train the base model (or load it), smooth it and train the INR; writes "
                                       "checkpoint.pt, log.csv and metrics.json into the config's `out`, and "
                                       "reports the base model's and each evaluated width's metrics.",
                           epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="the run's JSON or TOML file (keys below)")
    train.add_argument("--out", default=None, help="output folder; overrides the config's out")
    train.add_argument("--device", default=None, help=_DEVICE_HELP + "; overrides the config's trainer.device")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    sample = sub.add_parser("sample", help="write the model of one generated width",
                            description="Generate the model of one width from a checkpoint written by `train` "
                                        "(BatchNorm recalibrated on the run's training data) and write it.",
                            epilog=_SAMPLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `train`")
    sample.add_argument("--width", type=int, required=True,
                        help="the width as an absolute channel count (e.g. 24 of a full width 32), not a fraction")
    sample.add_argument("--out", required=True, help="the file to write (e.g. w24.pt)")
    sample.add_argument("--samples", type=int, default=None,
                        help="K-sample averaging: average K noisy generations (default: the run's eval_samples)")
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
