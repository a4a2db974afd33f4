"""Build tests/cuda_harness.cpp with the system C++ compiler and call it through ctypes on torch tensors."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import torch

from neumeta_fast import INR, Layout
from neumeta_fast.backends import cuda_backend
from neumeta_fast.backends.request import Request

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "csrc" / "include"
SOURCE = Path(__file__).with_name("cuda_harness.cpp")

_P = ctypes.c_void_p
_I, _I64, _U64, _F = ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float
_SIGNATURES = {
    "nm_philox": [_P, _P, _P],
    "nm_noise": [_U64, _I, _I64, _F, _I, _P],
    "nm_coordinates": [_P, _I, _I, _I, _I64, _P],
    "nm_features": [_P, _I64, _F, _I, _I, _P],
    "nm_route": [_P, _I64, _I, _P],
    "nm_scatter": [_P, _I, _I, _P, _P],
    "nm_forward": [_P] * 7 + [_I] * 6 + [_P, _I, _I64, _P, _U64, _F, _I, _I, _F, _I, _I, _I64, _P],
}


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


def build(out_dir: Path) -> ctypes.CDLL:
    """Compile the harness (no FMA contraction: the kernel's rounding is explicit) and load it."""
    lib = out_dir / "libneumeta_harness.so"
    cmd = [compiler(), "-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Werror",
           f"-I{INCLUDE}", str(SOURCE), "-o", str(lib)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"harness build failed: {' '.join(cmd)}\n{done.stderr}")
    dll = ctypes.CDLL(str(lib))
    for name, args in _SIGNATURES.items():
        getattr(dll, name).argtypes = args
        getattr(dll, name).restype = None
    return dll


def ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    assert t.is_contiguous() and t.device.type == "cpu"
    return t.data_ptr()


def noise(dll: ctypes.CDLL, seed: int, samples: int, rows: int, scale: float, mode: int) -> torch.Tensor:
    out = torch.empty(samples, rows, 6)
    dll.nm_noise(seed, samples, rows, scale, mode, ptr(out))
    return out


def forward(dll: ctypes.CDLL, inr: INR, layout: Layout, req: Request, seed: int = 0) -> torch.Tensor:
    """The float32 kernel run by the harness on the backend's own packed weights and segment table."""
    w0t, b0, wbt, bb, scalars, wo, bo = inr.stacked(torch.float32, column_multiple=256)
    table = layout.segment_table(inr.output_dim, 32)
    out = torch.full((layout.numel,), float("nan"))
    noise_tensor = None if req.noise_tensor is None else req.noise_tensor.contiguous()
    dll.nm_forward(*(ptr(t) for t in (w0t, b0, wbt, bb, scalars, wo, bo)), inr.num_tensors, w0t.shape[1],
                   w0t.shape[2], wbt.shape[1], wo.shape[1], wo.shape[2], ptr(table.tensor("cpu")), len(layout), table.num_tiles,
                   ptr(noise_tensor), seed, req.noise, req.samples, cuda_backend._NOISE_MODES[req.noise_mode],
                   req.norm, inr.freq_low, inr.num_freqs, layout.num_rows, ptr(out))
    return out
