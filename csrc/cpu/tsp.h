// Shortest Hamiltonian path / closed tour over a dense symmetric distance matrix.
//
// Small instances (n <= kExactMaxN) are solved exactly: depth-first branch
// and bound on Held-Karp penalised spanning-tree bounds, with the Held-Karp
// dynamic program as a fallback. Larger ones by iterated local search with
// the sequential 2- to 5-opt moves of LKH over alpha-nearness candidate lists
// (spanning-tree sensitivity under Held-Karp penalties) with don't-look
// bits, perturbed by segment-local double bridges (repaired with LKH's
// restricted search on larger instances): until the search stops improving,
// or with a time limit until that limit, restarting from the best tour,
// perturbed, whenever the kicks stall.
//
// The pieces: tsp_matrix (input view and checks), tsp_bound (Prim, the
// subgradient ascent, Held-Karp bounds), tsp_candidates, tsp_tour (array tour
// and undo log), tsp_kopt (moves), tsp_kicks, tsp_exact, tsp_solve (driver);
// tsp_testing exposes them to the tests.
#pragma once

#include <cstdint>
#include <vector>

namespace neumeta::tsp {

// Largest n solved exactly (for path: n cities, for tour: n cities with one fixed).
constexpr int64_t kExactMaxN = 16;

struct Options {
  bool path = true;          // open path with free ends; false: closed tour
  double time_limit = -1.0;  // seconds: the search kicks until then; negative: until converged
  uint64_t seed = 0;
};

// The largest |entry| off the diagonal that n cities allow: path lengths,
// Held-Karp penalties and their spanning trees (sums of up to about n^2
// entries) then stay finite in float64.
double max_entry(int64_t n);

// Checks that the row-major n x n matrix is finite, symmetric within a
// relative tolerance and no larger than max_entry(n) off the diagonal; throws
// std::invalid_argument naming the first offending entry. Only the upper
// triangle is used afterwards. Returns the largest |entry| off the diagonal.
template <typename T>
double validate(const T* dist, int64_t n);

// A visiting order of 0..n-1. Validates `dist` first (as above); the time
// limit counts from the call, validation included. Deterministic for a given
// seed without a time limit. `dist` must outlive the call; it is not copied.
template <typename T>
std::vector<int64_t> solve(const T* dist, int64_t n, const Options& opt);

// A lower bound on the shortest path (`path`) or tour under `dist`: no order
// is shorter. Up to kExactMaxN cities it is the optimum itself; beyond, the
// Held-Karp 1-tree bound after a subgradient ascent on LKH's schedule.
// Validates `dist` first.
template <typename T>
double lower_bound(const T* dist, int64_t n, bool path);

}  // namespace neumeta::tsp
