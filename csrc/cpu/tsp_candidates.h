// Candidate lists: the few cities a move may join each city to.
#pragma once

#include "tsp_bound.h"
#include "tsp_matrix.h"

#include <vector>

namespace neumeta::tsp {

constexpr int kCandidates = 6;  // candidates per city (the dummy included)

// Row-major lists, k per city of the tour (the dummy's included): the
// candidates of city a are cities[a * k .. a * k + k), and dist[i] is the
// distance from a to cities[i].
struct Candidates {
  int k = 0;
  std::vector<int> cities;
  std::vector<double> dist;
};

// Candidates by alpha-nearness (Helsgaun) under the penalties and spanning
// tree of `tree`: alpha(a, b) is how much longer the tree gets when forced to
// contain edge (a, b), that is d(a, b) + pi[a] + pi[b] minus the longest edge
// on the tree path from a to b. Unlike plain nearest neighbours it keeps the
// few long edges that join clusters. Each list holds the k smallest alphas,
// smallest first (ties: shorter first), k = min(kCandidates, d.m - 1). For
// paths the dummy (distance 0) comes first in every list; its own list holds
// the cities farthest from their two nearest neighbours, the natural ends of
// a path.
template <typename T>
Candidates alpha_candidates(const Matrix<T>& d, const HeldKarp<T>& tree);

// solve()'s lists: alpha_candidates after HeldKarp::ascend, its schedule
// shortened to `ascent_budget` seconds when that is >= 0.
template <typename T>
Candidates search_candidates(const Matrix<T>& d, double ascent_budget);

}  // namespace neumeta::tsp
