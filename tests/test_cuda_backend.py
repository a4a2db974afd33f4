"""The cuda backend: a clear refusal without the extension or a GPU; on a GPU, the same function as
the torch backend (outputs, K-sample noise, gradients). GPU tests skip cleanly elsewhere."""
from __future__ import annotations

import random

import pytest
import torch

import _cuda_harness as harness
from neumeta_fast import INR, Layout, backends, generate
from neumeta_fast.backends import cuda_backend
from neumeta_fast.backends.request import philox_seed

from helpers import random_shapes

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device: the kernel runs only on a GPU")


def test_status_explains_itself_on_this_machine():
    status = backends("cpu")["cuda"]
    assert status != "ok"
    assert "NEUMETA_FORCE_CUDA=1" in status or "CUDA devices only" in status


def test_by_name_on_cpu_is_a_clear_error():
    layout = Layout.from_shapes([("w", (2, 3))])
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run on cpu"):
        generate(INR(1, hidden_dim=8, num_layers=1, num_freqs=1), layout, norm=1, backend="cuda")


# -- the backend's Python layers on the CPU, with the kernel replaced by the host harness --------
@pytest.fixture
def host_kernel(monkeypatch, tmp_path):
    """cuda_backend with its two ops run by tests/cuda_harness.cpp (the float32 kernel's tile loop)."""
    if harness.compiler() is None:
        pytest.skip("no C++ compiler for the host harness")
    dll = harness.build(tmp_path)

    def philox_noise(out, seed, scale, mode):
        out.copy_(harness.noise(dll, seed, out.shape[0], out.shape[1], scale, mode))

    monkeypatch.setattr(cuda_backend, "unavailable_reason", lambda device: None)
    monkeypatch.setattr(cuda_backend, "_launch", lambda inr, layout, req, seed: harness.forward(dll, inr, layout, req, seed))
    monkeypatch.setattr(torch.ops.neumeta_fast, "philox_noise", philox_noise, raising=False)
    return dll


def _small_layout() -> Layout:
    return Layout.from_shapes([("c", (5, 3, 3, 3)), ("b", (5,)), ("p", (4, 5, 1, 1)), ("l", (3, 11))])


def _small_inr(seed: int) -> INR:
    torch.manual_seed(seed)
    return INR(4, hidden_dim=24, num_layers=3, num_freqs=3)


@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_autograd_and_seeding_around_the_host_kernel(host_kernel, mode):
    """Forward, gradients and generator seeding of the cuda backend's Python layers against torch."""
    layout = _small_layout()
    seed = philox_seed(torch.Generator().manual_seed(9))
    noise = harness.noise(host_kernel, seed, 3, layout.num_rows, 1.0, cuda_backend._NOISE_MODES[mode])
    results = {}
    for backend, kw in (("torch", dict(noise_tensor=noise)), ("cuda", dict(generator=torch.Generator().manual_seed(9)))):
        inr = _small_inr(0)
        flat = _flat(generate(inr, layout, norm=48, noise=1.0, samples=3, noise_mode=mode, backend=backend, **kw))
        (flat * torch.linspace(-1, 1, flat.numel())).sum().backward()
        results[backend] = (flat.detach(), [p.grad for p in inr.parameters()])
    torch.testing.assert_close(results["cuda"][0], results["torch"][0], rtol=2e-5, atol=1e-6)
    for g_cuda, g_torch in zip(results["cuda"][1], results["torch"][1]):
        torch.testing.assert_close(g_cuda, g_torch, rtol=1e-6, atol=1e-7)


def test_explicit_noise_outside_the_mlps_is_refused(host_kernel):
    layout = _small_layout()
    noise = torch.zeros(1, layout.num_rows, 6)
    noise[0, 0, 0] = -1.5  # row 0 belongs to tensor 0: int(-1.5) = -1
    with pytest.raises(ValueError, match="to layer index -1"):
        generate(_small_inr(0), layout, norm=48, noise=1.0, noise_tensor=noise, backend="cuda")


# -- on a GPU ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def device():
    if not HAS_GPU:
        pytest.skip("no CUDA device")
    reason = cuda_backend.unavailable_reason(torch.device("cuda"))
    assert reason is None, f"a GPU is present but the cuda backend is not: {reason}"
    return torch.device("cuda")


def _layout(seed: int) -> Layout:
    """Random small tensors of every kind plus large ragged ones (row counts no multiple of a tile)."""
    rng = random.Random(seed)
    shapes = random_shapes(rng, rng.randint(2, 6))
    shapes += [("big_conv", (67, 45, 3, 3)), ("big_pw", (33, 67, 1, 1)), ("big_fc", (10, 131)), ("big_bias", (67,))]
    rng.shuffle(shapes)
    return Layout.from_shapes(shapes)


def _inr(layout: Layout, seed: int, device, **kw) -> INR:
    torch.manual_seed(seed)
    cfg = dict(hidden_dim=96, num_layers=3, num_freqs=8)
    cfg.update(kw)
    inr = INR(layout.num_tensors, **cfg)
    with torch.no_grad():
        for m in inr.model:
            for s in m.scalars:
                s.uniform_(-0.5, 0.5)
    return inr.to(device)


def _flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.reshape(-1) for w in weights.values()])


def _poison(layout: Layout, device) -> None:
    """Fill the caching allocator's free blocks of the output's size with NaN: the kernel's output
    (and the packed weights) are then carved from poisoned memory, so an unwritten element shows."""
    blocks = [torch.full((layout.numel,), float("nan"), device=device) for _ in range(64)]
    del blocks


def _close(actual, expected, rtol=1e-4):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * 0.1 * expected.abs().max().item())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@gpu
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config", [dict(), dict(hidden_dim=40, num_layers=1, num_freqs=(2, 6)),
                                    dict(hidden_dim=256, num_layers=4, num_freqs=16)])
def test_forward_equals_torch_backend(device, seed, config):
    layout = _layout(seed)
    inr = _inr(layout, seed, device, **config)
    with torch.no_grad():
        expected = _flat(generate(inr, layout, norm=48, backend="torch"))
        _poison(layout, device)
        actual = _flat(generate(inr, layout, norm=48, backend="cuda"))
    _close(actual, expected)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tensor_core_path_is_as_accurate_as_torch_in_that_dtype(device, dtype):
    """The kernel's error against float32 must be at most ~2x torch's own error in the same dtype."""
    layout = _layout(7)
    inr = _inr(layout, 7, device, hidden_dim=128, num_layers=4, num_freqs=12)
    with torch.no_grad():
        ref = _flat(generate(inr, layout, norm=64, backend="torch"))
        torch_err = (_flat(generate(inr, layout, norm=64, backend="torch", dtype=dtype)) - ref).abs().max().item()
        _poison(layout, device)
        cuda_err = (_flat(generate(inr, layout, norm=64, backend="cuda", dtype=dtype)) - ref).abs().max().item()
    assert cuda_err <= 2 * torch_err + 1e-4 * ref.abs().max().item(), (cuda_err, torch_err)


@gpu
@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_given_noise_and_samples_equal_torch_backend(device, mode):
    layout = _layout(11)
    inr = _inr(layout, 11, device)
    noise = (torch.rand(3, layout.num_rows, 6, generator=_gen(0)) - 0.5).to(device)
    kw = dict(norm=64, noise=1.0, samples=3, noise_mode=mode, noise_tensor=noise)
    with torch.no_grad():
        expected = _flat(generate(inr, layout, backend="torch", **kw))
        _poison(layout, device)
        _close(_flat(generate(inr, layout, backend="cuda", **kw)), expected)


@gpu
@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_philox_samples_reproducible_and_equal_to_their_noise(device, mode):
    layout = _layout(5)
    inr = _inr(layout, 5, device)
    kw = dict(norm=64, noise=1.0, samples=4, noise_mode=mode, backend="cuda")
    with torch.no_grad():
        a = _flat(generate(inr, layout, generator=_gen(42), **kw))
        b = _flat(generate(inr, layout, generator=_gen(42), **kw))
        c = _flat(generate(inr, layout, generator=_gen(43), **kw))
        assert torch.equal(a, b), "same generator seed, same weights"
        assert not torch.equal(a, c)
        seed = philox_seed(_gen(42))
        noise = torch.empty(4, layout.num_rows, 6, device=device)
        torch.ops.neumeta_fast.philox_noise(noise, seed, 1.0, {"reference": 0, "channels": 1}[mode])
        expected = _flat(generate(inr, layout, norm=64, noise=1.0, samples=4, noise_mode=mode, noise_tensor=noise,
                                  backend="torch"))
    _close(a, expected)


@gpu
def test_device_philox_equals_host_harness(device, tmp_path):
    if harness.compiler() is None:
        pytest.skip("no C++ compiler for the host harness")
    dll = harness.build(tmp_path)
    out = torch.empty(3, 5000, 6, device=device)
    torch.ops.neumeta_fast.philox_noise(out, 2 ** 61 + 12345, 0.7, 0)
    assert torch.equal(out.cpu(), harness.noise(dll, 2 ** 61 + 12345, 3, 5000, 0.7, 0))


@gpu
@pytest.mark.parametrize("samples,noise", [(1, 0.0), (3, 1.0)])
def test_gradients_equal_torch_backend(device, samples, noise):
    layout = _layout(3)
    grads = {}
    for backend in ("torch", "cuda"):
        inr = _inr(layout, 3, device, hidden_dim=64, num_layers=3, num_freqs=6)
        noise_tensor = None
        if noise:
            noise_tensor = torch.empty(samples, layout.num_rows, 6, device=device)
            torch.ops.neumeta_fast.philox_noise(noise_tensor, philox_seed(_gen(9)), noise, 0)
        kw = dict(noise_tensor=noise_tensor) if backend == "torch" else dict(generator=_gen(9))
        flat = _flat(generate(inr, layout, norm=64, noise=noise, samples=samples, backend=backend, **kw))
        weight = torch.linspace(-1, 1, flat.numel(), device=device)
        (flat * weight).sum().backward()
        grads[backend] = [p.grad.clone() for p in inr.parameters()]
    for g_cuda, g_torch in zip(grads["cuda"], grads["torch"]):
        _close(g_cuda, g_torch, rtol=1e-3)


@gpu
def test_meta_kernel_gives_the_output_shape(device):
    layout = _layout(1)
    inr = _inr(layout, 1, device)
    packed = [t.to("meta") for t in inr.stacked(torch.float32, column_multiple=256)]
    table = layout.segment_table(inr.output_dim, 32)
    out = torch.ops.neumeta_fast.inr_forward(*packed, table.tensor("meta"), None, 0, 0.0, 1, 0, 64.0, 0, 8,
                                             layout.num_rows, table.num_tiles, layout.numel)
    assert out.device.type == "meta" and out.shape == (layout.numel,) and out.dtype == torch.float32


@gpu
def test_too_wide_an_inr_is_a_clear_error(device):
    layout = Layout.from_shapes([("w", (4, 4))])
    inr = INR(1, hidden_dim=2048, num_layers=1, num_freqs=2).to(device)
    with pytest.raises(RuntimeError, match="shared memory"):
        generate(inr, layout, norm=1, backend="cuda")
