// The solver's driver: exact solvers for small instances, iterated local
// search (tsp_kopt.h's moves from tsp_kicks.h's kicks, on tsp_tour.h's array
// tour) for the others; lower_bound() from tsp_bound.h.
#include "tsp.h"

#include "tsp_bound.h"
#include "tsp_candidates.h"
#include "tsp_exact.h"
#include "tsp_kicks.h"
#include "tsp_kopt.h"
#include "tsp_matrix.h"
#include "tsp_tour.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace neumeta::tsp {
namespace {

// Time limits are capped at this many seconds (about 30 years): longer ones
// would overflow the clock's 64-bit nanosecond count.
constexpr double kMaxSeconds = 1e9;
// With a time limit, the candidates' ascent is shortened to this share of it.
constexpr double kAscentShare = 0.2;
constexpr int64_t kBranchMaxNodes = 50000;  // branch and bound gives way to Held-Karp beyond this
static_assert(kExactMaxN + 1 <= kBranchMaxCities, "paths add a dummy city");
constexpr int kMinSearchCities = 8;  // below this the exact solver works alone
// From this many cities on, moves after a kick must start by removing an
// edge the tour before the kick lacked (LKH's restricted search): kicks get
// cheaper, but on small tours the unrestricted search escapes local optima
// the restricted one stays in, and its kicks are cheap anyway.
constexpr int kRestrictMinCities = 200;
// Converged: this many kicks per city in a row (restricted search: the
// second count) did not shorten the tour by more than kConvergedRtol
// (relative) in all.
constexpr int64_t kStallPerCity = 1;
constexpr int64_t kStallPerCityRestricted = 3;
constexpr double kConvergedRtol = 1e-6;
constexpr int64_t kMinStall = 30;
// ... relative to the tour length, but at least to this fraction of the
// largest entry. A kick's delta is summed from edges up to that entry, so it
// is off by a few of its ulps; where signs cancel, tours are far shorter than
// the entries, and kicks that only round below zero would pass for progress
// forever. (A metric path is at least as long as the largest entry.)
constexpr double kConvergedFloor = 1e-3;
// With a time limit, converged kicks restart from the best tour, perturbed
// by one double bridge per kRestartCities cities, and restart again after
// kRestartStallPerCity kicks per city in a row made no progress (sooner than
// convergence: later restarts gain more than waiting for small gains).
constexpr int kRestartCities = 32;
constexpr double kRestartStallPerCity = 0.5;

// Iterated local search: k-opt moves to a local optimum from a greedy start,
// then segment-local double bridges, each repaired by the moves and undone
// from the tour's log when the tour came out longer, so no step of the loop
// costs O(n) beyond what its moves rewrite.
template <typename T>
class Search {
 public:
  // `scale`: the largest |entry| of d. With `timed`, the search stops at
  // `deadline`; the candidates' ascent takes `ascent_budget` seconds (< 0: no limit).
  Search(const Matrix<T>& d, double scale, uint64_t seed, bool timed, Clock::time_point deadline,
         double ascent_budget)
      : d_(d),
        scale_(scale),
        rng_{seed},
        deadline_(deadline),
        timed_(timed),
        restrict_(d.m >= kRestrictMinCities),
        cand_(search_candidates(d, ascent_budget)),
        tour_(d, nearest_neighbour_order(d, rng_.below(d.n))),
        kopt_(d, tour_, cand_) {}

  // Descends to a local optimum; with `kicks`, then kicks it until converged
  // (see kStallPerCity), or with a time limit until the deadline, restarting
  // from the best tour, perturbed, once converged and then each time the
  // kicks stall (kRestartStallPerCity): on the same candidate lists a timed
  // run is the untimed one up to convergence and keeps the best tour, so past
  // convergence it never ends longer. Returns the best tour as cities in order.
  std::vector<int> run(bool kicks) {
    const int m = tour_.size();
    const int64_t per_city = restrict_ ? kStallPerCityRestricted : kStallPerCity;
    int64_t stall_limit = kicks ? std::max(kMinStall, per_city * m) : 0;
    const bool until_deadline = kicks && timed_;
    for (int p = 0; p < m; ++p) kopt_.push(tour_.at(p));
    kopt_.local_search(3, timed_, deadline_);  // 3-opt first: much cheaper while most moves still gain
    for (int p = 0; p < m; ++p) kopt_.push(tour_.at(p));
    kopt_.local_search(kMaxK, timed_, deadline_);
    double cost = tour_.cost(), mark = cost;  // mark: the cost when the stall count last restarted
    int64_t stall = 0;
    if (restrict_) {
      base_.reset(tour_);
      kopt_.restrict_to(&base_);
    }
    int touched[8];
    std::vector<int> best;  // the best tour before the last restart
    double best_cost = kInf;
    while (until_deadline || stall < stall_limit) {
      if (timed_ && Clock::now() >= deadline_) break;  // a clock read is cheap next to a kick
      if (stall >= stall_limit) {  // only until_deadline gets here
        if (cost < best_cost) best_cost = cost, best = tour_.cities();
        cost = restart(best);
        stall_limit = std::max(kMinStall, int64_t(kRestartStallPerCity * m));
        mark = cost;
        stall = 0;
        continue;
      }
      tour_.mark();
      const double added = double_bridge(d_, tour_, rng_, buf_, touched);
      for (const int c : touched) kopt_.push(c);
      const double delta = added - kopt_.local_search(kMaxK, timed_, deadline_);
      if (delta <= 0) {  // equal cost is kept too: it lets the search drift on plateaus
        cost += delta;
        if (restrict_) base_.update(tour_);
        if (cost < mark - kConvergedRtol * std::max(std::abs(mark), kConvergedFloor * scale_)) {
          mark = cost;
          stall = 0;
        } else {
          ++stall;
        }
      } else {
        tour_.undo();
        ++stall;
      }
    }
    return cost < best_cost ? tour_.cities() : best;
  }

 private:
  // The kicks have stalled and time is left: from `best`, one double bridge
  // per kRestartCities cities at once, kept whatever they cost, then the
  // moves. Kicks of one double bridge rarely leave a deep local optimum;
  // restarts from scratch would lose its good edges. Returns the new cost.
  double restart(const std::vector<int>& best) {
    tour_.rewrite(0, best);
    if (restrict_) base_.reset(tour_);
    tour_.mark();
    int touched[8];
    const int kicks = std::max(2, tour_.size() / kRestartCities);
    for (int k = 0; k < kicks; ++k) {
      double_bridge(d_, tour_, rng_, buf_, touched);
      for (const int c : touched) kopt_.push(c);
    }
    kopt_.local_search(kMaxK, timed_, deadline_);
    if (restrict_) base_.update(tour_);
    return tour_.cost();
  }

  const Matrix<T>& d_;
  const double scale_;  // largest |entry|
  Rng rng_;
  const Clock::time_point deadline_;
  const bool timed_;
  const bool restrict_;  // restricted search after kicks (kRestrictMinCities)
  const Candidates cand_;
  ArrayTour<T> tour_;
  KOpt<T> kopt_;
  Neighbours base_;  // the tour before the current kick (restricted search)
  std::vector<int> buf_;
};

template <typename T>
double order_cost(const Matrix<T>& d, const std::vector<int>& order, bool path) {
  double s = 0;
  for (size_t i = 1; i < order.size(); ++i) s += d(order[i - 1], order[i]);
  if (!path && order.size() > 1) s += d(order.back(), order.front());
  return s;
}

}  // namespace

template <typename T>
std::vector<int64_t> solve(const T* dist, int64_t n64, const Options& opt) {
  const auto start = Clock::now();
  if (n64 > std::numeric_limits<int>::max() / 2) throw std::invalid_argument("too many cities: " + std::to_string(n64));
  const double scale = validate(dist, n64);
  const int n = int(n64);
  std::vector<int64_t> result(n);
  for (int i = 0; i < n; ++i) result[i] = i;
  if (n <= (opt.path ? 2 : 3)) return result;  // every order is optimal

  const Matrix<T> d{dist, n, opt.path ? n + 1 : n};
  const Matrix<T> real{dist, n, n};
  const bool timed = opt.time_limit >= 0;
  auto after = [&](double seconds) {
    const std::chrono::duration<double> capped(std::min(seconds, kMaxSeconds));
    return start + std::chrono::duration_cast<Clock::duration>(capped);
  };
  const auto deadline = after(timed ? opt.time_limit : 0);

  std::vector<int> order;
  if (d.m >= kMinSearchCities) {
    const double spent = std::chrono::duration<double>(Clock::now() - start).count();
    const double ascent_budget = timed ? std::max(0.0, kAscentShare * std::min(opt.time_limit, kMaxSeconds) - spent) : -1;
    Search<T> search(d, scale, opt.seed, timed, deadline, ascent_budget);
    // The exact search follows for small n: the first local optimum (no
    // kicks) is its pruning bound, usually the optimum already.
    const std::vector<int> tour = search.run(n > kExactMaxN);
    // Cut the cycle at the dummy (path) or rotate it to start at city 0 (tour).
    const int anchor = opt.path ? n : 0;
    const int at = int(std::find(tour.begin(), tour.end(), anchor) - tour.begin());
    for (int i = opt.path ? 1 : 0; i < d.m; ++i) order.push_back(tour[(at + i) % d.m]);
  }
  if (n <= kExactMaxN) {
    const double ub = order.empty() ? kInf : order_cost(real, order, opt.path);
    bool complete = false;
    std::vector<int> exact;
    if (!order.empty()) {
      std::vector<double> w(size_t(d.m) * d.m);
      for (int a = 0; a < d.m; ++a)
        for (int b = 0; b < d.m; ++b) w[a * d.m + b] = a == b ? 0.0 : d(a, b);
      // Path: the tour starts at the dummy (city n). Tour: any rotation will do.
      exact = branch_and_bound(w, d.m, ub, kBranchMaxNodes, &complete);
      if (opt.path && !exact.empty()) exact.erase(exact.begin());
    }
    // Held-Karp takes over where branch and bound gave up (or was not run),
    // unless time is up and there is a heuristic order to return.
    if (!complete && (order.empty() || !(timed && Clock::now() >= deadline))) exact = held_karp(real, opt.path, ub);
    if (!exact.empty()) order = std::move(exact);
  }
  // Validated input always has an order; should a bug leave none, fail rather than read past it.
  if (order.size() != size_t(n)) throw std::runtime_error("tsp: no order found for " + std::to_string(n) + " cities");
  for (int i = 0; i < n; ++i) result[i] = order[i];
  return result;
}

template <typename T>
double lower_bound(const T* dist, int64_t n64, bool path) {
  Options opt;
  opt.path = path;
  if (n64 <= kExactMaxN) {  // validated by solve; its order is optimal
    const std::vector<int64_t> order = solve(dist, n64, opt);
    return order_cost(Matrix<T>{dist, int(n64), int(n64)}, std::vector<int>(order.begin(), order.end()), path);
  }
  if (n64 > std::numeric_limits<int>::max() / 2) throw std::invalid_argument("too many cities: " + std::to_string(n64));
  validate(dist, n64);
  const int n = int(n64);
  const Matrix<T> d{dist, n, path ? n + 1 : n};
  return HeldKarp<T>(d).ascend();
}

template std::vector<int64_t> solve<float>(const float*, int64_t, const Options&);
template std::vector<int64_t> solve<double>(const double*, int64_t, const Options&);
template double lower_bound<float>(const float*, int64_t, bool);
template double lower_bound<double>(const double*, int64_t, bool);

}  // namespace neumeta::tsp
