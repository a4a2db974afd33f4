"""Backward of the fused INR forward, shared by the triton and cuda backends.

The fused kernels keep no activations. The backward recomputes the forward on the same (materialised)
noise with the torch backend's training op (`neumeta_fast::inr_train`: rows grouped by MLP, every
MLP in one call, the ResMLP backward hand-fused) and applies its backward, the first layer's and the
scatter's by hand. No autograd inside: it is a plain function of tensors, which the triton backend
wraps as a custom op (torch.compile sees one opaque node).
Gradients are those of the float32 function, whatever precision the forward used.
"""
from __future__ import annotations

from typing import Sequence

import torch

from neumeta_fast.backends import torch_train
from neumeta_fast.encoding import fourier_features, norm_tensor, normalise
from neumeta_fast.layout import SegmentRow


def inr_backward(grad_flat: torch.Tensor, weights: tuple[torch.Tensor, ...], segs: Sequence[SegmentRow],
                 coords: torch.Tensor, freqs: torch.Tensor, noise: torch.Tensor | None, *, norm: float,
                 samples: int, noise_mode: str) -> list[torch.Tensor]:
    """Gradients w.r.t. the stacked weights (w0, b0, wr, br, sc, wo, bo) of the fused forward.

    segs:  the segment table (Layout.segment_table(...).rows). noise: the realised, mode-restricted noise
    [samples, rows, 6] the forward added (None: none). MLPs no row reached get zero gradients.
    """
    w0, b0, wr, br, sc, wo, bo = (w.detach().float() for w in weights)
    num_rows, out_dim = coords.shape[0], wo.shape[1]
    plan = torch_train.table_plan(segs, num_rows, out_dim, coords.device)
    norm_t = norm_tensor(norm, coords.device)
    grads = [torch.zeros_like(w) for w in (w0, b0, wr, br, sc, wo, bo)]
    g = grad_flat.float() / samples if samples > 1 else grad_flat.float()
    for k in range(samples):
        c = coords if noise is None else coords + noise[k]
        routed = noise is not None and noise_mode == "reference"
        order, offsets, mlps, src = torch_train.groups(plan, c, routed, w0.shape[0])
        pe = fourier_features(normalise(c if order is None else c[order], norm_t), freqs)
        z0 = torch.cat([torch.addmm(b0[m], pe[offsets[i]:offsets[i + 1]], w0[m].T) for i, m in enumerate(mlps)])
        _, h, t = torch_train.inr_train(z0, offsets, mlps, wr, br, sc, wo, bo)
        # the forward's out.view(-1)[src] / c5[elem_row], transposed
        gout = torch.zeros(num_rows * out_dim, device=g.device).index_add_(0, src, g / c[:, 5][plan.elem_row])
        dz0, *tail = torch_train.inr_train_backward(gout.view(num_rows, out_dim), h, t, offsets, mlps, wr, sc, wo)
        for acc, d in zip(grads[2:], tail):
            acc += d
        for i, m in enumerate(mlps):
            rows = slice(offsets[i], offsets[i + 1])
            grads[0][m].addmm_(dz0[rows].T, pe[rows])
            grads[1][m] += dz0[rows].sum(0)
    return grads
