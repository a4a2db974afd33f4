// Test-only entry points to the solver's pieces, bound as neumeta_fast._C._tsp_test_* for
// tests/test_tsp_parts.py: each runs one piece on the input given, so that its invariants can be
// checked on their own. Not part of the library's API. Each validates `dist` (see tsp.h) and its
// other arguments, and throws std::invalid_argument naming a bad one. Paths (`path`) are tours
// through the dummy city n.
#pragma once

#include <cstdint>
#include <vector>

namespace neumeta::tsp::testing {

struct KickResult {
  std::vector<int> kicked;    // the tour after one double bridge and the local search that repairs it
  std::vector<int> restored;  // the tour after undoing both
  double added;               // the length the double bridge reported adding
  double gain;                // the length the local search reported removing
};
// One kick of the search from `tour` (a permutation of the tour's cities), with `seed`.
template <typename T>
KickResult kick_and_undo(const T* dist, int64_t n, bool path, const std::vector<int>& tour, uint64_t seed);

struct MoveResult {
  double gain;            // reported; 0 if no move applied
  std::vector<int> tour;  // the tour after it
};
// The first improving sequential move of up to `max_k` exchanges removing a tour edge at `city`.
template <typename T>
MoveResult move(const T* dist, int64_t n, bool path, const std::vector<int>& tour, int city, int max_k);

// lower_bound()'s ascent on its own (lower_bound() is exact up to kExactMaxN cities).
template <typename T>
double ascent_bound(const T* dist, int64_t n, bool path);

// The candidate lists (row-major, k per tour city) under penalties pi (n of them).
template <typename T>
std::vector<int> candidates(const T* dist, int64_t n, bool path, const std::vector<double>& pi);

// The Held-Karp dynamic program's shortest path or tour (up to 20 cities).
template <typename T>
std::vector<int> held_karp(const T* dist, int64_t n, bool path);

// Branch and bound's shortest tour below `ub` through the cities of `dist` (3 to
// kBranchMaxCities), from city n - 1; empty if none is shorter than ub.
template <typename T>
std::vector<int> branch_and_bound(const T* dist, int64_t n, double ub);

}  // namespace neumeta::tsp::testing
