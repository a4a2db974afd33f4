"""Coordinate normalisation and Fourier features of docs/spec.md §6-§7, vectorised (torch backend)."""
from __future__ import annotations

import math

import torch

from .arguments import FLOAT32_MAX, FLOAT32_TINY, number


def frequencies(freq_low: int, freq_high: int, device: torch.device) -> torch.Tensor:
    """float32(2^k * pi) for k in [low, high): each product x_j * f_k is then one float32 multiply."""
    return torch.tensor([2.0 ** k * math.pi for k in range(freq_low, freq_high)], dtype=torch.float32, device=device)


def normalise(coords: torch.Tensor, norm: float | torch.Tensor) -> torch.Tensor:
    """x = c / norm, then x[:, :3] /= x[:, 3:] (this order: it differs in the last bit from c[:, :3] / c[:, 3:]).

    `norm` is divided as a tensor on the coordinates' device: CUDA turns division by a Python
    number into multiplication by its reciprocal, which is not the same float for norm = 48.
    Hot loops pass it once as `norm_tensor(...)` instead of a float (one host-to-device copy).
    """
    x = coords / (norm if isinstance(norm, torch.Tensor) else norm_tensor(norm, coords.device))
    x[:, :3] /= x[:, 3:]
    return x


def check_norm(name: str, norm) -> float:
    """A coordinate normaliser: a number that stays finite and non-zero as a float32 divisor."""
    return number(name, norm, low=FLOAT32_TINY, high=FLOAT32_MAX, why="coordinates are divided by it in float32")


def norm_tensor(norm: float, device: torch.device) -> torch.Tensor:
    return torch.tensor(norm, dtype=torch.float32, device=device)


def fourier_features(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[x, sin(f_0 x_0), cos(f_0 x_0), sin(f_0 x_1), ...]: frequency outer, input dim inner, sin then cos.

    Written straight into one buffer (coordinates are constants: no autograd through x).
    """
    n, d = x.shape
    out = torch.empty(n, d * (1 + 2 * freqs.numel()), dtype=x.dtype, device=x.device)
    out[:, :d] = x
    angles = x.unsqueeze(1) * freqs.view(1, -1, 1)  # [n, F, d]
    waves = out[:, d:].view(n, freqs.numel(), d, 2)
    torch.sin(angles, out=waves[..., 0])
    torch.cos(angles, out=waves[..., 1])
    return out
