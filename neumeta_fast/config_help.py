"""`train --help`'s list of config keys: names, types and defaults read from the dataclasses
(RunConfig, TrainConfig), each with its meaning from the tables below, so the help follows the
code (a test holds every field to a meaning here)."""
from __future__ import annotations

import dataclasses
import json
import textwrap

RUN_KEYS = {
    "dataset": "digits (bundled with scikit-learn), cifar10, cifar100 (local python-format files) or synthetic",
    "data_root": "folder holding cifar-10-batches-py/ or cifar-100-python/ (CIFAR only; nothing is downloaded)",
    "train_size": "keep only this many training examples (null: all)",
    "model": "model family: convnet, mlp, lenet, vae, resnet8/20/32/56 (the last stage's hidden width is "
             "morphed, as in the paper) or resnet8_all/20_all/... (every stage's)",
    "full_width": "the base model's width: the largest width the INR generates (channels)",
    "task": "classify or vae",
    "base_steps": "training steps of the full-width base model (when base_checkpoint is not given)",
    "base_checkpoint": "a state_dict of the full-width model to start from instead of training one",
    "eval_widths": "widths evaluated at the end ([]: 100/75/50/25% of full_width)",
    "checkpoint_every": "write out/checkpoint.pt every this many steps (0: only at the end)",
    "out": "output folder: checkpoint.pt, log.csv, metrics.json (a run resumes from its checkpoint)",
    "trainer": "a table of the trainer keys below",
}

TRAINER_KEYS = {
    "steps": "INR training steps",
    "batch_size": "examples per step",
    "widths": "the widths the INR trains on (null: every width from min_fraction * full_width to full_width)",
    "min_fraction": "the smallest trained width as a fraction of full_width (when widths is null)",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "gradient value clip",
    "ema_decay": "decay of the INR's exponential moving average (evaluation uses the average)",
    "schedule": "learning-rate schedule after warmup: cosine or constant",
    "warmup_steps": "linear learning-rate warmup steps",
    "ce_weight": "weight of the task loss",
    "reg_weight": "weight of the L2 norm of the generated weights",
    "recon_weight": "weight of the reconstruction loss against the base weights (full width only)",
    "recon": "reconstruction loss: normalised (per tensor) or reference (the paper's |W| weighting)",
    "prefit_steps": "reconstruction-only steps at the full width before training",
    "prefit_lr": "learning rate of the pre-fit",
    "noise": "coordinate noise in channel units (the paper: 1.0)",
    "noise_mode": "channels (noise on channel positions) or reference (the authors' noise on all columns)",
    "ratio": "fraction of the generated tensors that get gradients per step",
    "norm": "coordinate normalisation of the INR's inputs (the paper: 64)",
    "hidden_dim": "INR hidden width (the paper: 512)",
    "num_layers": "INR layers (the paper: 8)",
    "num_freqs": "Fourier frequencies of the coordinate encoding (the paper: 32)",
    "mean_init": "start each tensor's output bias at its target tensor's mean",
    "eval_samples": "K-sample averaging at evaluation (with the training noise)",
    "bn_batches": "training batches for BatchNorm recalibration of each generated width",
    "seed": "seed of everything random (the same config gives bit-identical results)",
    "backend": "weight generation backend: auto, torch, triton or cuda",
    "device": "cpu, cuda, cuda:N or auto (cuda when available)",
}


def describe(cls, meanings: dict[str, str], indent: str = "  ") -> str:
    """One entry per field of dataclass `cls`: name, default and meaning, wrapped for a terminal."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        head = f"{indent}{f.name} (default {json.dumps(default)}): "
        lines.append(textwrap.fill(meanings[f.name], width=100, initial_indent=head,
                                   subsequent_indent=indent + "    "))
    return "\n".join(lines)

