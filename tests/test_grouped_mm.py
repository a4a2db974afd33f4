"""The grouped GEMMs (kernels/grouped_mm.py) against plain per-group torch loops and autograd, in
float64; in Triton's CPU interpreter (small shapes: it is slow), on the GPU where there is one."""
import os

import pytest
import torch

pytest.importorskip("triton")

from neumeta_fast.kernels import grouped_mm as gm  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu")
NUM_MLPS = 5
# (offsets, mlps): an empty group, MLP 2 used twice, MLP 4 never, one-row groups, a group over two row tiles
GROUPS = [
    ([0, 7, 7, 40, 41, 150], [2, 0, 2, 3, 1]),
    ([0, 1], [4]),
    ([0, 0, 3], [1, 1]),
]
HIDDEN, OUT = 40, 70  # neither a multiple of the 32 / 64 tiles, both over one tile
ERR = {"ieee": 1e-5}  # float32 inputs: relative error to the float64 result (measured ~2e-7)
DROP_BITS = {"tf32": 13, "bf16": 16}  # mantissa bits each input format drops from float32


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _rand(*shape):
    return torch.randn(*shape, dtype=torch.float64).to(torch.float32).to(DEVICE)


def _rows(offsets):
    return [(offsets[g], offsets[g + 1]) for g in range(len(offsets) - 1)]


def _rel(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


def _round_inputs(t, precision):
    """t as the kernel's dot sees it: rounded to nearest-even to the precision's mantissa (see _dot)."""
    if precision == "ieee":
        return t
    drop = DROP_BITS[precision]
    i = t.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    i = ((i + (1 << (drop - 1)) - 1 + ((i >> drop) & 1)) >> drop) << drop
    return (i & 0xFFFFFFFF).to(torch.uint32).view(torch.float32)


def _loop_linear(x, offsets, mlps, w, b):
    """The reference: y[rows_g] = x[rows_g] @ w[m]^T + b[m], group by group, float64."""
    x, w, b = x.double(), w.double(), b.double()
    return torch.cat([x[r0:r1] @ w[m].T + b[m] for (r0, r1), m in zip(_rows(offsets), mlps)])


def _loop_block(x, offsets, mlps, w, b, s):
    """The residual block: t = relu(x W^T + b), h' = s t + x, group by group (autograd-able)."""
    outs = []
    for (r0, r1), m in zip(_rows(offsets), mlps):
        t = torch.relu(x[r0:r1] @ w[m].T + b[m])
        outs.append((t, s[m] * t + x[r0:r1]))
    return torch.cat([t for t, _ in outs]), torch.cat([h for _, h in outs])


def _nan(*shape):
    return torch.full(shape, float("nan"), device=DEVICE)


@pytest.mark.parametrize("offsets,mlps", GROUPS)
def test_linear_writes_every_row_and_equals_the_loop(offsets, mlps):
    x, w, b = _rand(offsets[-1], HIDDEN), _rand(NUM_MLPS, OUT, HIDDEN), _rand(NUM_MLPS, OUT)
    y = gm.grouped_linear(x, offsets, mlps, w, b, out=_nan(offsets[-1], OUT))
    assert _rel(y, _loop_linear(x, offsets, mlps, w, b)) < ERR["ieee"]


@pytest.mark.parametrize("offsets,mlps", GROUPS)
def test_residual_block_forward(offsets, mlps):
    x, w, b, s = _rand(offsets[-1], HIDDEN), _rand(NUM_MLPS, HIDDEN, HIDDEN), _rand(NUM_MLPS, HIDDEN), _rand(NUM_MLPS)
    t, h = gm.grouped_linear(x, offsets, mlps, w, b, scale=s, out=_nan(offsets[-1], HIDDEN),
                             t_out=_nan(offsets[-1], HIDDEN))
    want_t, want_h = _loop_block(x.double(), offsets, mlps, w.double(), b.double(), s.double())
    assert _rel(t, want_t) < ERR["ieee"] and _rel(h, want_h) < ERR["ieee"]


def test_strided_views_of_stacked_layers():
    """The training op passes wr[:, layer], br[:, layer], sc[:, layer]: views with row strides."""
    offsets, mlps = GROUPS[0]
    x = _rand(offsets[-1], HIDDEN)
    wr, br, sc = _rand(NUM_MLPS, 3, HIDDEN, HIDDEN), _rand(NUM_MLPS, 3, HIDDEN), _rand(NUM_MLPS, 3)
    h = torch.full((2, offsets[-1], HIDDEN), float("nan"), device=DEVICE)
    t, h1 = gm.grouped_linear(x, offsets, mlps, wr[:, 1], br[:, 1], scale=sc[:, 1], out=h[1], t_out=h[0])
    want_t, want_h = _loop_block(x.double(), offsets, mlps, wr[:, 1].double(), br[:, 1].double(), sc[:, 1].double())
    assert h1.data_ptr() == h[1].data_ptr() and _rel(h[0], want_t) < ERR["ieee"] and _rel(h[1], want_h) < ERR["ieee"]


@pytest.mark.parametrize("offsets,mlps", GROUPS)
def test_linear_backward_pieces_equal_autograd(offsets, mlps):
    x, w, b = _rand(offsets[-1], HIDDEN), _rand(NUM_MLPS, OUT, HIDDEN), _rand(NUM_MLPS, OUT)
    dy = _rand(offsets[-1], OUT)
    xd, wd, bd = (v.double().requires_grad_() for v in (x, w, b))
    _loop_linear(xd, offsets, mlps, wd, bd).backward(dy.double())
    dx = gm.grouped_dx(dy, offsets, mlps, w, out=_nan(offsets[-1], HIDDEN))
    dw0, db0 = _rand(NUM_MLPS, OUT, HIDDEN), _rand(NUM_MLPS, OUT)  # accumulated into; MLP 4 keeps its own
    dw, db = dw0.clone(), db0.clone()
    gm.grouped_wgrad(dy, x, offsets, mlps, dw, db)
    assert _rel(dx, xd.grad) < ERR["ieee"]
    assert _rel(dw, dw0.double() + wd.grad) < ERR["ieee"] and _rel(db, db0.double() + bd.grad) < ERR["ieee"]
    unused = sorted(set(range(NUM_MLPS)) - set(mlps))
    assert torch.equal(dw[unused], dw0[unused]) and torch.equal(db[unused], db0[unused])


@pytest.mark.parametrize("offsets,mlps", GROUPS)
def test_residual_block_backward_pieces_equal_autograd(offsets, mlps):
    """ReLU mask and scale fused into the dx and weight-gradient kernels; the scalar's gradient too."""
    x, w, b, s = _rand(offsets[-1], HIDDEN), _rand(NUM_MLPS, HIDDEN, HIDDEN), _rand(NUM_MLPS, HIDDEN), _rand(NUM_MLPS)
    dy = _rand(offsets[-1], HIDDEN)
    xd, wd, bd, sd = (v.double().requires_grad_() for v in (x, w, b, s))
    _loop_block(xd, offsets, mlps, wd, bd, sd)[1].backward(dy.double())
    t, _ = gm.grouped_linear(x, offsets, mlps, w, b, scale=s)
    dx = gm.grouped_dx(dy, offsets, mlps, w, gate=(t, s), residual=True, out=_nan(offsets[-1], HIDDEN))
    dw, db, ds = torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(s)
    gm.grouped_wgrad(dy, x, offsets, mlps, dw, db, gate=(t, s), dscale=ds)
    for got, want in [(dx, xd.grad), (dw, wd.grad), (db, bd.grad), (ds, sd.grad)]:
        assert _rel(got, want) < ERR["ieee"]


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_low_precision_error_is_at_most_twice_the_rounded_inputs(precision):
    """flash-attention's rule, against float64: the kernel's error at most 2x that of the exact product of
    the same inputs rounded to the precision (float32 accumulation adds next to nothing). Measured in the
    interpreter (K = 40), relative to the largest output: float32 1.9e-7, tf32 3.1e-4, bf16 2.5e-3."""
    offsets, mlps = GROUPS[0]
    x, w, b = _rand(offsets[-1], HIDDEN), _rand(NUM_MLPS, OUT, HIDDEN), _rand(NUM_MLPS, OUT)
    exact = _loop_linear(x, offsets, mlps, w, b)
    rounded = _rel(_loop_linear(_round_inputs(x, precision), offsets, mlps, _round_inputs(w, precision), b), exact)
    dy = _rand(offsets[-1], OUT)
    dw = torch.zeros_like(w)
    gm.grouped_wgrad(dy, x, offsets, mlps, dw, torch.zeros_like(b), precision=precision)
    wd = w.double().requires_grad_()
    _loop_linear(x.double(), offsets, mlps, wd, b.double()).backward(dy.double())
    errors = [_rel(gm.grouped_linear(x, offsets, mlps, w, b, precision=precision), exact),
              _rel(gm.grouped_dx(dy, offsets, mlps, w, precision=precision),
                   torch.cat([dy[r0:r1].double() @ w[m].double() for (r0, r1), m in zip(_rows(offsets), mlps)])),
              _rel(dw, wd.grad)]
    assert all(0 < e <= 2 * rounded for e in errors), (errors, rounded)


def test_schedule_orders_tiles_by_mlp():
    sched = gm.schedule([0, 70, 70, 71, 75], [2, 0, 2, 1], torch.device("cpu"), block_m=64)
    assert sched.tiles.tolist() == [[71, 75, 1], [0, 64, 2], [64, 70, 2], [70, 71, 2]]  # MLP 0: no rows
    assert sched.mlp_ptr.tolist() == [0, 1, 4] and sched.mlp_ids.tolist() == [1, 2]


def test_no_rows_launches_nothing():
    x, w, b = _rand(0, HIDDEN), _rand(NUM_MLPS, OUT, HIDDEN), _rand(NUM_MLPS, OUT)
    assert gm.grouped_linear(x, [0, 0], [3], w, b).shape == (0, OUT)
    dw = torch.zeros_like(w)
    gm.grouped_wgrad(_rand(0, OUT), x, [0, 0], [3], dw, torch.zeros_like(b))
    assert not dw.any()


@pytest.mark.parametrize("change,error", [
    (dict(offsets=[0, 10, 9]), "non-decreasing"),
    (dict(offsets=[0, 5]), "len\\(mlps\\) \\+ 1"),
    (dict(offsets=[0, 5, 8]), "from 0 to the row count 9"),
    (dict(mlps=[0, NUM_MLPS]), "index the 5 stacked MLPs"),
    (dict(x=torch.zeros(9, HIDDEN, dtype=torch.float64)), "x must be float32"),
    (dict(b=torch.zeros(NUM_MLPS, OUT + 1)), "b must have shape \\(5, 70\\)"),
    (dict(precision="fp8"), "precision must be one of"),
])
def test_bad_input_is_named(change, error):
    args = dict(x=torch.zeros(9, HIDDEN), offsets=[0, 4, 9], mlps=[0, 1], w=torch.zeros(NUM_MLPS, OUT, HIDDEN),
                b=torch.zeros(NUM_MLPS, OUT), precision="ieee")
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=error):
        gm.grouped_linear(**{k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in args.items()})
