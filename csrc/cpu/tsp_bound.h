// Held-Karp bounds: one Prim, one subgradient ascent on the penalties (its
// step rules are its callers'), and the penalised spanning tree and 1-tree of
// the solver's matrix.
#pragma once

#include "tsp_matrix.h"

#include <vector>

namespace neumeta::tsp {

// Minimum spanning tree, by Prim from rest[0], of the `count` cities in rest
// under rows(u)[v] + pi[u] + pi[v] (rows(u): a pointer to u's distances,
// indexed by city). Calls visit(city, parent, penalised length of the edge to
// it) once per city in Prim order (parent -1, length 0 for the root) and
// returns the tree's length. The cities not yet in the tree are kept packed
// (swap-remove) in rest, with their keys, parents and penalties alongside in
// key, par and rpi (scratch of `count` each; rest is overwritten): each row
// scan touches only them, in a branch-free loop, half the work of scanning all.
template <typename Rows, typename Visit>
double prim(int count, int* rest, double* key, int* par, double* rpi, const double* pi, Rows rows, Visit visit) {
  for (int j = 0; j < count; ++j) key[j] = kInf, par[j] = -1, rpi[j] = pi[rest[j]];
  double length = 0;
  for (int r = count, i = 0; r > 0;) {  // i: where the next city to join sits in the packed arrays
    const int u = rest[i];
    const double uw = par[i] < 0 ? 0.0 : key[i];
    visit(u, par[i], uw);
    length += uw;
    --r;
    rest[i] = rest[r], key[i] = key[r], par[i] = par[r], rpi[i] = rpi[r];
    const auto* w = rows(u);
    const double pu = pi[u];
    double best = kInf;
    i = 0;
    for (int j = 0; j < r; ++j) {
      const double v = double(w[rest[j]]) + pu + rpi[j];
      const bool lt = v < key[j];
      key[j] = lt ? v : key[j];
      par[j] = lt ? u : par[j];
      const bool nb = key[j] < best;
      best = nb ? key[j] : best;
      i = nb ? j : i;
    }
  }
  return length;
}

struct AscentResult {
  double bound;       // the best bound seen; pi is left at its penalties
  bool last_is_best;  // whether the last bound evaluated was it (its tree is the one built)
};

// Subgradient ascent on Held-Karp penalties pi (Held and Karp; Helsgaun 2000):
// bound(pi, excess) evaluates a lower bound under pi and fills excess[c] with
// c's degree in its tree minus 2; then rule.next(bound, improved, excess, t)
// says whether to go on and with which step t, and every city with a nonzero
// excess moves by t * (Rule::kNow * excess + Rule::kBefore * its excess one
// step earlier). Penalties push the tree towards degree 2 everywhere, towards
// a tour. Leaves pi at the best penalties seen.
template <typename Bound, typename Rule>
AscentResult subgradient_ascent(std::vector<double>& pi, Bound bound, Rule& rule) {
  const int n = int(pi.size());
  std::vector<double> best_pi = pi;
  std::vector<int> excess(n), last(n, 0);
  double best = -kInf, t = 0;
  for (;;) {
    const double b = bound(pi, excess);
    const bool better = b > best;
    if (better) best = b, best_pi = pi;
    if (!rule.next(b, better, excess, t)) {
      pi.swap(best_pi);
      return {best, better};
    }
    for (int c = 0; c < n; ++c) {
      if (excess[c] != 0) pi[c] += t * (Rule::kNow * excess[c] + Rule::kBefore * last[c]);
      last[c] = excess[c];
    }
  }
}

// Held-Karp penalties and the minimum spanning tree of the real cities under
// them: what the candidate lists and lower_bound() are built from.
template <typename T>
class HeldKarp {
 public:
  explicit HeldKarp(const Matrix<T>& d) : d_(d), m_(d.m) {}

  // Subgradient ascent on LKH's schedule (LkhRule in tsp_bound.cpp), each
  // step one O(n^2) 1-tree: penalties make the alpha values of the tree's
  // edges far more telling, and their 1-tree is a Held-Karp lower bound.
  // With budget >= 0 (seconds) the schedule is shortened to the steps that
  // fit in it. Returns the best bound seen; leaves penalty at its penalties
  // and their spanning tree built.
  double ascend(double budget = -1);

  // Sets penalty to pi and builds its tree.
  void set_penalty(const std::vector<double>& pi);

  // The penalties and their tree: parents (-1 at the root), the penalised
  // length of each city's edge to its parent, and the cities in Prim order.
  std::vector<double> penalty, parent_w;
  std::vector<int> parent, tree_order;

 private:
  // Minimum spanning tree of the real cities under d(a, b) + pi[a] + pi[b].
  // Fills parent, parent_w and tree_order; returns the tree's length.
  double spanning_tree(const std::vector<double>& pi);

  // Held-Karp lower bound under penalties pi: a 1-tree, the spanning tree of
  // the real cities plus a second edge at one city. For paths that city is
  // the dummy, joined to the two real cities of smallest penalty; for tours
  // it is the last city Prim added (a leaf), joined to its second nearest.
  // Fills excess[c] with c's degree in it minus 2 and returns the bound: the
  // 1-tree's length minus 2 * sum(pi).
  double one_tree(const std::vector<double>& pi, std::vector<int>& excess);

  // Standard deviation of the edge lengths of the spanning tree last built.
  double spread_of_tree() const;

  const Matrix<T>& d_;
  const int m_;  // cities in the tour: a dummy beyond the real ones for paths
  std::vector<double> rest_key_, rest_pi_;  // spanning_tree's packed arrays
  std::vector<int> rest_, rest_parent_;
};

}  // namespace neumeta::tsp
