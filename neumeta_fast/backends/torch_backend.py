"""The plain-PyTorch backend (CPU and GPU): dense matmuls per tensor segment, bounded chunks.

No boolean masks, no `unique` and no per-element Python: rows of one segment are
contiguous and share an MLP, so each chunk is a handful of GEMMs. Only reference-mode
noise can send a row to another tensor's MLP; those rows are grouped by one stable
sort instead of masks.

float32 inference on the CPU goes through the fused C++ ResMLP (csrc/cpu/inr_forward.cpp,
tests/test_inr_forward.py), and with exact coordinates the first layer is split into
u[a] + v[b] per tensor (`_separable_first_layer`). float32 with autograd (training) goes through
the training op (torch_train.py, csrc/cpu/inr_train.cpp); bf16 and GPU inference run eager here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import _C
from ..encoding import fourier_features, frequencies, norm_tensor, normalise
from ..inr import INR, group_by_mlp
from ..layout import Layout, Segment
from . import torch_train
from .request import Request

NAME = "torch"


def unavailable_reason(device: torch.device) -> str | None:
    return None


@dataclass
class _MLPWeights:
    w0: torch.Tensor
    b0: torch.Tensor
    blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    wo: torch.Tensor
    bo: torch.Tensor
    # Set only for the fused CPU ops (csrc/cpu/inr_forward.cpp): blocks + output layer, scalars as floats.
    tail: "_C.ResMLPTail | None" = None


def _use_fused_cpu(device: torch.device, dtype: torch.dtype, track_grad: bool) -> bool:
    """The fused C++ ResMLP serves float32 inference on the CPU; autograd and low precision stay eager."""
    return not track_grad and device.type == "cpu" and dtype == torch.float32


def _weights(inr: INR, dtype: torch.dtype, fused: bool) -> list[_MLPWeights]:
    """Per-MLP parameters in the compute dtype (cast once per call, not per chunk)."""
    if fused:
        cast = torch.Tensor.contiguous  # the C++ op reads raw row-major memory
    else:
        cast = (lambda t: t) if dtype == torch.float32 else (lambda t: t.to(dtype))
    out = []
    for m in inr.model:
        blocks = [(cast(b.weight), cast(b.bias), s) for b, s in zip(m.residual_blocks, m.scalars)]
        wo, bo = cast(m.output_layer.weight), cast(m.output_layer.bias)
        tail = _C.ResMLPTail([w for w, _, _ in blocks], [b for _, b, _ in blocks],
                             [float(s) for s in m.scalars], wo, bo) if fused else None
        out.append(_MLPWeights(cast(m.initial_layer.weight), cast(m.initial_layer.bias), blocks, wo, bo, tail))
    return out


def _chunk_rows(inr: INR, device: torch.device) -> int:
    budget = (1 << 24) if device.type == "cuda" else (1 << 21)  # hidden activations per chunk
    return max(1024, budget // inr.hidden_dim)


def _mlp(p: _MLPWeights, pe: torch.Tensor, cols: slice, dtype: torch.dtype, track_grad: bool) -> torch.Tensor:
    """ResMLP on features `pe`, returning output columns `cols` in float32; residual stream in float32."""
    if p.tail is not None:
        return _C.inr_forward(pe, p.w0, p.b0, p.tail)[:, cols]
    lowp = dtype != torch.float32
    h = F.linear(pe.to(dtype) if lowp else pe, p.w0, p.b0).relu_()
    h = h.float() if lowp else h
    for w, b, s in p.blocks:
        t = F.linear(h.to(dtype) if lowp else h, w, b).relu_()
        t = t.float() if lowp else t
        h = torch.addcmul(h, t, s) if track_grad else h.addcmul_(t, s)
    # The full output layer, then the columns: slicing the weight instead changes GEMM rounding.
    out = F.linear(h.to(dtype) if lowp else h, p.wo, p.bo)[:, cols]
    return out.float() if lowp else out


def _evaluate(p: _MLPWeights, c: torch.Tensor, req: Request, encoding: tuple[torch.Tensor, torch.Tensor],
              cols: slice, track_grad: bool) -> torch.Tensor:
    """INR outputs (columns `cols`) for raw coordinates c, divided by the B column; encoding = (norm, freqs)."""
    norm, freqs = encoding
    pe = fourier_features(normalise(c, norm), freqs)
    return _mlp(p, pe, cols, req.dtype, track_grad) / c[:, 5:6]


def evaluate_grouped(inr: INR, pe: torch.Tensor, mlp_index: torch.Tensor) -> torch.Tensor:
    """INR outputs [N, output_dim] in float32 of features pe [N, F], row r through MLP mlp_index[r].

    Rows are grouped by one stable sort, not a mask per MLP; an index outside [0, L) raises ValueError.
    """
    order, counts = group_by_mlp(mlp_index, inr.num_tensors)
    track_grad = torch.is_grad_enabled() and any(p.requires_grad for p in inr.parameters())
    weights = _weights(inr, torch.float32, _use_fused_cpu(pe.device, torch.float32, track_grad))
    grouped = pe[order]
    cols = slice(0, inr.output_dim)
    outs, start = [], 0
    for m, count in enumerate(counts):
        if count:
            outs.append(_mlp(weights[m], grouped[start:start + count], cols, torch.float32, track_grad))
        start += count
    out_grouped = torch.cat(outs)
    return torch.empty_like(out_grouped).index_copy(0, order, out_grouped)


class _FlatSink:
    """Collects consecutive pieces of the flat output: in place without autograd, by concatenation with it."""

    def __init__(self, numel: int, device: torch.device, track_grad: bool):
        self.track_grad = track_grad
        self.pieces: list[torch.Tensor] = []
        self.buffer = None if track_grad else torch.empty(numel, dtype=torch.float32, device=device)
        self.pos = 0

    def put(self, piece: torch.Tensor) -> None:
        piece = piece.reshape(-1)
        if self.track_grad:
            self.pieces.append(piece)
        else:
            self.buffer[self.pos:self.pos + piece.numel()].copy_(piece)
        self.pos += piece.numel()

    def result(self) -> torch.Tensor:
        return torch.cat(self.pieces) if self.track_grad else self.buffer


def _separable_first_layer(p: _MLPWeights, seg: torch.Tensor, s: Segment, encoding, dims: torch.Tensor):
    """(u [A, hidden], v [B, hidden]) with W0 pe + b0 = u[a] + v[b] for exact coordinates of segment s.

    Only column 1 (a / A) varies with a and column 2 (b / B) with b; the rest is constant over the
    tensor, and every feature reads one column. So the first layer needs A + B feature rows, not A * B.
    """
    norm, freqs = encoding
    pe_a = fourier_features(normalise(seg[::s.cols], norm), freqs)  # rows (a, b = 0)
    pe_b = fourier_features(normalise(seg[:s.cols], norm), freqs)   # rows (a = 0, b)
    on_a, on_b = dims == 1, dims == 2
    rest = ~(on_a | on_b)
    u = pe_a[:, on_a] @ p.w0[:, on_a].T
    v = pe_b[:, on_b] @ p.w0[:, on_b].T + (p.w0[:, rest] @ pe_a[0, rest] + p.b0)
    return u.contiguous(), v.contiguous()


def _sample_exact_index(inr, layout, coords, weights, req, encoding, sink, track_grad, exact_coords):
    """Every row uses its own tensor's MLP (no noise, or channel-only noise)."""
    step = _chunk_rows(inr, req.device)
    separable = exact_coords and weights[0].tail is not None
    dims = torch_train.feature_dims(inr.num_freqs, req.device) if separable else None
    for s in layout.segments:
        cs = s.col_start(inr.output_dim)
        cols = slice(cs, cs + s.kernel_numel)
        p = weights[s.index]
        seg = coords[s.row_offset:s.row_offset + s.rows]
        first = _separable_first_layer(p, seg, s, encoding, dims) if separable else None
        for r in range(0, s.rows, step):
            c = seg[r:r + step]
            if first is None:
                sink.put(_evaluate(p, c, req, encoding, cols, track_grad))
            else:
                out = _C.inr_forward_separable(*first, r, c.shape[0], p.tail)
                sink.put(out[:, cols] / c[:, 5:6])


def _sample_routed(inr, layout, coords, weights, req, encoding, sink, track_grad):
    """Reference-mode noise: the MLP is int(noisy column 0), so rows are grouped by one stable sort."""
    mlp_index = coords[:, 0].to(torch.int64)  # truncation toward zero, as the reference's int()
    order, counts = group_by_mlp(mlp_index, inr.num_tensors)
    grouped = coords[order]
    step = _chunk_rows(inr, req.device)
    full = slice(0, inr.output_dim)
    outs, start = [], 0
    for m, count in enumerate(counts):
        for r in range(start, start + count, step):
            outs.append(_evaluate(weights[m], grouped[r:min(r + step, start + count)], req, encoding, full, track_grad))
        start += count
    y_grouped = torch.cat(outs)
    y = torch.empty_like(y_grouped).index_copy(0, order, y_grouped)
    for s in layout.segments:
        cs = s.col_start(inr.output_dim)
        sink.put(y[s.row_offset:s.row_offset + s.rows, cs:cs + s.kernel_numel])


def inr_forward(inr: INR, layout: Layout, req: Request) -> torch.Tensor:
    """Generated weights of every layout tensor in one flat float32 buffer (averaged over req.samples)."""
    track_grad = torch.is_grad_enabled() and any(p.requires_grad for p in inr.parameters())
    if track_grad and req.dtype == torch.float32:
        return torch_train.inr_forward(inr, layout, req)
    return inr_forward_eager(inr, layout, req, track_grad)


def inr_forward_eager(inr: INR, layout: Layout, req: Request, track_grad: bool) -> torch.Tensor:
    """inr_forward by per-segment eager ops (fused C++ ResMLPs for float32 inference on the CPU)."""
    coords = layout.coordinates(req.device)
    encoding = (norm_tensor(req.norm, req.device), frequencies(inr.freq_low, inr.freq_high, req.device))
    fused = _use_fused_cpu(req.device, req.dtype, track_grad)
    weights = _weights(inr, req.dtype, fused)
    total = None
    for k in range(req.samples):
        noise = req.sample_noise(k, layout)
        if fused and noise is not None and not noise.any():
            noise = None  # e.g. sample 0 of a noise_tensor: the same weights as exact coordinates, bit for bit
        sink = _FlatSink(layout.numel, req.device, track_grad)
        if noise is None or req.noise_mode == "channels":
            c = coords if noise is None else coords + noise
            _sample_exact_index(inr, layout, c, weights, req, encoding, sink, track_grad, noise is None)
        else:
            _sample_routed(inr, layout, coords + noise, weights, req, encoding, sink, track_grad)
        flat = sink.result()
        if total is None:
            total = flat
        elif track_grad:
            total = total + flat
        else:
            total.add_(flat)
    return total / req.samples if req.samples > 1 else total
