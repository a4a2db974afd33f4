"""Backend registry: which implementations of `generate` exist, where they run, which `auto` picks.

Each backend module exposes `NAME`, `unavailable_reason(device) -> str | None` and
`inr_forward(inr, layout, request) -> Tensor`. A backend chosen by `auto` that fails to
import is skipped quietly; one asked for by name raises the real reason.
Set NEUMETA_BACKEND to override `auto`.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch

_MODULES = {
    "triton": "neumeta_fast.backends.triton_backend",
    "cuda": "neumeta_fast.backends.cuda_backend",
    "torch": "neumeta_fast.backends.torch_backend",
}
# `auto` on CUDA devices for 16-bit inference: the first usable of these.
_FUSED_ORDER = ("cuda", "triton", "torch")
BACKENDS = ("auto",) + tuple(_MODULES)


def _load(name: str) -> ModuleType:
    return importlib.import_module(_MODULES[name])


def _reason(name: str, device: torch.device) -> str | None:
    """None when `name` can run on `device`, else why not."""
    try:
        module = _load(name)
    except ImportError as exc:  # missing optional dependency or extension
        return f"not importable: {exc}"
    return module.unavailable_reason(device)


def backends(device: torch.device | str | None = None) -> dict[str, str]:
    """Each backend's status on `device` (default: cuda when present, else cpu): 'ok' or why not."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return {name: (_reason(name, device) or "ok") for name in _MODULES}


def resolve(name: str, device: torch.device, dtype: torch.dtype = torch.float32,
            needs_grad: bool = False) -> ModuleType:
    """The backend module to use for `name` ('auto' or a backend name) on `device`.

    `auto` depends on the MLP compute dtype and on whether the result needs gradients (see above).
    """
    name = os.environ.get("NEUMETA_BACKEND", name) if name == "auto" else name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "auto":
        fused = device.type == "cuda" and dtype != torch.float32 and not needs_grad
        for candidate in _FUSED_ORDER if fused else ("torch",):
            if _reason(candidate, device) is None:
                return _load(candidate)
        raise RuntimeError(f"no backend can run on {device}")  # torch always can: unreachable in practice
    reason = _reason(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    return _load(name)
