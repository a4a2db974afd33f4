"""Hypothesis strategies and property checks for the C++-backed entry points: the path solver
(neumeta_fast.tsp) and the _C ops. test_tsp.py runs the solver's on the normal build;
tests/_sanitize.py runs all of them on the ASan/UBSan build (`properties(examples)`)."""
from __future__ import annotations

import itertools
import math
import random
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neumeta_fast import INR, Layout, _C, generate, tsp

from helpers import random_inr, random_shapes


# -- the solver ---------------------------------------------------------------------------------
def _off_diagonal_scale(d: np.ndarray) -> float:
    off = np.abs(d.astype(np.float64)) * (1 - np.eye(len(d)))
    return float(off.max()) if d.size else 0.0


@st.composite
def matrices(draw, min_n: int = 0, max_n: int = 40) -> np.ndarray:
    """Symmetric matrices the solver accepts, built to break it: entries from a small palette of
    extremes (ties, cancelling signs, subnormals, the largest magnitude allowed), or spread over
    hundreds of decades; float64, float32 or int64."""
    n = draw(st.integers(min_n, max_n))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64]))
    top = min(tsp.max_entry(n), float(np.finfo(np.float32).max) if dtype == np.float32 else math.inf,
              2.0**62 if dtype == np.int64 else math.inf)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        special = st.sampled_from([0.0, 5e-324, 1e-300, 1.0, 2.0, 1e6, 1e16, top, top / 3])
        palette = np.array(draw(st.lists(st.tuples(special, st.booleans()), min_size=1, max_size=6)))
        values = (palette[:, 0] * np.where(palette[:, 1], -1, 1))[rng.integers(0, len(palette), (n, n))]
    else:
        exponent = draw(st.integers(-300, 300))
        values = rng.normal(size=(n, n)) * 10.0 ** rng.integers(min(exponent, 0), max(exponent, 0) + 1, (n, n))
    upper = np.triu(np.clip(values, -top, top), 1)
    return (upper + upper.T).astype(dtype)


def _brute_force(d: np.ndarray, path: bool) -> float:
    n = len(d)
    first = [()] if path else [(0,)]
    rest = range(n) if path else range(1, n)
    perms = np.array([f + p for f in first for p in itertools.permutations(rest)])
    total = d[perms[:, :-1], perms[:, 1:]].sum(1)
    if not path:
        total = total + d[perms[:, -1], perms[:, 0]]
    return float(total.min())


def check_solve(d: np.ndarray, path: bool, time_limit: float | None, seed: int) -> None:
    """solve() returns a permutation, optimal when untimed (checked by brute force up to 7 cities),
    never below lower_bound() (checked up to 64 cities: beyond, the bound takes long); cost()
    and lower_bound() are finite."""
    n = len(d)
    order = tsp.solve(d, path=path, time_limit=time_limit, seed=seed)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(n))
    length = tsp.cost(d, order, path)
    assert math.isfinite(length)
    scale = _off_diagonal_scale(d)
    if n <= 64:
        bound = tsp.lower_bound(d, path=path)
        # Rounding: sums of n entries, penalties up to about n entries each.
        assert math.isfinite(bound) and bound <= length + 1e-9 * (n + 1) ** 2 * scale
    if time_limit is None and 2 <= n <= 7:
        assert length <= _brute_force(d.astype(np.float64), path) + 1e-9 * n * scale


@st.composite
def bad_inputs(draw):
    """(dist, keyword arguments, error type, message pattern): one thing wrong with each."""
    n = draw(st.integers(2, 9))
    a = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random((n, n))
    d = a + a.T
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    kwargs = {}
    kind = draw(st.sampled_from(["non-finite", "asymmetric", "too large", "complex", "shape", "dtype",
                                 "time_limit", "path", "seed"]))
    if kind == "non-finite":
        d[i, j] = d[j, i] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return d, kwargs, ValueError, "finite"
    if kind == "asymmetric":
        j = (i + draw(st.integers(1, n - 1))) % n
        d[i, j] += 1.0
        return d, kwargs, ValueError, "symmetric"
    if kind == "too large":  # one pair, or every entry (then every sum overflows)
        value = draw(st.sampled_from([-1, 1])) * draw(st.sampled_from([1.01 * tsp.max_entry(n), 1e308, 1.7e308]))
        j = (i + draw(st.integers(1, n - 1))) % n
        if draw(st.booleans()):
            d[i, j] = d[j, i] = value
        else:
            d[:] = value
        return d, kwargs, ValueError, "at most"
    if kind == "complex":
        z = d + 1j * draw(st.sampled_from([0.0, 1.0]))
        return draw(st.sampled_from([z, torch.from_numpy(z)])), kwargs, ValueError, "real numbers"
    if kind == "shape":
        bad = draw(st.sampled_from([d[:, :-1], d[0], d[None], np.float64(1.0), np.zeros((0, 3))]))
        return bad, kwargs, ValueError, "square"
    if kind == "dtype":
        bad = draw(st.sampled_from([d.astype(object), d.astype(str), np.array([["a", "b"], ["c", "d"]])]))
        return bad, kwargs, ValueError, "real numbers"
    if kind == "time_limit":
        value, error = draw(st.sampled_from([("1", TypeError), (True, TypeError), (np.bool_(False), TypeError),
                                             ([1.0], TypeError), (1j, TypeError), (-1, ValueError),
                                             (-1e-9, ValueError), (math.nan, ValueError), (-math.inf, ValueError)]))
        return d, {"time_limit": value}, error, "time_limit"
    if kind == "path":
        return d, {"path": draw(st.sampled_from(["yes", 1, None, 0.0]))}, TypeError, "path"
    return d, {"seed": draw(st.sampled_from([1.5, "3", True, None, np.float32(2)]))}, TypeError, "seed"


def check_rejected(case: tuple) -> None:
    """Every entry point that takes dist raises the error bad_inputs() expects, naming the problem."""
    dist, kwargs, error, pattern = case
    calls = [lambda: tsp.solve(dist, **kwargs)]
    if "time_limit" not in kwargs and "seed" not in kwargs:  # the order is checked after dist and path
        calls += [lambda: tsp.lower_bound(dist, **kwargs), lambda: tsp.cost(dist, [], **kwargs)]
    for call in calls:
        with pytest.raises(error, match=pattern):
            call()


@st.composite
def features(draw):
    """Feature tensors for path_order: real or complex, finite or not, close or far apart."""
    n, width = draw(st.integers(0, 20)), draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.float16, torch.int32, torch.bool,
                                  torch.complex64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, width, generator=gen, dtype=torch.float64) * 10.0 ** draw(st.integers(-300, 307))
    if n and width and draw(st.booleans()):
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, width - 1))] = draw(st.sampled_from([math.nan, math.inf]))
    return x.to(dtype) if dtype != torch.bool else x > 0


def check_path_order(x: torch.Tensor, seed: int) -> None:
    """path_order() orders the rows, or names what is wrong with them."""
    if x.is_complex():
        with pytest.raises(ValueError, match="real numbers"):
            tsp.path_order(x, seed=seed)
        return
    xd = x.double()
    if not torch.isfinite(xd).all():
        with pytest.raises(ValueError, match="finite"):
            tsp.path_order(x, seed=seed)
        return
    d = torch.cdist(xd, xd, p=1).numpy() if len(x) else np.zeros((0, 0))
    if d.size and not d.max() <= tsp.max_entry(len(x)):
        with pytest.raises(ValueError, match="too far apart"):
            tsp.path_order(x, seed=seed)
        return
    order = tsp.path_order(x, seed=seed)
    assert order.dtype == torch.int64 and torch.equal(order.sort().values, torch.arange(len(x)))
    assert tsp.cost(d, order.numpy()) == tsp.cost(d, tsp.solve(d, seed=seed))


# -- the ops (csrc/cpu/coordinates.cpp, inr_forward.cpp), on inputs they accept ----------------------
def check_coordinates(index: int, num_tensors: int, a_size: int, b_size: int) -> None:
    cols = b_size
    out = torch.full((a_size * b_size, 6), math.nan)
    _C.fill_coordinates(out, index, num_tensors, a_size, b_size, cols)
    a, b = torch.meshgrid(torch.arange(a_size), torch.arange(b_size), indexing="ij")
    want = torch.stack([torch.full_like(a, index), a, b if cols != 1 else torch.zeros_like(b),
                        torch.full_like(a, num_tensors), torch.full_like(a, a_size), torch.full_like(a, cols)], -1)
    assert torch.equal(out, want.reshape(-1, 6).float())


def _eager_tail(h: torch.Tensor, blocks, wo, bo) -> torch.Tensor:
    for w, b, s in blocks:
        h = s * torch.relu(h @ w.T + b) + h
    return h @ wo.T + bo


def check_inr_forward(rows: int, width: int, hidden: int, depth: int, out_dim: int, seed: int) -> None:
    """inr_forward and inr_forward_separable against the eager formula."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    blocks = [(rand(hidden, hidden), rand(hidden), float(rand(()))) for _ in range(depth)]
    wo, bo = rand(out_dim, hidden), rand(out_dim)
    tail = _C.ResMLPTail([w for w, _, _ in blocks], [b for _, b, _ in blocks], [s for _, _, s in blocks], wo, bo)
    pe, w0, b0 = rand(rows, width), rand(hidden, width), rand(hidden)
    want = _eager_tail(torch.relu(pe @ w0.T + b0), blocks, wo, bo)
    torch.testing.assert_close(_C.inr_forward(pe, w0, b0, tail), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    a_size, b_size = rows, width
    u, v = rand(a_size, hidden), rand(b_size, hidden)
    start = int(torch.randint(0, a_size * b_size, (), generator=gen))
    count = int(torch.randint(0, a_size * b_size - start + 1, (), generator=gen))
    r = torch.arange(start, start + count)
    want = _eager_tail(torch.relu(u[r // b_size] + v[r % b_size]), blocks, wo, bo)
    got = _C.inr_forward_separable(u, v, start, count, tail)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * (want.abs().max().item() if count else 1))


def check_generate(seed: int, tensors: int, noise: float, samples: int) -> None:
    """generate() on the fused CPU ops (inference) against its eager autograd path."""
    shapes = random_shapes(random.Random(seed), tensors)
    inr: INR = random_inr(tensors, seed=seed, hidden_dim=8, num_layers=2, num_freqs=2)
    layout = Layout.from_shapes(shapes)
    eps = torch.rand(samples, layout.num_rows, 6, generator=torch.Generator().manual_seed(seed)) - 0.5
    kwargs = dict(norm=8, noise=noise, samples=samples, noise_tensor=eps * noise if noise else None, backend="torch")
    with torch.no_grad():
        fused = generate(inr, layout, **kwargs)
    eager = generate(inr, layout, **kwargs)  # grad enabled: the eager path
    for name, _ in shapes:
        torch.testing.assert_close(fused[name], eager[name].detach(), rtol=1e-4, atol=1e-5)


# -- all of it, as hypothesis tests --------------------------------------------------------------
def properties(examples: int, guard: Callable[[Callable], Callable] = lambda check: check) -> dict[str, Callable]:
    """Each property above as a hypothesis test of `examples` examples (calling one runs it), by
    name; `guard` wraps every check."""
    run = settings(max_examples=examples, deadline=None, database=None)
    seeds = st.integers(0, 2**31 - 1)
    sizes = st.integers
    return {
        "solve": run(given(matrices(), st.booleans(), st.sampled_from([None, None, 0, 0.01]), seeds)(
            guard(check_solve))),
        # Past 200 cities kicks use the restricted search.
        "solve_restricted": run(given(matrices(min_n=195, max_n=215), st.booleans(), st.just(0.05), seeds)(
            guard(check_solve))),
        "rejects": run(given(bad_inputs())(guard(check_rejected))),
        "path_order": run(given(features(), seeds)(guard(check_path_order))),
        "coordinates": run(given(sizes(0, 9), sizes(1, 10), sizes(1, 70), sizes(1, 40))(guard(check_coordinates))),
        "inr_forward": run(given(sizes(1, 70), sizes(1, 9), sizes(1, 20), sizes(0, 3), sizes(1, 9), seeds)(
            guard(check_inr_forward))),
        "generate": run(given(seeds, sizes(1, 5), st.sampled_from([0.0, 0.5]), sizes(1, 2))(guard(check_generate))),
    }
