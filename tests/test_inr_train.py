"""The training path (neumeta_fast/backends/torch_train.py, csrc/cpu/inr_train.cpp): values and
gradients against the plain reference and eager autograd, the C++ op against its torch twin, gradcheck
of the op's backward in float64, and torch.compile of a trainer step through the custom op."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from neumeta_fast import INR, Layout, _C, generate
from neumeta_fast.backends import torch_backend, torch_train
from neumeta_fast.backends.request import Request
from neumeta_fast.reference import reference_generate

NORM = 48.0  # not a power of two: normalisation order matters
SHAPES = [("conv", (5, 7, 3, 3)), ("bias", (5,)), ("fc", (4, 5)), ("proj", (6, 5, 1, 1)), ("odd", (3, 1))]


@pytest.fixture(autouse=True)
def _seeded():
    """Fixed draws in every test: what an earlier test left in the global RNG does not decide a pass."""
    torch.manual_seed(0)


def _stacked_tail(num_mlps, blocks, hidden, out_dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(num_mlps, blocks, hidden, hidden), (num_mlps, blocks, hidden), (num_mlps, blocks),
              (num_mlps, out_dim, hidden), (num_mlps, out_dim)]
    wr, br, sc, wo, bo = [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]
    return wr / math.sqrt(hidden), br, sc, wo / math.sqrt(hidden), bo


def _eager_tail(z0, offsets, mlps, wr, br, sc, wo, bo):
    """The ResMLP after its first layer as the torch backend's eager path computes it, group by group."""
    outs = []
    for g, m in enumerate(mlps):
        h = torch.relu(z0[offsets[g]:offsets[g + 1]])
        for b in range(wr.shape[1]):
            h = torch.addcmul(h, F.linear(h, wr[m, b], br[m, b]).relu(), sc[m, b])
        outs.append(F.linear(h, wo[m], bo[m]))
    return torch.cat(outs)


def _grads(fn, inputs, probe):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    (out * probe).sum().backward()
    return out.detach(), [x.grad for x in inputs]


def _rel(a, b):
    """Largest difference relative to b's largest magnitude (gradients: None on both sides is equal)."""
    if a is None or b is None:
        assert a is None and b is None, "one side has a gradient, the other none"
        return 0.0
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


GROUPS = [  # (offsets, mlps): empty groups, an MLP used twice, MLPs never used, one row
    ([0, 7, 7, 40, 41], [2, 0, 2, 3]),
    ([0, 64], [1]),
    ([0, 1, 130], [0, 4]),
]


@pytest.mark.parametrize("offsets,mlps", GROUPS)
@pytest.mark.parametrize("blocks", [0, 1, 3])
def test_cpp_op_equals_eager_autograd_and_its_torch_twin(offsets, mlps, blocks):
    hidden, out_dim = 24, 9
    weights = _stacked_tail(5, blocks, hidden, out_dim, seed=blocks)
    draws = torch.Generator().manual_seed(len(offsets) + blocks)  # fixed: a pre-activation within rounding
    z0 = torch.randn(offsets[-1], hidden, generator=draws)      # of 0 flips a ReLU between float32 orders
    probe = torch.randn(offsets[-1], out_dim, generator=draws)
    want, want_grads = _grads(lambda z, *w: _eager_tail(z, offsets, mlps, *w), [z0, *weights], probe)
    got, got_grads = _grads(lambda z, *w: torch_train.inr_train(z, offsets, mlps, *w)[0], [z0, *weights], probe)
    assert _rel(got, want) < 1e-6
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        if w is None:  # no blocks: eager never reads wr, br, sc; the op returns their (empty) gradients
            assert g.numel() == 0
        else:  # a residual scalar's gradient (input 3) sums every hidden unit and may cancel far below them
            assert _rel(g, w) < (1e-4 if i == 3 else 2e-5)
    twin = torch_train._forward_torch(z0, offsets, mlps, *weights)
    cpp = _C.inr_train_forward(z0, offsets, mlps, *weights)
    for a, b in zip(cpp, twin):
        assert _rel(a, b) < 1e-6
    gout = torch.randn(cpp[0].shape, generator=draws)
    wr, _, sc, wo, _ = weights
    # Against the twin in float64, with a bound from the same sums over absolute values: a residual
    # scalar's gradient sums every hidden unit and can cancel to far below its terms.
    args = (gout, cpp[1], cpp[2], offsets, mlps, wr, sc, wo)
    exact = torch_train._backward_torch(*(x.double() if torch.is_tensor(x) else x for x in args))
    bound = torch_train._backward_torch(*(x.double().abs() if torch.is_tensor(x) else x for x in args))
    for a, b, scale in zip(_C.inr_train_backward(*args), exact, bound):
        assert ((a.double() - b).abs() <= 1e-5 * scale + 1e-12).all()


def test_backward_passes_gradcheck_in_float64():
    """The op's hand-written backward (its torch twin runs float64) against finite differences."""
    offsets, mlps = [0, 3, 3, 7], [1, 0, 1]
    weights = _stacked_tail(2, 2, 5, 3, dtype=torch.float64)
    z0 = torch.randn(7, 5, dtype=torch.float64)
    inputs = [x.requires_grad_() for x in (z0, *weights)]
    assert torch.autograd.gradcheck(lambda z, *w: torch_train.inr_train(z, offsets, mlps, *w)[0], inputs)


def test_outputs_do_not_depend_on_what_the_reused_buffers_held():
    """The C++ op hands out recycled buffers: fill them with NaN through a first call, then check a second."""
    offsets, mlps = [0, 40, 70], [0, 1]
    weights = _stacked_tail(2, 2, 16, 9)
    gout = torch.randn(70, 9)
    out, h, t = _C.inr_train_forward(torch.full((70, 16), float("nan")), offsets, mlps, *weights)
    _C.inr_train_backward(gout, h, t, offsets, mlps, weights[0], weights[2], weights[3])
    del out, h, t
    z0 = torch.randn(70, 16)
    got = _C.inr_train_forward(z0, offsets, mlps, *weights)
    twin = torch_train._forward_torch(z0, offsets, mlps, *weights)
    grads = _C.inr_train_backward(gout, got[1], got[2], offsets, mlps, weights[0], weights[2], weights[3])
    assert all(torch.isfinite(x).all() for x in (*got, *grads))
    assert all(_rel(a, b) < 1e-6 for a, b in zip(got, twin))


def test_nan_in_a_parameter_reaches_the_output():
    weights = list(_stacked_tail(1, 2, 8, 9))
    weights[1][0, 1, 3] = float("nan")  # a block bias
    out = torch_train.inr_train(torch.randn(10, 8), [0, 10], [0], *weights)[0]
    assert torch.isnan(out).any()


@pytest.mark.parametrize("bad,match", [
    (dict(offsets=[0, 5], mlps=[0, 1]), "one entry more"),
    (dict(offsets=[0, 9]), "run from 0"),
    (dict(offsets=[0, 6, 4, 10], mlps=[0, 0, 0]), "must not decrease"),
    (dict(mlps=[7]), "outside"),
])
def test_cpp_op_names_bad_groups(bad, match):
    args = dict(offsets=[0, 10], mlps=[0])
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        _C.inr_train_forward(torch.randn(10, 8), args["offsets"], args["mlps"], *_stacked_tail(2, 1, 8, 3))


def test_cpp_op_names_bad_tensors():
    wr, br, sc, wo, bo = _stacked_tail(2, 1, 8, 3)
    with pytest.raises(ValueError, match="z0 must be a contiguous float32"):
        _C.inr_train_forward(torch.randn(10, 8, dtype=torch.float64), [0, 10], [0], wr, br, sc, wo, bo)
    with pytest.raises(ValueError, match="br must be"):
        _C.inr_train_forward(torch.randn(10, 8), [0, 10], [0], wr, br[:, :, :4], sc, wo, bo)
    with pytest.raises(ValueError, match="wr must be 4-D"):
        _C.inr_train_forward(torch.randn(10, 8), [0, 10], [0], wr[0], br, sc, wo, bo)


# -- generate() with gradients -----------------------------------------------------------------------------
def _inr(seed=0, **kw):
    torch.manual_seed(seed)
    return INR(len(SHAPES), **{**dict(hidden_dim=32, num_layers=3, num_freqs=5), **kw})


def _train_grads(inr, fn, probe):
    """(outputs, gradients): the residual scalars' gradients as one vector, "scalars", since each is a sum
    over every hidden unit that cancels to a small number: compared together, against their largest."""
    inr.zero_grad(set_to_none=True)
    out = fn()
    sum((out[n] * probe[n]).sum() for n in out).backward()
    grads = {n: p.grad for n, p in inr.named_parameters() if p.dim() > 0}
    scalars = [p.grad for p in inr.parameters() if p.dim() == 0 and p.grad is not None]
    grads["scalars"] = torch.stack(scalars) if scalars else None
    return {n: w.detach() for n, w in out.items()}, grads


NOISE_CASES = [("channels", 0.0, 1), ("channels", 0.7, 1), ("reference", 1.0, 1), ("reference", 0.5, 3),
               ("channels", 0.5, 2)]


@pytest.mark.parametrize("mode,noise,samples", NOISE_CASES)
def test_generate_with_grad_equals_the_reference(mode, noise, samples):
    inr = _inr(seed=samples)
    layout = Layout.from_shapes(SHAPES)
    g = torch.Generator().manual_seed(11)
    eps = [(torch.rand(layout.num_rows, 6, generator=g) - 0.5) * noise for _ in range(samples)] if noise else None
    if eps is not None:
        eps[0].zero_()  # sample 0 is noise-free
    probe = {n: torch.randn(s) for n, s in SHAPES}
    want, want_g = _train_grads(inr, lambda: reference_generate(inr, SHAPES, NORM, noise=eps, noise_mode=mode), probe)
    kw = dict(noise=noise, samples=samples, noise_mode=mode, noise_tensor=None if eps is None else torch.stack(eps))
    got, got_g = _train_grads(inr, lambda: generate(inr, layout, norm=NORM, backend="torch", **kw), probe)
    for n in want:
        assert _rel(got[n], want[n]) < 2e-6, n
    for n in want_g:
        assert _rel(got_g[n], want_g[n]) < 5e-5, n


def test_generate_with_grad_equals_the_eager_path_on_a_subset_layout():
    """A tensor subset keeps the MLP indices of the full layout (the trainer's `ratio`)."""
    inr = _inr(seed=3, num_layers=2)
    layout = Layout.from_shapes(SHAPES).subset(["fc", "conv"])
    probe = {"fc": torch.randn(4, 5), "conv": torch.randn(5, 7, 3, 3)}
    req = Request(NORM, 1, 0.0, "channels", None, None, torch.float32, torch.device("cpu"))
    want, want_g = _train_grads(inr, lambda: layout.views(torch_backend.inr_forward_eager(inr, layout, req, True)), probe)
    got, got_g = _train_grads(inr, lambda: layout.views(torch_train.inr_forward(inr, layout, req)), probe)
    for n in want:
        assert _rel(got[n], want[n]) < 2e-6
    for n in want_g:
        if want_g[n] is None:  # MLPs of tensors outside the subset get no gradient at all
            assert got_g[n] is None, n
        else:
            assert _rel(got_g[n], want_g[n]) < 5e-5, n


@settings(max_examples=12, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 4])), min_size=1,
                     max_size=4),
       layers=st.integers(1, 3), noisy=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_fuzz_generate_with_grad_against_the_reference(rows, layers, noisy, seed):
    shapes = [(f"t{i}", (a, b) if k == 1 else (a,) if k == 2 else (a, b, 1, 1)) for i, (a, b, k) in enumerate(rows)]
    torch.manual_seed(seed)
    inr = INR(len(shapes), hidden_dim=16, num_layers=layers, num_freqs=3)
    layout = Layout.from_shapes(shapes)
    eps = [(torch.rand(layout.num_rows, 6) - 0.5) * 0.8] if noisy else None
    probe = {n: torch.randn(s) for n, s in shapes}
    want, want_g = _train_grads(inr, lambda: reference_generate(inr, shapes, NORM, noise=eps, noise_mode="channels"),
                                probe)
    got, got_g = _train_grads(inr, lambda: generate(inr, layout, norm=NORM, backend="torch", noise_mode="channels",
                                                    noise_tensor=None if eps is None else torch.stack(eps)), probe)
    for n in want:  # single-element tensors: no larger values to measure rounding against
        assert _rel(got[n], want[n]) < 2e-5
    for n in want_g:
        assert _rel(got_g[n], want_g[n]) < 1e-4, n


def test_custom_op_registration_passes_torch_opcheck():
    """Schema, fake (meta) implementation and autograd registration, as torch.compile relies on them."""
    offsets, mlps = [0, 5, 12], [1, 0]
    z0 = torch.randn(12, 8, requires_grad=True)
    weights = [w.requires_grad_() for w in _stacked_tail(2, 2, 8, 3)]
    torch.library.opcheck(torch.ops.neumeta_fast.inr_train.default, (z0, offsets, mlps, *weights),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_trainer_step_compiles_with_the_custom_op():
    """torch.compile of a generate + loss + backward step gives the eager step's gradients."""
    inr = _inr(seed=5, num_layers=2)
    layout = Layout.from_shapes(SHAPES)
    target = {n: torch.randn(s) for n, s in SHAPES}

    def step():
        out = generate(inr, layout, norm=NORM, backend="torch", check_finite=False)
        return sum(((out[n] - target[n]) ** 2).mean() for n in out)

    inr.zero_grad(set_to_none=True)
    step().backward()
    want = {n: p.grad.clone() for n, p in inr.named_parameters()}
    inr.zero_grad(set_to_none=True)
    torch.compile(step, backend="aot_eager")().backward()
    for n, p in inr.named_parameters():
        assert _rel(p.grad, want[n]) < 1e-5, n


# -- the GPU twin's grouped Triton GEMMs (kernels/grouped_mm.py), forced onto CPU tensors in the interpreter --
@pytest.fixture
def grouped_kernels(monkeypatch):
    """The op on CPU float32 through its torch twin with the grouped kernels, counting their launches."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the grouped kernels on CPU tensors: needs the Triton interpreter")
    gm = pytest.importorskip("neumeta_fast.kernels.grouped_mm")
    launches = {}
    for name in ("grouped_linear", "grouped_dx", "grouped_wgrad"):
        def counted(*args, _fn=getattr(gm, name), _name=name, **kw):
            launches[_name] = launches.get(_name, 0) + 1
            return _fn(*args, **kw)
        monkeypatch.setattr(gm, name, counted)
    monkeypatch.setattr(torch_train, "GROUPED_ON_CPU", True)
    monkeypatch.setattr(torch_train, "_use_cpp", lambda t: False)
    return launches


@pytest.mark.parametrize("offsets,mlps", GROUPS)
@pytest.mark.parametrize("blocks", [0, 2])
def test_grouped_kernels_equal_the_torch_loops_one_launch_per_layer(grouped_kernels, offsets, mlps, blocks):
    hidden, out_dim = 24, 9
    weights = _stacked_tail(5, blocks, hidden, out_dim, seed=blocks)
    draws = torch.Generator().manual_seed(len(offsets) + blocks)
    z0 = torch.randn(offsets[-1], hidden, generator=draws)
    probe = torch.randn(offsets[-1], out_dim, generator=draws)
    got, got_grads = _grads(lambda z, *w: torch_train.inr_train(z, offsets, mlps, *w)[0], [z0, *weights], probe)
    assert grouped_kernels == {name: blocks + 1 for name in ("grouped_linear", "grouped_dx", "grouped_wgrad")}
    torch_train.GROUPED_ON_CPU = False  # the same op through the torch loops (monkeypatch restores it)
    want, want_grads = _grads(lambda z, *w: torch_train.inr_train(z, offsets, mlps, *w)[0], [z0, *weights], probe)
    assert _rel(got, want) < 1e-6
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert _rel(g, w) < (1e-4 if i == 3 else 2e-5)  # input 3: the residual scalars (see above)


@pytest.mark.parametrize("mode,noise,samples", [("reference", 1.0, 1), ("channels", 0.7, 1)])
def test_generate_with_grad_through_the_grouped_kernels_equals_the_reference(grouped_kernels, mode, noise, samples):
    test_generate_with_grad_equals_the_reference(mode, noise, samples)
    assert grouped_kernels["grouped_dx"] > 0
