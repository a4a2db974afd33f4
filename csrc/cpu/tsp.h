// Shortest Hamiltonian path / closed tour over a dense symmetric distance matrix.
//
// Small instances are solved exactly (Held-Karp, pruned by a heuristic upper
// bound); larger ones by iterated local search: Or-3opt moves (2-opt and the
// sequential 3-opt moves) over nearest-neighbour candidate lists with
// don't-look bits, perturbed by segment-local double bridges until the search
// stops improving or the time limit is reached.
#pragma once

#include <cstdint>
#include <vector>

namespace neumeta::tsp {

// Largest n solved exactly (for path: n cities, for tour: n cities with one fixed).
constexpr int64_t kExactMaxN = 12;

struct Options {
  bool path = true;          // open path with free ends; false: closed tour
  double time_limit = -1.0;  // seconds; negative: run until converged
  uint64_t seed = 0;
};

// Checks that the row-major n x n matrix is finite and symmetric within a
// relative tolerance; throws std::invalid_argument naming the first offending
// entry. Only the upper triangle is used afterwards.
template <typename T>
void validate(const T* dist, int64_t n);

// A visiting order of 0..n-1. Deterministic for a given seed unless the time
// limit cuts the search short. `dist` must outlive the call; it is not copied.
template <typename T>
std::vector<int64_t> solve(const T* dist, int64_t n, const Options& opt);

}  // namespace neumeta::tsp
