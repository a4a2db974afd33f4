"""The triton backend against the torch backend, in Triton's CPU interpreter (tiny shapes: it is slow)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (see conftest.py)

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from neumeta_fast import INR, Layout, generate  # noqa: E402
from neumeta_fast.backends import resolve, triton_backend as tb  # noqa: E402
from neumeta_fast.backends.request import Request  # noqa: E402
from neumeta_fast.encoding import frequencies  # noqa: E402
from neumeta_fast.kernels import launch  # noqa: E402
from neumeta_fast.kernels.inr_forward import inr_forward, philox_noise  # noqa: E402

from helpers import random_inr, random_shapes  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="interpreter tests; the GPU is covered by benchmarks/device_check.sh")

# every tensor kind; row counts 45, 20, 28, 37, 1, 6 (none a multiple of the 16-row tiles used here)
SHAPES = [("conv3", (5, 9, 3, 3)), ("conv1", (4, 5, 1, 1)), ("linear", (7, 4)), ("vec", (37,)), ("one", (1,)),
          ("conv3b", (2, 3, 3, 3))]
NORM = 48.0  # not a power of two: the normalisation order matters in the last bit



@pytest.fixture(scope="module")
def layout():
    return Layout.from_shapes(SHAPES)


@pytest.fixture(scope="module")
def inr():
    return random_inr(len(SHAPES))


def assert_close(got: dict, want: dict, rel: float = 1e-5):
    scale = max(w.abs().max().item() for w in want.values())
    for name in want:
        err = (got[name] - want[name]).abs().max().item()
        assert err <= rel * scale, f"{name}: max abs error {err} > {rel} * {scale}"


def both(inr, layout, **kw):
    with torch.no_grad():
        return (generate(inr, layout, norm=NORM, backend="triton", **kw),
                generate(inr, layout, norm=NORM, backend="torch", **kw))


def seed_of(generator_seed: int) -> int:
    """The Philox seed the backend draws from torch.Generator().manual_seed(generator_seed)."""
    req = Request(NORM, 1, 1.0, "reference", torch.Generator().manual_seed(generator_seed), None, torch.float32,
                  torch.device("cpu"))
    return req.seed()


def launch_poisoned(inr, layout, block_m, noise=None, samples=1, mode="reference"):
    """The launcher on a NaN-filled output buffer: every element must be written."""
    cfg = launch.config(inr.output_dim, block_m=block_m)
    table = layout.segment_table(inr.output_dim, block_m)
    out = torch.full((layout.numel,), float("nan"))
    with torch.no_grad():
        inr_forward(inr.stacked(), table.tensor("cpu"), table.tiles("cpu"), frequencies(inr.freq_low, inr.freq_high, torch.device("cpu")),
                    numel=layout.numel, num_rows=layout.num_rows, num_tensors=layout.num_tensors, norm=NORM,
                    samples=samples, noise_scale=0.0, noise_mode=mode, seed=0, noise=noise, precision="ieee",
                    cfg=cfg, out=out)
    return layout.views(out)


@pytest.mark.parametrize("block_m", [16, 32])
def test_forward_writes_every_element_and_equals_torch(inr, layout, block_m):
    got = launch_poisoned(inr, layout, block_m)
    assert all(torch.isfinite(w).all() for w in got.values())
    with torch.no_grad():
        assert_close(got, generate(inr, layout, norm=NORM, backend="torch"))


@pytest.mark.parametrize("seed", range(3))
def test_random_layouts_and_shapes(seed):
    """Random tensor mixes; hidden width and output width that are not powers of two; a frequency range."""
    rng = random.Random(seed)
    shapes = random_shapes(rng, rng.randint(2, 6))
    layout = Layout.from_shapes(shapes)
    inr = random_inr(len(shapes), seed, hidden_dim=[24, 32, 40][seed], output_dim=[9, 11, 9][seed],
                   num_freqs=[4, [1, 3], 2][seed])
    assert_close(*both(inr, layout))


def test_inference_sees_parameters_changed_in_place(layout):
    """Without grad the stacked weights are cached: an in-place update must reach the next generate()."""
    inr = random_inr(len(SHAPES), 4)
    before = both(inr, layout)[0]
    with torch.no_grad():
        inr.model[2].output_layer.bias.add_(0.5)
    after, want = both(inr, layout)
    assert_close(after, want)
    assert not torch.equal(after["linear"], before["linear"])


def test_one_layer_mlp_forward_and_gradients(layout):
    inr = random_inr(len(SHAPES), 3, num_layers=1)
    assert_close(*both(inr, layout))
    check_gradients(inr, layout)


@pytest.mark.parametrize("mode", ["reference", "channels"])
@pytest.mark.parametrize("samples", [1, 3])
def test_explicit_noise_equals_torch(inr, layout, mode, samples):
    eps = torch.rand(samples, layout.num_rows, 6, generator=torch.Generator().manual_seed(samples)) - 0.5
    got, want = both(inr, layout, samples=samples, noise_tensor=eps, noise_mode=mode)
    assert_close(got, want)
    if mode == "reference":  # the poisoned launch too: rows routed to the previous MLP are written as well
        assert_close(launch_poisoned(inr, layout, 16, noise=eps, samples=samples, mode=mode), want)


def test_reference_noise_routes_rows_to_the_previous_mlp(inr, layout):
    """Noise of -0.4 on column 0 sends every row of tensor i > 0 to MLP i - 1 (the reference's quirk)."""
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[..., 0] = -0.4
    got, want = both(inr, layout, noise_tensor=eps)
    assert_close(got, want)
    clean = generate(inr, layout, norm=NORM, backend="torch")
    assert not torch.allclose(got["conv1"], clean["conv1"])


def test_noise_beyond_one_tensor_is_a_clear_error(inr, layout):
    eps = torch.zeros(1, layout.num_rows, 6)
    eps[0, -1, 0] = -1.5
    with pytest.raises(ValueError, match=r"noise_tensor\[0, 136, 0\] = -1.5 moves .* to layer index 3"):
        generate(inr, layout, norm=NORM, backend="triton", noise_tensor=eps)


@pytest.mark.parametrize("mode,samples", [("reference", 1), ("reference", 3), ("channels", 2)])
def test_philox_noise_equals_torch_given_the_same_noise(inr, layout, mode, samples):
    with torch.no_grad():
        got = generate(inr, layout, norm=NORM, backend="triton", noise=0.8, samples=samples, noise_mode=mode,
                       generator=torch.Generator().manual_seed(7))
    eps = philox_noise(layout.num_rows, samples, 0.8, mode, seed_of(7), torch.device("cpu"))
    with torch.no_grad():
        want = generate(inr, layout, norm=NORM, backend="torch", samples=samples, noise_mode=mode, noise_tensor=eps)
    assert_close(got, want)


def test_philox_seeds(inr, layout):
    def run(seed):
        with torch.no_grad():
            return generate(inr, layout, norm=NORM, backend="triton", noise=1.0,
                            generator=torch.Generator().manual_seed(seed))
    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.allclose(a["conv3"], c["conv3"])


def test_philox_noise_statistics():
    n = philox_noise(4000, 3, 0.5, "reference", 12345, torch.device("cpu"))
    assert torch.equal(n[0], torch.zeros_like(n[0]))  # sample 0 stays clean when averaging
    noisy = n[1:].reshape(-1, 6)
    assert noisy.min() >= -0.25 and noisy.max() < 0.25
    assert noisy.mean(0).abs().max() < 0.01  # mean 0, std 0.5 / sqrt(12) = 0.144
    assert ((noisy.std(0) - 0.5 / 12 ** 0.5).abs() < 0.005).all()
    assert torch.corrcoef(noisy.t()).fill_diagonal_(0).abs().max() < 0.05  # columns independent
    ch = philox_noise(100, 1, 1.0, "channels", 3, torch.device("cpu"))[0]
    assert ch[:, [0, 3, 4, 5]].eq(0).all() and ch[:, 1:3].ne(0).all()


def check_gradients(inr, layout, **kw):
    torch_kw = dict(kw)
    if "generator" in kw:  # the torch backend gets the noise the kernel drew
        seed, mode = kw.pop("generator"), kw.get("noise_mode", "reference")
        drawn = philox_noise(layout.num_rows, kw["samples"], kw["noise"], mode, seed_of(seed), torch.device("cpu"))
        torch_kw = dict(samples=kw["samples"], noise_mode=mode, noise_tensor=drawn)
        kw["generator"] = torch.Generator().manual_seed(seed)
    weights = torch.Generator().manual_seed(0)
    probe = {s.name: torch.randn(s.shape, generator=weights) for s in layout.segments}
    grads = {}
    for backend, args in (("triton", kw), ("torch", torch_kw)):
        inr.zero_grad()
        out = generate(inr, layout, norm=NORM, backend=backend, **args)
        sum((out[n] * probe[n]).sum() for n in out).backward()
        grads[backend] = {n: p.grad.clone() for n, p in inr.named_parameters()}
    for name, want in grads["torch"].items():
        got = grads["triton"][name]
        assert want.abs().max() > 0, name
        err = (got - want).abs().max().item()
        assert err <= 1e-5 * want.abs().max().item(), f"{name}: gradient error {err}"


@pytest.mark.parametrize("kw", [{}, dict(noise=1.0, samples=2, generator=4),
                                dict(noise=0.5, samples=1, generator=5, noise_mode="channels")],
                         ids=["clean", "philox-reference-K2", "philox-channels"])
def test_gradients_match_torch_autograd(inr, layout, kw):
    check_gradients(inr, layout, **kw)


def test_gradients_with_explicit_noise(inr, layout):
    eps = torch.rand(2, layout.num_rows, 6, generator=torch.Generator().manual_seed(9)) - 0.5
    check_gradients(inr, layout, samples=2, noise_tensor=eps)


def test_half_precision_error_is_at_most_twice_torchs(inr, layout):
    """flash-attention's rule: the kernel's low-precision error at most ~2x the torch backend's own.
    (float16: the interpreter has no bfloat16 arithmetic; bf16 is measured by device_check.)"""
    with torch.no_grad():
        exact = generate(inr, layout, norm=NORM, backend="torch")
        ours = generate(inr, layout, norm=NORM, backend="triton", dtype=torch.float16)
        theirs = generate(inr, layout, norm=NORM, backend="torch", dtype=torch.float16)
    scale = max(w.abs().max().item() for w in exact.values())
    err = lambda got: max((got[n] - exact[n]).abs().max().item() for n in exact) / scale  # noqa: E731
    assert 0 < err(ours) <= 2 * err(theirs) + 1e-6


def test_custom_op_registration(inr, layout):
    """Schema, fake (meta) implementation and autograd registration, as torch.compile relies on them."""
    table = layout.segment_table(inr.output_dim, 16)
    freqs = frequencies(inr.freq_low, inr.freq_high, torch.device("cpu"))
    args = (*[w.detach().requires_grad_() for w in inr.stacked()], table.tensor("cpu"), table.tiles("cpu"), freqs,
            layout.coordinates(), None, layout.numel, layout.num_tensors, NORM, 1, 0.0, "reference", 0, "ieee",
            table.tile_rows)
    torch.library.opcheck(torch.ops.neumeta_fast.inr_forward_triton.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_unavailable_without_gpu_or_interpreter(inr, layout, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in tb.unavailable_reason(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run on cpu.*CUDA device"):
        generate(inr, layout, norm=NORM, backend="triton")
    assert resolve("auto", torch.device("cpu")).NAME == "torch"


def test_auto_on_cpu_picks_torch():
    assert resolve("auto", torch.device("cpu")).NAME == "torch"
