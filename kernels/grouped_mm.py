"""Grouped GEMMs of per-MLP linear layers: every group of rows in one launch (the training path's layers).

Rows come grouped by MLP: group g = rows [offsets[g], offsets[g + 1]) is evaluated by MLP mlps[g], whose
weights are w[mlps[g]]. A host-built tile schedule (`schedule`: int32 (first row, end row, MLP) per row
tile, ordered by MLP, like the fused forward's persistent grid) lets one launch cover every group, with
masks for ragged, tiny and empty groups. Three entry points, each one launch per layer:
  grouped_linear: y = x @ w[m]^T + b[m], or the residual block's epilogue t = relu(.), h' = s[m] t + x;
  grouped_dx:     dx = g(dy) @ w[m] (+ dy for the residual block), g the ReLU mask and scale s[m];
                  both are _rows_kernel (a row tile times w[m] or its transpose, with an epilogue);
  grouped_wgrad:  dw[m] += g(dy)^T x, db[m] += sum g(dy), ds[m] += sum dy * t; one program owns an MLP's
                  tile of dw and walks all of that MLP's row tiles, so MLPs used by several groups are
                  summed without atomics, deterministically.
g(dy) = where(t <= 0, 0, dy * s[m]) is torch's threshold_backward of the ReLU (a NaN t passes).
Precisions: "ieee" (float32), "tf32", "bf16" inputs; accumulation is float32 in all of them.
Reference: the per-group torch loops of neumeta_fast/backends/torch_train.py (`_forward_torch`, `_backward_torch`).
Tests: tests/test_grouped_mm.py. Benchmark: benchmarks/bench_grouped_mm.py.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

PRECISIONS = ("ieee", "tf32", "bf16")
BLOCK_M = 64  # rows per tile (tl.dot needs >= 16 in every dimension)
BLOCK_N = 64
BLOCK_K = 32


@dataclass(frozen=True)
class Schedule:
    tiles: torch.Tensor    # int32 [T, 3]: (first row, end row, MLP) of every row tile, ordered by MLP
    mlp_ptr: torch.Tensor  # int32 [U + 1]: tiles[mlp_ptr[u]:mlp_ptr[u + 1]] are the u-th used MLP's tiles
    mlp_ids: torch.Tensor  # int64 [U]: the used MLPs, ascending
    num_tiles: int


def check_groups(offsets: list[int], mlps: list[int], rows: int, num_mlps: int) -> None:
    """Clear errors for a bad grouping (the kernels would read or write out of bounds)."""
    if len(offsets) != len(mlps) + 1:
        raise ValueError(f"offsets must have len(mlps) + 1 = {len(mlps) + 1} entries, got {len(offsets)}")
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"offsets must be non-decreasing, got {offsets}")
    if offsets[0] != 0 or offsets[-1] != rows:
        raise ValueError(f"offsets must run from 0 to the row count {rows}, got {offsets[0]}..{offsets[-1]}")
    if any(not 0 <= m < num_mlps for m in mlps):
        raise ValueError(f"mlps must index the {num_mlps} stacked MLPs, got {mlps}")


@functools.lru_cache(maxsize=16)  # a step's forward and backward share one; routed noise changes it per step
def _schedule(offsets: tuple, mlps: tuple, block_m: int, device: torch.device) -> Schedule:
    per_mlp: dict[int, list[tuple[int, int, int]]] = {}
    for g, m in enumerate(mlps):
        for r in range(offsets[g], offsets[g + 1], block_m):
            per_mlp.setdefault(m, []).append((r, min(r + block_m, offsets[g + 1]), m))
    used = sorted(per_mlp)
    tiles = [tile for m in used for tile in per_mlp[m]]
    ptr = [0]
    for m in used:
        ptr.append(ptr[-1] + len(per_mlp[m]))
    return Schedule(torch.tensor(tiles, dtype=torch.int32, device=device).view(-1, 3),
                    torch.tensor(ptr, dtype=torch.int32, device=device),
                    torch.tensor(used, dtype=torch.int64, device=device), len(tiles))


def schedule(offsets: list[int], mlps: list[int], device: torch.device, block_m: int = BLOCK_M) -> Schedule:
    """The tile schedule of a grouping, built once per (offsets, mlps, block_m, device)."""
    return _schedule(tuple(offsets), tuple(mlps), block_m, device)


@triton.jit
def _round(x, DROP: tl.constexpr):
    """x rounded to nearest-even with the low DROP mantissa bits cleared: bf16 (16) or tf32 (13) in float32."""
    i = x.to(tl.uint32, bitcast=True)
    i = ((i + ((1 << (DROP - 1)) - 1) + ((i >> DROP) & 1)) >> DROP) << DROP
    return i.to(tl.float32, bitcast=True)


@triton.jit
def _dot(a, b, acc, PREC: tl.constexpr, GPU: tl.constexpr):
    """acc + a @ b with PREC inputs. The interpreter has no bfloat16 or TF32 arithmetic: it rounds the
    inputs the same way and multiplies in float32, so the tests measure the precision's error on a CPU."""
    if GPU:
        if PREC == "bf16":
            return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
        else:
            return tl.dot(a, b, acc, input_precision=PREC)
    elif PREC == "bf16":
        return tl.dot(_round(a, 16), _round(b, 16), acc, input_precision="ieee")
    elif PREC == "tf32":
        return tl.dot(_round(a, 13), _round(b, 13), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _row_tile(tiles, tile, BLOCK_M: tl.constexpr):
    """(rows, row mask, MLP) of schedule entry `tile`."""
    r0, r1 = tl.load(tiles + 3 * tile), tl.load(tiles + 3 * tile + 1)
    rows = (r0 + tl.arange(0, BLOCK_M)).to(tl.int64)
    return rows, rows < r1, tl.load(tiles + 3 * tile + 2).to(tl.int64)


@triton.jit
def _rows_kernel(a_ptr, t_ptr, w_ptr, b_ptr, s_ptr, y_ptr, t_out, tiles, R, C, stride_a, stride_y, stride_wm,
                 stride_wr, stride_wc, stride_bm, stride_s, GATED: tl.constexpr, BIAS: tl.constexpr,
                 RELU_SCALE: tl.constexpr, ADD_INPUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_C: tl.constexpr, PREC: tl.constexpr, GPU: tl.constexpr):
    """y[rows, c] = epilogue(sum_r A[rows, r] W_m[r, c]) for one (row tile, column tile).

    W_m[r, c] = w[m, r * stride_wr + c * stride_wc]: w[m]^T for the forward, w[m] for dx.
    GATED: A = where(t <= 0, 0, A * s[m]). Epilogue in order: BIAS + b[m]; RELU_SCALE: t_out = relu(.),
    then times s[m]; ADD_INPUT: + A[rows, c] as read (the skip connection, forward and backward).
    """
    rows, row_ok, m = _row_tile(tiles, tl.program_id(0), BLOCK_M)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    w = w_ptr + m * stride_wm
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        offs = rows[:, None] * stride_a + r[None, :]
        mask = row_ok[:, None] & (r < R)[None, :]
        a = tl.load(a_ptr + offs, mask=mask, other=0.0)
        if GATED:
            a = tl.where(tl.load(t_ptr + offs, mask=mask, other=0.0) <= 0.0, 0.0, a * tl.load(s_ptr + m * stride_s))
        wt = tl.load(w + r[:, None] * stride_wr + c[None, :] * stride_wc, mask=(r < R)[:, None] & c_ok[None, :],
                     other=0.0)
        acc = _dot(a, wt, acc, PREC, GPU)
    out = rows[:, None] * stride_y + c[None, :]
    mask = row_ok[:, None] & c_ok[None, :]
    if BIAS:
        acc += tl.load(b_ptr + m * stride_bm + c, mask=c_ok, other=0.0)[None, :]
    if RELU_SCALE:
        acc = tl.where(acc < 0.0, 0.0, acc)  # ReLU that keeps NaN, as torch.relu
        tl.store(t_out + out, acc, mask=mask)
        acc = tl.load(s_ptr + m * stride_s) * acc
    if ADD_INPUT:
        acc += tl.load(a_ptr + rows[:, None] * stride_a + c[None, :], mask=mask)
    tl.store(y_ptr + out, acc, mask=mask)


@triton.jit
def _wgrad_kernel(dy_ptr, t_ptr, x_ptr, s_ptr, dw_ptr, db_ptr, ds_part, tiles, mlp_ptr, N, K, stride_dy,
                  stride_x, stride_s, stride_dwm, stride_dwn, stride_dbm, n_tiles,
                  GATED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  PREC: tl.constexpr, GPU: tl.constexpr):
    u, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    first, last = tl.load(mlp_ptr + u), tl.load(mlp_ptr + u + 1)
    m = tl.load(tiles + 3 * first + 2).to(tl.int64)  # every tile of u has this MLP
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    n_ok, k_ok = n < N, k < K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    ds = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for tile in range(first, last):
        rows, row_ok, _ = _row_tile(tiles, tile, BLOCK_M)
        offs = rows[:, None] * stride_dy + n[None, :]
        mask = row_ok[:, None] & n_ok[None, :]
        a = tl.load(dy_ptr + offs, mask=mask, other=0.0)
        if GATED:
            t = tl.load(t_ptr + offs, mask=mask, other=0.0)
            ds += tl.sum(a * t, axis=0)
            a = tl.where(t <= 0.0, 0.0, a * tl.load(s_ptr + m * stride_s))
        x = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        acc = _dot(tl.trans(a), x, acc, PREC, GPU)
        db += tl.sum(a, axis=0)
    dw = dw_ptr + m * stride_dwm + n[:, None] * stride_dwn + k[None, :]
    mask = n_ok[:, None] & k_ok[None, :]
    tl.store(dw, tl.load(dw, mask=mask) + acc, mask=mask)
    if pid_k == 0:
        tl.store(db_ptr + m * stride_dbm + n, tl.load(db_ptr + m * stride_dbm + n, mask=n_ok) + db, mask=n_ok)
        if GATED:  # summed over the n tiles on the host: a fixed order, no atomics
            tl.store(ds_part + u * n_tiles + pid_n, tl.sum(ds, axis=0))


def _check(name: str, t: torch.Tensor, shape: tuple, device: torch.device) -> None:
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    if t.dim() > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have unit stride in its last dimension")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _compiled(device: torch.device) -> bool:
    """Whether the kernels run compiled for a GPU (else in Triton's CPU interpreter)."""
    return device.type == "cuda" and not isinstance(_linear_kernel, InterpretedFunction)


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def _check_all(device: torch.device, *operands) -> None:
    """_check of every (name, tensor or None, shape); None: an operand this call does not use."""
    for name, t, shape in operands:
        if t is not None:
            _check(name, t, shape, device)


def _launch_rows(a_name, a, offsets, mlps, w, out, *, r_axis, t=None, bias=None, scale=None, t_out=None,
                 add_input=False, precision="ieee"):
    """Checks, then _rows_kernel over every tile of the grouping: out [rows, C] from a [rows, R], where
    R is w's axis r_axis (2: the forward's K, 1: dx's N) and C its other one."""
    _check_precision(precision)
    if a.dim() != 2 or w.dim() != 3 or a.shape[1] != w.shape[r_axis]:
        raise ValueError(f"{a_name} [rows, {'NK'[r_axis - 1]}] must match w [M, N, K], got {tuple(a.shape)} "
                         f"and {tuple(w.shape)}")
    (rows, r_dim), (num_mlps, c_dim) = a.shape, (w.shape[0], w.shape[3 - r_axis])
    dev = a.device
    check_groups(offsets, mlps, rows, num_mlps)
    out = a.new_empty(rows, c_dim) if out is None else out
    _check_all(dev, (a_name, a, (rows, r_dim)), ("w", w, w.shape), ("out", out, (rows, c_dim)),
               ("t", t, (rows, r_dim)), ("b", bias, (num_mlps, c_dim)), ("t_out", t_out, (rows, c_dim)),
               ("scale", scale, (num_mlps,)))
    if add_input and r_dim != c_dim:
        raise ValueError(f"the residual block needs a square w, got {tuple(w.shape)}")
    sched = schedule(offsets, mlps, dev)
    if sched.num_tiles:
        unused = out  # a valid pointer for the operands this launch never reads
        with _on(dev):
            _rows_kernel[(sched.num_tiles, triton.cdiv(c_dim, BLOCK_N))](
                a, unused if t is None else t, w, unused if bias is None else bias, unused if scale is None else scale,
                out, unused if t_out is None else t_out, sched.tiles, r_dim, c_dim, a.stride(0), out.stride(0),
                w.stride(0), *((1, w.stride(1)) if r_axis == 2 else (w.stride(1), 1)),
                0 if bias is None else bias.stride(0), 0 if scale is None else scale.stride(0),
                GATED=t is not None, BIAS=bias is not None, RELU_SCALE=t_out is not None, ADD_INPUT=add_input,
                BLOCK_M=BLOCK_M, BLOCK_R=BLOCK_K, BLOCK_C=BLOCK_N, PREC=precision, GPU=_compiled(dev))
    return out


def grouped_linear(x: torch.Tensor, offsets: list[int], mlps: list[int], w: torch.Tensor, b: torch.Tensor, *,
                   scale: torch.Tensor | None = None, out: torch.Tensor | None = None,
                   t_out: torch.Tensor | None = None, precision: str = "ieee"):
    """y[rows_g] = x[rows_g] @ w[mlps[g]]^T + b[mlps[g]] for every group g, in one launch.

    x [rows, K], w [M, N, K], b [M, N] (views with unit last stride are fine: wr[:, layer]).
    With scale [M] (the residual block, N == K): returns (t, h') with t = relu(y) and
    h' = scale[mlps[g]] * t + x. out / t_out: where to write y (or h') / t (else new tensors).
    """
    residual = scale is not None
    if residual and t_out is None:
        t_out = x.new_empty(x.shape[0], w.shape[1])
    out = _launch_rows("x", x, offsets, mlps, w, out, r_axis=2, bias=b, scale=scale,
                       t_out=t_out if residual else None, add_input=residual, precision=precision)
    return (t_out, out) if residual else out


def grouped_dx(dy: torch.Tensor, offsets: list[int], mlps: list[int], w: torch.Tensor, *,
               gate: tuple[torch.Tensor, torch.Tensor] | None = None, residual: bool = False,
               out: torch.Tensor | None = None, precision: str = "ieee") -> torch.Tensor:
    """dx[rows_g] = g(dy[rows_g]) @ w[mlps[g]] (+ dy[rows_g] when residual), one launch.

    dy [rows, N], w [M, N, K]. gate = (t [rows, N], scale [M]): g(dy) = where(t <= 0, 0, dy * scale[m]),
    the backward of t = relu(.) scaled by the block's scalar; None: g(dy) = dy. out must not alias dy.
    """
    t, scale = gate if gate is not None else (None, None)
    return _launch_rows("dy", dy, offsets, mlps, w, out, r_axis=1, t=t, scale=scale, add_input=residual,
                        precision=precision)


def grouped_wgrad(dy: torch.Tensor, x: torch.Tensor, offsets: list[int], mlps: list[int], dw: torch.Tensor,
                  db: torch.Tensor, *, gate: tuple[torch.Tensor, torch.Tensor] | None = None,
                  dscale: torch.Tensor | None = None, precision: str = "ieee") -> None:
    """dw[m] += sum over m's groups of g(dy)^T x, db[m] += sum g(dy) (rows), in place, one launch.

    dy [rows, N], x [rows, K], dw [M, N, K], db [M, N]; gate as in grouped_dx. With a gate, dscale [M]
    (needed then) gets += sum of dy * t over m's rows: the gradient of the block's scalar.
    MLPs no row reaches keep their dw, db and dscale.
    """
    _check_precision(precision)
    if dy.dim() != 2 or x.dim() != 2 or dw.dim() != 3:
        raise ValueError(f"dy [rows, N], x [rows, K], dw [M, N, K] expected, got {tuple(dy.shape)}, "
                         f"{tuple(x.shape)}, {tuple(dw.shape)}")
    (rows, n_dim), (num_mlps, k_dim) = dy.shape, (dw.shape[0], dw.shape[2])
    dev = dy.device
    check_groups(offsets, mlps, rows, num_mlps)
    if (gate is None) != (dscale is None):
        raise ValueError("gate and dscale go together: the scale's gradient is taken where the gate is")
    t, scale = gate if gate is not None else (None, None)
    _check_all(dev, ("dy", dy, (rows, n_dim)), ("x", x, (rows, k_dim)), ("dw", dw, (num_mlps, n_dim, k_dim)),
               ("db", db, (num_mlps, n_dim)), ("t", t, (rows, n_dim)), ("scale", scale, (num_mlps,)),
               ("dscale", dscale, (num_mlps,)))
    sched = schedule(offsets, mlps, dev)
    used = sched.mlp_ids.numel()
    if not used:
        return
    n_tiles = triton.cdiv(n_dim, BLOCK_N)
    ds_part = dy.new_empty(used, n_tiles) if gate is not None else db  # db: never written without a gate
    with _on(dev):
        _wgrad_kernel[(used, n_tiles, triton.cdiv(k_dim, BLOCK_K))](
            dy, dy if t is None else t, x, db if scale is None else scale, dw, db, ds_part, sched.tiles,
            sched.mlp_ptr, n_dim, k_dim, dy.stride(0), x.stride(0), 0 if scale is None else scale.stride(0),
            dw.stride(0), dw.stride(1), db.stride(0), n_tiles, GATED=gate is not None, BLOCK_M=BLOCK_M,
            BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PREC=precision, GPU=_compiled(dev))
    if gate is not None:
        dscale.index_add_(0, sched.mlp_ids, ds_part.sum(1))
