"""Plain reference implementation of docs/spec.md §2-§10, written literally (loops, masks, `unique`).

Used only as the oracle in tests and the baseline in benchmarks: it mirrors the order of
operations of the authors' code, not its speed.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .inr import INR


def reference_coordinates(shapes: Sequence[tuple[str, Sequence[int]]]) -> torch.Tensor:
    """The coordinate table by a per-element Python loop."""
    num = len(shapes)
    rows = []
    for i, (_, shape) in enumerate(shapes):
        if len(shape) in (2, 4):
            a_size, b_size = shape[0], shape[1]
            for a in range(a_size):
                for b in range(b_size):
                    rows.append([i, a, b, num, a_size, b_size])
        elif len(shape) == 1:
            for a in range(shape[0]):
                rows.append([i, a, 0, num, shape[0], 1])
        else:
            raise ValueError(f"unsupported rank {len(shape)}")
    return torch.tensor(rows, dtype=torch.float32)


def reference_positional_encoding(x: torch.Tensor, freq_low: int, freq_high: int) -> torch.Tensor:
    out = [x]
    for k in range(freq_low, freq_high):
        freq = 2.0 ** k * math.pi
        for j in range(x.shape[1]):
            out.append(torch.sin(freq * x[:, j].unsqueeze(-1)))
            out.append(torch.cos(freq * x[:, j].unsqueeze(-1)))
    return torch.cat(out, dim=-1)


def reference_mlp(mlp, features: torch.Tensor) -> torch.Tensor:
    h = torch.relu(mlp.initial_layer(features))
    for block, scale in zip(mlp.residual_blocks, mlp.scalars):
        h = scale * torch.relu(block(h)) + h
    return mlp.output_layer(h)


def reference_forward(inr: INR, coords: torch.Tensor, norm: float) -> torch.Tensor:
    """INR outputs [N, output_dim] for raw (possibly noisy) coordinates, divided by column 5."""
    layer_id = coords[:, 0].int()
    input_dim = coords[:, 5]
    x = coords / norm
    x[:, :3] = x[:, :3] / x[:, 3:]
    x = reference_positional_encoding(x, inr.freq_low, inr.freq_high)
    out = torch.zeros(x.shape[0], inr.output_dim, device=x.device)
    for lid in torch.unique(layer_id):
        mask = layer_id == lid
        out[mask] = reference_mlp(inr.model[int(lid)], x[mask])
    return out / input_dim.unsqueeze(-1)


def reference_generate(inr: INR, shapes: Sequence[tuple[str, Sequence[int]]], norm: float,
                       noise: Sequence[torch.Tensor] | None = None, noise_mode: str = "reference",
                       batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Weights of every tensor; `noise` is one [N, 6] tensor per sample (weights averaged over samples)."""
    device = next(inr.parameters()).device
    coords = reference_coordinates(shapes).to(device)
    noise = [None] if noise is None else list(noise)
    samples = []
    for eps in noise:
        c = coords.clone()
        if eps is not None:
            if noise_mode == "channels":
                c[:, 1:3] = c[:, 1:3] + eps[:, 1:3]
            else:
                c = c + eps
        step = batch_size or c.shape[0]
        out = torch.cat([reference_forward(inr, c[s:s + step], norm) for s in range(0, c.shape[0], step)])
        samples.append(_reference_scatter(out, coords, shapes, inr.output_dim))
    return {name: sum(s[name] for s in samples) / len(samples) for name, _ in shapes}


def _reference_scatter(out, coords, shapes, output_dim):
    weights = {}
    for i, (name, shape) in enumerate(shapes):
        rows = out[coords[:, 0] == i]
        if len(shape) == 4:
            k = shape[2] * shape[3]
            start = output_dim // 2 - k // 2 if k < output_dim else 0
            weights[name] = rows[:, start:start + k].reshape(shape)
        else:
            weights[name] = rows[:, 0].reshape(shape)
    return weights
