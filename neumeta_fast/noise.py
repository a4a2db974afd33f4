"""Coordinate noise (docs/spec.md §3): the reference's mode and the channel-only mode.

- "reference": `(U[0,1) - 0.5) * s` on all six columns, so the noisy column 0 picks
  the MLP (truncation toward zero) and the noisy column 5 is the divisor. Bit-compatible
  with the authors' code; with s = 1 many coordinates are evaluated by the previous
  tensor's MLP.
- "channels": the same draw, but only the channel positions (columns 1 and 2) move;
  layer index and sizes stay exact.

With `samples > 1`, sample 0 is noise-free and samples 1..K-1 are noisy (as the reference).
Explicit reference-mode noise follows the routing rule of docs/spec.md §5 (`routing_error`).
"""
from __future__ import annotations

import torch

from .arguments import FLOAT32_MAX, number

NOISE_MODES = ("reference", "channels")
# K-sample averaging costs K full generations: past this it is a mistake, not an average (the reference uses 50).
MAX_SAMPLES = 10_000
_CHANNEL_COLUMNS = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def check_noise(scale: float, mode: str, samples: int, num_rows: int | None = None) -> tuple[float, int]:
    """The noise scale and sample count checked (for `num_rows` coordinates, when known); returns them as
    Python numbers."""
    if mode not in NOISE_MODES:
        raise ValueError(f"unknown noise_mode {mode!r}; expected one of {NOISE_MODES}")
    rows = "" if num_rows is None else f" ({num_rows} coordinates through the INR)"
    samples = number("samples", samples, integer=True, low=1, high=MAX_SAMPLES,
                     why=f"each sample is one full generation{rows}")
    scale = number("noise", scale, low=0, high=FLOAT32_MAX)
    if mode == "reference" and scale > 1:
        raise ValueError(
            f"noise={scale} > 1 in noise_mode='reference' can move the layer index outside [0, L) "
            "(the reference then silently uses the last MLP or fails); use noise <= 1 or noise_mode='channels'"
        )
    return scale, samples


def mode_mask(mode: str, device: torch.device) -> torch.Tensor | None:
    """Which columns noise may move: None = all of them."""
    return None if mode == "reference" else _CHANNEL_COLUMNS.to(device)


def restricted(noise: torch.Tensor, mode: str) -> torch.Tensor:
    """Noise as a mode applies it: channels mode moves columns 1 and 2 only."""
    mask = mode_mask(mode, noise.device)
    return noise if mask is None else noise * mask


def noisy_samples(samples: int, scale: float) -> list[bool]:
    """Whether each of the K samples gets noise (sample 0 stays clean when averaging)."""
    if scale == 0:
        return [False] * samples
    return [samples == 1 or k > 0 for k in range(samples)]


def draw(num_rows: int, scale: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """One sample's raw noise, `(U[0,1) - 0.5) * scale`, float32 [num_rows, 6]."""
    u = torch.rand(num_rows, 6, generator=generator, device=device, dtype=torch.float32)
    return (u - 0.5) * scale


def routing_error(own: torch.Tensor, noise_col0: torch.Tensor) -> str | None:
    """Why explicit reference-mode noise breaks the routing rule (docs/spec.md §5), or None if it keeps it.

    own: column 0 of the exact coordinates [rows]; noise_col0: the noise on it [samples, rows]. A row may
    move to its own tensor's MLP or the previous one's, int(i + noise) in {i - 1, i} and >= 0: what drawn
    noise (|noise| <= 1/2) does, and what every backend evaluates.
    """
    index = own.to(torch.int64)
    routed = (own + noise_col0).to(torch.int64)  # float32 sum, truncated toward zero: as the backends route
    bad = (routed != index) & ((routed != index - 1) | (routed < 0))
    if not bool(bad.any()):
        return None
    k, r = (int(v) for v in bad.nonzero()[0])
    return (f"noise_tensor[{k}, {r}, 0] = {noise_col0[k, r].item():g} moves coordinate row {r} of tensor "
            f"{int(index[r])} to layer index {int(routed[k, r])}: in noise_mode='reference' explicit noise may move "
            "a row to its own or the previous tensor's MLP only (int(i + noise) in {i - 1, i}, as drawn noise "
            "does); use noise_mode='channels' for larger noise")
