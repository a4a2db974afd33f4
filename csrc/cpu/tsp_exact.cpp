#include "tsp_exact.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace neumeta::tsp {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kPruneRtol = 1e-12;  // a branch must promise to beat the bound by this fraction
constexpr int kPenaltyRounds = 100;   // subgradient steps on the penalties
constexpr int kMemoBits = 15;         // memo slots: 2^kMemoBits (a full memo only stores less)
constexpr int kMemoProbes = 8;

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
  // (Prim, O(|set|^2)); counts tree degrees into `degree` when given.
  double tree(uint32_t set, int* degree) const {
    int in[32], parent[32], count = 0;
    double key[32];
    for (int c = 0; c < m_; ++c)
      if (set >> c & 1) in[count++] = c;
    for (int i = 1; i < count; ++i) key[i] = wp_[in[0] * m_ + in[i]], parent[i] = in[0];
    double total = 0;
    for (int done = 1; done < count; ++done) {
      int pick = done;
      for (int i = done + 1; i < count; ++i)
        if (key[i] < key[pick]) pick = i;
      std::swap(in[done], in[pick]);
      std::swap(key[done], key[pick]);
      std::swap(parent[done], parent[pick]);
      const int c = in[done];
      total += key[done];
      if (degree) ++degree[c], ++degree[parent[done]];
      for (int i = done + 1; i < count; ++i) {
        const double v = wp_[c * m_ + in[i]];
        if (v < key[i]) key[i] = v, parent[i] = c;
      }
    }
    return total;
  }

  // Held-Karp penalties: subgradient ascent on the 1-tree bound (spanning
  // tree of all cities but s_, plus the two shortest edges at s_). Every
  // tour keeps its length minus twice the penalty sum under them, and the
  // spanning trees of the search below get much closer to the paths they bound.
  void optimise_penalties() {
    std::vector<double> pi(m_, 0.0), best_pi = pi;
    double best = -kInf, step = 2.0;
    int stale = 0;
    std::vector<int> degree(m_);
    for (int round = 0; round < kPenaltyRounds; ++round) {
      set_penalties(pi);
      std::fill(degree.begin(), degree.end(), 0);
      double bound = tree(full_ & ~(1u << s_), degree.data());
      double e1 = kInf, e2 = kInf;
      int c1 = -1, c2 = -1;
      for (int c = 0; c < s_; ++c) {
        const double v = wp_[s_ * m_ + c];
        if (v < e1) e2 = e1, c2 = c1, e1 = v, c1 = c;
        else if (v < e2) e2 = v, c2 = c;
      }
      bound += e1 + e2;
      ++degree[c1], ++degree[c2], degree[s_] += 2;
      for (int c = 0; c < m_; ++c) bound -= 2 * pi[c];
      if (bound > best) best = bound, best_pi = pi, stale = 0;
      else if (++stale == 10) step /= 2, stale = 0;
      double norm = 0;
      for (int c = 0; c < m_; ++c) norm += double(degree[c] - 2) * (degree[c] - 2);
      if (norm == 0 || !(ub_ - bound > 0)) break;  // the 1-tree is a tour, or nothing to gain
      const double t = step * (ub_ - bound) / norm;
      for (int c = 0; c < m_; ++c) pi[c] += t * (degree[c] - 2);
    }
    set_penalties(best_pi);
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

std::vector<int> branch_and_bound(const std::vector<double>& w, int m, double ub, int64_t max_nodes, bool* complete) {
  return BranchAndBound(w, m, ub, max_nodes).run(complete);
}

}  // namespace neumeta::tsp
