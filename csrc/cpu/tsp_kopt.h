// Sequential 2- to 5-opt moves (the basis move of LKH) over candidate lists,
// with a queue of cities still to try (don't-look bits).
#pragma once

#include "tsp_candidates.h"
#include "tsp_matrix.h"
#include "tsp_tour.h"

#include <vector>

namespace neumeta::tsp {

constexpr int kMaxK = 5;  // exchanges in one sequential move

template <typename T>
class KOpt {
 public:
  KOpt(const Matrix<T>& d, ArrayTour<T>& tour, const Candidates& cand);

  // Queues city c for improve_city (once).
  void push(int c);

  // Applies the first improving sequential move (2-opt up to max_k-opt) that
  // removes a tour edge at t1; returns its gain (0 if there is none). Queues
  // the cities whose tour edges it changed.
  double improve_city(int t1, int max_k);

  // Runs moves of up to `max_k` exchanges from the queued cities until no
  // queued city has one, or with `timed` until `deadline`; returns the total
  // gain. The queue is empty afterwards.
  double local_search(int max_k, bool timed, Clock::time_point deadline);

  // With `base`, moves must start by removing an edge `base` lacks (LKH's
  // restricted search after a kick: the local optimum before the kick has no
  // improving move, so one worth trying now removes an edge it lacked).
  void restrict_to(const Neighbours* base) { base_ = base; }

 private:
  // The move in progress, t_[0..2L-1]: it removes the tour edges
  // (t_[2i], t_[2i+1]) and adds (t_[2i+1], t_[2i+2]), the last one closing
  // back to t_[0].
  bool feasible(int L);
  int slot_city(int s, int L) const;
  void apply(int L);
  bool is_removed(int a, int b, int L) const;
  bool is_added(int a, int b, int L) const;
  double extend(int L, double R, double A, double touched);

  const Matrix<T>& d_;
  ArrayTour<T>& tour_;
  const Candidates& cand_;
  const int m_;
  const Neighbours* base_ = nullptr;
  int max_k_ = kMaxK;  // exchanges per move in the current search
  std::vector<int> queue_, buf_;
  std::vector<char> queued_;
  // The move in progress (see feasible()) and its segment bookkeeping.
  int t_[2 * kMaxK], first_[kMaxK], order_[kMaxK], slot_[2 * kMaxK], partner_[2 * kMaxK];
};

}  // namespace neumeta::tsp
