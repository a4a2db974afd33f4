"""Property-based fuzzing of generate(), generate_into(), Layout, INR and the CPU ops against the literal
reference (neumeta_fast.reference), on small random shapes, noise modes and sample counts.

NEUMETA_FUZZ_EXAMPLES sets the examples per test (40 by default, a few seconds for the file).
Fresh allocations are poisoned with NaN (`torch.use_deterministic_algorithms` fills uninitialised memory),
so an output element that a backend forgets to write, or a reused buffer read before it is written,
shows up as NaN instead of passing by luck.
"""
import contextlib
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neumeta_fast import INR, Layout, _C, backends, generate, generate_into
from neumeta_fast.arguments import FLOAT32_MAX, FLOAT32_TINY
from neumeta_fast.noise import MAX_SAMPLES, NOISE_MODES, draw
from neumeta_fast.reference import reference_coordinates, reference_generate

EXAMPLES = int(os.environ.get("NEUMETA_FUZZ_EXAMPLES", "40"))  # raise it for a longer run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def poisoned_allocations():
    """torch.empty (Python and ATen, as the C++ ops' scratch) returns NaN-filled memory inside."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


@st.composite
def layouts(draw_, max_tensors=4):
    """Named shapes of every kind: vectors, linear weights, 1x1 / 3x3 / 1x3 conv kernels."""
    shapes = []
    for t in range(draw_(st.integers(1, max_tensors))):
        a, b = draw_(st.integers(1, 5)), draw_(st.integers(1, 5))
        kind = draw_(st.sampled_from(["vector", "linear", "conv"]))
        kernel = draw_(st.sampled_from([(1, 1), (3, 3), (1, 3)]))
        shapes.append((f"t{t}", {"vector": (a,), "linear": (a, b), "conv": (a, b, *kernel)}[kind]))
    return shapes


@st.composite
def inrs(draw_, num_tensors):
    """A small INR with weights larger than the default init, so that every input matters."""
    low = draw_(st.integers(0, 2))
    freqs = draw_(st.one_of(st.integers(0, 4), st.just([low, low + draw_(st.integers(0, 3))])))
    inr = INR(num_tensors, hidden_dim=draw_(st.integers(1, 12)), num_layers=draw_(st.integers(1, 3)), num_freqs=freqs)
    gen = torch.Generator().manual_seed(draw_(st.integers(0, 2**31)))
    with torch.no_grad():
        for p in inr.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return inr


NORMS = st.one_of(st.sampled_from([1, 7, 16, 48, 64]), st.floats(0.5, 100), st.sampled_from([np.float32(48), np.int64(16)]))


def assert_close(got: dict, want: dict):
    scale = max(max(w.abs().max().item() for w in want.values()), 1e-6)
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        assert torch.isfinite(got[name]).all(), f"{name}: NaN/inf (an output element was not written?)"
        err = (got[name].detach() - w).abs().max().item()
        assert err <= 1e-5 * scale, f"{name}: max abs error {err} > 1e-5 * {scale}"


def reference_noise(layout: Layout, scale: float, samples: int, seed: int) -> list:
    """The noise generate() draws for `generator=Generator().manual_seed(seed)`: sample 0 clean when averaging."""
    gen = torch.Generator().manual_seed(seed)
    if scale == 0:
        return [None] * samples
    return [draw(layout.num_rows, scale, gen, torch.device("cpu")) if samples == 1 or k else None
            for k in range(samples)]


@FUZZ
@given(data=st.data(), shapes=layouts(), norm=NORMS, mode=st.sampled_from(NOISE_MODES), samples=st.integers(1, 3),
       scale=st.sampled_from([0.0, 0.3, 1.0]), explicit=st.booleans(), grad=st.booleans())
def test_generate_matches_reference(data, shapes, norm, mode, samples, scale, explicit, grad):
    layout = Layout.from_shapes(shapes)
    inr = data.draw(inrs(len(shapes)))
    seed = data.draw(st.integers(0, 2**31))
    if explicit:  # a noise tensor as given, sample 0 included
        gen = torch.Generator().manual_seed(seed)
        noise_tensor = (torch.rand(samples, layout.num_rows, 6, generator=gen) - 0.5) * scale
        kwargs, eps = dict(noise_tensor=noise_tensor), list(noise_tensor)
    else:
        kwargs = dict(noise=scale, generator=torch.Generator().manual_seed(seed))
        eps = reference_noise(layout, scale, samples, seed)
    with poisoned_allocations(), torch.set_grad_enabled(grad):
        got = generate(inr, layout, norm=norm, samples=samples, noise_mode=mode, backend="torch", **kwargs)
    with torch.no_grad():
        want = reference_generate(inr, shapes, float(norm), noise=eps, noise_mode=mode)
    assert_close(got, want)
    if grad:
        sum(w.sum() for w in got.values()).backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in inr.parameters())


@pytest.mark.skipif(backends("cpu")["triton"] != "ok", reason="the Triton interpreter is not available")
@settings(FUZZ, max_examples=max(1, EXAMPLES // 5))  # interpreted kernels: ~0.3 s an example
@given(data=st.data(), shapes=layouts(max_tensors=3), mode=st.sampled_from(NOISE_MODES), samples=st.integers(1, 2))
def test_triton_matches_reference(data, shapes, mode, samples):
    layout = Layout.from_shapes(shapes)
    inr = data.draw(inrs(len(shapes)))
    noise_tensor = (torch.rand(samples, layout.num_rows, 6, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.9
    with poisoned_allocations(), torch.no_grad():
        got = generate(inr, layout, norm=16, samples=samples, noise_mode=mode, noise_tensor=noise_tensor,
                       backend="triton")
        want = reference_generate(inr, shapes, 16.0, noise=list(noise_tensor), noise_mode=mode)
    assert_close(got, want)


class Tensors(torch.nn.Module):
    """A module whose state dict is exactly the given named tensors (dots become nesting)."""

    def __init__(self, shapes, fill):
        super().__init__()
        self.params = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.full(s, fill)) for n, s in shapes})


@FUZZ
@given(data=st.data(), shapes=layouts(), norm=NORMS, samples=st.integers(1, 3))
def test_generate_into_overwrites_every_tensor(data, shapes, norm, samples):
    layout = Layout.from_shapes([(f"params.{n}", s) for n, s in shapes])
    inr = data.draw(inrs(len(shapes)))
    net = Tensors(shapes, float("nan"))  # poisoned: every generated tensor must be written
    kwargs = dict(norm=norm, samples=samples, noise=0.5, generator=torch.Generator().manual_seed(2))
    with poisoned_allocations():
        generate_into(inr, net, layout, **kwargs)
    with torch.no_grad():
        kwargs["generator"] = torch.Generator().manual_seed(2)
        want = generate(inr, layout, **kwargs)
    state = net.state_dict()
    assert all(torch.equal(state[name], w) for name, w in want.items())


@FUZZ
@given(shapes=layouts(max_tensors=6))
def test_layout_matches_the_literal_enumeration(shapes):
    layout = Layout.from_shapes(shapes)
    with poisoned_allocations():
        coords = layout.coordinates()
    assert torch.equal(coords, reference_coordinates(shapes))
    flat = torch.arange(layout.numel, dtype=torch.float32)
    views = layout.views(flat)
    assert torch.equal(torch.cat([v.reshape(-1) for v in views.values()]), flat)
    assert [tuple(v.shape) for v in views.values()] == [s for _, s in shapes]


# -- arguments: anything is accepted exactly when it is a valid number, refused with TypeError/ValueError else --

JUNK = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-3, 40), st.integers(-2**70, 2**70), st.just(np.float32(3.5)), st.just(np.int64(4)),
                 st.just(np.bool_(True)), st.just(torch.tensor(2)), st.just([2, 3]))


def is_integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
    return (is_integer(v) or isinstance(v, (float, np.floating))) and np.isfinite(float(v))


def accepted(call) -> bool:
    try:
        call()
    except (TypeError, ValueError):
        return False
    return True


def extreme(v) -> bool:
    """A valid real so large or small that float32 arithmetic inside the MLP may overflow."""
    return is_real(v) and v != 0 and not 1e-3 <= abs(float(v)) <= 1e6


@FUZZ
@given(arg=st.sampled_from(["norm", "noise", "samples"]), value=JUNK, mode=st.sampled_from(NOISE_MODES))
def test_generate_arguments(arg, value, mode):
    layout = Layout.from_shapes([("w", (2, 3)), ("b", (2,))])
    inr = INR(2, hidden_dim=4, num_freqs=2)
    valid = {"norm": is_real(value) and FLOAT32_TINY <= value <= FLOAT32_MAX,
             "noise": is_real(value) and 0 <= value <= FLOAT32_MAX and (mode == "channels" or value <= 1),
             "samples": is_integer(value) and 1 <= value <= MAX_SAMPLES}[arg]
    if arg == "samples" and valid and value > 4:
        return  # valid, but each sample is one more generation
    kwargs = {"norm": 16, "noise": 0.5, "samples": 2, arg: value}
    with torch.no_grad():
        outcome = accepted(lambda: generate(inr, layout, noise_mode=mode, generator=torch.Generator(), **kwargs))
    if not (valid and extreme(value)):  # extreme valid values may still be refused: their MLP overflows
        assert outcome == valid


@FUZZ
@given(arg=st.sampled_from(["num_tensors", "hidden_dim", "num_layers", "num_freqs", "output_dim", "scalar"]),
       value=JUNK)
def test_inr_arguments(arg, value):
    if arg in ("num_tensors", "hidden_dim", "num_layers", "output_dim") and is_integer(value) and value > 40:
        return  # valid, but allocates value^2 parameters
    valid = {"scalar": is_real(value) and abs(value) <= FLOAT32_MAX,
             "num_freqs": (is_integer(value) and 0 <= value <= 127) or isinstance(value, list),  # JUNK's list is [2, 3]
             }.get(arg, is_integer(value) and value >= 1)
    assert accepted(lambda: INR(**{"num_tensors": 1, "hidden_dim": 2, arg: value})) == valid


@FUZZ
@given(value=JUNK, rank=st.sampled_from([1, 2, 4]), position=st.integers(0, 3))
def test_layout_dimensions(value, rank, position):
    shape = [2, 3, 1, 1][:rank]
    shape[position % rank] = value
    layout_ok = accepted(lambda: Layout.from_shapes([("x", tuple(shape))]))
    assert layout_ok == (is_integer(value) and value >= 1)


# -- the CPU ops: any int64 sizes give the right answer or a ValueError, never a crash -----------------------

INT64 = st.one_of(st.integers(-3, 8), st.integers(-2**63, 2**63 - 1), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]))


@FUZZ
@given(rows=st.integers(0, 12), a_size=INT64, b_size=INT64, cols=INT64)
def test_fill_coordinates_sizes(rows, a_size, b_size, cols):
    out = torch.full((rows, 6), float("nan"))
    valid = a_size >= 0 and b_size >= 0 and cols >= 1 and a_size * b_size == rows
    if not valid:
        with pytest.raises(ValueError):
            _C.fill_coordinates(out, 1, 3, a_size, b_size, cols)
        return
    _C.fill_coordinates(out, 1, 3, a_size, b_size, cols)
    row = torch.arange(rows)  # row = a * b_size + b (b_size >= 1 whenever there is a row)
    assert torch.equal(out[:, 1], (row // max(b_size, 1)).float())
    assert torch.equal(out[:, 2], (row % max(b_size, 1)).float() if cols != 1 else torch.zeros(rows))
    assert torch.equal(out[:, [0, 3, 4, 5]], torch.tensor([1.0, 3.0, a_size, cols]).expand(rows, 4))


@FUZZ
@given(a_size=st.integers(0, 4), b_size=st.integers(0, 4), row_start=INT64, rows=INT64)
def test_separable_row_ranges(a_size, b_size, row_start, rows):
    hidden = 5
    gen = torch.Generator().manual_seed(a_size * 7 + b_size)
    u, v = torch.randn(a_size, hidden, generator=gen), torch.randn(b_size, hidden, generator=gen)
    wo, bo = torch.randn(2, hidden, generator=gen), torch.randn(2, generator=gen)
    tail = _C.ResMLPTail([], [], [], wo, bo)
    if not (0 <= row_start and 0 <= rows and row_start + rows <= a_size * b_size):
        with pytest.raises(ValueError, match="outside"):
            _C.inr_forward_separable(u, v, row_start, rows, tail)
        return
    with poisoned_allocations():
        got = _C.inr_forward_separable(u, v, row_start, rows, tail)
    pre = (u[:, None] + v[None]).reshape(-1, hidden)[row_start:row_start + rows]
    torch.testing.assert_close(got, torch.relu(pre) @ wo.T + bo)
