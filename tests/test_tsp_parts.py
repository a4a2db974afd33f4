"""The path solver's pieces on their own, through the test-only bindings _C._tsp_test_* (see
csrc/cpu/tsp_testing.h): the array tour's undo log, the k-opt moves' gains, the Held-Karp ascent's
bound, the candidate lists and the exact solvers. Paths are tours through the dummy city n."""
import functools
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neumeta_fast import _C, tsp

# tests/_sanitize.py runs these on the sanitized build with its own number of examples.
SETTINGS = settings(max_examples=int(os.environ.get("NEUMETA_TSP_PARTS_EXAMPLES", "60")), deadline=None)


def _matrix(seed, n, kind):
    rng = np.random.default_rng(seed)
    if kind == "metric":
        x = rng.random((n, 3))
        return np.abs(x[:, None] - x[None]).sum(-1)
    a = rng.random((n, n))
    d = a + a.T
    return d - 1.5 if kind == "negative" else np.round(d * 2) if kind == "ties" else d




KINDS = st.sampled_from(["uniform", "metric", "negative", "ties"])


def _tour_cost(d, tour, n):
    """Length of a closed tour of the cities of d plus (for paths) the dummy n, at distance 0."""
    nxt = np.roll(tour, -1)
    real = (tour < n) & (nxt < n)
    return float(d[tour[real], nxt[real]].sum())


@functools.lru_cache(maxsize=None)
def _perms(n, fixed_first):
    rest = range(1, n) if fixed_first else range(n)
    body = np.array(list(itertools.permutations(rest)), np.int64).reshape(-1, n - 1 if fixed_first else n)
    return np.hstack([np.zeros((len(body), 1), np.int64), body]) if fixed_first else body


def _brute(d, path):
    """The optimum by trying every order (n <= 9)."""
    p = _perms(len(d), not path)
    costs = d[p[:, :-1], p[:, 1:]].sum(1)
    if not path:
        costs = costs + d[p[:, -1], p[:, 0]]
    return float(costs.min())


@SETTINGS
@given(st.integers(8, 40), st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
       KINDS)
def test_undo_restores_the_tour(n, path, seed, kick_seed, kind):
    d = _matrix(seed, n, kind)
    m = n + path
    tour = np.random.default_rng(seed).permutation(m)
    kicked, restored, added, gain = _C._tsp_test_kick_and_undo(d, path, tour.tolist(), kick_seed)
    assert restored == tour.tolist()
    assert sorted(kicked) == list(range(m))
    # The kick's reported lengths are the tour's change.
    change = _tour_cost(d, np.array(kicked), n) - _tour_cost(d, tour, n)
    assert change == pytest.approx(added - gain, abs=1e-9 * np.abs(d).sum())


@SETTINGS
@given(st.integers(4, 30), st.booleans(), st.integers(0, 2**32 - 1), st.integers(2, 5), st.data(),
       KINDS)
def test_move_gain_is_the_cost_change(n, path, seed, max_k, data, kind):
    d = _matrix(seed, n, kind)
    m = n + path
    tour = np.random.default_rng(seed + 1).permutation(m)
    city = data.draw(st.integers(0, m - 1))
    gain, after = _C._tsp_test_move(d, path, tour.tolist(), city, max_k)
    assert sorted(after) == list(range(m))
    assert gain >= 0
    if gain == 0:
        assert after == tour.tolist()
    else:
        change = _tour_cost(d, tour, n) - _tour_cost(d, np.array(after), n)
        assert change == pytest.approx(gain, abs=1e-9 * np.abs(d).sum())
        assert change > 0


@st.composite
def _small_instances(draw):
    """(d, path, the optimum by brute force) with 3 to 9 cities."""
    d = _matrix(draw(st.integers(0, 2**32 - 1)), draw(st.integers(3, 9)), draw(KINDS))
    path = draw(st.booleans())
    return d, path, _brute(d, path)


@SETTINGS
@given(_small_instances())
def test_ascent_bound_never_exceeds_the_optimum(instance):
    d, path, best = instance
    assert _C._tsp_test_ascent_bound(d, path) <= best + 1e-9 * np.abs(d).sum()


def _alpha(d, pi):
    """alpha[a, b]: how much longer the minimum spanning tree under d[a, b] + pi[a] + pi[b] gets
    when it must hold edge (a, b) (Prim, then the longest edge on each tree path)."""
    n = len(d)
    w = d + pi[:, None] + pi[None, :]
    parent, key, done = np.full(n, -1), w[0].copy(), np.zeros(n, bool)
    done[0] = True
    adj = [[] for _ in range(n)]
    for _ in range(n - 1):
        u = int(np.argmin(np.where(done, np.inf, key)))
        p = int(np.argmin(np.where(done, w[u], np.inf)))
        done[u] = True
        adj[u].append((p, w[p, u]))
        adj[p].append((u, w[p, u]))
        key = np.minimum(key, w[u])
    alpha = np.empty((n, n))
    for a in range(n):
        beta = np.full(n, -np.inf)
        stack, seen = [a], {a}
        while stack:
            u = stack.pop()
            for v, e in adj[u]:
                if v not in seen:
                    seen.add(v)
                    beta[v] = max(beta[u], e)
                    stack.append(v)
        alpha[a] = w[a] - beta
    return alpha


@SETTINGS
@given(st.integers(3, 30), st.booleans(), st.integers(0, 2**32 - 1), st.booleans())
def test_candidates_are_the_smallest_alphas(n, path, seed, penalised):
    rng = np.random.default_rng(seed)
    d = _matrix(seed, n, "uniform")
    pi = rng.normal(size=n) if penalised else np.zeros(n)
    m = n + path
    k = min(6, m - 1)
    cand = np.array(_C._tsp_test_candidates(d, path, pi.tolist())).reshape(m, k)
    alpha = _alpha(d, pi)
    tol = 1e-9 * np.abs(d).sum()
    for a in range(n):
        row = cand[a, 1:] if path else cand[a]
        if path:
            assert cand[a, 0] == n  # the dummy first: the path may end anywhere
        others = np.delete(np.arange(n), a)
        kth = np.sort(alpha[a, others])[len(row) - 1]
        assert len(set(row)) == len(row) and a not in row
        assert (alpha[a, row] <= kth + tol).all()
        assert (np.diff(alpha[a, row]) >= -tol).all()
        if not penalised:  # a nearest neighbour is a tree edge: alpha 0
            assert others[np.argmin(d[a, others])] in row
    if path:  # the dummy's list: the cities farthest from their two nearest neighbours
        lonely = np.sort(d + np.diag(np.full(n, np.inf)), 1)[:, :2].sum(1)
        assert sorted(lonely[cand[n]]) == sorted(np.sort(lonely)[::-1][:k])


@SETTINGS
@given(_small_instances())
def test_exact_solvers_match_brute_force(instance):
    d, path, best = instance
    n = len(d)
    order = _C._tsp_test_held_karp(d, path)
    assert sorted(order) == list(range(n))
    assert tsp.cost(d, order, path) == pytest.approx(best, rel=1e-12, abs=1e-12)
    # Branch and bound solves tours; a path is a tour through a dummy city at distance 0.
    w = np.pad(d, (0, 1)) if path else d
    tour = _C._tsp_test_branch_and_bound(w, best + 1e-6 * (1 + abs(best)))
    assert sorted(tour) == list(range(len(w))) and tour[0] == len(w) - 1
    assert tsp.cost(w, tour, False) == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert _C._tsp_test_branch_and_bound(w, best - 1e-6 * (1 + abs(best))) == []  # nothing shorter


def test_bad_arguments_are_named():
    d = _matrix(0, 10, "uniform")
    with pytest.raises(ValueError, match="permutation of range"):
        _C._tsp_test_move(d, True, list(range(10)), 0, 3)  # a path's tour holds the dummy too
    with pytest.raises(ValueError, match="max_k"):
        _C._tsp_test_move(d, False, list(range(10)), 0, 6)
    with pytest.raises(ValueError, match="n must be in"):
        _C._tsp_test_kick_and_undo(np.ascontiguousarray(d[:5, :5]), False, list(range(5)), 0)
    with pytest.raises(ValueError, match="pi must hold"):
        _C._tsp_test_candidates(d, False, [0.0])
