"""The training objective of docs/spec.md §12: task loss + L2 penalty + reconstruction, and the tasks' metrics.

Reconstruction terms (per tensor, averaged over tensors):
- "reference":  mean((W - W_gt)^2 * w) with w = (|W_gt| + 1e-6) / max(|W_gt| + 1e-6), the authors'
  weighting. Small conv weights get almost no weight next to BatchNorm scales near 1.
- "normalised": mean((W - W_gt)^2) / var(W_gt), so every tensor counts the same whatever its scale.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch.nn import functional as F

RECON_MODES = ("normalised", "reference")


def reconstruction(generated: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], mode: str) -> torch.Tensor:
    if mode not in RECON_MODES:
        raise ValueError(f"unknown recon mode {mode!r}; expected one of {RECON_MODES}")
    terms = []
    for name, w in generated.items():
        gt = target[name]
        err = (w - gt).pow(2)
        if mode == "reference":
            mag = gt.abs() + 1e-6
            terms.append((err * mag / mag.max()).mean())
        else:
            # var of a 1-element or constant tensor is 0: fall back to its squared scale (or 1).
            scale = gt.var(unbiased=False) if gt.numel() > 1 else gt.pow(2).mean()
            terms.append(err.mean() / scale.clamp_min(1e-8))
    return torch.stack(terms).mean()


def weight_norm_penalty(generated: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sum_t ||W_t||_2 (Frobenius norm per tensor)."""
    return torch.stack([w.norm() for w in generated.values()]).sum()


def relative_error(generated: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> float:
    """||W - W_gt|| / ||W_gt|| over all tensors together."""
    num = sum(float((generated[n] - target[n]).pow(2).sum()) for n in generated)
    den = sum(float(target[n].pow(2).sum()) for n in generated)
    return (num / den) ** 0.5 if den > 0 else float("inf")


class Classification:
    """Cross-entropy; metrics accuracy and mean negative log-likelihood."""

    name = "classify"
    primary = "accuracy"
    higher_is_better = True

    @staticmethod
    def loss(output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, y)

    @staticmethod
    def metrics(output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((output.argmax(1) == y).float().mean()),
                "nll": float(F.cross_entropy(output, y))}


class VAE:
    """Negative ELBO per example (Bernoulli-like squared error summed over pixels + KL); metric: pixel MSE."""

    name = "vae"
    primary = "mse"
    higher_is_better = False

    @staticmethod
    def loss(output, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = output
        rec = (recon - x).pow(2).flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return (rec + kl).mean()

    @staticmethod
    def metrics(output, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        recon, mu, logvar = output
        return {"mse": float((recon - x).pow(2).mean()),
                "nll": float(VAE.loss(output, x, y))}


TASKS = {"classify": Classification, "vae": VAE}


def task(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]
