"""generate() on the torch backend against the literal reference implementation (docs/spec.md)."""
import importlib
import random

import numpy as np
import pytest
import torch

from neumeta_fast import INR, Layout, backends, generate, generate_into
from neumeta_fast import noise as noise_lib
from neumeta_fast.reference import reference_generate

from helpers import random_inr, random_shapes

gen_module = importlib.import_module("neumeta_fast.generate")  # the attribute `neumeta_fast.generate` is the function


def case(seed: int):
    rng = random.Random(seed)
    shapes = random_shapes(rng, rng.randint(2, 7))
    return shapes, Layout.from_shapes(shapes), random_inr(len(shapes), seed)


def assert_close(got: dict, want: dict, rel: float = 1e-5):
    scale = max(w.abs().max().item() for w in want.values())
    for name in want:
        assert got[name].shape == want[name].shape, name
        err = (got[name] - want[name]).abs().max().item()
        assert err <= rel * scale, f"{name}: max abs error {err} > {rel} * {scale}"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm", [64.0, 48.0, 7.0])
def test_no_noise_equals_reference(seed, norm):
    shapes, layout, inr = case(seed)
    with torch.no_grad():
        assert_close(generate(inr, layout, norm=norm, backend="torch"), reference_generate(inr, shapes, norm))


@pytest.mark.parametrize("mode", noise_lib.NOISE_MODES)
@pytest.mark.parametrize("samples", [1, 4])
@pytest.mark.parametrize("seed", range(3))
def test_fixed_noise_equals_reference(mode, samples, seed):
    shapes, layout, inr = case(seed)
    eps = torch.rand(samples, layout.num_rows, 6) - 0.5  # s = 1: reference mode re-routes many rows
    with torch.no_grad():
        got = generate(inr, layout, norm=48, samples=samples, noise_mode=mode, noise_tensor=eps, backend="torch")
        want = reference_generate(inr, shapes, 48, noise=list(eps), noise_mode=mode)
    assert_close(got, want)


def test_reference_mode_noise_reroutes_rows():
    """The quirk the reference has: negative noise on column 0 picks the previous tensor's MLP."""
    shapes = [("a", (4, 4)), ("b", (4, 4))]
    layout, inr = Layout.from_shapes(shapes), random_inr(2, 0)
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[0, 16:, 0] = -0.25  # every row of "b" moves to MLP 0
    with torch.no_grad():
        ref = generate(inr, layout, norm=8, noise_tensor=eps, noise_mode="reference")["b"]
        chan = generate(inr, layout, norm=8, noise_tensor=eps, noise_mode="channels")["b"]
        clean = generate(inr, layout, norm=8)["b"]
    assert torch.equal(chan, clean)
    assert not torch.allclose(ref, clean)


@pytest.mark.parametrize("mode", noise_lib.NOISE_MODES)
def test_drawn_noise_is_reproducible_and_documented(mode):
    shapes, layout, inr = case(1)
    samples, scale = 3, 0.8
    with torch.no_grad():
        a = generate(inr, layout, norm=32, noise=scale, samples=samples, noise_mode=mode,
                     generator=torch.Generator().manual_seed(5))
        b = generate(inr, layout, norm=32, noise=scale, samples=samples, noise_mode=mode,
                     generator=torch.Generator().manual_seed(5))
        gen = torch.Generator().manual_seed(5)  # sample 0 clean, then one draw per noisy sample
        eps = torch.stack([torch.zeros(layout.num_rows, 6)] +
                          [noise_lib.draw(layout.num_rows, scale, gen, torch.device("cpu")) for _ in range(samples - 1)])
        c = generate(inr, layout, norm=32, samples=samples, noise_mode=mode, noise_tensor=eps)
        d = generate(inr, layout, norm=32, noise=scale, samples=samples, noise_mode=mode,
                     generator=torch.Generator().manual_seed(6))
    for name in a:
        assert torch.equal(a[name], b[name]) and torch.equal(a[name], c[name])
    assert any(not torch.equal(a[n], d[n]) for n in a)


@pytest.mark.parametrize("mode", noise_lib.NOISE_MODES)
def test_gradients_match_reference(mode):
    shapes, layout, inr = case(3)
    eps = torch.rand(2, layout.num_rows, 6) - 0.5
    probes = {name: torch.randn(shape) for name, shape in shapes}

    def grads(weights):
        inr.zero_grad()
        sum((weights[n] * probes[n]).sum() for n in probes).backward()
        return {n: p.grad.clone() for n, p in inr.named_parameters()}

    got = grads(generate(inr, layout, norm=48, samples=2, noise_mode=mode, noise_tensor=eps))
    want = grads(reference_generate(inr, shapes, 48, noise=list(eps), noise_mode=mode))
    for name in want:
        scale = want[name].abs().max().item() + 1e-12
        assert (got[name] - want[name]).abs().max().item() <= 1e-4 * scale, name


def test_paper_sized_inr_equals_reference():
    shapes = [("conv1.weight", (8, 16, 3, 3)), ("bn1.weight", (8,)), ("bn1.bias", (8,)),
              ("conv2.weight", (16, 8, 3, 3)), ("down.weight", (16, 8, 1, 1))]
    layout = Layout.from_shapes(shapes)
    inr = INR(len(shapes), hidden_dim=128, num_layers=8, num_freqs=32)  # F = 32: angles up to 2^31 pi
    with torch.no_grad():
        assert_close(generate(inr, layout, norm=64), reference_generate(inr, shapes, 64))


def test_bfloat16_is_close_but_not_silent():
    shapes, layout, inr = case(2)
    with torch.no_grad():
        exact = generate(inr, layout, norm=48)
        low = generate(inr, layout, norm=48, dtype=torch.bfloat16)
    scale = max(w.abs().max().item() for w in exact.values())
    err = max((low[n] - exact[n]).abs().max().item() for n in exact)
    assert 0 < err < 0.05 * scale
    assert all(w.dtype == torch.float32 for w in low.values())


def test_output_is_one_flat_buffer():
    _, layout, inr = case(4)
    with torch.no_grad():
        weights = generate(inr, layout, norm=16)
    first = next(iter(weights.values()))
    base = first.untyped_storage().data_ptr()
    assert all(w.untyped_storage().data_ptr() == base for w in weights.values())


def test_generate_into_writes_module_tensors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    layout = Layout.from_module(net, include=lambda n, t: n.endswith("weight"))
    inr = random_inr(len(layout), 0)
    with torch.no_grad():
        for t in net.parameters():
            t.fill_(float("nan"))  # poisoned: every generated tensor must be overwritten
    generate_into(inr, net, layout, norm=16)
    state = net.state_dict()
    with torch.no_grad():
        expected = generate(inr, layout, norm=16)
    for name, w in expected.items():
        assert torch.equal(state[name], w)
    assert torch.isnan(state["0.bias"]).all()  # not in the layout: untouched


@pytest.mark.parametrize("shapes, error", [([("missing.weight", (4, 3))], KeyError),
                                           ([("1.weight", (5,))], ValueError)])
def test_generate_into_checks_the_module_before_generating(monkeypatch, shapes, error):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    layout = Layout.from_shapes(shapes)
    monkeypatch.setattr(gen_module, "generate", lambda *a, **k: pytest.fail("generated before checking the module"))
    with pytest.raises(error, match=shapes[0][0]):
        generate_into(random_inr(1, 0), net, layout, norm=16)


# -- bad input ---------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    _, layout, inr = case(0)
    with pytest.raises(ValueError, match="norm"):
        generate(inr, layout, norm=0)
    with pytest.raises(ValueError, match="norm"):
        generate(inr, layout, norm=float("nan"))
    with pytest.raises(ValueError, match="samples"):
        generate(inr, layout, norm=1, samples=0)
    with pytest.raises(ValueError, match="backend"):
        generate(inr, layout, norm=1, backend="opencl")
    with pytest.raises(ValueError, match="noise_mode"):
        generate(inr, layout, norm=1, noise_mode="gaussian")
    with pytest.raises(ValueError, match="noise"):
        generate(inr, layout, norm=1, noise=-0.1)
    with pytest.raises(ValueError, match="noise=1.5"):
        generate(inr, layout, norm=1, noise=1.5)  # reference mode: layer index could leave [0, L)
    with pytest.raises(ValueError, match="dtype"):
        generate(inr, layout, norm=1, dtype=torch.float64)
    with pytest.raises(ValueError, match="L="):
        generate(random_inr(len(layout) + 1, 0), layout, norm=1)
    with pytest.raises(ValueError, match="noise_tensor"):
        generate(inr, layout, norm=1, noise_tensor=torch.zeros(1, 3, 6))


def test_large_noise_is_allowed_in_channel_mode():
    _, layout, inr = case(0)
    with torch.no_grad():
        generate(inr, layout, norm=16, noise=3.0, noise_mode="channels", generator=torch.Generator().manual_seed(0))


def test_explicit_noise_outside_layer_range_is_rejected():
    _, layout, inr = case(0)
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[0, 0, 0] = -1.5  # row of tensor 0 -> layer index -1
    with pytest.raises(ValueError, match="layer index"):
        generate(inr, layout, norm=16, noise_tensor=eps)


@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
def test_routing_rule_is_one_for_every_backend(backend, monkeypatch):
    """Explicit reference-mode noise may move a row to its own or the previous tensor's MLP only (docs/spec.md
    §5): generate() refuses anything else before a backend runs, the same on every backend."""
    _, layout, inr = case(0)
    backend_module = importlib.import_module(f"neumeta_fast.backends.{backend}_backend")
    ran = []
    monkeypatch.setattr(backend_module, "unavailable_reason", lambda device: None)
    monkeypatch.setattr(backend_module, "inr_forward", lambda inr, layout, req: ran.append(1) or torch.zeros(layout.numel))
    last = layout.segments[-1]
    for column0, row, routed in ((1.2, last.row_offset, last.index + 1), (-1.5, last.row_offset, last.index - 2),
                                 (-1.2, 0, -1)):
        eps = torch.zeros(1, layout.num_rows, 6)
        eps[0, row, 0] = column0
        with pytest.raises(ValueError, match=rf"noise_tensor\[0, {row}, 0\] .* to layer index {routed}"):
            generate(inr, layout, norm=16, noise_tensor=eps, backend=backend)
    assert not ran, "refused before the backend runs"
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[0, last.row_offset:, 0] = -0.4  # the previous MLP: allowed
    generate(inr, layout, norm=16, noise_tensor=eps, backend=backend)
    eps[0, 0, 0] = 1.6  # channel mode never routes
    generate(inr, layout, norm=16, noise_tensor=eps, noise_mode="channels", backend=backend)
    assert len(ran) == 2


def test_non_finite_inputs_are_named():
    _, layout, inr = case(0)
    with torch.no_grad():
        inr.model[1].residual_blocks[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model\.1\.residual_blocks\.0\.weight"):
        generate(inr, layout, norm=16)
    _, layout, inr = case(0)
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[0, 3, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        generate(inr, layout, norm=16, noise_tensor=eps)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_overflow_in_the_mlp_is_reported(sign):
    """Finite parameters whose outputs overflow to +inf or -inf: the output check names the overflow."""
    _, layout, inr = case(0)
    with torch.no_grad():
        inr.model[0].output_layer.bias.fill_(sign * 3e38)
        inr.model[0].output_layer.weight.fill_(sign * 3e38)
    with pytest.raises(ValueError, match="overflow"):
        generate(inr, layout, norm=16)
    weights = generate(inr, layout, norm=16, check_finite=False)  # opting out returns them as they are
    assert not all(torch.isfinite(w).all() for w in weights.values())


def test_kernel_larger_than_output_dim():
    layout = Layout.from_shapes([("stem.weight", (4, 3, 7, 7))])
    with pytest.raises(ValueError, match="stem.weight"):
        generate(random_inr(1, 0), layout, norm=1)


def test_triton_or_cuda_by_name_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _, layout, inr = case(0)
    with pytest.raises(RuntimeError, match="cuda"):
        generate(inr, layout, norm=1, backend="cuda")


_NAN_PLACES = {  # the parameter and the entry poisoned; a 1x1 conv reads output 4 only, so the last one is unused
    "first": ("model.0.initial_layer.weight", (0, 0)), "bias": ("model.1.initial_layer.bias", (1,)),
    "block": ("model.0.residual_blocks.1.weight", (2, 3)), "scalar": ("model.1.scalars.0", ()),
    "unused output": ("model.0.output_layer.weight", (0, 5)),
}
_PATHS = {  # generate() keyword arguments and grad mode of each backend path
    "fused separable": (dict(), False), "fused routed": (dict(noise=0.5, samples=2), False),
    "fused channels": (dict(noise=0.5, noise_mode="channels"), False), "bfloat16": (dict(dtype=torch.bfloat16), False),
    "autograd": (dict(), True), "triton": (dict(backend="triton"), False),
}


@pytest.mark.parametrize("path", list(_PATHS))
@pytest.mark.parametrize("place", list(_NAN_PLACES))
def test_nan_parameters_are_refused_on_every_path(place, path):
    """Without grad the fused C++ ReLU mapped NaN to 0 and finite weights came out; refuse as with grad."""
    layout = Layout.from_shapes([("conv", (3, 4, 1, 1)), ("fc", (2, 3)), ("bn", (3,))])
    inr = random_inr(3, 0, num_layers=3)
    name, index = _NAN_PLACES[place]
    with torch.no_grad():
        inr.get_parameter(name)[index] = float("nan")
    kwargs, grad = _PATHS[path]
    with torch.set_grad_enabled(grad), pytest.raises(ValueError, match=f"NaN or inf: .*{name}"):
        generate(inr, layout, norm=16, generator=torch.Generator().manual_seed(0), **kwargs)


def test_generate_into_refuses_nan_parameters():
    net = torch.nn.Linear(4, 3)
    inr = random_inr(2, 0)
    with torch.no_grad():
        inr.model[0].initial_layer.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="model.0.initial_layer.weight"):
        generate_into(inr, net, Layout.from_module(net), norm=16)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(norm=True), TypeError, "norm"), (dict(norm="64"), TypeError, "norm"),
    (dict(norm=torch.tensor(64.0)), TypeError, "norm"), (dict(samples=True), TypeError, "samples"),
    (dict(samples=2.0), TypeError, "samples"), (dict(noise="0.5"), TypeError, "noise"),
    (dict(noise=True), TypeError, "noise"), (dict(noise=float("nan")), ValueError, "noise"),
    (dict(norm=float("inf")), ValueError, "norm"), (dict(norm=-np.float32(1)), ValueError, "norm"),
    (dict(noise_tensor=np.zeros((1, 3, 6), np.float32)), TypeError, "noise_tensor"),
    (dict(samples=10**9), ValueError, r"samples must be <= 10000, got 1000000000: .*\(\d+ coordinates"),
])
def test_numeric_arguments_reject_bools_strings_and_tensors(kwargs, error, match):
    _, layout, inr = case(0)
    with pytest.raises(error, match=match):
        generate(inr, layout, **{"norm": 16, **kwargs})


def test_numpy_scalars_are_accepted():
    _, layout, inr = case(1)
    gen = lambda **kw: generate(inr, layout, generator=torch.Generator().manual_seed(3), **kw)  # noqa: E731
    with torch.no_grad():
        want = gen(norm=64.0, noise=0.25, samples=2)
        got = gen(norm=np.float32(64), noise=np.float64(0.25), samples=np.int64(2))
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_a_layout_larger_than_memory_is_refused_before_allocating():
    layout = Layout.from_shapes([("w", (2**18, 2**18))])
    with pytest.raises(ValueError, match=r"needs at least .* GiB on cpu \(.* of coordinates \+ .* of float32 weights\)"):
        generate(random_inr(1, 0), layout, norm=16)


def _linear_on(device="cpu"):
    return torch.nn.Linear(4, 3, device=device)


def _integer_linear():
    net = _linear_on()
    net.weight = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.int32), requires_grad=False)
    return net


@pytest.mark.parametrize("module,error,match", [
    (lambda: _linear_on("meta"), ValueError, "meta device"),
    (_integer_linear, TypeError, "torch.int32"),
    (lambda: _linear_on("cuda"), ValueError, "is on cuda"),
])
def test_generate_into_refuses_modules_it_cannot_write(monkeypatch, module, error, match):
    """A meta module took the copies as no-ops and returned; an integer one would truncate the weights."""
    if "cuda" in match and not torch.cuda.is_available():
        pytest.skip("needs a second device")
    net = module()
    monkeypatch.setattr(gen_module, "generate", lambda *a, **k: pytest.fail("generated before checking the module"))
    with pytest.raises(error, match=match):
        generate_into(random_inr(2, 0), net, Layout.from_shapes([("weight", (3, 4)), ("bias", (3,))]), norm=16)


@pytest.mark.parametrize("convert,match", [(lambda m: m.to("meta"), "meta device"),
                                           (lambda m: m.double(), "must be float32")])
def test_inrs_without_float32_values_are_refused(convert, match):
    _, layout, inr = case(0)
    with pytest.raises(ValueError, match=match):
        generate(convert(inr), layout, norm=16)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nan_from_an_overflow_inside_the_mlp_is_reported(backend):
    """Finite parameters whose hidden units overflow to +inf and -inf: their sum is NaN, and a ReLU that
    mapped NaN to 0 (as max(x, 0) does) returned finite, wrong weights without a word."""
    if backends("cpu")[backend] != "ok":
        pytest.skip(f"backend {backend} does not run here")
    layout = Layout.from_shapes([("w", (4, 3))])
    inr = INR(1, hidden_dim=8, num_layers=2, num_freqs=1)
    with torch.no_grad():
        inr.model[0].initial_layer.bias.fill_(1e30)  # every hidden unit about 1e30
        block = inr.model[0].residual_blocks[0]
        block.weight.copy_(torch.tensor([3e38, -3e38]).repeat(8, 4))  # +inf + -inf = NaN in every unit
    with pytest.raises(ValueError, match="overflow"):
        generate(inr, layout, norm=16, backend=backend)
