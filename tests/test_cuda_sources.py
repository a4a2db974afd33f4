"""CUDA sources without a GPU: every csrc/ .cu compiles for sm_80 and sm_90 (and the torch bindings
parse) with this machine's nvcc; the kernel's shared math, run on the host through
tests/cuda_harness.cpp, matches the torch backend."""
from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

import _cuda_harness as harness
from neumeta_fast import INR, Layout
from neumeta_fast.backends import cuda_backend, torch_backend
from neumeta_fast.backends.request import Request
from neumeta_fast.encoding import fourier_features, frequencies, normalise
from neumeta_fast.layout import SEGMENT_COLUMNS

ROOT = harness.ROOT
ARCHS = ("80", "90")
CUDA_UNITS = sorted(ROOT.glob("csrc/**/*.cu"))
HOST_UNITS = sorted(ROOT.glob("csrc/cuda/*.cpp"))  # built by nvcc's host compiler in the CUDA extension


# -- compilation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """Compile every unit once, in parallel; key (path, arch), arch 'host' for .cpp files."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA sources cannot be compiled on this machine")
    tmp = tmp_path_factory.mktemp("nvcc")
    # A CPU build of torch ships c10/cuda headers but not their generated config header; an empty
    # one stands in (it only switches DLL export macros), so the bindings parse as on a CUDA build.
    shim = tmp / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [f"-I{ROOT / 'csrc' / 'include'}", f"-I{tmp / 'shim'}"]
    includes += [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    flags = ["-O3", "-std=c++17", "--use_fast_math"]  # as setup.py
    jobs = {}
    for unit in CUDA_UNITS:
        for arch in ARCHS:
            out = tmp / f"{unit.stem}_sm{arch}.o"
            jobs[(str(unit), arch)] = [nvcc, *flags, f"-gencode=arch=compute_{arch},code=sm_{arch}", *includes,
                                       "-c", str(unit), "-o", str(out)]
    for unit in HOST_UNITS:
        jobs[(str(unit), "host")] = [nvcc, "-std=c++17", "-Xcompiler", "-fsyntax-only", *includes, "-c", str(unit),
                                     "-o", str(tmp / f"{unit.stem}.o")]
    with ThreadPoolExecutor(max_workers=max(2, len(jobs))) as pool:
        results = pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs.values())
        return dict(zip(jobs, results))


def test_segment_desc_follows_the_segment_table():
    """The CUDA struct reads Layout.segment_table's rows: the same fields in the same order (docs/spec.md §10)."""
    source = (ROOT / "csrc" / "include" / "neumeta" / "common.cuh").read_text()
    body = re.search(r"struct SegmentDesc \{(.*?)\};", source, re.S).group(1)
    assert tuple(re.findall(r"int64_t (\w+);", body)) == SEGMENT_COLUMNS


def test_there_are_cuda_sources():
    assert CUDA_UNITS, "no .cu file under csrc/"


@pytest.mark.parametrize("unit", CUDA_UNITS, ids=lambda p: p.name)
@pytest.mark.parametrize("arch", ARCHS)
def test_cu_compiles(compiled, unit, arch):
    done = compiled[(str(unit), arch)]
    assert done.returncode == 0, f"nvcc failed on {unit.name} for sm_{arch}:\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("unit", HOST_UNITS, ids=lambda p: p.name)
def test_bindings_parse(compiled, unit):
    done = compiled[(str(unit), "host")]
    assert done.returncode == 0, f"host compile of {unit.name} failed:\n{done.stderr[-4000:]}"


# -- host harness -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dll(tmp_path_factory):
    if harness.compiler() is None:
        pytest.skip("no C++ compiler (g++/c++) on PATH for the host harness")
    return harness.build(tmp_path_factory.mktemp("harness"))


def _layout(out_dim: int = 9) -> Layout:
    """Every tensor kind, ragged row counts (none a multiple of the 32-row tile), 1x1 and 1x3 convs
    (centre slices), and a 5x5 conv where the INR has 25 outputs."""
    shapes = [("conv3", (5, 3, 3, 3)), ("bn_w", (5,)), ("conv1", (7, 5, 1, 1)), ("fc", (3, 13)), ("fc_b", (3,)),
              ("conv_wide", (2, 3, 1, 3))]
    return Layout(shapes + ([("conv5", (3, 2, 5, 5))] if out_dim >= 25 else []))


# Known-answer vectors of Philox4x32-10 published with Random123 (kat_vectors): counter, key, result.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_philox_known_answers(dll, ctr, key, expected):
    c = torch.tensor(ctr, dtype=torch.int64).to(torch.int32)
    k = torch.tensor(key, dtype=torch.int64).to(torch.int32)
    out = torch.zeros(4, dtype=torch.int32)
    dll.nm_philox(harness.ptr(c), harness.ptr(k), harness.ptr(out))
    assert [v & 0xFFFFFFFF for v in out.tolist()] == list(expected)


@pytest.mark.parametrize("mode", [0, 1])
def test_noise_stream_statistics(dll, mode):
    scale, rows = 0.8, 40000
    n = harness.noise(dll, 1234, 3, rows, scale, mode)
    assert torch.equal(n[0], torch.zeros(rows, 6)), "sample 0 must stay clean when averaging"
    moved = [0, 1, 2, 3, 4, 5] if mode == 0 else [1, 2]
    still = [j for j in range(6) if j not in moved]
    assert torch.equal(n[1:, :, still], torch.zeros(2, rows, len(still)))
    x = n[1:, :, moved]
    assert x.min() >= -scale / 2 and x.max() < scale / 2
    assert abs(x.mean().item()) < 0.005
    assert x.var().item() == pytest.approx(scale ** 2 / 12, rel=0.02)
    assert abs(torch.corrcoef(torch.stack([x[0, :, 0], x[1, :, 0]]))[0, 1].item()) < 0.02, "samples must differ"
    single = harness.noise(dll, 1234, 1, rows, scale, mode)
    assert single[0, :, moved].abs().sum() > 0, "a single sample is noisy"
    assert torch.equal(harness.noise(dll, 1234, 3, rows, scale, mode), n), "deterministic in the seed"
    assert not torch.equal(harness.noise(dll, 1235, 3, rows, scale, mode), n)


def test_coordinates_tile_by_tile(dll):
    layout = _layout()
    table = layout.segment_table(9, 32)
    out = torch.full((layout.num_rows, 6), float("nan"))
    dll.nm_coordinates(harness.ptr(table.tensor("cpu")), len(layout), layout.num_tensors, 32, table.num_tiles,
                       harness.ptr(out))
    assert torch.equal(out, layout.coordinates())


@pytest.mark.parametrize("norm,freqs", [(64.0, (0, 32)), (48.0, (0, 16)), (7.0, (3, 9))])
def test_fourier_features(dll, norm, freqs):
    g = torch.Generator().manual_seed(0)
    c = _layout().coordinates().clone()
    c = c + (torch.rand(c.shape, generator=g) - 0.5) * 0.9  # noisy coordinates as well as exact ones
    c = torch.cat([_layout().coordinates(), c])
    low, high = freqs
    out = torch.empty(c.shape[0], 6 + 12 * (high - low))
    dll.nm_features(harness.ptr(c), c.shape[0], norm, low, high - low, harness.ptr(out))
    x = normalise(c, norm)
    assert torch.equal(out[:, :6], x), "normalisation must be bit-exact"
    torch.testing.assert_close(out, fourier_features(x, frequencies(low, high, c.device)), rtol=0, atol=2.5e-7)


def test_route_truncates_toward_zero(dll):
    col0 = torch.tensor([0.0, 0.49, -0.49, 0.999, 1.0, 1.5, 2.49999, 3.9, -0.0])
    out = torch.empty(col0.shape, dtype=torch.int32)
    dll.nm_route(harness.ptr(col0), col0.numel(), 4, harness.ptr(out))
    assert out.tolist() == col0.to(torch.int64).clamp(0, 3).tolist()


@pytest.mark.parametrize("out_dim", [9, 25])
def test_scatter_and_centre_slice(dll, out_dim):
    layout = _layout(out_dim)
    table = layout.segment_table(out_dim, 32).tensor("cpu")
    row_of = torch.full((layout.numel,), -1, dtype=torch.int64)
    col_of = torch.full((layout.numel,), -1, dtype=torch.int32)
    dll.nm_scatter(harness.ptr(table), len(layout), out_dim, harness.ptr(row_of), harness.ptr(col_of))
    y = torch.randn(layout.num_rows, out_dim)
    expected = torch.cat([y[s.row_offset:s.row_offset + s.rows, s.col_start(out_dim):s.col_start(out_dim) + s.kernel_numel]
                          .reshape(-1) for s in layout.segments])
    assert torch.equal(y[row_of, col_of.long()], expected)
    conv1 = layout.segments[2]
    assert set(col_of[conv1.param_offset:conv1.param_offset + conv1.numel].tolist()) == {out_dim // 2}


def _request(layout, *, samples=1, noise=0.0, mode="reference", noise_tensor=None) -> Request:
    return Request(64.0, samples, noise, mode, None, noise_tensor, torch.float32, torch.device("cpu"))


def _inr(layout: Layout, seed: int, **kw) -> INR:
    torch.manual_seed(seed)
    inr = INR(layout.num_tensors, **kw)
    with torch.no_grad():  # non-trivial residual scales and biases
        for m in inr.model:
            for s in m.scalars:
                s.uniform_(-0.5, 0.5)
    return inr


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=2e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("config", [
    dict(hidden_dim=40, num_layers=3, num_freqs=4),
    dict(hidden_dim=64, num_layers=1, num_freqs=(2, 5)),
    dict(hidden_dim=33, num_layers=2, num_freqs=6, output_dim=25),
])
def test_host_forward_matches_torch_backend(dll, config):
    layout = _layout(config.get("output_dim", 9))
    inr = _inr(layout, 0, **config)
    req = _request(layout)
    with torch.no_grad():
        _close(harness.forward(dll, inr, layout, req), torch_backend.inr_forward(inr, layout, req))


@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_host_forward_with_given_noise_and_samples(dll, mode):
    """Explicit noise (reference mode routes rows to the previous tensor's MLP) and K = 3 averaging."""
    layout = _layout()
    inr = _inr(layout, 1, hidden_dim=40, num_layers=2, num_freqs=3)
    g = torch.Generator().manual_seed(3)
    noise = (torch.rand(3, layout.num_rows, 6, generator=g) - 0.5) * 0.9
    req = _request(layout, samples=3, noise=0.9, mode=mode, noise_tensor=noise)
    with torch.no_grad():
        expected = torch_backend.inr_forward(inr, layout, req)
        _close(harness.forward(dll, inr, layout, req), expected)


@pytest.mark.parametrize("mode", ["reference", "channels"])
def test_host_forward_philox_equals_its_materialised_noise(dll, mode):
    """In-kernel Philox noise == the same stream handed to the torch backend as a tensor (backward's path)."""
    layout = _layout()
    inr = _inr(layout, 2, hidden_dim=32, num_layers=2, num_freqs=3)
    seed = 987654321
    req = _request(layout, samples=4, noise=1.0, mode=mode)
    materialised = harness.noise(dll, seed, 4, layout.num_rows, 1.0, {"reference": 0, "channels": 1}[mode])
    routed = (layout.coordinates()[:, 0] + materialised[1:, :, 0]).to(torch.int64) != layout.coordinates()[:, 0]
    if mode == "reference":
        assert routed.any(), "the test needs rows sent to a neighbouring MLP"
    with torch.no_grad():
        expected = torch_backend.inr_forward(inr, layout, _request(layout, samples=4, noise=1.0, mode=mode,
                                                                     noise_tensor=materialised))
        _close(harness.forward(dll, inr, layout, req, seed), expected)


def test_pack_layout_and_padding():
    layout = _layout()
    inr = _inr(layout, 0, hidden_dim=40, num_layers=3, num_freqs=4)
    w0t, b0, wbt, bb, scalars, wo, bo = inr.stacked(torch.bfloat16, column_multiple=32)
    assert w0t.shape == (layout.num_tensors, 64, 64) and wbt.shape == (layout.num_tensors, 2, 64, 64)
    assert all(t.dtype == torch.bfloat16 for t in (w0t, b0, wbt, bb, wo, bo)) and scalars.dtype == torch.float32
    m = inr.model[3]
    assert torch.equal(w0t[3, :54, :40], m.initial_layer.weight.t().bfloat16())
    assert w0t[:, 54:].abs().sum() == 0 and w0t[:, :, 40:].abs().sum() == 0 and wbt[:, :, 40:].abs().sum() == 0
    assert torch.equal(wo[3, :, :40], m.output_layer.weight.bfloat16()) and bo.shape == (layout.num_tensors, 9)
