"""The torch backend's training path: generate() with gradients, the ResMLPs fused per layer.

Eager autograd spends most of a training step outside its GEMMs: per tensor segment and layer it
runs a bias copy, a ReLU, a scaled residual and, backwards, their masks, products and reductions
as separate passes. Here rows are grouped by the MLP that evaluates them, the first layer is built
by autograd (dense features, or u[a] + v[b] for exact coordinates: A + B feature rows per A x B
tensor), and everything after it is one custom op, `neumeta_fast::inr_train`, over all groups:
  CPU, float32: csrc/cpu/inr_train.cpp (each layer = its GEMMs + one fused pass, forward and backward);
  otherwise: `_forward_torch` / `_backward_torch` below, the same arithmetic in torch ops, with the
  per-row work over all rows at once (a few launches per layer, not a few per layer and tensor);
  float32 on CUDA with triton: their GEMMs as grouped Triton kernels (kernels/grouped_mm.py), all
  groups of a layer in one launch (forward) or two (backward), instead of a torch GEMM per group.
The forward keeps each layer's input and ReLU output, so the backward recomputes nothing.
Both are registered with fake implementations and autograd, so torch.compile keeps the op whole.
Tests: tests/test_inr_train.py (values and gradients against the reference and eager autograd).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch

from .. import _C
from ..encoding import fourier_features, frequencies, norm_tensor, normalise
from ..inr import INR, group_by_mlp
from ..layout import Layout, SegmentRow
from .request import Request


# -- the op: ResMLP after its first layer, rows grouped by MLP -----------------------------------------
def _row_ranges(offsets: list[int], mlps: list[int]):
    """(first row, end row, MLP) of every non-empty group."""
    return [(offsets[g], offsets[g + 1], m) for g, m in enumerate(mlps) if offsets[g + 1] > offsets[g]]


def _row_scalars(sc: torch.Tensor, offsets: list[int], mlps: list[int]) -> torch.Tensor:
    """[N, nb]: the residual scalars of the MLP of every row."""
    counts = torch.tensor([offsets[g + 1] - offsets[g] for g in range(len(mlps))], device=sc.device)
    return sc[torch.tensor(mlps, device=sc.device)].repeat_interleave(counts, dim=0)


GROUPED_ON_CPU = False  # the grouped kernels on CPU tensors too (tests, under TRITON_INTERPRET=1)


def _grouped(t: torch.Tensor):
    """(kernels.grouped_mm, input precision) when the twin's GEMMs run as grouped Triton kernels on t,
    else None (torch's loops). TF32 where torch's own CUDA matmuls may use it."""
    if t.dtype != torch.float32 or not (t.is_cuda or GROUPED_ON_CPU):
        return None
    try:
        from ..kernels import grouped_mm
    except ImportError:  # no triton: the loops serve every device
        return None
    return grouped_mm, "tf32" if t.is_cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _forward_torch(z0, offsets, mlps, wr, br, sc, wo, bo):
    rows, hidden = z0.shape
    nb = wr.shape[1]
    h = z0.new_empty(nb + 1, rows, hidden)
    t = z0.new_empty(nb, rows, hidden)
    out = z0.new_empty(rows, wo.shape[1])
    torch.clamp_min(z0, 0.0, out=h[0])
    if grouped := _grouped(z0):  # one launch per layer, its ReLU and scaled residual fused
        gm, prec = grouped
        for layer in range(nb):
            gm.grouped_linear(h[layer], offsets, mlps, wr[:, layer], br[:, layer], scale=sc[:, layer],
                              out=h[layer + 1], t_out=t[layer], precision=prec)
        return gm.grouped_linear(h[nb], offsets, mlps, wo, bo, out=out, precision=prec), h, t
    scale = _row_scalars(sc, offsets, mlps)
    ranges = _row_ranges(offsets, mlps)
    for layer in range(nb):
        for r0, r1, m in ranges:
            torch.addmm(br[m, layer], h[layer, r0:r1], wr[m, layer].t(), out=t[layer, r0:r1])
        t[layer].relu_()
        torch.addcmul(h[layer], t[layer], scale[:, layer:layer + 1], out=h[layer + 1])
    for r0, r1, m in ranges:
        torch.addmm(bo[m], h[nb, r0:r1], wo[m].t(), out=out[r0:r1])
    return out, h, t


def _backward_torch(gout, h, t, offsets, mlps, wr, sc, wo):
    nb = t.shape[0]
    dwr, dbr = torch.zeros_like(wr), wr.new_zeros(wr.shape[:3])
    dsc, dwo, dbo = torch.zeros_like(sc), torch.zeros_like(wo), wo.new_zeros(wo.shape[:2])
    if grouped := _grouped(gout):  # two launches per layer: dx and the weight gradients, mask and scale fused
        gm, prec = grouped
        gm.grouped_wgrad(gout, h[nb], offsets, mlps, dwo, dbo, precision=prec)
        dh = gm.grouped_dx(gout, offsets, mlps, wo, precision=prec)
        for layer in reversed(range(nb)):
            gate = (t[layer], sc[:, layer])
            gm.grouped_wgrad(dh, h[layer], offsets, mlps, dwr[:, layer], dbr[:, layer], gate=gate,
                             dscale=dsc[:, layer], precision=prec)
            dh = gm.grouped_dx(dh, offsets, mlps, wr[:, layer], gate=gate, residual=True, precision=prec)
        return [torch.where(h[0] <= 0, 0.0, dh), dwr, dbr, dsc, dwo, dbo]
    dh = torch.empty_like(h[0])
    scale = _row_scalars(sc, offsets, mlps)
    ranges = _row_ranges(offsets, mlps)
    for r0, r1, m in ranges:
        dwo[m].addmm_(gout[r0:r1].t(), h[nb, r0:r1])
        dbo[m] += gout[r0:r1].sum(0)
        torch.mm(gout[r0:r1], wo[m], out=dh[r0:r1])
    for layer in reversed(range(nb)):
        tl = t[layer]
        ds_rows = (dh * tl).sum(1)
        dz = torch.where(tl <= 0, 0.0, dh * scale[:, layer:layer + 1])  # threshold_backward: NaN t passes
        for r0, r1, m in ranges:
            dsc[m, layer] += ds_rows[r0:r1].sum()
            dwr[m, layer].addmm_(dz[r0:r1].t(), h[layer, r0:r1])
            dbr[m, layer] += dz[r0:r1].sum(0)
            dh[r0:r1].addmm_(dz[r0:r1], wr[m, layer])
    dz0 = torch.where(h[0] <= 0, 0.0, dh)
    return [dz0, dwr, dbr, dsc, dwo, dbo]


def _use_cpp(t: torch.Tensor) -> bool:
    """The C++ op serves float32 on the CPU; other dtypes (float64 for gradcheck) and devices run the torch code."""
    return t.device.type == "cpu" and t.dtype == torch.float32


@torch.library.custom_op("neumeta_fast::inr_train", mutates_args=())
def inr_train(z0: torch.Tensor, offsets: list[int], mlps: list[int], wr: torch.Tensor, br: torch.Tensor,
                 sc: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [N, O], h [nb + 1, N, H], t [nb, N, H]) of the ResMLPs after their first layer (z0: its
    pre-activation), group g = rows [offsets[g], offsets[g + 1]) evaluated by MLP mlps[g]."""
    if _use_cpp(z0):
        return tuple(_C.inr_train_forward(z0, offsets, mlps, wr, br, sc, wo, bo))
    return _forward_torch(z0, offsets, mlps, wr, br, sc, wo, bo)


@inr_train.register_fake
def _(z0, offsets, mlps, wr, br, sc, wo, bo):
    rows, hidden = z0.shape
    nb = wr.shape[1]
    return z0.new_empty(rows, wo.shape[1]), z0.new_empty(nb + 1, rows, hidden), z0.new_empty(nb, rows, hidden)


@torch.library.custom_op("neumeta_fast::inr_train_backward", mutates_args=())
def inr_train_backward(gout: torch.Tensor, h: torch.Tensor, t: torch.Tensor, offsets: list[int], mlps: list[int],
                          wr: torch.Tensor, sc: torch.Tensor, wo: torch.Tensor) -> list[torch.Tensor]:
    """[dz0, dwr, dbr, dsc, dwo, dbo] for d loss / d out = gout."""
    if _use_cpp(gout):
        return list(_C.inr_train_backward(gout, h, t, offsets, mlps, wr, sc, wo))
    return _backward_torch(gout, h, t, offsets, mlps, wr, sc, wo)


@inr_train_backward.register_fake
def _(gout, h, t, offsets, mlps, wr, sc, wo):
    return [torch.empty_like(h[0]), torch.empty_like(wr), wr.new_empty(wr.shape[:3]), torch.empty_like(sc),
            torch.empty_like(wo), wo.new_empty(wo.shape[:2])]


def _setup_context(ctx, inputs, output):
    _z0, offsets, mlps, wr, _br, sc, wo, _bo = inputs
    _out, h, t = output
    ctx.save_for_backward(h, t, wr, sc, wo)
    ctx.groups = (offsets, mlps)
    ctx.mark_non_differentiable(h, t)
    ctx.set_materialize_grads(False)  # else autograd fills zero gradients the size of h and t every step


def _backward(ctx, gout, _gh, _gt):
    h, t, wr, sc, wo = ctx.saved_tensors
    if gout is None:  # out unused (grads are not materialised): nothing flows back
        return (None,) * 8
    dz0, dwr, dbr, dsc, dwo, dbo = inr_train_backward(gout.contiguous(), h, t, *ctx.groups, wr, sc, wo)
    return dz0, None, None, dwr, dbr, dsc, dwo, dbo


inr_train.register_autograd(_backward, setup_context=_setup_context)


# -- generate() with gradients on top of it ------------------------------------------------------------
def feature_dims(num_freqs: int, device: torch.device) -> torch.Tensor:
    """The coordinate column (0..5) each Fourier feature column reads: x_j, then (sin, cos) per frequency and j."""
    dims = torch.arange(6, device=device)
    return torch.cat([dims, dims.repeat_interleave(2).repeat(num_freqs)])


class Plan:
    """Index tables of one layout on one device, built once and reused every step.

    Built from the layout's segment table (Layout.segment_table: one SegmentRow per tensor), so the fused
    backends' backward, which sees only that table, uses the same plan.
    Scatter: flat element e of the output is row `elem_row[e]`, column `elem_col[e]` of the INR output.
    Separable first layer (exact coordinates): segment s's rows are (a, b) pairs; its a-rows (b = 0) and
    b-rows (a = 0) are padded to [S, max_a] and [S, max_b] so one bmm serves every segment, and
    `a_index` / `b_index` pick each table row's u and v from the flattened padded results.
    """

    def __init__(self, table: Sequence[SegmentRow], num_rows: int, output_dim: int, device: torch.device):
        self.output_dim = output_dim
        self.offsets = [s.row_offset for s in table] + [num_rows]
        self.mlps = [s.index for s in table]
        elem_row, elem_col, a_rows, b_rows, a_index, b_index = [], [], [], [], [], []
        self.max_a = max(s.a_size for s in table)
        self.max_b = max(s.cols for s in table)
        for i, s in enumerate(table):
            r = torch.arange(s.rows, device=device)
            elem_row.append(r.repeat_interleave(s.kernel_numel) + s.row_offset)
            elem_col.append(torch.arange(s.kernel_numel, device=device).repeat(s.rows) + s.col_start)
            a = torch.arange(self.max_a, device=device).clamp(max=s.a_size - 1)  # padding repeats the last row
            b = torch.arange(self.max_b, device=device).clamp(max=s.cols - 1)
            a_rows.append(s.row_offset + a * s.cols)
            b_rows.append(s.row_offset + b)
            a_index.append(r // s.cols + i * self.max_a)
            b_index.append(r % s.cols + i * self.max_b)
        self.elem_row, self.elem_col = torch.cat(elem_row), torch.cat(elem_col)
        self.elem_src = self.elem_row * output_dim + self.elem_col
        self.a_rows, self.b_rows = torch.stack(a_rows), torch.stack(b_rows)
        self.a_index, self.b_index = torch.cat(a_index), torch.cat(b_index)
        self._features: dict = {}

    def separable_features(self, coords: torch.Tensor, encoding, key: tuple):
        """(a-columns of the a-rows [S, max_a, Fa], b-columns of the b-rows [S, max_b, Fb], the other
        columns of each segment's first row [S, Fr], and the three column index sets), cached by
        key = (norm, freq_low, freq_high), the encoding as numbers (reading the tensors would sync a GPU)."""
        if key not in self._features:
            dims = feature_dims(key[2] - key[1], coords.device)
            cols = [(dims == 1).nonzero().squeeze(1), (dims == 2).nonzero().squeeze(1),
                    ((dims != 1) & (dims != 2)).nonzero().squeeze(1)]
            pe_a = fourier_features(normalise(coords[self.a_rows.view(-1)], encoding[0]), encoding[1])
            pe_b = fourier_features(normalise(coords[self.b_rows.view(-1)], encoding[0]), encoding[1])
            pe_a = pe_a.view(*self.a_rows.shape, -1)
            pe_b = pe_b.view(*self.b_rows.shape, -1)
            self._features[key] = (pe_a[..., cols[0]], pe_b[..., cols[1]], pe_a[:, 0, cols[2]], cols)
        return self._features[key]


_PLANS: "OrderedDict[tuple, Plan]" = OrderedDict()
_PLANS_KEPT = 64  # the trainer's widths and tensor subsets, the fused backends' layouts


def table_plan(table: Sequence[SegmentRow], num_rows: int, output_dim: int, device: torch.device) -> Plan:
    """The Plan of a segment table, built once (the most recent ones are kept: same table, same plan).
    The tile column is left out of the key: the plan does not depend on how kernels tile the rows."""
    key = (tuple(s._replace(tile_start=0) for s in table), num_rows, output_dim, device)
    plan = _PLANS.pop(key, None) or Plan(table, num_rows, output_dim, device)
    _PLANS[key] = plan
    if len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
    return plan


def layout_plan(layout: Layout, output_dim: int, device: torch.device) -> Plan:
    return table_plan(layout.segment_table(output_dim).rows, layout.num_rows, output_dim, device)


def _separable_z0(plan: Plan, coords: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, seg_mlp: torch.Tensor,
                  encoding, encoding_key: tuple) -> torch.Tensor:
    """First-layer pre-activation of exact coordinates, [N, H], as u[a] + v[b] per segment.

    Only column 1 (a / A) varies with a and column 2 (b / B) with b, and every feature reads one
    column: so A + B feature rows per A x B tensor give every row's W0 pe + b0. seg_mlp: each
    segment's MLP as an index into w0 and b0.
    """
    pe_a, pe_b, pe_rest, (cols_a, cols_b, cols_rest) = plan.separable_features(coords, encoding, encoding_key)
    w = w0.index_select(0, seg_mlp)  # [S, H, F]
    u = torch.bmm(pe_a, w.index_select(2, cols_a).transpose(1, 2))  # [S, max_a, H]
    const = torch.bmm(w.index_select(2, cols_rest), pe_rest.unsqueeze(2)).squeeze(2) + b0.index_select(0, seg_mlp)
    v = torch.bmm(pe_b, w.index_select(2, cols_b).transpose(1, 2)) + const.unsqueeze(1)  # [S, max_b, H]
    hidden = w0.shape[1]
    return u.reshape(-1, hidden).index_select(0, plan.a_index) + v.reshape(-1, hidden).index_select(0, plan.b_index)


def groups(plan: Plan, c: torch.Tensor, routed: bool, num_mlps: int):
    """(order, offsets, mlps, src) of coordinates c: rows grouped by the MLP that evaluates them.

    routed (reference-mode noise): each row's MLP is int(noisy column 0); `order` sorts the table's rows
    into groups (one stable sort) and `src` is the scatter's source index into the grouped outputs.
    Otherwise each segment's rows are its own MLP's, in layout order (order None). Empty groups are left out.
    """
    if not routed:
        return None, plan.offsets, plan.mlps, plan.elem_src
    order, counts = group_by_mlp(c[:, 0].to(torch.int64), num_mlps)
    offsets, mlps = [0], []
    for m, n in enumerate(counts):
        if n:
            offsets.append(offsets[-1] + n)
            mlps.append(m)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)  # grouped row of each table row
    return order, offsets, mlps, position.index_select(0, plan.elem_row) * plan.output_dim + plan.elem_col


def sample_flat(plan: Plan, coords: torch.Tensor, noise: torch.Tensor | None, routed: bool, stack, encoding,
                encoding_key: tuple, num_mlps: int) -> torch.Tensor:
    """One sample's flat weights: rows grouped by MLP -> z0 -> inr_train -> divided centre columns.

    noise:  this sample's noise, already restricted to its mode's columns (None: exact coordinates).
    routed: reference-mode noise: each row's MLP is int(noisy column 0).
    stack:  stack(mlps) -> the stacked weights (w0, b0, wr, br, sc, wo, bo) of those MLPs. Only the
            MLPs that evaluate some row are asked for, so the others stay out of the autograd graph.
    encoding: (norm, frequencies) as tensors on the coordinates' device; encoding_key: the same as
            numbers, (norm, freq_low, freq_high).
    """
    c = coords if noise is None else coords + noise
    order, offsets, global_mlps, src = groups(plan, c, routed, num_mlps)
    used = sorted(set(global_mlps))
    local = {m: i for i, m in enumerate(used)}
    mlps = [local[m] for m in global_mlps]
    w0, b0, wr, br, sc, wo, bo = stack(used)
    if noise is None:
        seg_mlp = torch.tensor(mlps, device=c.device)
        z0 = _separable_z0(plan, coords, w0, b0, seg_mlp, encoding, encoding_key)
    else:
        pe = fourier_features(normalise(c if order is None else c[order], encoding[0]), encoding[1])
        z0 = torch.cat([torch.addmm(b0[m], pe[offsets[g]:offsets[g + 1]], w0[m].T) for g, m in enumerate(mlps)])
    out = inr_train(z0, offsets, mlps, wr, br, sc, wo, bo)[0]
    return out.view(-1).index_select(0, src) / c[:, 5].index_select(0, plan.elem_row)


def inr_forward(inr: INR, layout: Layout, req: Request) -> torch.Tensor:
    """Every layout tensor's weights in one flat float32 buffer, differentiable w.r.t. the INR (float32 MLPs).

    MLPs that evaluate no row get no gradient (None), as in eager autograd, so an optimizer leaves
    them alone on steps that train a tensor subset.
    """
    coords = layout.coordinates(req.device)
    encoding = (norm_tensor(req.norm, req.device), frequencies(inr.freq_low, inr.freq_high, req.device))
    plan = layout_plan(layout, inr.output_dim, req.device)
    total = None
    for k in range(req.samples):
        noise = req.sample_noise(k, layout)
        routed = noise is not None and req.noise_mode == "reference"
        flat = sample_flat(plan, coords, noise, routed, lambda used: inr.stacked(mlps=used), encoding,
                           (req.norm, inr.freq_low, inr.freq_high), inr.num_tensors)
        total = flat if total is None else total + flat
    return total / req.samples if req.samples > 1 else total
