"""The reference's reconstruction loss (docs/spec.md §12)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..arguments import number


def weighted_regression_loss(reconstructed_weights: Sequence[torch.Tensor], gt_selected_weights: Sequence[torch.Tensor],
                             epsilon: float = 1e-6) -> torch.Tensor:
    """Mean over tensors of mean((W - W_gt)^2 * (|W_gt| + eps) / max(|W_gt| + eps)).

    Pairs are checked (the reference's `zip` silently drops unmatched tensors).
    """
    epsilon = number("epsilon", epsilon, low=0)
    if len(reconstructed_weights) != len(gt_selected_weights) or not reconstructed_weights:
        raise ValueError(f"expected equally many (>= 1) reconstructed and ground-truth tensors, got "
                         f"{len(reconstructed_weights)} and {len(gt_selected_weights)}")
    losses = []
    for i, (w, w_gt) in enumerate(zip(reconstructed_weights, gt_selected_weights)):
        if w.shape != w_gt.shape:
            raise ValueError(f"tensor {i}: reconstructed shape {tuple(w.shape)} != ground truth {tuple(w_gt.shape)}")
        weight = torch.abs(w_gt) + epsilon
        weight = weight / weight.max()  # normalise first, then multiply: the reference's rounding
        losses.append(((w - w_gt) ** 2 * weight).mean())
    return torch.stack(losses).mean()
