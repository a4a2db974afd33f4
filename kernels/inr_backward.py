"""Backward of the fused INR forward: recomputation with torch GEMMs, gradients by hand.

The forward keeps no activations. Here the rows are grouped by the MLP that evaluated them
(`group_by_mlp`, as the torch backend does for reference-mode noise), each group's forward is
recomputed in bounded chunks, and the ResMLP is differentiated explicitly, so that this is a
plain function of tensors (wrapped as a custom op: torch.compile sees one opaque node).
Gradients are those of the float32 function, whatever precision the forward used.
"""
from __future__ import annotations

import torch

from neumeta_fast.encoding import fourier_features, norm_tensor, normalise
from neumeta_fast.inr import group_by_mlp


def _row_grads(grad_flat: torch.Tensor, segs: list[list[int]], num_rows: int, out_dim: int) -> torch.Tensor:
    """Inverse of the forward's scatter: d loss / d output, [num_rows, out_dim] (zero where unused)."""
    g = grad_flat.new_zeros(num_rows, out_dim)
    for _, rows, _, _, kernel, row_offset, param_offset, col_start in segs:
        g[row_offset:row_offset + rows, col_start:col_start + kernel] = \
            grad_flat[param_offset:param_offset + rows * kernel].view(rows, kernel)
    return g


def _chunk_rows(hidden: int, blocks: int, device: torch.device) -> int:
    budget = (1 << 25) if device.type == "cuda" else (1 << 21)  # saved activations per chunk
    return max(256, budget // (hidden * (blocks + 2)))


def _mlp_backward(pe, g, m, weights, grads):
    """Recompute MLP m on features pe, then accumulate the parameter gradients for output grads g."""
    w0, b0, wr, br, sc, wo, bo = weights
    dw0, db0, dwr, dbr, dsc, dwo, dbo = grads
    h = torch.relu(torch.addmm(b0[m], pe, w0[m].t()))
    hs, ts = [h], []
    for b in range(wr.shape[1]):
        t = torch.relu(torch.addmm(br[m, b], h, wr[m, b].t()))
        h = torch.addcmul(h, t, sc[m, b])
        hs.append(h)
        ts.append(t)
    dwo[m] += g.t() @ h
    dbo[m] += g.sum(0)
    dh = g @ wo[m]
    for b in reversed(range(wr.shape[1])):
        t = ts[b]
        dsc[m, b] += (dh * t).sum()
        dz = (dh * sc[m, b]) * (t > 0)
        dwr[m, b] += dz.t() @ hs[b]
        dbr[m, b] += dz.sum(0)
        dh = dh + dz @ wr[m, b]
    dz = dh * (hs[0] > 0)
    dw0[m] += dz.t() @ pe
    db0[m] += dz.sum(0)


def inr_backward(grad_flat: torch.Tensor, weights: tuple[torch.Tensor, ...], segs: list[list[int]],
                 coords: torch.Tensor, freqs: torch.Tensor, noise: torch.Tensor | None, *, norm: float,
                 samples: int) -> list[torch.Tensor]:
    """Gradients w.r.t. the stacked weights (w0, b0, wr, br, sc, wo, bo) of the fused forward.

    noise: the realised, mode-restricted noise [samples, rows, 6] the forward added (None: none).
    """
    weights = tuple(w.detach() for w in weights)
    grads = [torch.zeros_like(w) for w in weights]
    num_rows = coords.shape[0]
    hidden, out_dim, blocks = weights[0].shape[1], weights[5].shape[1], weights[2].shape[1]
    g_out = _row_grads(grad_flat.float(), segs, num_rows, out_dim)
    step = _chunk_rows(hidden, blocks, coords.device)
    norm_t = norm_tensor(norm, coords.device)
    for k in range(samples):
        c = coords if noise is None else coords + noise[k]
        g = g_out / c[:, 5:6]  # forward: out / B column
        if samples > 1:
            g = g / samples
        mlp = c[:, 0].to(torch.int64)  # int() of the (noisy) layer column, as the forward
        order, counts = group_by_mlp(mlp, weights[0].shape[0])
        start = 0
        for m, count in enumerate(counts):
            for lo in range(start, start + count, step):
                idx = order[lo:min(lo + step, start + count)]
                pe = fourier_features(normalise(c[idx], norm_t), freqs)
                _mlp_backward(pe, g[idx], m, weights, grads)
            start += count
    return grads
