"""Fused INR forward: coordinates -> noise -> normalise -> Fourier features -> ResMLP -> / B -> scatter.

One launch covers a whole Layout. A persistent grid walks the static tile schedule
`tiles[t] = (segment, first row)`; a program rebuilds a tile's coordinates from the segment
table (no coordinate table is read), runs the tensor's MLP and writes the weights straight into
the flat output buffer. Features and hidden activations of a tile go through that program's own
scratch tiles ([block_m, width] each, written and read back by the same program, so they stay in
L1/L2): every GEMM is then tiled in K and N and registers never hold a whole hidden row. There is
no [N, features] or [N, out] intermediate.

Semantics: docs/spec.md §2-§10, the same function as `backends/torch_backend.py`. Reference-mode
noise can send a row to the previous tensor's MLP (int(i + e) = i - 1 for e < 0, docs/spec.md §5):
a tile then evaluates both candidate MLPs and picks per row (only tiles that contain such a row pay).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from neumeta_fast.layout import SEGMENT_COLUMNS, SegmentTable

from .launch import PRECISIONS, LaunchConfig

# Columns of the segment table (Layout.segment_table), by name.
_SEG_WIDTH = tl.constexpr(len(SEGMENT_COLUMNS))
_SEG_INDEX = tl.constexpr(SEGMENT_COLUMNS.index("index"))
_SEG_ROWS = tl.constexpr(SEGMENT_COLUMNS.index("rows"))
_SEG_COLS = tl.constexpr(SEGMENT_COLUMNS.index("cols"))
_SEG_A_SIZE = tl.constexpr(SEGMENT_COLUMNS.index("a_size"))
_SEG_KERNEL = tl.constexpr(SEGMENT_COLUMNS.index("kernel_numel"))
_SEG_ROW_OFFSET = tl.constexpr(SEGMENT_COLUMNS.index("row_offset"))
_SEG_PARAM_OFFSET = tl.constexpr(SEGMENT_COLUMNS.index("param_offset"))
_SEG_COL_START = tl.constexpr(SEGMENT_COLUMNS.index("col_start"))
# noise sources
NOISE_NONE, NOISE_PHILOX, NOISE_TENSOR = 0, 1, 2


@triton.jit
def _mul_rn(a, b, GPU: tl.constexpr):
    # A product that the compiler may not fuse into a following add (the torch path rounds it).
    if GPU:
        return libdevice.mul_rn(a, b)
    else:
        return a * b


@triton.jit
def _sin_cos(angle, GPU: tl.constexpr):
    # libdevice's sinf/cosf reduce huge arguments (2^31 pi x) exactly, as torch's CUDA sin does.
    if GPU:
        return libdevice.sin(angle), libdevice.cos(angle)
    else:
        return tl.sin(angle), tl.cos(angle)


@triton.jit
def _uniform(bits):
    """24 random bits -> float32 in [0, 1), every value exact (csrc/include/neumeta/philox.cuh)."""
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _philox_noise(seed, k, grow, scale, FIRST_NOISY: tl.constexpr, CHANNELS: tl.constexpr, GPU: tl.constexpr):
    """Sample k's noise (U[0,1) - 0.5) * scale for global rows `grow`, six columns (docs/spec.md §4).

    Philox4x32-10 keyed by the seed, counters (row low word, k, 0, row high word) for columns 0-3 and
    (row low word, k, 1, row high word) for columns 4, 5: the CUDA kernel's stream, value for value.
    Samples before FIRST_NOISY stay clean (sample 0 when averaging); "channels" keeps columns 1, 2 only.
    """
    lo = grow.to(tl.uint32)
    hi = (grow >> 32).to(tl.uint32)
    sample = (grow * 0 + k).to(tl.uint32)
    zero = sample * 0
    a0, a1, a2, a3 = tl.philox(seed, lo, sample, zero, hi)
    b0, b1, _, _ = tl.philox(seed, lo, sample, zero + 1, hi)
    keep = k >= FIRST_NOISY
    fzero = tl.zeros(grow.shape, tl.float32)
    n1 = tl.where(keep, _mul_rn(_uniform(a1) - 0.5, scale, GPU), fzero)
    n2 = tl.where(keep, _mul_rn(_uniform(a2) - 0.5, scale, GPU), fzero)
    if CHANNELS:
        return fzero, n1, n2, fzero, fzero, fzero
    else:
        return (tl.where(keep, _mul_rn(_uniform(a0) - 0.5, scale, GPU), fzero), n1, n2,
                tl.where(keep, _mul_rn(_uniform(a3) - 0.5, scale, GPU), fzero),
                tl.where(keep, _mul_rn(_uniform(b0) - 0.5, scale, GPU), fzero),
                tl.where(keep, _mul_rn(_uniform(b1) - 0.5, scale, GPU), fzero))


@triton.jit
def _pick(j, x0, x1, x2, x3, x4, x5):
    """[BM, BD] tile of x_j: column-wise choice among the six per-row coordinates."""
    v = tl.where(j == 1, x1[:, None], x0[:, None])
    v = tl.where(j == 2, x2[:, None], v)
    v = tl.where(j == 3, x3[:, None], v)
    v = tl.where(j == 4, x4[:, None], v)
    return tl.where(j == 5, x5[:, None], v)


@triton.jit
def _features(d0, x0, x1, x2, x3, x4, x5, freq_ptr, D, BLOCK_D: tl.constexpr, GPU: tl.constexpr):
    """Feature columns d0 .. d0+BLOCK_D: x (6) then per frequency k, per dim j: sin, cos."""
    d = d0 + tl.arange(0, BLOCK_D)
    e = tl.maximum(d - 6, 0)
    ident = d < 6
    j = tl.where(ident, d, (e % 12) // 2)
    freq = tl.load(freq_ptr + e // 12, mask=(d >= 6) & (d < D), other=0.0)
    xj = _pick(j[None, :], x0, x1, x2, x3, x4, x5)
    s, c = _sin_cos(xj * freq[None, :], GPU)
    f = tl.where(ident[None, :], xj, tl.where((e % 2 == 0)[None, :], s, c))
    return tl.where((d < D)[None, :], f, 0.0)


@triton.jit
def _dot(a, b, acc, PREC: tl.constexpr):
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PREC == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16), acc)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _linear(src, dst, w_ptr, b_ptr, scale_ptr, K, N, SW: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, RESIDUAL: tl.constexpr, PREC: tl.constexpr):
    """dst = relu(src @ W^T + b), or with RESIDUAL: dst = s * relu(src @ W^T + b) + src.

    src, dst: [BLOCK_M, SW] row-major scratch tiles; W [N, K] row-major. K and N are both tiled,
    so only [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N] operands are ever held in registers.
    """
    rows = tl.arange(0, BLOCK_M)[:, None]
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(src + rows * SW + k[None, :])
            w = tl.load(w_ptr + n[None, :] * K + k[:, None], mask=(k[:, None] < K) & (n[None, :] < N), other=0.0)
            acc = _dot(a, w, acc, PREC)
        y = acc + tl.load(b_ptr + n, mask=n < N, other=0.0)[None, :]
        y = tl.where(y < 0.0, 0.0, y)  # ReLU that keeps NaN, as torch.relu: an overflow stays visible
        if RESIDUAL:
            y = tl.load(scale_ptr) * y + tl.load(src + rows * SW + n[None, :])
        tl.store(dst + rows * SW + n[None, :], y)
    tl.debug_barrier()  # dst is read next by other threads of this program


@triton.jit
def _mlp(m, feat, buf_a, buf_b, w0_ptr, b0_ptr, wr_ptr, br_ptr, sc_ptr, wo_ptr, bo_ptr, D, H, O, NB,
         SW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    """MLP m on the features in scratch `feat`: [BLOCK_M, OP] outputs (columns >= O are 0).

    The hidden tile ping-pongs between the program's scratch tiles buf_a / buf_b (written and read
    back by the same program: it stays in L1/L2). Padding columns stay 0 (masked weights and biases).
    """
    m = m.to(tl.int64)
    _linear(feat, buf_a, w0_ptr + m * H * D, b0_ptr + m * H, sc_ptr, D, H, SW, BLOCK_M, BLOCK_K, BLOCK_K,
            False, PREC)
    src, dst = buf_a, buf_b
    for blk in range(NB):
        layer = m * NB + blk
        _linear(src, dst, wr_ptr + layer * H * H, br_ptr + layer * H, sc_ptr + layer, H, H, SW, BLOCK_M, BLOCK_K,
                BLOCK_K, True, PREC)
        src, dst = dst, src
    rows = tl.arange(0, BLOCK_M)[:, None]
    oc = tl.arange(0, OP)
    out = tl.zeros((BLOCK_M, OP), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(wo_ptr + (m * O + oc[None, :]) * H + k[:, None], mask=(k[:, None] < H) & (oc[None, :] < O),
                    other=0.0)
        out = _dot(tl.load(src + rows * SW + k[None, :]), w, out, PREC)
    tl.debug_barrier()  # the scratch tiles are rewritten by the next MLP evaluation
    return out + tl.load(bo_ptr + m * O + oc, mask=oc < O, other=0.0)[None, :]


@triton.jit
def _write_features(feat, x0, x1, x2, x3, x4, x5, freq_ptr, D, SW: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_K: tl.constexpr, GPU: tl.constexpr):
    """The tile's features into scratch, 16 columns at a time (sin/cos are register-hungry), zero-padded
    up to a multiple of BLOCK_K (the first layer's K loop reads whole BLOCK_K steps)."""
    rows = tl.arange(0, BLOCK_M)[:, None]
    for d0 in range(0, D, BLOCK_K):
        for d1 in range(d0, d0 + BLOCK_K, 16):
            d = d1 + tl.arange(0, 16)
            tl.store(feat + rows * SW + d[None, :], _features(d1, x0, x1, x2, x3, x4, x5, freq_ptr, D, 16, GPU))
    tl.debug_barrier()


@triton.jit(do_not_specialize=["num_rows", "num_tensors", "num_tiles", "seed"])
def _inr_forward_kernel(out_ptr, tiles_ptr, seg_ptr, freq_ptr, noise_ptr, scratch_ptr,
                        w0_ptr, b0_ptr, wr_ptr, br_ptr, sc_ptr, wo_ptr, bo_ptr,
                        num_rows, num_tensors, num_tiles, norm, noise_scale, seed, D, H, O, NB,
                        SAMPLES: tl.constexpr, FIRST_NOISY: tl.constexpr, NOISE: tl.constexpr,
                        ROUTED: tl.constexpr, CHANNELS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                        SW: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, GPU: tl.constexpr):
    # this program's scratch: features, then two hidden tiles, each [BLOCK_M, SW]
    pid = tl.program_id(0)
    feat = scratch_ptr + pid.to(tl.int64) * (3 * BLOCK_M * SW)
    buf_a = feat + BLOCK_M * SW
    buf_b = buf_a + BLOCK_M * SW
    for t in range(pid, num_tiles, tl.num_programs(0)):  # persistent: the scratch is per program
        seg = tl.load(tiles_ptr + 2 * t).to(tl.int64)
        r = tl.load(tiles_ptr + 2 * t + 1) + tl.arange(0, BLOCK_M)
        meta = seg_ptr + seg * _SEG_WIDTH
        index = tl.load(meta + _SEG_INDEX)
        rows = tl.load(meta + _SEG_ROWS)
        cols = tl.load(meta + _SEG_COLS)
        kernel = tl.load(meta + _SEG_KERNEL)
        param_offset = tl.load(meta + _SEG_PARAM_OFFSET)
        col_start = tl.load(meta + _SEG_COL_START)
        valid = r < rows
        grow = tl.load(meta + _SEG_ROW_OFFSET) + r
        # exact coordinates [i, a, b, L, A, B] (b = 0, B = 1 for 1-D tensors: cols is 1 there), docs/spec.md §2
        fzero = tl.zeros((BLOCK_M,), dtype=tl.float32)
        e0 = fzero + index.to(tl.float32)
        e1 = (r // cols).to(tl.float32)
        e2 = (r % cols).to(tl.float32)
        e3 = fzero + num_tensors
        e4 = fzero + tl.load(meta + _SEG_A_SIZE).to(tl.float32)
        e5 = fzero + cols.to(tl.float32)
        acc = tl.zeros((BLOCK_M, OP), dtype=tl.float32)
        for k in range(SAMPLES):
            c0, c1, c2, c3, c4, c5 = e0, e1, e2, e3, e4, e5
            if NOISE == 1:
                n0, n1, n2, n3, n4, n5 = _philox_noise(seed, k, grow, noise_scale, FIRST_NOISY, CHANNELS, GPU)
                c0, c1, c2, c3, c4, c5 = c0 + n0, c1 + n1, c2 + n2, c3 + n3, c4 + n4, c5 + n5
            elif NOISE == 2:
                base = noise_ptr + (k * num_rows + grow) * 6
                c1 += tl.load(base + 1, mask=valid, other=0.0)
                c2 += tl.load(base + 2, mask=valid, other=0.0)
                if not CHANNELS:
                    c0 += tl.load(base, mask=valid, other=0.0)
                    c3 += tl.load(base + 3, mask=valid, other=0.0)
                    c4 += tl.load(base + 4, mask=valid, other=0.0)
                    c5 += tl.load(base + 5, mask=valid, other=0.0)
            # x = c / norm, then x[:3] /= x[3:] (correctly rounded divisions, in this order: docs/spec.md §6)
            x3 = tl.math.div_rn(c3, norm)
            x4 = tl.math.div_rn(c4, norm)
            x5 = tl.math.div_rn(c5, norm)
            x0 = tl.math.div_rn(tl.math.div_rn(c0, norm), x3)
            x1 = tl.math.div_rn(tl.math.div_rn(c1, norm), x4)
            x2 = tl.math.div_rn(tl.math.div_rn(c2, norm), x5)
            _write_features(feat, x0, x1, x2, x3, x4, x5, freq_ptr, D, SW, BLOCK_M, BLOCK_K, GPU)
            y = _mlp(index, feat, buf_a, buf_b, w0_ptr, b0_ptr, wr_ptr, br_ptr, sc_ptr, wo_ptr, bo_ptr, D, H, O, NB,
                     SW, BLOCK_M, BLOCK_K, OP, PREC)
            if ROUTED:
                # int() of the noisy layer column truncates toward zero: i or i - 1 for |noise| < 1/2
                prev = (c0.to(tl.int32) != index) & valid
                if tl.max(prev.to(tl.int32), axis=0) > 0:
                    y_prev = _mlp(index - 1, feat, buf_a, buf_b, w0_ptr, b0_ptr, wr_ptr, br_ptr, sc_ptr, wo_ptr,
                                  bo_ptr, D, H, O, NB, SW, BLOCK_M, BLOCK_K, OP, PREC)
                    y = tl.where(prev[:, None], y_prev, y)
            acc += tl.math.div_rn(y, c5[:, None])
        if SAMPLES > 1:
            acc = tl.math.div_rn(acc, tl.full((BLOCK_M, OP), SAMPLES, tl.float32))
        oc = tl.arange(0, OP)
        dst = out_ptr + param_offset + r[:, None] * kernel + (oc[None, :] - col_start)
        keep = valid[:, None] & (oc[None, :] >= col_start) & (oc[None, :] < col_start + kernel)
        tl.store(dst, acc, mask=keep)


@triton.jit(do_not_specialize=["num_rows", "seed"])
def _philox_noise_kernel(out_ptr, num_rows, noise_scale, seed, FIRST_NOISY: tl.constexpr, CHANNELS: tl.constexpr,
                         BLOCK: tl.constexpr, GPU: tl.constexpr):
    k = tl.program_id(1)
    grow = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = grow < num_rows
    n0, n1, n2, n3, n4, n5 = _philox_noise(seed, k, grow, noise_scale, FIRST_NOISY, CHANNELS, GPU)
    base = out_ptr + (k * num_rows + grow) * 6
    tl.store(base, n0, mask=valid)
    tl.store(base + 1, n1, mask=valid)
    tl.store(base + 2, n2, mask=valid)
    tl.store(base + 3, n3, mask=valid)
    tl.store(base + 4, n4, mask=valid)
    tl.store(base + 5, n5, mask=valid)


def _first_noisy(samples: int) -> int:
    return 1 if samples > 1 else 0  # averaging keeps sample 0 clean (noise.noisy_samples)


def interpreted() -> bool:
    """Whether these kernels run in Triton's CPU interpreter (fixed when triton built them, at import)."""
    return isinstance(_inr_forward_kernel, InterpretedFunction)


def _on_gpu(t: torch.Tensor) -> bool:
    return t.is_cuda and not interpreted()


def inr_forward(weights: tuple[torch.Tensor, ...], segs: torch.Tensor, tiles: torch.Tensor, freqs: torch.Tensor,
                *, numel: int, num_rows: int, num_tensors: int, norm: float, samples: int, noise_scale: float,
                noise_mode: str, seed: int, noise: torch.Tensor | None, precision: str, cfg: LaunchConfig,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the fused forward over every tile; returns the flat float32 [numel] weights.

    weights: stacked (w0 [L,H,D], b0 [L,H], wr [L,NB,H,H], br [L,NB,H], sc [L,NB], wo [L,O,H], bo [L,O]).
    noise: explicit raw [samples, num_rows, 6] noise (used as given), else Philox noise from `seed`
    when noise_scale > 0. `tiles` must have been built with cfg.block_m rows per tile.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if cfg.block_m < 16 or cfg.block_m & (cfg.block_m - 1):
        raise ValueError(f"block_m must be a power of two >= 16, got {cfg.block_m}")
    w0, b0, wr, br, sc, wo, bo = (w.detach().contiguous() for w in weights)
    _, H, D = w0.shape
    NB, O = wr.shape[1], wo.shape[1]
    if NB == 0:  # no residual block: pass a valid pointer that is never read
        wr = br = sc = w0
    if out is None:
        out = torch.empty(numel, dtype=torch.float32, device=w0.device)
    elif out.shape != (numel,) or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 [{numel}] buffer, got {out.dtype} {tuple(out.shape)}")
    if noise is not None:
        source, noise_buf = NOISE_TENSOR, noise.contiguous()
    else:
        source, noise_buf = (NOISE_PHILOX if noise_scale > 0 else NOISE_NONE), out
    gpu = _on_gpu(out)
    num_tiles = tiles.shape[0]
    programs = min(num_tiles, cfg.max_programs(out.device, gpu))
    sw = cfg.scratch_width(D, H)
    scratch = torch.empty(programs * 3 * cfg.block_m * sw, dtype=torch.float32, device=out.device)
    with torch.cuda.device(out.device) if out.is_cuda else nullcontext():
        _inr_forward_kernel[(programs,)](
            out, tiles, segs, freqs, noise_buf, scratch, w0, b0, wr, br, sc, wo, bo,
            num_rows, num_tensors, num_tiles, float(norm), float(noise_scale), int(seed), D, H, O, NB,
            SAMPLES=samples, FIRST_NOISY=_first_noisy(samples), NOISE=source,
            ROUTED=noise_mode == "reference" and source != NOISE_NONE, CHANNELS=noise_mode == "channels",
            BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, SW=sw, OP=cfg.out_pad, PREC=precision, GPU=gpu,
            num_warps=cfg.num_warps)
    return out


def philox_noise(num_rows: int, samples: int, noise_scale: float, noise_mode: str, seed: int,
                 device: torch.device) -> torch.Tensor:
    """The noise the forward kernel draws for `seed`, realised: float32 [samples, num_rows, 6].

    Already restricted to the mode's columns, with zeros for the clean sample 0 when averaging:
    adding it to the coordinates reproduces the kernel's noisy coordinates exactly.
    """
    out = torch.empty(samples, num_rows, 6, dtype=torch.float32, device=device)
    block = 256
    grid = (triton.cdiv(num_rows, block), samples)
    with torch.cuda.device(device) if out.is_cuda else nullcontext():
        _philox_noise_kernel[grid](out, num_rows, float(noise_scale), int(seed), FIRST_NOISY=_first_noisy(samples),
                                   CHANNELS=noise_mode == "channels", BLOCK=block, GPU=_on_gpu(out))
    return out

