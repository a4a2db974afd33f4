"""Shortest Hamiltonian path / closed tour solver (C++ core in ``csrc/cpu/tsp_*.cpp``, driver
``tsp_solve.cpp``).

``solve`` takes a dense symmetric distance matrix (float32 or float64 numpy
array, or a CPU tensor) exactly as given: no integer scaling, no magnitude cap,
no triangle inequality needed; negative entries are allowed and the diagonal
is ignored. Up to ``EXACT_MAX_N`` (16) cities the result is provably optimal
(branch and bound on Held-Karp penalised spanning-tree bounds, Held-Karp
dynamic programming as a fallback); beyond that it comes from iterated local
search (sequential 2- to 5-opt moves as in LKH over alpha-nearness candidate
lists under the penalties of a subgradient ascent on LKH's schedule,
segment-local double-bridge kicks): without a ``time_limit`` it stops once kicks
stop helping; with one it kicks until the limit, restarting from the best order,
perturbed, whenever kicks stall. ``lower_bound`` gives a Held-Karp bound no order
is shorter than, a certificate for any order.

Matrices must be real (float, integer or bool; not complex), finite, symmetric
within a relative tolerance of 1e-5 (asymmetric problems are not supported: a
ValueError says which entry differs), and no larger than ``max_entry(n)`` in
magnitude off the diagonal (about 1.7e308 / (1024 (n + 1)^2), so that lengths
and penalties stay finite in float64: rescale larger ones); only the upper
triangle is read. The result is deterministic for a given ``seed`` without a
``time_limit``; with one it depends on how far the search got.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch  # must precede the extension import: _C links against libc10

from . import _C

EXACT_MAX_N: int = _C.tsp_exact_max_n

__all__ = ["EXACT_MAX_N", "cost", "lower_bound", "max_entry", "path_order", "solve"]

# Rows of the distance matrix computed per torch.cdist call in path_order.
_CDIST_BLOCK_ROWS = 256


def _check_real_tensor(name: str, t: torch.Tensor) -> None:
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense tensor, got layout {t.layout}")
    if t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_int(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _time_limit_seconds(time_limit) -> float:
    """The C++ solver's time limit: -1 for None or infinity (no limit), else seconds >= 0."""
    if time_limit is None:
        return -1.0
    if isinstance(time_limit, (bool, np.bool_)) or not isinstance(time_limit, numbers.Real):
        raise TypeError(f"time_limit must be None or a number of seconds, got {type(time_limit).__name__}")
    try:
        limit = float(time_limit)
    except OverflowError:  # an int beyond float range: as good as no limit
        limit = math.inf
    if not limit >= 0:
        raise ValueError(f"time_limit must be None or a number >= 0 (seconds), got {time_limit!r}")
    return -1.0 if limit == math.inf else limit


def _as_matrix(dist) -> np.ndarray:
    if isinstance(dist, torch.Tensor):
        if dist.device.type != "cpu":
            raise ValueError(f"dist must be a CPU tensor or numpy array, got a tensor on {dist.device}")
        _check_real_tensor("dist", dist)
        if dist.dtype not in (torch.float32, torch.float64):
            dist = dist.double()
        dist = dist.detach().numpy()
    arr = np.asarray(dist)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"dist must be a square 2-D matrix, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool):
            raise ValueError(f"dist must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def solve(dist, *, path: bool = True, time_limit: float | None = None, seed: int = 0) -> np.ndarray:
    """Order of the n cities (int64 array) minimising the path (``path=True``,
    free ends) or closed tour (``path=False``) length under ``dist``.

    ``time_limit`` (seconds, a real number: int, float or numpy scalar): beyond
    ``EXACT_MAX_N`` cities the search goes on kicking, and restarting from its best
    order when kicks stall, until then (a shorter order, but the call takes the whole
    limit; the ascent behind the candidate lists gets at most a fifth of it); ``None``
    or infinity runs until converged.
    """
    arr = _as_matrix(dist)
    path = _check_bool("path", path)
    limit = _time_limit_seconds(time_limit)
    seed = _check_int("seed", seed)
    return _C.tsp_solve(arr, path, limit, seed % 2**64)


def lower_bound(dist, *, path: bool = True) -> float:
    """A length no path (``path=True``, free ends) or closed tour (``path=False``) under
    ``dist`` is shorter than: the optimum itself up to ``EXACT_MAX_N`` cities, beyond
    that the Held-Karp bound (a 1-tree under the penalties of a subgradient ascent on
    LKH's schedule, at most 4e8 / n^2 steps: the whole schedule up to about 630 cities).
    ``cost(dist, order) / lower_bound(dist) - 1`` bounds how far ``order`` is from optimal
    (when the bound is positive).
    """
    arr = _as_matrix(dist)
    return _C.tsp_lower_bound(arr, _check_bool("path", path))


def max_entry(n: int) -> float:
    """The largest magnitude an entry off the diagonal of an n-city matrix may have (see the module doc)."""
    n = _check_int("n", n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _C.tsp_max_entry(n)


def cost(dist, order, path: bool = True) -> float:
    """Length of ``order`` under ``dist``, summed in float64 (closing edge included when ``path=False``).
    ``dist`` must pass the checks ``solve`` makes."""
    arr = _as_matrix(dist)
    _C.tsp_validate(arr)
    path = _check_bool("path", path)
    n = arr.shape[0]
    idx = np.asarray(order.cpu() if isinstance(order, torch.Tensor) else order)
    if idx.size == 0:  # np.asarray([]) is float64
        idx = idx.astype(np.int64)
    if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer) or not np.array_equal(np.sort(idx), np.arange(n)):
        raise ValueError(f"order must be a permutation of range({n}), got {idx!r}")
    if n < 2:
        return 0.0
    d = arr.astype(np.float64, copy=False)
    total = float(d[idx[:-1], idx[1:]].sum())
    if not path:
        total += float(d[idx[-1], idx[0]])
    return total


def path_order(features: torch.Tensor, *, time_limit: float | None = None, seed: int = 0) -> torch.Tensor:
    """Order of the rows of ``features`` [n, d] along the shortest L1 path (free ends).

    Distances are computed in float64 on the tensor's device, a block of rows at
    a time (never an n x n x d intermediate). Returns a LongTensor on that device.
    Features must be real and finite, and their distances within ``max_entry(n)``.
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a 2-D tensor [n, d], got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D tensor [n, d], got shape {tuple(features.shape)}")
    _check_real_tensor("features", features)
    x = features.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        i, j = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"features must be finite, got features[{i}, {j}] = {x[i, j].item()}")
    n = x.shape[0]
    dist = torch.empty(n, n, dtype=torch.float64, device=x.device)
    for start in range(0, n, _CDIST_BLOCK_ROWS):
        dist[start : start + _CDIST_BLOCK_ROWS] = torch.cdist(x[start : start + _CDIST_BLOCK_ROWS], x, p=1)
    largest, limit = (dist.max().item() if n else 0.0), max_entry(n)
    if not largest <= limit:  # inf where the sums overflow
        raise ValueError(f"features are too far apart: their L1 distances reach {largest:.9g}, more than the "
                         f"{limit:.9g} that {n} cities allow (rescale them)")
    order = solve(dist.cpu().numpy(), path=True, time_limit=time_limit, seed=seed)
    return torch.from_numpy(order).to(features.device)
