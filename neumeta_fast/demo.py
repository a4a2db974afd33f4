"""The demo: NeuMeta against its baselines on sklearn's digits, end to end, over several seeds.

Per seed: train the full-width base model, smooth it, train the INR on a set of widths, and
evaluate at 100/75/50/25% of the full width NeuMeta, individually trained models, L1-pruned
base models (BN recalibrated, no retraining) and the no-smoothing ablation (the INR trained
against a randomly permuted base); NeuMeta also at every width of the family (generation is
cheap: a few seconds per seed). Writes results.json (with provenance), log.txt and a plot.

The setting: a CIFAR-style ResNet-8 whose every block's hidden width is morphed (NeuMeta's
ResNet setting, applied to all three stages so that 25% width keeps a quarter of every hidden
layer; pruning then costs ~30 points), a 500-image training split so that no method saturates.
The INR trains on every width from 12.5% to 100% except the 25% width and its two neighbours:
the 25% row measures a width the INR never generated during training. Measured choices (norm,
steps, training widths) and the extrapolation finding are in docs/notes/2026-11-28-demo-setting.md.
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
from . import progress as _progress
from .atomic import atomic_open, check_writable, remove_orphans
from .baselines import evaluate, prune_l1, recalibrate_bn, shuffle_channels, train_model
from .models.family import fraction_width, named_family
from .objective import task as _task
from .plot import consecutive_runs
from .provenance import provenance
from .smoothing import smooth
from .stats import mean_interval, paired_difference
from .trainer import ConfigError, TrainConfig, Trainer, resolve_device

FRACTIONS = (1.0, 0.75, 0.5, 0.25)
METHODS = ("neumeta", "individual", "pruned_l1", "no_smoothing")
# The plot's and the table's names for the methods.
METHOD_NAMES = {"neumeta": "NeuMeta", "individual": "individually trained", "pruned_l1": "pruned L1",
                "no_smoothing": "NeuMeta without smoothing"}
DEFAULT_OUT = {False: os.path.join("out", "demo"), True: os.path.join("out", "demo-quick")}  # by --quick


@dataclass
class DemoConfig:
    task: str = "classify"
    model: str = "resnet8_all"  # a named family (models.family.named_family); the VAE task uses "vae"
    seeds: int = 3
    full_width: int = 64
    train_size: int = 500
    base_steps: int = 600
    # The INR trains on every width from trainer.min_fraction of the full width up, except the widths
    # within held_out (a fraction of the full width) of the 25% width: that one is never trained.
    held_out: float = 0.02
    orientation: str = "heavy_first"  # how smooth() reads each path (smoothing.ORIENTATIONS)
    trainer: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2500, norm=1024.0, min_fraction=0.125))


def quick_config(task: str = "classify") -> DemoConfig:
    """A small run for CI: one seed, short schedules, a narrower network and INR."""
    return DemoConfig(task=task, seeds=1, full_width=16, base_steps=300,
                      trainer=TrainConfig(steps=500, prefit_steps=400, hidden_dim=64, num_layers=2, num_freqs=5,
                                          norm=1024.0, min_fraction=0.125))


def training_widths(config: DemoConfig, family) -> list[int]:
    """The trainer's widths: config.trainer.widths when set, else its range minus the held-out band."""
    widths = config.trainer.training_widths(family)
    if config.trainer.widths is not None:
        return widths
    full = family.full_width
    unseen = fraction_width(full, FRACTIONS[-1])
    widths = [w for w in widths if abs(w - unseen) > config.held_out * full]
    if not widths:
        raise ConfigError(f"trainer.min_fraction={config.trainer.min_fraction} and held_out={config.held_out} "
                          "leave no training width")
    return widths


def run(config: DemoConfig, out: str, *, jobs: int = 1, progress: bool = True, echo=print) -> dict:
    """Run the demo, write `out`/results.json, `out`/<metric>_vs_width.png and `out`/log.txt; returns
    the results.

    jobs > 1 runs the work in that many processes (one torch thread each). Each seed is split
    into two jobs that both train the same deterministic base model: NeuMeta, and the baselines
    with the no-smoothing ablation. Progress (a bar on a terminal, else a line every 15 s) counts
    training steps across all jobs.
    """
    task = _task(config.task)
    family = _family(config)
    trained = training_widths(config, family)  # bad settings fail here, not in a worker
    data = _data.load("digits", train_size=config.train_size, seed=0)  # as does a missing scikit-learn
    check_writable(out, "out", folder=True)  # before the work, not after it
    os.makedirs(out, exist_ok=True)
    remove_orphans(out)
    # Longest jobs first: a baselines job takes about 1.1x a NeuMeta one (191 s against 172 s,
    # default setting, 2 processes), so this order ends 3.5% sooner on 2 processes than
    # alternating them. Results do not depend on the order.
    work = [(config, seed, part) for part in ("baselines", "neumeta") for seed in range(config.seeds)]
    units = {part: _units(config, family, part) for part in ("baselines", "neumeta")}
    with _progress.Progress(sum(units[part] for _, _, part in work), echo=echo, show=progress,
                            log_path=os.path.join(out, "log.txt")) as bar:
        bar.say(_plan(config, family, trained, jobs, out))
        step_seconds = _measure(config, family, trained, data)
        expected = _expected_seconds(step_seconds, config, family, [part for _, _, part in work], jobs)
        bar.say(f"expected duration: about {_progress.duration(expected)} (measured here: a base-model step "
                f"{1000 * step_seconds['base']:.0f} ms, an INR step {1000 * step_seconds['inr']:.0f} ms, "
                f"one width's evaluation {1000 * step_seconds['eval']:.0f} ms)")
        _say_if_replacing(out, bar.say)
        start = time.perf_counter()
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            context = multiprocessing.get_context("spawn")
            # One torch thread per worker: the pool provides the parallelism.
            with ProcessPoolExecutor(jobs, mp_context=context, initializer=_progress.init_worker,
                                     initargs=(bar.queue(context), 1)) as pool:
                done = list(pool.map(_job, work))
        else:
            done = [_job(w) for w in work]
        per_seed = [{m: {} for m in METHODS} for _ in range(config.seeds)]
        dense = [None] * config.seeds
        recon_errors = {"smoothed": [], "no_smoothing": []}
        for (_, seed, _), (scores, errors, all_widths) in zip(work, done):
            for method, by_width in scores.items():
                per_seed[seed][method].update(by_width)
            for k, v in errors.items():
                recon_errors[k].append(v)
            if all_widths is not None:
                dense[seed] = all_widths
        results = _summarise(config, task, family, per_seed, dense, recon_errors)
        results["seconds"] = round(time.perf_counter() - start, 1)
        results["expected_seconds"] = round(expected, 1)
        results["jobs"] = jobs
        results["provenance"] = provenance(resolve_device(config.trainer.device))
        bar.say(table(results))
        bar.say(f"total {_progress.duration(results['seconds'])} with {jobs} process(es)")
        plot = _write_outputs(results, out)
        bar.say(f"wrote {os.path.join(out, 'results.json')} and the plot {plot}")
    return results


def _family(config: DemoConfig):
    try:
        return named_family("vae" if config.task == "vae" else config.model, full_width=config.full_width)
    except ValueError as exc:  # unknown model, full width < 1
        raise ConfigError(str(exc)) from exc


def _plan(config: DemoConfig, family, trained: list[int], jobs: int, out: str) -> str:
    widths = "/".join(str(fraction_width(config.full_width, f)) for f in FRACTIONS)
    unseen = [w for w in family.widths if w not in trained and w >= min(trained)]
    gaps = ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in consecutive_runs(unseen))
    return (f"demo: {config.seeds} seed(s) x 2 jobs (NeuMeta; the baselines with the no-smoothing ablation) on "
            f"{jobs} process(es); {family.name} on digits, full width {config.full_width}; the INR trains "
            f"{config.trainer.steps} steps on {len(trained)} widths {min(trained)}..{max(trained)}"
            + (f" except {gaps}" if unseen else "")
            + f"; every method is evaluated at widths {widths}, NeuMeta also at every width "
            f"{family.widths[0]}..{family.full_width}; output and log.txt in {out}")


def _units(config: DemoConfig, family, part: str) -> int:
    """A job's progress units: training steps of every model and the INR, one per evaluated width."""
    inr = config.trainer.prefit_steps + config.trainer.steps
    if part == "baselines":
        return len(FRACTIONS) * config.base_steps + inr + 2 * len(FRACTIONS)
    return config.base_steps + inr + len(family.widths)


def _measure(config: DemoConfig, family, trained: list[int], data) -> dict[str, float]:
    """Seconds per base-model step, per INR step and per generated width's evaluation, timed on a
    few steps here (the plan's expected duration)."""
    task = _task(config.task)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="channel groups: .* not understood")
        model = family.build(family.full_width)
        train_model(model, data, task, steps=1)  # first calls allocate and warm up: not timed
        start = time.perf_counter()
        train_model(model, data, task, steps=4)
        base = (time.perf_counter() - start) / 4
        trainer = Trainer(family, model, data, replace(config.trainer, widths=trained, prefit_steps=0), task)
        trainer.step()
        start = time.perf_counter()
        for _ in range(3):
            trainer.step()
        inr = (time.perf_counter() - start) / 3
        trainer.evaluate(family.full_width)
        start = time.perf_counter()
        trainer.evaluate(family.widths[len(family.widths) // 2])  # a middle width: the average cost
        return {"base": base, "inr": inr, "eval": time.perf_counter() - start}


def _expected_seconds(step: dict[str, float], config: DemoConfig, family, parts: list[str], jobs: int) -> float:
    """The jobs' measured step costs, spread over `jobs` processes (never shorter than the longest job)."""
    inr = (config.trainer.prefit_steps + config.trainer.steps) * step["inr"]
    cost = {"baselines": len(FRACTIONS) * config.base_steps * step["base"] + inr + 2 * len(FRACTIONS) * step["eval"],
            "neumeta": config.base_steps * step["base"] + inr + len(family.widths) * step["eval"]}
    seconds = [cost[p] for p in parts]
    return max(sum(seconds) / min(jobs, len(seconds)), max(seconds))


def _say_if_replacing(out: str, say) -> None:
    """Results are never replaced silently: name the earlier run's results this one will replace."""
    path = os.path.join(out, "results.json")
    if os.path.isfile(path):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
        say(f"note: {out} holds the results of an earlier run ({when}); this run replaces them when it ends "
            "(pass --out to keep them)")


def _job(work):
    """One seed's NeuMeta part or baselines part: (scores, reconstruction errors, NeuMeta's primary
    metric at every width of the family or None)."""
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
    _progress.report(config.base_steps)
    cfg = replace(config.trainer, seed=seed, widths=training_widths(config, family))
    scores: dict[str, dict[int, dict[str, float]]] = {}
    if part == "neumeta":
        start_model = copy.deepcopy(base)
        smooth(start_model, example, seed=seed, orientation=config.orientation)
        method, error_key = "neumeta", "smoothed"
    else:
        scores["individual"] = {full: evaluate(base, data, task)}
        for w in widths[1:]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * seed + w)
                model = train_model(family.build(w), data, task, steps=config.base_steps, seed=seed)
            scores["individual"][w] = evaluate(model, data, task)
            _progress.report(config.base_steps)
        scores["pruned_l1"] = {}
        for w in widths:
            pruned = copy.deepcopy(base) if w == full else prune_l1(base, family, w, example)
            scores["pruned_l1"][w] = evaluate(recalibrate_bn(pruned, data.x_train), data, task)
            _progress.report(1)
        start_model = shuffle_channels(copy.deepcopy(base), example, seed=seed)
        method, error_key = "no_smoothing", "no_smoothing"
    trainer = Trainer(family, start_model, data, cfg, task)
    trainer.prefit(cfg.prefit_steps)
    _progress.report(cfg.prefit_steps)
    trainer.fit(log=lambda row: _progress.report(1))
    all_widths = None
    if part == "neumeta":  # every width: a dense curve, and the table's widths among them
        by_width = {}
        for w in family.widths:
            by_width[w] = trainer.evaluate(w)
            _progress.report(1)
        scores[method] = {w: by_width[w] for w in widths}
        all_widths = [by_width[w][task.primary] for w in family.widths]
    else:
        scores[method] = {}
        for w in widths:
            scores[method][w] = trainer.evaluate(w)
            _progress.report(1)
    _progress.note(f"seed {seed}: {'NeuMeta' if part == 'neumeta' else 'baselines'} job done in "
                   f"{_progress.duration(time.perf_counter() - start)}")
    return scores, {error_key: trainer.recon_rel_error()}, all_widths


def _summarise(config, task, family, per_seed, dense, recon_errors) -> dict:
    trained = set(training_widths(config, family))
    primary = task.primary
    rows = []
    for w in (fraction_width(config.full_width, f) for f in FRACTIONS):
        row = {"width": w, "compression": round(1 - w / config.full_width, 4), "seen_in_training": w in trained}
        for metric in (primary, "nll"):
            values = {m: [s[m][w][metric] for s in per_seed] for m in METHODS}
            row[metric] = {m: _mean(v) for m, v in values.items()}
            row[f"{metric}_per_seed"] = values
            if metric == primary:
                row[f"{primary}_std"] = {m: _std(v) for m, v in values.items()}
                row[f"{primary}_interval95"] = {m: list(mean_interval(v)[1:]) for m, v in values.items()}
        rows.append(row)
    columns = list(zip(*dense))  # per width: one value per seed
    return {
        "dataset": "digits",
        "task": config.task,
        "metric": primary,
        "full_width": config.full_width,
        "seeds": config.seeds,
        "seed_values": list(range(config.seeds)),
        "train_size": config.train_size,
        "training_widths": sorted(trained),
        "rows": rows,
        "paired_neumeta_minus_individual": [_paired(row, primary) for row in rows if not row["seen_in_training"]],
        "neumeta_all_widths": {"width": list(family.widths), primary: [_mean(c) for c in columns],
                               f"{primary}_std": [_std(c) for c in columns],
                               f"{primary}_per_seed": [list(d) for d in dense]},
        "recon_rel_error": {k: _mean(v) for k, v in recon_errors.items()},
        "recon_rel_error_per_seed": recon_errors,
        "config": {"model": config.model, "base_steps": config.base_steps, "held_out": config.held_out,
                   "orientation": config.orientation, "trainer": config.trainer.to_dict()},
    }


def _paired(row: dict, primary: str) -> dict:
    """NeuMeta minus individually trained at one width, paired by seed: mean and 95% interval."""
    values = row[f"{primary}_per_seed"]
    mean, low, high = paired_difference(values["neumeta"], values["individual"])
    return {"width": row["width"], "mean": mean, "interval95": [low, high]}


def _mean(v):
    return float(sum(v) / len(v))


def _std(v):
    m = _mean(v)
    return float(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)))


def table(results: dict) -> str:
    """The markdown table: mean ± std [95% interval] over seeds (the mean alone for one seed), then the
    paired NeuMeta - individual difference at every width the INR never trained on."""
    metric = results["metric"]
    scale, unit, digits = (100.0, "%", 2) if metric == "accuracy" else (1.0, "", 4)
    spread = results["seeds"] > 1
    head = "| width | compression | trained on | " + " | ".join(METHOD_NAMES[m] for m in METHODS) + " |"
    over = f"mean ± std [95% t-interval] over {results['seeds']} seeds" if spread else "one seed"
    lines = [f"{metric}{' (' + unit + ')' if unit else ''}, {over}", head, "|" + "---|" * (3 + len(METHODS))]
    for row in results["rows"]:
        cells = [f"{scale * row[metric][m]:.{digits}f}" + (_spread(row, metric, m, scale, digits) if spread else "")
                 for m in METHODS]
        lines.append(f"| {row['width']} | {100 * row['compression']:.0f}% | {'yes' if row['seen_in_training'] else 'no'} | "
                     + " | ".join(cells) + " |")
    for pair in results["paired_neumeta_minus_individual"] if spread else ():
        low, high = (scale * x for x in pair["interval95"])
        lines.append(f"NeuMeta - individually trained at width {pair['width']} (never trained), paired by seed: "
                     f"{scale * pair['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]")
    rec = results["recon_rel_error"]
    lines.append(f"relative reconstruction error of the full-width weights: smoothed {rec['smoothed']:.4f}, "
                 f"no smoothing {rec['no_smoothing']:.4f}")
    return "\n".join(lines)


def _spread(row: dict, metric: str, method: str, scale: float, digits: int) -> str:
    low, high = (scale * x for x in row[f"{metric}_interval95"][method])
    return f" ± {scale * row[metric + '_std'][method]:.{digits}f} [{low:.{digits - 1}f}, {high:.{digits - 1}f}]"


def _write_outputs(results: dict, out: str) -> str:
    """results.json and the plot, each written to a temp file and renamed (never half-written); the plot's path."""
    from .plot import plot_results
    with atomic_open(os.path.join(out, "results.json")) as fh:
        json.dump(results, fh, indent=2)
    path = os.path.join(out, f"{results['metric']}_vs_width.png")
    plot_results(results, path)
    return path
