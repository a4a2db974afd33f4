"""The demo: NeuMeta against its baselines on sklearn's digits, end to end, over several seeds.

Per seed: train the full-width base model, smooth it, train the INR on a set of widths, and
evaluate at 100/75/50/25% of the full width NeuMeta, individually trained models, L1-pruned
base models (BN recalibrated, no retraining) and the no-smoothing ablation (the INR trained
against a randomly permuted base). Writes results.json and a plot.

The setting: a CIFAR-style ResNet-8 whose every block's hidden width is morphed (NeuMeta's
ResNet setting, applied to all three stages so that 25% width keeps a quarter of every hidden
layer; pruning then costs ~30 points), a 500-image training split so that no method saturates.
The INR trains on every width from 12.5% to 100% except the 25% width and its two neighbours:
the 25% row measures a width the INR never generated during training. Measured choices (norm,
steps, training widths) and the extrapolation finding are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace

import torch

from . import data as _data
from .atomic import atomic_open, check_writable, remove_orphans
from .baselines import evaluate, prune_l1, recalibrate_bn, shuffle_channels, train_model
from .models.family import fraction_width, named_family
from .objective import task as _task
from .smoothing import smooth
from .trainer import ConfigError, TrainConfig, Trainer

FRACTIONS = (1.0, 0.75, 0.5, 0.25)
METHODS = ("neumeta", "individual", "pruned_l1", "no_smoothing")


@dataclass
class DemoConfig:
    task: str = "classify"
    model: str = "resnet8_all"  # a named family (models.family.named_family); the VAE task uses "vae"
    seeds: int = 3
    full_width: int = 64
    train_size: int = 500
    base_steps: int = 600
    # The INR trains on every width from min_fraction of the full width up, except the widths
    # within held_out (a fraction of the full width) of the 25% width: that one is never trained.
    min_fraction: float = 0.125
    held_out: float = 0.02
    trainer: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2500, norm=1024.0))


def quick_config(task: str = "classify") -> DemoConfig:
    """A small run for CI: one seed, short schedules, a narrower network and INR."""
    return DemoConfig(task=task, seeds=1, full_width=16, base_steps=300,
                      trainer=TrainConfig(steps=500, prefit_steps=400, hidden_dim=64, num_layers=2, num_freqs=5,
                                          norm=1024.0))


def training_widths(config: DemoConfig, family) -> list[int]:
    """The trainer's widths: config.trainer.widths when set, else the demo's range minus the held-out band."""
    if config.trainer.widths is not None:
        return config.trainer.training_widths(family)
    full = family.full_width
    unseen = fraction_width(full, FRACTIONS[-1])
    low = math.ceil(config.min_fraction * full)
    widths = [w for w in family.widths if w >= low and abs(w - unseen) > config.held_out * full]
    if not widths:
        raise ConfigError(f"min_fraction={config.min_fraction} and held_out={config.held_out} leave no training width")
    return widths


def run(config: DemoConfig, out: str, *, jobs: int = 1, progress: bool = True, echo=print) -> dict:
    """Run the demo, write `out`/results.json and `out`/<metric>_vs_width.png; returns the results.

    jobs > 1 runs the work in that many processes (one torch thread each). Each seed is split
    into two jobs that both train the same deterministic base model: NeuMeta, and the baselines
    with the no-smoothing ablation.
    """
    task = _task(config.task)
    family = _family(config)
    training_widths(config, family)  # bad settings fail here, not in a worker
    check_writable(out, "out", folder=True)  # before the work, not after it
    remove_orphans(out)
    widths = [fraction_width(config.full_width, f) for f in FRACTIONS]
    start = time.perf_counter()
    # Longest jobs first: a baselines job takes about 1.1x a NeuMeta one (191 s against 172 s,
    # default setting, 2 processes), so this order ends 3.5% sooner on 2 processes than
    # alternating them. Results do not depend on the order.
    work = [(config, seed, part) for part in ("baselines", "neumeta") for seed in range(config.seeds)]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        # One torch thread per worker: the pool provides the parallelism.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            done = list(pool.map(_job, work))
    else:
        done = [_job(w, progress=progress) for w in work]
    per_seed = [{m: {} for m in METHODS} for _ in range(config.seeds)]
    recon_errors = {"smoothed": [], "no_smoothing": []}
    for (_, seed, _), (scores, errors, seconds) in zip(work, done):
        for method, by_width in scores.items():
            per_seed[seed][method].update(by_width)
        for k, v in errors.items():
            recon_errors[k].append(v)
    results = _summarise(config, task, widths, per_seed, recon_errors, family)
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["jobs"] = jobs
    echo(table(results))
    echo(f"total {results['seconds']:.0f} s with {jobs} process(es)")
    _write_outputs(results, out)
    return results


def _family(config: DemoConfig):
    try:
        return named_family("vae" if config.task == "vae" else config.model, full_width=config.full_width)
    except ValueError as exc:  # unknown model, full width < 1
        raise ConfigError(str(exc)) from exc


def _job(work, progress: bool = False):
    """One seed's NeuMeta part or baselines part: (scores, reconstruction errors, seconds)."""
    config, seed, part = work
    # The VAE's latent split and decoder reshape are outside every channel group, by design.
    warnings.filterwarnings("ignore", message="channel groups: .* not understood")
    start = time.perf_counter()
    task = _task(config.task)
    family = _family(config)
    widths = [fraction_width(config.full_width, f) for f in FRACTIONS]
    data = _data.load("digits", train_size=config.train_size, seed=seed)
    example = data.x_train[:4]
    full = family.full_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = train_model(family.build(full), data, task, steps=config.base_steps, seed=seed)
    cfg = replace(config.trainer, seed=seed, widths=training_widths(config, family))
    scores: dict[str, dict[int, dict[str, float]]] = {}
    if part == "neumeta":
        start_model = copy.deepcopy(base)
        smooth(start_model, example, seed=seed)
        method, error_key = "neumeta", "smoothed"
    else:
        scores["individual"] = {full: evaluate(base, data, task)}
        for w in widths[1:]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * seed + w)
                model = train_model(family.build(w), data, task, steps=config.base_steps, seed=seed)
            scores["individual"][w] = evaluate(model, data, task)
        scores["pruned_l1"] = {}
        for w in widths:
            pruned = copy.deepcopy(base) if w == full else prune_l1(base, family, w, example)
            scores["pruned_l1"][w] = evaluate(recalibrate_bn(pruned, data.x_train), data, task)
        start_model = shuffle_channels(copy.deepcopy(base), example, seed=seed)
        method, error_key = "no_smoothing", "no_smoothing"
    trainer = Trainer(family, start_model, data, cfg, task, progress=progress)
    trainer.fit()
    scores[method] = {w: trainer.evaluate(w) for w in widths}
    return scores, {error_key: trainer.recon_rel_error()}, time.perf_counter() - start


def _summarise(config, task, widths, per_seed, recon_errors, family) -> dict:
    trained = set(training_widths(config, family))
    primary = task.primary
    rows = []
    for w in widths:
        row = {"width": w, "compression": round(1 - w / config.full_width, 4), "seen_in_training": w in trained}
        for metric in (primary, "nll"):
            values = {m: [s[m][w][metric] for s in per_seed] for m in METHODS}
            row[metric] = {m: _mean(v) for m, v in values.items()}
            if metric == primary:
                row[f"{primary}_std"] = {m: _std(v) for m, v in values.items()}
        rows.append(row)
    return {
        "dataset": "digits",
        "task": config.task,
        "metric": primary,
        "full_width": config.full_width,
        "seeds": config.seeds,
        "train_size": config.train_size,
        "training_widths": sorted(trained),
        "rows": rows,
        "recon_rel_error": {k: _mean(v) for k, v in recon_errors.items()},
        "config": {"model": config.model, "base_steps": config.base_steps, "min_fraction": config.min_fraction,
                   "held_out": config.held_out, "trainer": config.trainer.to_dict()},
    }


def _mean(v):
    return float(sum(v) / len(v))


def _std(v):
    m = _mean(v)
    return float(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)))


def table(results: dict) -> str:
    metric = results["metric"]
    scale, unit, digits = (100.0, "%", 2) if metric == "accuracy" else (1.0, "", 4)
    head = "| width | compression | trained on | " + " | ".join(METHODS) + " |"
    lines = [f"{metric}{' (' + unit + ')' if unit else ''}, mean ± std over {results['seeds']} seed(s)",
             head, "|" + "---|" * (3 + len(METHODS))]
    for row in results["rows"]:
        cells = [f"{scale * row[metric][m]:.{digits}f} ± {scale * row[metric + '_std'][m]:.{digits}f}" for m in METHODS]
        lines.append(f"| {row['width']} | {100 * row['compression']:.0f}% | {'yes' if row['seen_in_training'] else 'no'} | "
                     + " | ".join(cells) + " |")
    rec = results["recon_rel_error"]
    lines.append(f"relative reconstruction error of the full-width weights: smoothed {rec['smoothed']:.4f}, "
                 f"no smoothing {rec['no_smoothing']:.4f}")
    return "\n".join(lines)


def _write_outputs(results: dict, out: str) -> None:
    """results.json and the plot, each written to a temp file and renamed (never half-written)."""
    os.makedirs(out, exist_ok=True)
    from .plot import plot_results
    with atomic_open(os.path.join(out, "results.json")) as fh:
        json.dump(results, fh, indent=2)
    plot_results(results, os.path.join(out, f"{results['metric']}_vs_width.png"))
