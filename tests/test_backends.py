"""The `auto` backend rule (measured on an H200, benchmarks/RESULTS.md), checked without a GPU by
treating every backend as usable."""
import importlib

import pytest
import torch

B = importlib.import_module("neumeta_fast.backends")  # the package: `neumeta_fast.backends` is also a function

CUDA = torch.device("cuda")


@pytest.fixture
def all_usable(monkeypatch):
    monkeypatch.setattr(B, "_reason", lambda name, device: None)
    monkeypatch.delenv("NEUMETA_BACKEND", raising=False)


@pytest.mark.parametrize("dtype,needs_grad,want", [
    (torch.float32, False, "torch"),    # cuBLAS fp32 beats the fused fp32 kernels
    (torch.float32, True, "torch"),
    (torch.bfloat16, False, "cuda"),    # fused tensor-core kernels beat torch in 16-bit
    (torch.float16, False, "cuda"),
    (torch.bfloat16, True, "torch"),    # training: the fused backends' backward is torch's plus a recompute
])
def test_auto_on_cuda_follows_the_measurements(all_usable, dtype, needs_grad, want):
    assert B.resolve("auto", CUDA, dtype, needs_grad).NAME == want


def test_auto_falls_back_in_order(monkeypatch):
    monkeypatch.delenv("NEUMETA_BACKEND", raising=False)
    monkeypatch.setattr(B, "_reason", lambda name, device: "not built" if name == "cuda" else None)
    assert B.resolve("auto", CUDA, torch.bfloat16).NAME == "triton"
    monkeypatch.setattr(B, "_reason", lambda name, device: None if name == "torch" else "no GPU")
    assert B.resolve("auto", CUDA, torch.bfloat16).NAME == "torch"


def test_auto_on_cpu_is_torch_whatever_the_dtype(all_usable):
    for dtype in (torch.float32, torch.bfloat16):
        assert B.resolve("auto", torch.device("cpu"), dtype).NAME == "torch"


def test_environment_overrides_auto(all_usable, monkeypatch):
    monkeypatch.setenv("NEUMETA_BACKEND", "triton")
    assert B.resolve("auto", CUDA, torch.float32).NAME == "triton"
