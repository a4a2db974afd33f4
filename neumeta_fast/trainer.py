"""NeuMeta training: an INR learns to generate a model family's weights at any width (docs/spec.md §12).

Per step: draw a width from the training set, generate that width's morphed tensors with the
INR (jittered coordinates), plug them into one cached module of that width with
`torch.func.functional_call` (no model copies), and minimise
`ce_weight * task + reg_weight * sum ||W_t||_2 + recon_weight * recon` (recon at the full
width only, against the smoothed base weights). AdamW, cosine schedule, gradient value clip,
EMA of the INR for evaluation. Everything random (width, tensor subset, noise, batches, the
global RNG a model may use) is in the checkpoint, so a resumed run continues bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from . import checkpoint as _ckpt
from . import distributed as _dist
from .backends import BACKENDS, resolve
from .baselines import evaluate, recalibrate_bn
from .data import BatchStream, Dataset
from .fields import check_types
from .generate import generate
from .inr import INR
from .layout import Layout
from .models.family import Family
from .noise import NOISE_MODES, check_noise
from .objective import RECON_MODES, Classification, reconstruction, relative_error, weight_norm_penalty


class ConfigError(ValueError):
    """A training configuration with unknown keys or values out of range."""


# Fourier exponents k < num_freqs: float32 angles 2^k * pi * x carry nothing past k ~ 24 and reach inf at k = 127.
_MAX_FREQS = 32


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    widths: list[int] | None = None  # training widths; None: every width in [min_fraction, 1] * full
    min_fraction: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 10.0  # gradient value clip
    ema_decay: float = 0.995
    schedule: str = "cosine"  # or "constant"
    warmup_steps: int = 50  # linear LR warmup: a fresh Adam's first steps are sign steps on every parameter
    ce_weight: float = 1.0
    reg_weight: float = 1e-4
    recon_weight: float = 10.0  # the paper's configs use 1, 10 or 100; recon only acts at the full width
    # "normalised" or "reference" (the |W_gt|/max weighting of docs/spec.md §12); chosen by measurement,
    # docs/notes/2026-11-28-demo-setting.md
    recon: str = "normalised"
    prefit_steps: int = 600  # recon-only steps at the full width before task training
    prefit_lr: float = 3e-3
    # Coordinate noise in channel units. Measured on the demo (docs/notes/2026-11-28-demo-setting.md): any
    # jitter blurs neighbouring channels, which are far from smooth here, and costs accuracy at every width.
    noise: float = 0.0
    noise_mode: str = "channels"  # keeps the layer index exact; "reference" is the authors' all-column jitter
    ratio: float = 1.0  # fraction of morphed tensors that get gradients per step
    norm: float = 64.0
    hidden_dim: int = 128
    num_layers: int = 3
    # Fourier frequencies 2^k pi, k < num_freqs. Integer channel positions a/A alias above k = log2(A),
    # so higher ones are constant on exact coordinates and pure noise on jittered ones.
    num_freqs: int = 6
    mean_init: bool = True  # start each MLP's output bias at its target tensor's mean (BN scales at ~1, not ~0)
    eval_samples: int = 1  # K-sample averaging at evaluation
    bn_batches: int = 8  # batches for BatchNorm recalibration per generated width
    seed: int = 0
    backend: str = "auto"
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available); random choices stay on the CPU

    def __post_init__(self):
        check_types(self, ConfigError)
        checks = [
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.widths is None or len(self.widths) > 0, "widths must be None (a range) or a non-empty list"),
            (0 < self.min_fraction <= 1, f"min_fraction must be in (0, 1], got {self.min_fraction}"),
            (self.lr > 0 and self.prefit_lr > 0, f"lr and prefit_lr must be > 0, got {self.lr}, {self.prefit_lr}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.schedule in ("cosine", "constant"), f"schedule must be 'cosine' or 'constant', got {self.schedule!r}"),
            (self.recon in RECON_MODES, f"recon must be one of {RECON_MODES}, got {self.recon!r}"),
            (self.noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}"),
            (0 < self.ratio <= 1, f"ratio must be in (0, 1], got {self.ratio}"),
            (self.eval_samples >= 1, f"eval_samples must be >= 1, got {self.eval_samples}"),
            (self.prefit_steps >= 0, f"prefit_steps must be >= 0, got {self.prefit_steps}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (min(self.ce_weight, self.reg_weight, self.recon_weight) >= 0,
             f"ce_weight, reg_weight and recon_weight must be >= 0, got {self.ce_weight}, {self.reg_weight}, "
             f"{self.recon_weight}"),
            (self.norm > 0, f"norm must be > 0, got {self.norm}"),
            (self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}"),
            (self.num_layers >= 1, f"num_layers must be >= 1 (1 = no residual block), got {self.num_layers}"),
            (0 <= self.num_freqs <= _MAX_FREQS, f"num_freqs must be in [0, {_MAX_FREQS}], got {self.num_freqs}"),
            (self.bn_batches >= 1, f"bn_batches must be >= 1, got {self.bn_batches}"),
            (0 <= self.seed < 2 ** 63, f"seed must be in [0, 2**63), got {self.seed}"),  # generators take < 2**64
            (self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:  # the limits generate() applies, checked before training rather than at the first noisy step
            check_noise(self.noise, self.noise_mode, self.eval_samples)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        device = resolve_device(self.device)
        if self.backend != "auto":  # a named backend must run here (training needs its backward)
            try:
                resolve(self.backend, device, needs_grad=True)
            except RuntimeError as exc:
                raise ConfigError(str(exc)) from exc

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_widths(self, family: Family) -> list[int]:
        if self.widths is not None:
            return [family.check_width(w) for w in self.widths]
        low = math.ceil(self.min_fraction * family.full_width)
        return [w for w in family.widths if w >= low]


def resolve_device(name: str) -> torch.device:
    """The torch device `name` asks for; ConfigError for other names or when CUDA is asked for but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or re.fullmatch(r"cpu|cuda(:\d+)?", name) is None:
        raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here "
                              "(torch.cuda.is_available() is False); use device 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


class Trainer:
    """Trains an INR for `family` against the (smoothed) full-width `base` model on `data`."""

    def __init__(self, family: Family, base: nn.Module, data: Dataset, config: TrainConfig | None = None,
                 task=Classification, *, progress: bool = False):
        self.family, self.data, self.task = family, data, task
        self.config = config = config or TrainConfig()
        self.widths = config.training_widths(family)
        self.progress = progress
        self.rank, self.world = _dist.rank_and_world()
        self.device = device = resolve_device(config.device)
        base_state = base.state_dict()
        unknown = [n for n in family.morph if n not in base_state]
        if unknown:
            raise ConfigError(f"family.morph names {unknown} that the base model does not have")
        self.target = {n: base_state[n].detach().to(device, copy=True) for n in family.morph}
        self.base_state = {n: t.detach().to(device, copy=True) for n, t in base_state.items()}
        # 9 outputs serve kernels up to 3x3 (smaller ones take the centre); larger kernels need more.
        # Read before seeding: building the layout's module the first time draws from the global RNG.
        kernel = max(s.kernel_numel for s in family.layout(family.full_width).segments)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.inr = INR(len(family.morph), hidden_dim=config.hidden_dim, num_layers=config.num_layers,
                           num_freqs=config.num_freqs, output_dim=max(9, kernel))
            if config.mean_init:
                self._init_output_bias()
        self.inr.to(device)  # initialised on the CPU: the same start on every device
        self.ema = copy.deepcopy(self.inr).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.inr.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           foreach=True)  # one kernel per op over all MLPs (CPU defaults to a loop)
        self.scheduler = _schedule(self.optimizer, config.steps, config.warmup_steps, config.schedule)
        self.rng = torch.Generator().manual_seed(config.seed)  # widths, tensor subsets, coordinate noise
        # Every rank draws the same global batch and keeps its share of it.
        self.stream = BatchStream(len(data.y_train), config.batch_size * self.world, config.seed + 1)
        self.step_count = 0
        self.prefit_done = config.prefit_steps == 0
        self._modules: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
        _dist.broadcast_parameters(self.inr)
        self.ema.load_state_dict(self.inr.state_dict())

    def _init_output_bias(self) -> None:
        """Generated weight = output / B, so an output bias of mean(W_gt) * B starts every tensor at its mean."""
        with torch.no_grad():
            for seg in self.family.layout(self.family.full_width).segments:
                self.inr.model[seg.index].output_layer.bias.fill_(float(self.target[seg.name].mean()) * seg.cols)

    # -- one width's module -------------------------------------------------
    def _module(self, width: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """The cached module of `width` and its non-generated tensors (base parameters + own buffers)."""
        if width not in self._modules:
            module = self.family.build(width).to(self.device).train()
            fixed = {}
            for name, p in module.named_parameters():
                if name in self.target:
                    continue
                if self.base_state[name].shape != p.shape:
                    raise ValueError(f"parameter {name!r} changes shape with the width but is not morphed; "
                                     "add it to the family's morph list")
                fixed[name] = self.base_state[name]
            fixed.update(dict(module.named_buffers()))
            self._modules[width] = (module, fixed)
        return self._modules[width]

    def _generate(self, inr: INR, layout: Layout, noise: float, samples: int = 1,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The trainer's generate(): its norm, noise mode and backend; the training stream unless told otherwise."""
        c = self.config
        return generate(inr, layout, norm=c.norm, noise=noise, samples=samples, noise_mode=c.noise_mode,
                        generator=self.rng if generator is None else generator, backend=c.backend)

    # -- training -----------------------------------------------------------
    def prefit(self, steps: int) -> float:
        """Fit the INR to the base weights alone (noise-free, full width); returns the last recon loss."""
        layout = self.family.layout(self.family.full_width)
        opt = torch.optim.AdamW(self.inr.parameters(), lr=self.config.prefit_lr, weight_decay=0.0, foreach=True)
        sched = _schedule(opt, steps, self.config.warmup_steps, "cosine")
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            loss = reconstruction(self._generate(self.inr, layout, 0.0), self.target, "normalised")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _dist.average_gradients(self.inr, self.world)
            opt.step()
            sched.step()
        self.ema.load_state_dict(self.inr.state_dict())
        self.prefit_done = True
        return float(loss.detach())

    def step(self) -> dict[str, float]:
        c = self.config
        width = self.widths[int(torch.randint(len(self.widths), (1,), generator=self.rng))]
        layout = self.family.layout(width)
        module, fixed = self._module(width)
        trained, frozen = self._split(layout)
        weights = self._generate(self.inr, trained, c.noise)
        tensors = {**fixed, **weights}
        if frozen is not None:
            with torch.no_grad():
                tensors.update(self._generate(self.inr, frozen, 0.0))
        idx = self.stream.next()[self.rank::self.world]
        x, y = self.data.x_train[idx].to(self.device), self.data.y_train[idx].to(self.device)
        task_loss = self.task.loss(functional_call(module, tensors, (x,)), x, y)
        loss = c.ce_weight * task_loss + c.reg_weight * weight_norm_penalty(weights)
        recon = torch.zeros((), device=self.device)
        if width == self.family.full_width and c.recon_weight > 0:
            recon = reconstruction(weights, self.target, c.recon)
            loss = loss + c.recon_weight * recon
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _dist.average_gradients(self.inr, self.world)
        torch.nn.utils.clip_grad_value_(self.inr.parameters(), c.grad_clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            ema, live = list(self.ema.parameters()), list(self.inr.parameters())
            torch._foreach_lerp_(ema, live, 1.0 - c.ema_decay)
        self.step_count += 1
        return {"step": self.step_count, "width": width, "loss": float(loss.detach()), "task": float(task_loss.detach()),
                "recon": float(recon.detach()), "lr": self.scheduler.get_last_lr()[0]}

    def _split(self, layout: Layout) -> tuple[Layout, Layout | None]:
        """The tensor subset of docs/spec.md §12: `ratio` of the tensors get gradients, the rest are generated without."""
        if self.config.ratio >= 1:
            return layout, None
        k = max(1, round(self.config.ratio * len(layout)))
        pick = torch.randperm(len(layout), generator=self.rng)[:k].tolist()
        names = [layout.names[i] for i in sorted(pick)]
        rest = [n for n in layout.names if n not in names]
        return layout.subset(names), (layout.subset(rest) if rest else None)

    def fit(self, steps: int | None = None, *, log=None, checkpoint: str | None = None,
            checkpoint_every: int = 0, checkpoint_extra: dict | None = None) -> list[dict]:
        """Run `steps` steps (default: up to config.steps); `log(row)` sees each step's numbers."""
        if not self.prefit_done:
            self.prefit(self.config.prefit_steps)
        steps = self.config.steps - self.step_count if steps is None else steps
        rows = []
        bar = _progress(steps, self.progress and self.rank == 0)
        for _ in range(steps):
            row = self.step()
            rows.append(row)
            if log is not None:
                log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", width=row["width"])
            if checkpoint and checkpoint_every and self.step_count % checkpoint_every == 0:
                self.save(checkpoint, checkpoint_extra)
        if bar is not None:
            bar.close()
        return rows

    # -- evaluation ---------------------------------------------------------
    def weights(self, width: int, *, samples: int | None = None, ema: bool = True) -> dict[str, torch.Tensor]:
        """Generated morphed tensors at `width` (EMA INR, K-sample averaging with the training noise)."""
        samples = self.config.eval_samples if samples is None else samples
        inr = self.ema if ema else self.inr
        with torch.no_grad():
            gen = torch.Generator().manual_seed(self.config.seed + 12345)  # evaluation noise: fixed, not the training stream
            noise = self.config.noise if samples > 1 else 0.0
            return {n: w.clone() for n, w in self._generate(inr, self.family.layout(width), noise, samples,
                                                             generator=gen).items()}

    def model(self, width: int, *, samples: int | None = None, ema: bool = True) -> nn.Module:
        """A standalone module of `width` on the trainer's device, generated weights, recalibrated BatchNorm."""
        module = self.family.build(width).to(self.device)
        _, fixed = self._module(width)
        state = module.state_dict()
        state.update({n: t for n, t in fixed.items() if n in self.base_state and n not in dict(module.named_buffers())})
        state.update(self.weights(width, samples=samples, ema=ema))
        module.load_state_dict(state)
        return recalibrate_bn(module, self.data.x_train, self.config.bn_batches, seed=self.config.seed)

    def evaluate(self, width: int, **kwargs) -> dict[str, float]:
        return evaluate(self.model(width, **kwargs), self.data, self.task)

    def recon_rel_error(self) -> float:
        """||W_gen - W_base|| / ||W_base|| of the noise-free full-width weights (EMA INR)."""
        return relative_error(self.weights(self.family.full_width, samples=1), self.target)

    # -- checkpoints --------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "step": self.step_count,
            "prefit_done": self.prefit_done,
            "inr": self.inr.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "stream": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = dict(state["config"])
        mine = self.config.to_dict()
        differs = sorted(k for k in mine if k not in _RESUMABLE_CHANGES and saved.get(k) != mine[k])
        if differs:
            raise ConfigError(f"checkpoint was trained with a different config: {differs} differ "
                              f"(e.g. {differs[0]}: checkpoint {saved.get(differs[0])!r}, now {mine[differs[0]]!r})")
        self.inr.load_state_dict(state["inr"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.stream.load_state_dict(state["stream"])
        self.step_count = int(state["step"])
        self.prefit_done = bool(state["prefit_done"])

    def save(self, path: str, extra: dict | None = None) -> None:
        """Atomic checkpoint (rank 0 writes under DDP); `extra` entries are stored beside the trainer's."""
        if self.rank == 0:
            _ckpt.save({**(extra or {}), **self.state_dict()}, path)

    def resume(self, path: str) -> None:
        self.load_state_dict(_ckpt.load(path))


# Config keys a resumed run may change: a longer schedule, another device (checkpoints load onto the CPU).
_RESUMABLE_CHANGES = {"steps", "device"}


def _schedule(optimizer, steps: int, warmup: int, kind: str):
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `steps` (or constant)."""
    total = max(1, steps)

    def factor(s: int) -> float:
        ramp = min(1.0, (s + 1) / warmup) if warmup else 1.0
        return ramp * (0.5 * (1 + math.cos(math.pi * min(s, total) / total)) if kind == "cosine" else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=total, leave=False, dynamic_ncols=True)
