// The array tour the local search works on, with an undo log of its rewrites.
#pragma once

#include "tsp_matrix.h"

#include <utility>
#include <vector>

namespace neumeta::tsp {

// A closed tour as an array (city at each position, position of each city):
// O(1) adjacency queries, and the length of every tour edge cached. Changes
// are rewrites of runs of positions; after mark(), each rewrite logs the
// cities it overwrites, so that undo() can restore the tour as it was at the
// mark at the cost of the rewrites since, not O(n).
template <typename T>
class ArrayTour {
 public:
  // `order`: a permutation of the d.m cities of the tour.
  ArrayTour(const Matrix<T>& d, std::vector<int> order);

  int size() const { return m_; }
  const std::vector<int>& cities() const { return tour_; }
  int at(int p) const { return tour_[p]; }
  int pos(int c) const { return pos_[c]; }
  int next(int c, bool fwd) const {
    int p = pos_[c] + (fwd ? 1 : -1);
    if (p == m_) p = 0;
    if (p < 0) p = m_ - 1;
    return tour_[p];
  }
  // Length of the tour edge from c to its neighbour in direction fwd.
  double edge(int c, bool fwd) const {
    const int p = pos_[c];
    return edge_[fwd ? p : (p == 0 ? m_ - 1 : p - 1)];
  }
  // The tour's length, summed afresh.
  double cost() const;

  // Writes `cities` into the tour from position `at` on (cyclic); the caller
  // keeps it a permutation.
  void rewrite(int at, const std::vector<int>& cities);
  // Starts logging rewrites afresh: undo() returns to the tour as it is now.
  void mark();
  // Restores the tour of the last mark(), newest rewrite first.
  void undo();
  // The (position, count) of each rewrite since the last mark().
  const std::vector<std::pair<int, int>>& rewrites() const { return log_spans_; }

 private:
  void put(int p, int c) {
    tour_[p] = c;
    pos_[c] = p;
  }
  // Recomputes the cached lengths of the edges into, inside and out of the
  // `len` positions from `at` on.
  void refresh_edges(int at, int len);

  const Matrix<T>& d_;
  const int m_;
  std::vector<int> tour_, pos_;
  std::vector<double> edge_;  // edge_[p] = d(tour_[p], tour_[p + 1]) (cyclic)
  bool logging_ = false;
  std::vector<std::pair<int, int>> log_spans_;
  std::vector<int> log_;  // the cities the rewrites overwrote, in order
};

// The neighbours of every city in a tour at one moment (LKH's restricted
// search after a kick tests edges against the tour before it).
class Neighbours {
 public:
  template <typename T>
  void reset(const ArrayTour<T>& tour);
  // After rewrites of `tour` since its mark(): updates only the cities they
  // touched and their neighbours.
  template <typename T>
  void update(const ArrayTour<T>& tour);
  bool has_edge(int a, int b) const { return next_[2 * a] == b || next_[2 * a + 1] == b; }

 private:
  std::vector<int> next_;  // next_[2c], next_[2c + 1]: the neighbours of c
};

// Greedy start: from city `start`, always on to the nearest city not yet
// visited; the dummy (if any) closes the tour.
template <typename T>
std::vector<int> nearest_neighbour_order(const Matrix<T>& d, int start);

}  // namespace neumeta::tsp
