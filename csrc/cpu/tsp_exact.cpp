#include "tsp_exact.h"

#include "tsp_bound.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace neumeta::tsp {
namespace {

constexpr double kPruneRtol = 1e-12;  // a branch must promise to beat the bound by this fraction
constexpr int kPenaltyRounds = 100;   // subgradient steps on the penalties
constexpr int kStaleRounds = 10;      // rounds without a better bound that halve the step
constexpr int kMemoBits = 15;         // memo slots: 2^kMemoBits (a full memo only stores less)
constexpr int kMemoProbes = 8;

// Polyak's step towards the bound `ub` (a tour's length), halved after
// kStaleRounds rounds without a better bound; stops when the 1-tree is a tour
// or reaches ub.
struct PolyakRule {
  static constexpr double kNow = 1.0, kBefore = 0.0;
  double ub;
  int rounds = 0, stale = 0;
  double step = 2.0;

  bool next(double bound, bool better, const std::vector<int>& excess, double& t) {
    if (better) stale = 0;
    else if (++stale == kStaleRounds) step /= 2, stale = 0;
    double norm = 0;
    for (const int e : excess) norm += double(e) * e;
    if (++rounds == kPenaltyRounds || norm == 0 || !(ub - bound > 0)) return false;
    t = step * (ub - bound) / norm;
    return true;
  }
};

class BranchAndBound {
 public:
  BranchAndBound(const std::vector<double>& w, int m, double ub, int64_t max_nodes)
      : w_(w), m_(m), s_(m - 1), full_(m == 32 ? ~0u : (1u << m) - 1), ub_(ub), max_nodes_(max_nodes),
        pi_(m, 0.0), wp_(size_t(m) * m), near_(size_t(m) * m), memo_(size_t(1) << kMemoBits) {
    for (int a = 0; a < m_; ++a) {
      int* row = &near_[size_t(a) * m_];
      std::iota(row, row + m_, 0);
      std::sort(row, row + m_, [&](int x, int y) { return w_[a * m_ + x] < w_[a * m_ + y]; });
    }
    optimise_penalties();
  }

  std::vector<int> run(bool* complete) {
    path_.assign(1, s_);
    dfs(s_, 1u << s_, 0.0);
    *complete = !aborted_;
    return aborted_ ? std::vector<int>{} : best_;
  }

 private:
  struct Slot {
    uint32_t key = 0;  // (visited << 5 | last) + 1; 0: empty
    double length = 0;
  };

  void set_penalties(const std::vector<double>& pi) {
    pi_ = pi;
    for (int a = 0; a < m_; ++a)
      for (int b = 0; b < m_; ++b) wp_[a * m_ + b] = w_[a * m_ + b] + pi_[a] + pi_[b];
  }

  // Minimum spanning tree of the cities in `set` under penalised distances
  // (O(|set|^2)); counts tree degrees into `degree` when given.
  double tree(uint32_t set, int* degree) const {
    int rest[32], par[32], count = 0;
    double key[32], rpi[32];
    for (int c = 0; c < m_; ++c)
      if (set >> c & 1) rest[count++] = c;
    auto rows = [&](int u) { return &w_[size_t(u) * m_]; };
    auto visit = [&](int u, int p, double) {
      if (degree && p >= 0) ++degree[u], ++degree[p];
    };
    return prim(count, rest, key, par, rpi, pi_.data(), rows, visit);
  }

  // Held-Karp penalties: subgradient ascent on the 1-tree bound (spanning
  // tree of all cities but s_, plus the two shortest edges at s_). Every
  // tour keeps its length minus twice the penalty sum under them, and the
  // spanning trees of the search below get much closer to the paths they bound.
  void optimise_penalties() {
    std::vector<double> pi(m_, 0.0);
    std::vector<int> degree(m_);
    auto bound = [&](const std::vector<double>& p, std::vector<int>& excess) {
      set_penalties(p);
      std::fill(degree.begin(), degree.end(), 0);
      double b = tree(full_ & ~(1u << s_), degree.data());
      double e1 = kInf, e2 = kInf;
      int c1 = -1, c2 = -1;
      for (int c = 0; c < s_; ++c) {
        const double v = wp_[s_ * m_ + c];
        if (v < e1) e2 = e1, c2 = c1, e1 = v, c1 = c;
        else if (v < e2) e2 = v, c2 = c;
      }
      b += e1 + e2;
      ++degree[c1], ++degree[c2], degree[s_] += 2;
      for (int c = 0; c < m_; ++c) b -= 2 * p[c], excess[c] = degree[c] - 2;
      return b;
    };
    PolyakRule rule{ub_};
    subgradient_ascent(pi, bound, rule);
    set_penalties(pi);
  }

  // Lower bound on the rest of a tour that has visited `visited` and stands
  // at j: a path from j through every unvisited city and on to s_ is a
  // spanning tree of j and the unvisited cities plus an edge into s_.
  double rest_bound(uint32_t visited, int j) const {
    const uint32_t unvisited = full_ & ~visited;
    double pen = pi_[j] + pi_[s_], into_s = kInf;
    for (int c = 0; c < m_; ++c)
      if (unvisited >> c & 1) {
        pen += 2 * pi_[c];
        into_s = std::min(into_s, wp_[c * m_ + s_]);
      }
    return tree(unvisited | 1u << j, nullptr) + into_s - pen;
  }

  // False if this (visited, last) state was already reached by a prefix no
  // longer than `length`; otherwise remembers `length` for it.
  bool first_visit(uint32_t visited, int last, double length) {
    const uint32_t key = (visited << 5 | uint32_t(last)) + 1;
    uint32_t h = key * 2654435761u >> (32 - kMemoBits);
    for (int probe = 0; probe < kMemoProbes; ++probe, h = (h + 1) & ((1u << kMemoBits) - 1)) {
      Slot& slot = memo_[h];
      if (slot.key == key) {
        if (length >= slot.length) return false;
        slot.length = length;
        return true;
      }
      if (slot.key == 0) {
        slot = {key, length};
        return true;
      }
    }
    return true;
  }

  void dfs(int j, uint32_t visited, double length) {
    if (visited == full_) {
      const double total = length + w_[j * m_ + s_];
      if (total < ub_) ub_ = total, best_ = path_;
      return;
    }
    if (aborted_ || ++nodes_ > max_nodes_) {
      aborted_ = true;
      return;
    }
    if (!first_visit(visited, j, length)) return;
    const int* row = &near_[size_t(j) * m_];
    for (int i = 0; i < m_; ++i) {
      const int u = row[i];
      if (visited >> u & 1) continue;
      const uint32_t next = visited | 1u << u;
      const double reached = length + w_[j * m_ + u];
      const double bound = next == full_ ? w_[u * m_ + s_] : rest_bound(next, u);
      if (reached + bound >= ub_ - kPruneRtol * std::abs(ub_)) continue;
      path_.push_back(u);
      dfs(u, next, reached);
      path_.pop_back();
    }
  }

  const std::vector<double>& w_;
  const int m_, s_;
  const uint32_t full_;
  double ub_;
  const int64_t max_nodes_;
  int64_t nodes_ = 0;
  bool aborted_ = false;
  std::vector<double> pi_, wp_;  // penalties, and distances plus both ends' penalties
  std::vector<int> near_;        // near_[a * m + i]: the i-th nearest city to a
  std::vector<int> path_, best_;
  std::vector<Slot> memo_;
};

}  // namespace

template <typename T>
std::vector<int> held_karp(const Matrix<T>& d, bool path, double ub) {
  const int n = d.n;
  // Paths start anywhere; tours start at city 0, so the subsets range over the others.
  const int bits = path ? n : n - 1;
  const int w_n = bits + 1;
  auto city = [&](int i) { return path ? i : (i == bits ? 0 : i + 1); };
  std::vector<double> w(size_t(w_n) * w_n), minin(w_n, kInf);
  for (int i = 0; i < w_n; ++i)
    for (int j = 0; j < w_n; ++j)
      if (i != j && (i < n && j < n)) {
        w[i * w_n + j] = d(city(i), city(j));
        minin[j] = std::min(minin[j], w[i * w_n + j]);
      }
  const uint32_t full = (1u << bits) - 1;
  std::vector<double> dp(size_t(full + 1) * bits, kInf);
  for (int j = 0; j < bits; ++j) dp[(size_t(1) << j) * bits + j] = path ? 0.0 : w[bits * w_n + j];

  for (uint32_t s = 1; s < full; ++s) {
    double rest = path ? 0.0 : minin[bits];
    for (int k = 0; k < bits; ++k)
      if (!(s >> k & 1)) rest += minin[k];
    const double* row = &dp[size_t(s) * bits];
    for (int j = 0; j < bits; ++j) {
      const double v = row[j];
      if (!(v + rest < ub)) continue;
      for (int k = 0; k < bits; ++k) {
        if (s >> k & 1) continue;
        const double nv = v + w[j * w_n + k];
        double& t = dp[size_t(s | (1u << k)) * bits + k];
        if (nv < t) t = nv;
      }
    }
  }

  int end = -1;
  double best = ub;
  for (int j = 0; j < bits; ++j) {
    const double v = dp[size_t(full) * bits + j] + (path ? 0.0 : w[j * w_n + bits]);
    if (v < best) best = v, end = j;
  }
  if (end < 0) return {};
  std::vector<int> order;
  uint32_t s = full;
  for (int j = end;;) {
    order.push_back(city(j));
    const uint32_t prev = s & ~(1u << j);
    if (!prev) break;
    int from = -1;
    for (int i = 0; i < bits && from < 0; ++i)
      if ((prev >> i & 1) && dp[size_t(prev) * bits + i] + w[i * w_n + j] == dp[size_t(s) * bits + j]) from = i;
    if (from < 0) return {};  // cannot happen: every stored length came from such a predecessor
    s = prev;
    j = from;
  }
  if (!path) order.push_back(0);
  std::reverse(order.begin(), order.end());
  return order;
}

template std::vector<int> held_karp(const Matrix<float>&, bool, double);
template std::vector<int> held_karp(const Matrix<double>&, bool, double);

std::vector<int> branch_and_bound(const std::vector<double>& w, int m, double ub, int64_t max_nodes, bool* complete) {
  return BranchAndBound(w, m, ub, max_nodes).run(complete);
}

}  // namespace neumeta::tsp
