"""Baselines in the trainer's harness: individually trained models, L1-magnitude pruning,
the no-smoothing ablation (random channel order); plus BN recalibration and evaluation."""
from __future__ import annotations

import math

import torch
from torch import nn

from .channel_groups import ChannelGroup, channel_groups, permute_channels
from .data import BatchStream, Dataset
from .models.family import Family


def evaluate(model: nn.Module, data: Dataset, task, batch_size: int = 512) -> dict[str, float]:
    """Task metrics on the test split (eval mode, on the model's device), averaged over examples."""
    model.eval()
    device = _device(model)
    totals: dict[str, float] = {}
    n = len(data.y_test)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            x, y = data.x_test[s:s + batch_size].to(device), data.y_test[s:s + batch_size].to(device)
            for k, v in task.metrics(model(x), x, y).items():
                totals[k] = totals.get(k, 0.0) + v * len(y)
    return {k: v / n for k, v in totals.items()}


def recalibrate_bn(model: nn.Module, x: torch.Tensor, batches: int = 8, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on `batches` training batches (cumulative mean),
    on the model's device."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # equal weight for every batch
    stream = BatchStream(len(x), batch_size, seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(x[stream.next()].to(_device(model)))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_model(model: nn.Module, data: Dataset, task, *, steps: int, batch_size: int = 64, lr: float = 3e-3,
                seed: int = 0) -> nn.Module:
    """Plain supervised training (AdamW, cosine schedule): the base model and the individual baselines."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    stream = BatchStream(len(data.y_train), batch_size, seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            idx = stream.next()
            x, y = data.x_train[idx], data.y_train[idx]
            loss = task.loss(model(x), x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def shuffle_channels(model: nn.Module, example_input: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random order in every channel group (same function): the no-smoothing ablation's starting point."""
    g = torch.Generator().manual_seed(seed)
    for group in channel_groups(model, example_input):
        permute_channels(model, group, torch.randperm(group.channels, generator=g))
    return model


def prune_l1(base: nn.Module, family: Family, width: int, example_input: torch.Tensor) -> nn.Module:
    """The width-`width` model made of the base model's channels with the largest L1 filter norms.

    Per channel group that the width changes, a channel's score is the L1 norm of its output
    filters (axis-0 slices of >= 2-D parameters; every parameter slice if there is none), the top
    channels are kept in their original order, and every tensor indexed by the group (weights,
    biases, BN parameters and statistics, consumers' input channels) is cut to them. No retraining.
    """
    small = family.build(width)
    small_state = small.state_dict()
    base_state = base.state_dict()
    masks: dict[tuple[str, int], torch.Tensor] = {}
    for group in channel_groups(base, example_input):
        keep = _kept_channels(group, base_state, small_state)
        if keep is None:
            continue
        for piece in group.slices:
            key = (piece.name, piece.axis)
            if key not in masks:
                masks[key] = torch.ones(base_state[piece.name].shape[piece.axis], dtype=torch.bool)
            dropped = torch.ones(group.channels, dtype=torch.bool)
            dropped[keep] = False
            block = dropped.repeat_interleave(piece.block)
            masks[key][piece.offset:piece.offset + piece.length] &= ~block
    pruned = {}
    for name, tensor in base_state.items():
        t = tensor
        for (n, axis), mask in masks.items():
            if n == name:
                t = t.index_select(axis, mask.nonzero().squeeze(1))
        if t.shape != small_state[name].shape:
            raise ValueError(f"pruning {name}: got shape {tuple(t.shape)}, the width-{width} model has "
                             f"{tuple(small_state[name].shape)} (a width axis not covered by a channel group)")
        pruned[name] = t
    small.load_state_dict(pruned)
    return small.eval()


def _kept_channels(group: ChannelGroup, base_state, small_state) -> torch.Tensor | None:
    """Indices of the channels to keep, or None when the group's size does not change with the width."""
    piece = group.slices[0]
    full_dim = base_state[piece.name].shape[piece.axis]
    small_dim = small_state[piece.name].shape[piece.axis]
    if full_dim == small_dim:
        return None
    kept = (small_dim - (full_dim - piece.length)) // piece.block
    params = [p for p in group.slices if base_state[p.name].is_floating_point() and not _is_statistic(p.name)]
    producers = [p for p in params if p.axis == 0 and base_state[p.name].dim() >= 2] or params
    score = torch.zeros(group.channels)
    for p in producers:
        window = base_state[p.name].narrow(p.axis, p.offset, p.length).movedim(p.axis, 0)
        score += window.reshape(group.channels, -1).abs().sum(1)
    return score.topk(kept).indices.sort().values


def _is_statistic(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))
