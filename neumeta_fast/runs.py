"""`train --config FILE` and `sample`: a user's own run, from a JSON/TOML file to a checkpoint.

Everything that can be wrong with the inputs (keys, dataset, files, widths) is checked before
the output folder is touched; checkpoints are atomic, so a failed run never replaces a good one.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from . import checkpoint as _ckpt
from . import data as _data
from . import distributed as _dist
from .atomic import atomic_open, check_writable, remove_orphans
from .baselines import evaluate, train_model
from .errors import first_line
from .fields import check_types
from .models.family import named_family
from .objective import TASKS
from .objective import task as _task
from .provenance import provenance
from .smoothing import smooth
from .trainer import ConfigError, TrainConfig, Trainer, resolve_device

# A guard against typos: a full width this large would allocate tens of GB for one layer.
MAX_FULL_WIDTH = 4096


@dataclass
class RunConfig:
    dataset: str = "digits"
    data_root: str | None = None
    train_size: int | None = None
    model: str = "convnet"
    full_width: int = 32
    task: str = "classify"
    base_steps: int = 600
    base_checkpoint: str | None = None  # a state_dict of the full-width model instead of training one
    eval_widths: list[int] = field(default_factory=list)  # default: 100/75/50/25% of full_width
    checkpoint_every: int = 100
    out: str = "out/train"
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        check_types(self, ConfigError)
        checks = [
            (self.dataset in _data.DATASETS, f"unknown dataset {self.dataset!r}; expected one of {_data.DATASETS}"),
            (self.task in TASKS, f"unknown task {self.task!r}; expected one of {sorted(TASKS)}"),
            (1 <= self.full_width <= MAX_FULL_WIDTH, f"full_width must be in [1, {MAX_FULL_WIDTH}], got {self.full_width}"),
            (self.train_size is None or self.train_size >= 1, f"train_size must be >= 1, got {self.train_size}"),
            (self.base_steps >= 0, f"base_steps must be >= 0, got {self.base_steps}"),
            (self.checkpoint_every >= 0, f"checkpoint_every must be >= 0 (0: only at the end), got {self.checkpoint_every}"),
            (self.out != "", "out must name a folder, got ''"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "RunConfig":
        """A run from the mapping read from `source` (named in errors): unknown keys and bad values are ConfigErrors."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must hold a mapping of keys, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown} in {source}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str) -> "RunConfig":
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            if path.endswith(".toml"):
                try:
                    import tomllib
                except ImportError:  # Python < 3.11
                    raise ConfigError(f"config file {path!r}: TOML configs need Python >= 3.11; use JSON") from None
                values = tomllib.loads(raw.decode())
            else:
                values = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ConfigError(f"config file {path!r} is not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {exc}")
        return cls.from_dict(values, f"config file {path!r}")


def _family(run: RunConfig):
    shape = {"digits": (1, 8), "synthetic": (1, 8), "cifar10": (3, 32), "cifar100": (3, 32)}
    channels, size = shape[run.dataset]
    classes = {"cifar100": 100, "synthetic": 4}.get(run.dataset, 10)
    try:
        return named_family(run.model, full_width=run.full_width, num_classes=classes, in_channels=channels,
                            image_size=size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _prepare(run: RunConfig):
    """Validate everything and load the data; nothing is written yet."""
    task = _task(run.task)
    family = _family(run)
    config = TrainConfig.from_dict(run.trainer)
    config.training_widths(family)
    widths = run.eval_widths or sorted({max(1, round(f * run.full_width)) for f in (1.0, 0.75, 0.5, 0.25)}, reverse=True)
    for w in widths:
        family.check_width(w)
    if run.base_checkpoint is not None and not os.path.isfile(run.base_checkpoint):
        raise FileNotFoundError(f"base_checkpoint {run.base_checkpoint!r} does not exist")
    check_writable(run.out, "out", folder=True)
    data = _data.load(run.dataset, root=run.data_root, train_size=run.train_size, seed=config.seed)
    _check_model_fits(run, family, data, task)
    return task, family, config, widths, data


def _check_model_fits(run: RunConfig, family, data: _data.Dataset, task) -> None:
    """One forward pass and loss on two examples: a model that does not fit the task or the data fails
    here, with its name, rather than after the base model has trained."""
    x, y = data.x_train[:2], data.y_train[:2]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            task.loss(family.build(family.widths[0])(x), x, y)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"model {run.model!r} does not fit task {run.task!r} on {run.dataset} inputs "
                              f"{tuple(x.shape[1:])}: {first_line(exc)}") from exc


def train(run: RunConfig, *, progress: bool = True, echo=print) -> dict:
    """Train (or resume) a run; writes checkpoint.pt, log.csv and metrics.json under run.out.

    Seeds torch's global RNG with trainer.seed first: the same config gives the same base model,
    INR and log in every process."""
    task, family, config, widths, data = _prepare(run)
    rank, _ = _dist.init_from_env(resolve_device(config.device))
    ckpt_path = os.path.join(run.out, "checkpoint.pt")
    resume = _ckpt.load(ckpt_path) if os.path.isfile(ckpt_path) else None
    if resume is not None:
        _check_same_run(dict(resume.get("run", {})), run, ckpt_path)
    torch.manual_seed(config.seed)
    base = family.build(family.full_width)
    if resume is not None:
        base.load_state_dict(resume["base"])
    else:
        if run.base_checkpoint is not None:
            try:
                state = _ckpt.load(run.base_checkpoint, expect_checksum=False)
                base.load_state_dict(state)
            except (RuntimeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"base_checkpoint {run.base_checkpoint!r} does not fit {run.model} at width "
                                  f"{run.full_width}: {first_line(exc)}") from exc
        else:
            base = train_model(base, data, task, steps=run.base_steps, seed=config.seed)
        smooth(base, data.x_train[:4], seed=config.seed)
    base_metrics = evaluate(base, data, task)
    if rank == 0:
        echo(f"base model (width {family.full_width}): {_metrics_text(base_metrics)}")
    trainer = Trainer(family, base, data, config, task, progress=progress and rank == 0)
    if resume is not None:
        trainer.load_state_dict(resume)
        echo(f"resumed {ckpt_path} at step {trainer.step_count}")
    extra = {"run": dataclasses.asdict(run), "base": base.state_dict()}
    if rank == 0:
        os.makedirs(run.out, exist_ok=True)
        remove_orphans(run.out)
    log_path = os.path.join(run.out, "log.csv")
    with _CsvLog(log_path if rank == 0 else None, trainer.step_count) as log:
        trainer.fit(log=log, checkpoint=ckpt_path, checkpoint_every=run.checkpoint_every, checkpoint_extra=extra)
    trainer.save(ckpt_path, extra)
    trained = trainer.widths
    metrics = {"step": trainer.step_count, "recon_rel_error": trainer.recon_rel_error(), "base": base_metrics,
               "widths": {str(w): trainer.evaluate(w) for w in widths},
               "outside_trained_range": [w for w in widths if not min(trained) <= w <= max(trained)],
               "provenance": provenance(trainer.device)}
    if rank == 0:
        _write_json(metrics, os.path.join(run.out, "metrics.json"))
        for w in widths:
            flag = "" if min(trained) <= w <= max(trained) else f"  (outside the trained widths {min(trained)}..{max(trained)})"
            echo(f"generated width {w}: {_metrics_text(metrics['widths'][str(w)])}{flag}")
        echo(f"wrote {os.path.join(run.out, 'metrics.json')}")
    return metrics


def _metrics_text(metrics: dict[str, float]) -> str:
    """'accuracy 97.12%, nll 0.0861'."""
    return ", ".join(f"{k} {100 * v:.2f}%" if k == "accuracy" else f"{k} {v:.4g}" for k, v in metrics.items())


def sample(checkpoint: str, width: int, out: str, samples: int | None = None) -> str:
    """Write the width-`width` model a trained run generates (BN recalibrated): its `state_dict` and
    what builds it (`load_sample` reads it back as a module)."""
    if samples is not None and samples < 1:
        raise ConfigError(f"samples must be >= 1 (K-sample averaging), got {samples}")
    check_writable(out, "--out", folder=False)
    state = _ckpt.load(checkpoint)
    if "run" not in state:
        raise ConfigError(f"{checkpoint!r} is not a checkpoint written by `train` (no run configuration)")
    run = RunConfig.from_dict(state["run"], f"the run configuration in {checkpoint!r}")
    task = _task(run.task)
    family = _family(run)
    family.check_width(width)
    config = TrainConfig.from_dict({**state["config"], "device": "cpu"})  # the written state_dict is a CPU one
    data = _data.load(run.dataset, root=run.data_root, train_size=run.train_size, seed=config.seed)
    base = family.build(family.full_width)
    base.load_state_dict(state["base"])
    trainer = Trainer(family, base, data, config, task)
    trainer.load_state_dict(state)
    remove_orphans(os.path.dirname(os.path.abspath(out)))
    model = {key: state["run"][key] for key in _MODEL_KEYS}
    _ckpt.save({"model": model, "width": width, "state_dict": trainer.model(width, samples=samples).state_dict()},
               out)
    return out


# The run keys that fix the architecture: what load_sample needs to build the module.
_MODEL_KEYS = ("dataset", "model", "full_width", "task")


def load_sample(path: str) -> torch.nn.Module:
    """The module `sample` (or `python -m neumeta_fast sample`) wrote to `path`, in eval mode."""
    state = _ckpt.load(path)
    if not {"model", "width", "state_dict"} <= set(state):
        raise ConfigError(f"{path!r} is not a file written by `sample` (expected keys model, width, state_dict)")
    run = RunConfig.from_dict(dict(state["model"]), f"the model description in {path!r}")
    module = _family(run).build(int(state["width"]))
    module.load_state_dict(state["state_dict"])
    return module.eval()


_LOG_FIELDS = ["step", "width", "loss", "task", "recon", "lr"]


class _CsvLog:
    """One CSV row per step, flushed as written (a killed run keeps every logged step); a no-op on
    ranks other than 0. Opening it drops the rows after `start_step`, the step a run resumes from,
    so that the steps it repeats are logged once."""

    def __init__(self, path: str | None, start_step: int):
        self.path, self.start_step, self.fh, self.writer = path, start_step, None, None

    def __enter__(self):
        if self.path is not None:
            self._keep_rows_up_to(self.start_step)
            self.fh = open(self.path, "a", newline="")
            self.writer = csv.DictWriter(self.fh, _LOG_FIELDS)
        return self

    def _keep_rows_up_to(self, step: int) -> None:
        rows = []
        if os.path.isfile(self.path):
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if _step_of(r) is not None and _step_of(r) <= step]
        with atomic_open(self.path, "w") as fh:  # rewritten whole: a kill here leaves the old log
            writer = csv.DictWriter(fh, _LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def __call__(self, row: dict) -> None:
        if self.writer is not None:
            self.writer.writerow(row)
            self.fh.flush()

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()


def _step_of(row: dict) -> int | None:
    """A logged row's step; None for a row a kill cut short (missing fields) or that is not a step."""
    if None in row.values() or None in row:
        return None
    try:
        return int(row["step"])
    except (KeyError, ValueError):
        return None


# Fields a resumed run may change: where it writes, how often, and what it evaluates at the end
# (and trainer.device: checkpoints load on the CPU and resume onto any device).
_RESUMABLE_CHANGES = {"out", "checkpoint_every", "eval_widths"}


def _check_same_run(saved: dict, run: RunConfig, path: str) -> None:
    """Resuming under another model, data or trainer config would silently mix two runs: refuse,
    naming each changed key with its value in the checkpoint and now."""
    current = dataclasses.asdict(run)
    for values in (saved, current):
        values["trainer"] = _trainer_values(values.get("trainer", {}))
    changes = [f"{key}: checkpoint {saved.get(key)!r}, now {current[key]!r}"
               for key in sorted(current) if key not in _RESUMABLE_CHANGES and key != "trainer"
               and saved.get(key) != current[key]]
    changes += [f"trainer.{key}: checkpoint {value!r}, now {current['trainer'][key]!r}"
                for key, value in saved["trainer"].items() if value != current["trainer"][key]]
    if changes:
        raise ConfigError(f"{path!r} was written by another run ({'; '.join(changes)}): use another `out` "
                          "folder or the original config")


def _trainer_values(trainer: dict) -> dict:
    """A run's trainer table with TrainConfig's defaults filled in, less the device (a resume may change it)."""
    values = TrainConfig.from_dict({k: v for k, v in trainer.items() if k != "device"}).to_dict()
    del values["device"]
    return values


def _write_json(obj: dict, path: str) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2)
