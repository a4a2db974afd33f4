"""The fused INR forward (docs/spec.md §2-§10) on every backend against the literal reference: values and
gradients; the Philox stream Triton and CUDA share (§4); the CPU op `_C.inr_forward`
(csrc/cpu/inr_forward.cpp) against the eager formula of docs/spec.md §8."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import _cuda_harness as harness
from neumeta_fast import Layout, _C, generate
from neumeta_fast.backends import cuda_backend, torch_backend
from neumeta_fast.backends.request import Request
from neumeta_fast.kernels import inr_forward as triton_kernel
from neumeta_fast.reference import reference_generate, reference_mlp

from helpers import random_inr

# -- every backend, one function -------------------------------------------------------------------
SHAPES = [("conv3", (3, 4, 3, 3)), ("conv1", (5, 2, 1, 1)), ("fc", (3, 5)), ("bias", (7,))]
NORM = 48.0  # not a power of two: the normalisation order matters in the last bit
# torch: eager ops; cpu_op: the C++ ops (_C.inr_forward, or _C.inr_train with gradients);
# triton: the Triton kernel in its interpreter; cuda_host: the CUDA kernel's math through tests/cuda_harness.cpp
PROVIDERS = ("torch", "cpu_op", "triton", "cuda_host")


@pytest.fixture(scope="module")
def dll(tmp_path_factory):
    if harness.compiler() is None:
        pytest.skip("no C++ compiler for the host harness")
    return harness.build(tmp_path_factory.mktemp("harness"))


@pytest.fixture
def provider(request, monkeypatch):
    name = request.param
    if name == "triton" and not triton_kernel.interpreted():
        pytest.skip("Triton kernels compiled for the GPU: covered by benchmarks/device_check.sh")
    if name == "cuda_host":
        lib = request.getfixturevalue("dll")
        monkeypatch.setattr(cuda_backend, "unavailable_reason", lambda device: None)
        monkeypatch.setattr(cuda_backend, "_launch", lambda inr, layout, req, seed: harness.forward(lib, inr, layout, req, seed))
    return name


def run(provider: str, inr, layout: Layout, **kw) -> dict:
    if provider == "torch":
        req = Request(NORM, kw.get("samples", 1), 0.0, kw.get("noise_mode", "reference"), None,
                      kw.get("noise_tensor"), torch.float32, torch.device("cpu"))
        return layout.views(torch_backend.inr_forward_eager(inr, layout, req, torch.is_grad_enabled()))
    backend = {"cpu_op": "torch", "triton": "triton", "cuda_host": "cuda"}[provider]
    return generate(inr, layout, norm=NORM, backend=backend, **kw)


def noise_for(layout: Layout, samples: int) -> torch.Tensor:
    """Explicit noise within the routing rule (|noise| < 1/2): some rows go to the previous tensor's MLP."""
    return (torch.rand(samples, layout.num_rows, 6, generator=torch.Generator().manual_seed(samples)) - 0.5) * 0.9


CASES = {"exact": dict(), "reference-K3": dict(samples=3, noise_mode="reference"),
         "channels-K2": dict(samples=2, noise_mode="channels")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS, indirect=True)
def test_values_and_gradients_equal_the_reference(provider, case):
    layout = Layout.from_shapes(SHAPES)
    kw = dict(CASES[case])
    eps = noise_for(layout, kw["samples"]) if kw else None
    if eps is not None:
        kw["noise_tensor"] = eps
        routed = (layout.coordinates()[:, 0] + eps[..., 0]).to(torch.int64) != layout.coordinates()[:, 0]
        assert kw["noise_mode"] == "channels" or routed.any(), "the case must route rows to the previous MLP"
    probe = {name: torch.randn(shape, generator=torch.Generator().manual_seed(1)) for name, shape in SHAPES}
    results = {}
    for who in ("reference", provider):
        inr = random_inr(len(SHAPES), 2, hidden_dim=24, num_layers=3, num_freqs=3)
        if who == "reference":
            out = reference_generate(inr, SHAPES, NORM, noise=None if eps is None else list(eps),
                                     noise_mode=kw.get("noise_mode", "reference"))
        else:
            with torch.no_grad():
                inference = run(who, inr, layout, **kw)
            out = run(who, inr, layout, **kw)
            for name in out:
                torch.testing.assert_close(inference[name], out[name].detach(), rtol=1e-5, atol=1e-6)
        sum((out[n] * probe[n]).sum() for n in out).backward()
        results[who] = ({n: w.detach() for n, w in out.items()}, {n: p.grad for n, p in inr.named_parameters()})
    (want, want_g), (got, got_g) = results["reference"], results[provider]
    scale = max(w.abs().max().item() for w in want.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5 * scale)
    for name, g in want_g.items():
        assert g is not None and got_g[name] is not None, name
        torch.testing.assert_close(got_g[name], g, rtol=1e-4, atol=1e-5 * g.abs().max().item())


@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_triton_philox_is_the_cuda_stream(dll, mode):
    """One counter layout (docs/spec.md §4): the Triton kernel's noise equals the CUDA header's, bit for
    bit, for a 62-bit seed (both key words) and every sample."""
    if not triton_kernel.interpreted():
        pytest.skip("Triton kernels compiled for the GPU: covered by benchmarks/device_check.sh")
    seed = 2 ** 61 + 12345
    for samples, rows in ((3, 5000), (1, 700)):
        got = triton_kernel.philox_noise(rows, samples, 0.7, mode, seed, torch.device("cpu"))
        want = harness.noise(dll, seed, samples, rows, 0.7, cuda_backend._NOISE_MODES[mode])
        assert torch.equal(got, want)


# -- the CPU op ------------------------------------------------------------------------------------
def tail(mlp):
    return _C.ResMLPTail([b.weight for b in mlp.residual_blocks], [b.bias for b in mlp.residual_blocks],
                         [float(s) for s in mlp.scalars], mlp.output_layer.weight, mlp.output_layer.bias)


def fused(mlp, pe):
    return _C.inr_forward(pe, mlp.initial_layer.weight, mlp.initial_layer.bias, tail(mlp))


@pytest.mark.parametrize("rows", [1, 7, 300])
@pytest.mark.parametrize("num_layers,hidden", [(1, 16), (2, 33), (4, 64)])
def test_matches_eager(rows, num_layers, hidden):
    mlp = random_inr(1, seed=rows + hidden, hidden_dim=hidden, num_layers=num_layers, num_freqs=3).model[0]
    pe = torch.randn(rows, mlp.initial_layer.in_features)
    with torch.no_grad():
        want = reference_mlp(mlp, pe)
        got = fused(mlp, pe)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_scratch_reuse_across_sizes_and_threads():
    """The op keeps its activation buffers per thread between calls: shrinking, growing and
    concurrent calls of other shapes must not leak one call's activations into another's result."""
    mlps = {h: random_inr(1, seed=h, hidden_dim=h, num_layers=3, num_freqs=2).model[0] for h in (8, 24)}
    calls = [(h, rows) for rows in (300, 5, 1000, 64) for h in (24, 8)]
    inputs = [torch.randn(rows, mlps[h].initial_layer.in_features) for h, rows in calls]
    with torch.no_grad():
        want = [reference_mlp(mlps[h], pe) for (h, _), pe in zip(calls, inputs)]
        got = [fused(mlps[h], pe) for (h, _), pe in zip(calls, inputs)]

    def in_thread(i):
        with torch.no_grad():  # grad mode is per thread
            return fused(mlps[calls[i][0]], inputs[i])

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(in_thread, list(range(len(calls))) * 3))
    for i, (w, g) in enumerate(zip(want, got)):
        assert (g - w).abs().max().item() <= 1e-5 * w.abs().max().item(), calls[i]
    for j, g in enumerate(threaded):
        w = want[j % len(calls)]
        assert (g - w).abs().max().item() <= 1e-5 * w.abs().max().item(), calls[j % len(calls)]


@pytest.mark.parametrize("a_size,b_size,row_start,rows", [(5, 3, 0, 15), (5, 3, 4, 7), (1, 1, 0, 1), (9, 1, 2, 6)])
def test_separable_matches_eager(a_size, b_size, row_start, rows):
    """pre[a * B + b] = u[a] + v[b]: the op must pick row r's a = r // B and b = r % B."""
    mlp = random_inr(1, seed=a_size * b_size, hidden_dim=24, num_layers=3, num_freqs=2).model[0]
    hidden = 24
    u, v = torch.randn(a_size, hidden), torch.randn(b_size, hidden)
    pre = (u[:, None, :] + v[None, :, :]).reshape(-1, hidden)[row_start:row_start + rows]
    with torch.no_grad():
        h = torch.relu(pre)
        for block, s in zip(mlp.residual_blocks, mlp.scalars):
            h = s * torch.relu(block(h)) + h
        want = mlp.output_layer(h)
        got = _C.inr_forward_separable(u, v, row_start, rows, tail(mlp))
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_separable_rows_out_of_range():
    mlp = random_inr(1, hidden_dim=8, num_layers=2, num_freqs=1).model[0]
    with torch.no_grad(), pytest.raises(ValueError, match=r"rows \[4, 7\) outside the 2 x 3 tensor"):
        _C.inr_forward_separable(torch.randn(2, 8), torch.randn(3, 8), 4, 3, tail(mlp))


def test_no_rows():
    mlp = random_inr(1, hidden_dim=8, num_freqs=1).model[0]
    with torch.no_grad():
        assert fused(mlp, torch.empty(0, mlp.initial_layer.in_features)).shape == (0, mlp.output_layer.out_features)


@pytest.mark.parametrize("bad,match", [
    (lambda pe: pe.double(), "pe must be a contiguous float32"),
    (lambda pe: pe.t().contiguous().t(), "pe must be a contiguous"),
    (lambda pe: pe[:, :-1].contiguous(), r"w0 must be .* shape \[8, 17\], got \[8, 18\]"),
])
def test_bad_input_is_named(bad, match):
    mlp = random_inr(1, hidden_dim=8, num_layers=2, num_freqs=1).model[0]
    pe = torch.randn(5, mlp.initial_layer.in_features)
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        fused(mlp, bad(pe))


@pytest.mark.parametrize("row_start,rows", [(2**63 - 1, 1), (1, 2**63 - 1), (2**62, 2**62), (-1, 2), (0, -1)])
def test_separable_row_range_cannot_overflow(row_start, rows):
    """row_start + rows wrapping past int64 passed the bound check and read far outside u and v."""
    mlp = random_inr(1, hidden_dim=8, num_layers=2, num_freqs=1).model[0]
    with torch.no_grad(), pytest.raises(ValueError, match=r"rows \[.*\) outside the 2 x 3 tensor"):
        _C.inr_forward_separable(torch.randn(2, 8), torch.randn(3, 8), row_start, rows, tail(mlp))


def test_separable_tensor_size_cannot_overflow():
    """A x B of two zero-width (storage-free) tables wraps int64."""
    empty_tail = _C.ResMLPTail([], [], [], torch.empty(1, 0), torch.zeros(1))
    with pytest.raises(ValueError, match="more rows than int64"):
        _C.inr_forward_separable(torch.empty(2**32, 0), torch.empty(2**32, 0), 0, 1, empty_tail)


def test_activation_size_cannot_overflow():
    """rows x hidden activations past int64 (pe without features, so no storage) are refused by name."""
    hidden = 2**24
    empty_tail = _C.ResMLPTail([], [], [], torch.empty(0, hidden), torch.empty(0))
    with pytest.raises(ValueError, match="activations overflow int64"):
        _C.inr_forward(torch.empty(2**40, 0), torch.empty(hidden, 0), torch.zeros(hidden), empty_tail)


@pytest.mark.parametrize("where", ["w0", "b0", "block", "scalar"])
def test_nan_propagates_as_in_torch_relu(where):
    """The fused ReLU must not map NaN to 0: that turned a corrupt INR into finite weights."""
    mlp = random_inr(1, seed=3, hidden_dim=16, num_layers=3, num_freqs=2).model[0]
    with torch.no_grad():
        {"w0": mlp.initial_layer.weight[0], "b0": mlp.initial_layer.bias, "block": mlp.residual_blocks[1].weight[2],
         "scalar": mlp.scalars[0]}[where].fill_(float("nan"))
    pe = torch.randn(9, mlp.initial_layer.in_features)
    u, v = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        want = reference_mlp(mlp, pe)
        got = fused(mlp, pe)
        if where == "w0":  # the separable op takes the first layer's output as u[a] + v[b]
            u[1, 0] = float("nan")
            assert torch.isnan(_C.inr_forward_separable(u, v, 0, 9, tail(mlp))[3:6]).all()
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got), torch.isnan(want))
