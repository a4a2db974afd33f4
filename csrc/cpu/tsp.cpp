#include "tsp.h"

#include "tsp_exact.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

namespace neumeta::tsp {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kInf = std::numeric_limits<double>::infinity();

// A move must shorten the tour by more than this fraction of the summed
// |lengths| of the edges it touches: far above the rounding error of its gain
// (a few ulps of that sum, however the signs cancel), so every accepted move
// really shortens the tour and the search cannot cycle.
constexpr double kRelGain = 1e-12;
constexpr double kSymRtol = 1e-5;    // relative asymmetry still accepted
// The largest sums the solver forms hold about (n + 1)^2 entries' worth (a
// spanning tree under Held-Karp penalties, which grow to about n entries each);
// max_entry(n) leaves this factor of headroom on top.
constexpr double kEntryHeadroom = 1024;
// Time limits are capped at this many seconds (about 30 years): longer ones
// would overflow the clock's 64-bit nanosecond count.
constexpr double kMaxSeconds = 1e9;
constexpr int kCandidates = 6;       // candidates searched per city (the dummy included)
constexpr int kKickSegment = 100;    // longest segment a double bridge moves,
constexpr int kKickFraction = 8;     // and at most this fraction of the tour
// Subgradient ascent before the candidates of solve(): at most this many
// steps, and at most kAscentWork / n^2 of them (30 up to n = 2000; at 2048,
// 30 steps against 7 gave 0.105% against 0.143% at 1 s).
constexpr int kAscentSteps = 30;
constexpr int64_t kAscentWork = 120'000'000;
// With a time limit, the ascent stops after this share of it (at n = 2048
// with 100 ms: 0.2 and 0.3 worse, 0.5 level, 0.6 worse).
constexpr double kAscentShare = 0.4;
constexpr double kAscentStep = 0.1;   // first step, relative to the mean tree edge
constexpr double kAscentDecay = 0.9;
// lower_bound()'s ascent, on LKH's schedule: the first period lasts
// max(n / 2, kBoundMinPeriod) steps, and the first step is kBoundFirstStep
// of the standard deviation of the spanning tree's edges (the step that
// stops improving the bound is 0.3-0.8 of it on weight rows, clustered and
// uniform matrices, where LKH's start, a fixed 1e-4 of the mean edge, needs
// 5 to 12 doublings to get there). The whole ascent takes about 4 first
// periods; it is shortened to at most kBoundWork / n^2 steps (the full
// schedule up to n = 632, 95 steps at n = 2048).
constexpr int kBoundMinPeriod = 100;
constexpr double kBoundFirstStep = 0.1;
constexpr double kBoundWork = 4e8;
constexpr int kMaxK = 5;             // exchanges in one sequential move
// Candidates tried for the added edge of each exchange (index: exchanges so far).
constexpr int kBreadth[kMaxK] = {0, 5, 5, 3, 2};
constexpr int64_t kBranchMaxNodes = 50000;  // branch and bound gives way to Held-Karp beyond this
static_assert(kExactMaxN + 1 <= kBranchMaxCities, "paths add a dummy city");
constexpr int kMinSearchCities = 8;  // below this the exact solver works alone
// From this many cities on, moves after a kick must start by removing an
// edge the tour before the kick lacked (LKH's restricted search): kicks get
// about 3x cheaper, but on small tours the unrestricted search escapes
// local optima the restricted one stays in, and its kicks are cheap anyway.
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

// Whether a move's computed gain is a real one (see kRelGain); `touched` is
// the sum of |length| of the edges it removes and adds. False for a NaN gain.
bool improves(double gain, double touched) { return gain > kRelGain * touched; }

// splitmix64: tiny, fast, and the same sequence on every platform.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int k) { return int(next() % uint64_t(k)); }
};

// Symmetric view of the input (upper triangle). For open paths a dummy city
// with index n sits at distance 0 from every city: the optimal tour through it
// is the optimal path with free ends.
template <typename T>
struct Matrix {
  const T* w;
  int n;  // real cities
  int m;  // cities in the tour: n, or n + 1 with the dummy
  double operator()(int a, int b) const {
    const int lo = a < b ? a : b, hi = a < b ? b : a;
    return hi == n ? 0.0 : double(w[size_t(lo) * size_t(n) + size_t(hi)]);
  }
};

// Held-Karp penalties and the minimum spanning tree of the real cities under
// them: what Search's candidate lists and lower_bound() are built from.
template <typename T>
class HeldKarp {
 public:
  explicit HeldKarp(const Matrix<T>& d) : d_(d), m_(d.m) {}

  // Held-Karp subgradient ascent on LKH's schedule (Helsgaun 2000), for
  // lower_bound(): penalties pi push the 1-tree towards degree 2 everywhere
  // (towards a tour). The step doubles while the bound improves in the first
  // phase, then halves with the period; each move mixes the degree excess
  // now (0.7) and one step ago (0.3). Each step is one O(n^2) tree; see
  // kBoundWork. Returns the best bound seen; leaves penalty at its penalties
  // and their spanning tree built.
  double ascend_full() {
    const int n = d_.n;
    penalty.assign(n, 0.0);
    std::vector<double> pi = penalty;
    std::vector<int> excess(n), last(n, 0);
    double best = one_tree(pi, excess);
    auto settled = [&] { return std::all_of(excess.begin(), excess.end(), [](int e) { return e == 0; }); };
    const double affordable = kBoundWork / (double(n) * n);
    const int first_period = int(std::clamp(affordable / 4, 1.0, double(std::max(n / 2, kBoundMinPeriod))));
    double t = kBoundFirstStep * spread_of_tree();
    bool initial = true, tree_is_best = true;
    int steps = 1;
    for (int period = first_period; period > 0 && t > 0 && !settled() && steps < affordable; period /= 2, t /= 2) {
      for (int p = 1; p <= period && !settled() && steps < affordable; ++p) {
        for (int c = 0; c < n; ++c) {
          if (excess[c] != 0) pi[c] += t * (0.7 * excess[c] + 0.3 * last[c]);
          last[c] = excess[c];
        }
        const double bound = one_tree(pi, excess);
        ++steps;
        tree_is_best = bound > best;
        if (tree_is_best) {
          best = bound, penalty = pi;
          if (initial) t *= 2;
          if (p == period) period = std::min(2 * period, first_period);
        } else if (initial && p > period / 2) {
          initial = false, p = 0, t *= 0.75;  // the step overshoots: the first phase ends
        }
      }
    }
    if (!tree_is_best) spanning_tree(penalty);
    return best;
  }

  // A few steps of Held-Karp subgradient ascent for solve()'s candidates:
  // penalties pi push the spanning tree towards degree 2 everywhere (closer
  // to a path), which makes the alpha values of its edges far more telling.
  // Each step is one O(n^2) tree, so large n get fewer, and a time limit caps
  // them to a share of it. Not a bound for paths (it asks degree 2 of every
  // city of a spanning tree); ascend_full() is, and finds better penalties
  // on weight rows, but it reverses paths of equal length and with them the
  // demo's permutations (benchmarks/RESULTS.md, fifth session), so solve()
  // keeps this one until the demo's margins allow the switch. Leaves penalty at
  // the best value seen and the tree of penalty built.
  void ascend(bool timed, Clock::time_point deadline) {
    const int n = d_.n;
    const int steps = int(std::clamp<int64_t>(kAscentWork / (int64_t(n) * n), 1, kAscentSteps));
    penalty.assign(n, 0.0);
    std::vector<double> pi = penalty;
    std::vector<int> deg(n);
    double best = -kInf;
    double t = 0;  // step length, set from the first tree's mean edge
    for (int s = 0;; ++s) {
      double bound = spanning_tree(pi);
      for (int c = 0; c < n; ++c) bound -= 2 * pi[c];
      const bool better = bound > best;
      if (better) best = bound, penalty = pi;
      if (s + 1 == steps || (timed && Clock::now() >= deadline)) {
        if (!better) spanning_tree(penalty);
        return;
      }
      std::fill(deg.begin(), deg.end(), 0);
      for (int c = 0; c < n; ++c)
        if (parent[c] >= 0) ++deg[c], ++deg[parent[c]];
      if (s == 0) t = kAscentStep * std::abs(bound) / n;
      for (int c = 0; c < n; ++c) pi[c] += t * (deg[c] - 2);
      t *= kAscentDecay;
    }
  }

  // The penalties and their tree: parents (-1 at the root), the penalised
  // length of each city's edge to its parent, and the cities in Prim order.
  std::vector<double> penalty, parent_w;
  std::vector<int> parent, tree_order;

 private:
  // Minimum spanning tree of the real cities under d(a, b) + pi[a] + pi[b]
  // (Prim on the dense matrix, one row read per city). Fills parent,
  // parent_w (the transformed length of the edge to the parent) and
  // tree_order (parents before children); returns the tree's length. The
  // cities not yet in the tree are kept packed (swap-remove), with their
  // keys, parents and penalties alongside: each row scan touches only them,
  // in a branch-free loop, half the work of scanning all n.
  double spanning_tree(const std::vector<double>& pi) {
    const int n = d_.n;
    parent.assign(n, -1);
    parent_w.assign(n, 0.0);
    tree_order.clear();
    rest_.resize(n), rest_key_.assign(n, kInf), rest_parent_.assign(n, -1), rest_pi_.resize(n);
    for (int c = 0; c < n; ++c) rest_[c] = c, rest_pi_[c] = pi[c];
    int* rest = rest_.data();
    int* par = rest_parent_.data();
    double* key = rest_key_.data();
    double* rpi = rest_pi_.data();
    double length = 0;
    for (int r = n, i = 0; r > 0;) {  // i: where the next city to join sits in the packed arrays
      const int u = rest[i];
      tree_order.push_back(u);
      parent[u] = par[i];
      parent_w[u] = par[i] < 0 ? 0.0 : key[i];
      length += parent_w[u];
      --r;
      rest[i] = rest[r], key[i] = key[r], par[i] = par[r], rpi[i] = rpi[r];
      const T* w = d_.w + size_t(u) * n;
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

  // Held-Karp lower bound under penalties pi: a 1-tree, the spanning tree
  // of the real cities plus a second edge at one city. For paths that city
  // is the dummy, joined to the two real cities of smallest penalty; for
  // tours it is the last city Prim added (a leaf), joined to its second
  // nearest. Fills excess[c] with c's degree in it minus 2 and returns
  // the bound: the 1-tree's length minus 2 * sum(pi).
  double one_tree(const std::vector<double>& pi, std::vector<int>& excess) {
    const int n = d_.n;
    double bound = spanning_tree(pi);
    std::fill(excess.begin(), excess.end(), -2);
    for (int c = 0; c < n; ++c)
      if (parent[c] >= 0) ++excess[c], ++excess[parent[c]];
    int a = -1, b = -1;  // the cities the extra edges reach
    double extra = kInf;
    if (m_ > n) {
      for (int c = 0; c < n; ++c) {
        if (a < 0 || pi[c] < pi[a]) b = a, a = c;
        else if (b < 0 || pi[c] < pi[b]) b = c;
      }
      extra = pi[a] + pi[b];
    } else {
      a = tree_order.back();
      const T* w = d_.w + size_t(a) * n;
      for (int c = 0; c < n; ++c) {
        const double v = double(w[c]) + pi[c];
        if (c != a && c != parent[a] && v < extra) extra = v, b = c;
      }
      extra += pi[a];
    }
    ++excess[a], ++excess[b];
    bound += extra;
    for (int c = 0; c < n; ++c) bound -= 2 * pi[c];
    return bound;
  }

  // Standard deviation of the edge lengths of the spanning tree last built.
  double spread_of_tree() const {
    double sum = 0, sq = 0;
    int k = 0;
    for (size_t c = 0; c < parent.size(); ++c)
      if (parent[c] >= 0) sum += parent_w[c], sq += parent_w[c] * parent_w[c], ++k;
    const double mean = sum / std::max(k, 1);
    return std::sqrt(std::max(0.0, sq / std::max(k, 1) - mean * mean));
  }

  const Matrix<T>& d_;
  const int m_;  // cities in the tour: a dummy beyond the real ones for paths
  std::vector<double> rest_key_, rest_pi_;  // spanning_tree's packed arrays
  std::vector<int> rest_, rest_parent_;
};

// Iterated local search with sequential 2- to 5-opt moves (the basis move of
// LKH) on an array tour (tour_[position] = city, pos_[city] = position):
// O(1) adjacency queries; a move rewrites every segment but its longest.
// Kicks are segment-local double bridges; a kick that makes the tour longer
// is undone from a log of the rewrites since, so no step of the loop costs
// O(n) beyond what its moves rewrite.
template <typename T>
class Search {
 public:
  // `scale`: the largest |entry| of d. With `timed`, the search stops at
  // `deadline` and the subgradient ascent at `ascent_deadline`.
  Search(const Matrix<T>& d, double scale, uint64_t seed, bool timed, Clock::time_point deadline,
         Clock::time_point ascent_deadline)
      : d_(d),
        m_(d.m),
        k_(std::min(kCandidates, d.m - 1)),
        scale_(scale),
        rng_{seed},
        deadline_(deadline),
        ascent_deadline_(ascent_deadline),
        timed_(timed),
        restrict_(d.m >= kRestrictMinCities),
        tree_(d) {
    build_candidates();
    nearest_neighbour_tour();
  }

  // Descends to a local optimum; with `kicks`, then kicks it until converged
  // (see kStallPerCity) or the deadline. Returns the tour as cities in order.
  std::vector<int> run(bool kicks) {
    const int64_t per_city = restrict_ ? kStallPerCityRestricted : kStallPerCity;
    const int64_t stall_limit = kicks ? std::max(kMinStall, per_city * m_) : 0;
    for (int p = 0; p < m_; ++p) push(tour_[p]);
    local_search(3);  // 3-opt first: much cheaper while most moves still gain
    for (int p = 0; p < m_; ++p) push(tour_[p]);
    local_search(kMaxK);
    double cost = tour_cost(), mark = cost;  // mark: the cost when the stall count last restarted
    int64_t stall = 0;
    kicking_ = true;
    if (restrict_) {
      base_.resize(2 * size_t(m_));
      for (int c = 0; c < m_; ++c) base_[2 * c] = next(c, true), base_[2 * c + 1] = next(c, false);
    }
    while (stall < stall_limit) {
      if (timed_ && Clock::now() >= deadline_) break;  // a clock read is cheap next to a kick
      log_spans_.clear();
      log_.clear();
      const double delta = double_bridge() - local_search(kMaxK);
      if (delta <= 0) {  // equal cost is kept too: it lets the search drift on plateaus
        cost += delta;
        if (restrict_) rebase();
        if (cost < mark - kConvergedRtol * std::max(std::abs(mark), kConvergedFloor * scale_)) {
          mark = cost;
          stall = 0;
        } else {
          ++stall;
        }
      } else {
        undo_kick();
        ++stall;
      }
    }
    return tour_;
  }

 private:
  // Candidates by alpha-nearness (Helsgaun): alpha(a, b) is how much longer
  // the minimum spanning tree gets when forced to contain edge (a, b), that is
  // d(a, b) minus the longest edge on the tree path from a to b. Unlike plain
  // nearest neighbours it keeps the few long edges that join clusters. Each
  // list holds the k_ smallest alphas, smallest first (ties: shorter first).
  // For paths the dummy (distance 0) comes first in every list; its own list
  // holds the cities farthest from their two nearest neighbours, the natural
  // ends of a path.
  void build_candidates() {
    const int n = d_.n;
    const bool dummy = m_ > n;
    const int kr = dummy ? k_ - 1 : k_;  // candidates among the real cities
    tree_.ascend(timed_, ascent_deadline_);
    const std::vector<double>& pi = tree_.penalty;
    const std::vector<int>& parent = tree_.parent;
    const std::vector<double>& parent_w = tree_.parent_w;
    cand_.assign(size_t(m_) * k_, 0);
    std::vector<double> alpha(kr), dist(kr), beta(n), lonely(n);
    std::vector<int> mark(n, -1);
    for (int a = 0; a < n; ++a) {
      // beta[b]: longest edge on the tree path a..b. Ancestors of a first, then
      // every other city from its parent, in Prim order (parents come first).
      beta[a] = -kInf;
      for (int u = a; parent[u] >= 0; u = parent[u]) {
        beta[parent[u]] = std::max(beta[u], parent_w[u]);
        mark[parent[u]] = a;
      }
      for (int b : tree_.tree_order)
        if (b != a && mark[b] != a) beta[b] = std::max(beta[parent[b]], parent_w[b]);
      int* row = &cand_[size_t(a) * k_ + (dummy ? 1 : 0)];
      int filled = 0;
      double near1 = kInf, near2 = kInf;
      const T* w = d_.w + size_t(a) * n;
      for (int b = 0; b < n; ++b) {
        if (b == a) continue;
        const double v = double(w[b]), al = v + pi[a] + pi[b] - beta[b];
        if (v < near2) (v < near1 ? (near2 = near1, near1 = v) : near2 = v);
        if (filled == kr && (al > alpha[kr - 1] || (al == alpha[kr - 1] && v >= dist[kr - 1]))) continue;
        int i = filled < kr ? filled++ : kr - 1;  // insertion into the short list, sorted by (alpha, distance)
        for (; i > 0 && (alpha[i - 1] > al || (alpha[i - 1] == al && dist[i - 1] > v)); --i) {
          alpha[i] = alpha[i - 1], dist[i] = dist[i - 1];
          row[i] = row[i - 1];
        }
        alpha[i] = al, dist[i] = v;
        row[i] = b;
      }
      if (dummy) row[-1] = n;
      lonely[a] = near1 + near2;
    }
    if (dummy) {
      std::vector<int> ends(n);
      for (int c = 0; c < n; ++c) ends[c] = c;
      std::partial_sort(ends.begin(), ends.begin() + k_, ends.end(), [&](int a, int b) {
        return lonely[a] != lonely[b] ? lonely[a] > lonely[b] : a < b;
      });
      std::copy(ends.begin(), ends.begin() + k_, &cand_[size_t(n) * k_]);
    }
    cand_d_.resize(cand_.size());
    for (size_t i = 0; i < cand_.size(); ++i) cand_d_[i] = d_(int(i / k_), cand_[i]);
  }

  // Greedy start from a seeded random city; the dummy (if any) closes the tour.
  void nearest_neighbour_tour() {
    std::vector<int> left;
    for (int c = 0; c < d_.n; ++c) left.push_back(c);
    tour_.clear();
    int cur = left[rng_.below(int(left.size()))];
    std::swap(left[cur], left.back());
    left.pop_back();
    tour_.push_back(cur);
    while (!left.empty()) {
      size_t best = 0;
      double bv = kInf;
      const T* w = d_.w + size_t(cur) * d_.n;  // row read: the matrix was checked symmetric
      for (size_t i = 0; i < left.size(); ++i) {
        const double v = double(w[left[i]]);
        if (v < bv) bv = v, best = i;
      }
      cur = left[best];
      left[best] = left.back();
      left.pop_back();
      tour_.push_back(cur);
    }
    if (m_ > d_.n) tour_.push_back(d_.n);
    pos_.assign(m_, 0);
    for (int p = 0; p < m_; ++p) pos_[tour_[p]] = p;
    edge_.resize(m_);
    refresh_edges(0, m_);
    queued_.assign(m_, 0);
  }

  double tour_cost() const {
    double s = 0;
    for (int p = 0; p < m_; ++p) s += d_(tour_[p], tour_[p + 1 == m_ ? 0 : p + 1]);
    return s;
  }

  int next(int c, bool fwd) const {
    int p = pos_[c] + (fwd ? 1 : -1);
    if (p == m_) p = 0;
    if (p < 0) p = m_ - 1;
    return tour_[p];
  }
  void put(int p, int c) {
    tour_[p] = c;
    pos_[c] = p;
  }
  // Writes buf_ into the tour from position `at` on (cyclic). Once kicks
  // have begun it logs the cities it overwrites, so that undo_kick can
  // restore them.
  void rewrite(int at) {
    if (kicking_) log_spans_.emplace_back(at, int(buf_.size()));
    for (size_t o = 0; o < buf_.size(); ++o) {
      const int p = int((at + o) % m_);
      if (kicking_) log_.push_back(tour_[p]);
      put(p, buf_[o]);
    }
    refresh_edges(at, int(buf_.size()));
  }
  // Restores the tour from before the last kick, newest rewrite first.
  void undo_kick() {
    for (auto it = log_spans_.rbegin(); it != log_spans_.rend(); ++it) {
      for (int o = it->second - 1; o >= 0; --o) {
        put((it->first + o) % m_, log_.back());
        log_.pop_back();
      }
      refresh_edges(it->first, it->second);
    }
    log_spans_.clear();
  }
  // After an accepted kick: the tour is the new base; only the cities the
  // kick's rewrites touched (and their neighbours) have new base edges.
  void rebase() {
    for (const auto& [at, len] : log_spans_)
      for (int o = -1; o <= std::min(len, m_ - 2); ++o) {
        const int c = tour_[(at + o + m_) % m_];
        base_[2 * c] = next(c, true), base_[2 * c + 1] = next(c, false);
      }
  }
  bool in_base(int a, int b) const { return base_[2 * a] == b || base_[2 * a + 1] == b; }

  // Recomputes the cached lengths of the edges into, inside and out of the
  // `len` positions from `at` on.
  void refresh_edges(int at, int len) {
    for (int o = -1, p = at == 0 ? m_ - 1 : at - 1; o < std::min(len, m_ - 1); ++o, p = p + 1 == m_ ? 0 : p + 1)
      edge_[p] = d_(tour_[p], tour_[p + 1 == m_ ? 0 : p + 1]);
  }
  // Length of the tour edge from c to its neighbour in direction fwd.
  double edge(int c, bool fwd) const {
    const int p = pos_[c];
    return edge_[fwd ? p : (p == 0 ? m_ - 1 : p - 1)];
  }

  void push(int c) {
    if (queued_[c]) return;
    queued_[c] = 1;
    queue_.push_back(c);
  }

  // A sequential k-opt move t_[0..2L-1] removes the tour edges (t_[2i],
  // t_[2i+1]) and adds (t_[2i+1], t_[2i+2]), the last one closing back to
  // t_[0]. The tour minus the removed edges falls into L segments; segment r
  // (in tour order) has end slots 2r (its first city) and 2r + 1 (its last).
  // feasible() numbers them and links the slots each added edge joins
  // (partner_); the move gives a tour exactly when walking segment, added
  // edge, segment, ... from slot 0 meets all L segments before returning.
  bool feasible(int L) {
    for (int i = 0; i < L; ++i) {
      first_[i] = next(t_[2 * i], true) == t_[2 * i + 1] ? 2 * i : 2 * i + 1;  // the edge's earlier end
      order_[i] = i;
    }
    for (int i = 1; i < L; ++i)  // insertion sort of the edges by position
      for (int j = i; j > 0 && pos_[t_[first_[order_[j]]]] < pos_[t_[first_[order_[j - 1]]]]; --j)
        std::swap(order_[j], order_[j - 1]);
    for (int r = 0; r < L; ++r) {
      const int e = order_[r];
      slot_[first_[e] ^ 1] = 2 * r;                   // the later end starts segment r
      slot_[first_[e]] = 2 * ((r + L - 1) % L) + 1;  // the earlier end closes the segment before
    }
    for (int i = 0; i < L; ++i) {
      const int x = slot_[2 * i + 1], y = slot_[(2 * i + 2) % (2 * L)];
      partner_[x] = y;
      partner_[y] = x;
    }
    int s = 0, count = 0;
    do {
      s = partner_[s ^ 1];
      ++count;
    } while (s != 0);
    return count == L;
  }
  int slot_city(int s, int L) const {
    const int r = s >> 1;
    return s & 1 ? t_[first_[order_[(r + 1) % L]]] : t_[first_[order_[r]] ^ 1];
  }
  // Applies the move feasible(L) just accepted. The longest segment stays in
  // place; the others are written after it in their new order and direction.
  void apply(int L) {
    int keep = 0, keep_len = -1;
    for (int r = 0; r < L; ++r) {
      int len = pos_[slot_city(2 * r + 1, L)] - pos_[slot_city(2 * r, L)];
      if (len < 0) len += m_;
      if (len > keep_len) keep = r, keep_len = len;
    }
    buf_.clear();
    for (int s = partner_[2 * keep + 1]; s != 2 * keep; s = partner_[s ^ 1]) {
      const int from = slot_city(s, L), to = slot_city(s ^ 1, L);
      for (int c = from;; c = next(c, !(s & 1))) {
        buf_.push_back(c);
        if (c == to) break;
      }
    }
    const int at = pos_[slot_city(2 * keep + 1, L)] + 1;
    rewrite(at == m_ ? 0 : at);
  }

  bool is_removed(int a, int b, int L) const {
    for (int i = 0; i < L; ++i)
      if ((t_[2 * i] == a && t_[2 * i + 1] == b) || (t_[2 * i] == b && t_[2 * i + 1] == a)) return true;
    return false;
  }
  bool is_added(int a, int b, int L) const {
    for (int i = 0; i + 1 < L; ++i)
      if ((t_[2 * i + 1] == a && t_[2 * i + 2] == b) || (t_[2 * i + 1] == b && t_[2 * i + 2] == a)) return true;
    return false;
  }

  // Extends the move t_[0..2L-1] (removed length R, added length A, closing
  // edge not counted; `touched`: the sum of their |lengths|) by one exchange:
  // an added edge from t_[2L-1] to one of its first kBreadth[L] candidates t3
  // (alpha order) that keep the gain positive, and a removed tour edge
  // (t3, t4) on either side. Applies the first extension that closes into a
  // shorter tour and returns its gain (> 0); else goes deeper, up to max_k_
  // exchanges, and returns 0 when nothing closes shorter.
  double extend(int L, double R, double A, double touched) {
    const int t2 = t_[2 * L - 1];
    const int* cand = &cand_[size_t(t2) * k_];
    const double* cand_d = &cand_d_[size_t(t2) * k_];
    for (int i = 0, tried = 0; i < k_ && tried < kBreadth[L]; ++i) {
      const int t3 = cand[i];
      const double d23 = cand_d[i];
      if (!(R - A - d23 > 0)) continue;  // the gain criterion
      if (t3 == t_[0] || t3 == next(t2, true) || t3 == next(t2, false) || is_added(t2, t3, L)) continue;
      ++tried;
      for (const bool fwd : {true, false}) {
        const int t4 = next(t3, fwd);
        if (t4 == t_[0] || is_removed(t3, t4, L)) continue;
        t_[2 * L] = t3;
        t_[2 * L + 1] = t4;
        const double r34 = edge(t3, fwd), close = d_(t4, t_[0]);
        const double r = R + r34, a = A + d23, t = touched + std::abs(r34) + std::abs(d23);
        // The gain tested is the gain returned: the caller takes a positive
        // one as "applied", so a move applied with a zero or NaN gain would
        // leave it searching from stale state.
        const double gain = r - a - close;
        if (improves(gain, t + std::abs(close)) && feasible(L + 1)) {
          apply(L + 1);
          for (int j = 0; j < 2 * L + 2; ++j) push(t_[j]);
          return gain;
        }
        if (L + 1 < max_k_) {
          const double g = extend(L + 1, r, a, t);
          if (g > 0) return g;
        }
      }
    }
    return 0;
  }

  // Applies the first improving sequential move (2-opt up to max_k_-opt)
  // that removes a tour edge at t1; returns its gain (0 if there is none).
  double improve_city(int t1) {
    t_[0] = t1;
    for (const bool fwd : {true, false}) {
      t_[1] = next(t1, fwd);
      // LKH's restricted search: the local optimum before the kick has no
      // improving move, so one worth trying now removes an edge it lacked.
      if (restrict_ && kicking_ && in_base(t1, t_[1])) continue;
      const double e = edge(t1, fwd);
      const double g = extend(1, e, 0, std::abs(e));
      if (g > 0) return g;
    }
    return 0;
  }

  // Runs moves of up to `max_k` exchanges until no queued city has one;
  // returns the total gain.
  double local_search(int max_k) {
    max_k_ = max_k;
    double gain = 0;
    size_t head = 0;
    while (head < queue_.size()) {
      if (timed_ && (head & 15) == 15 && Clock::now() >= deadline_) break;
      const int c = queue_[head++];
      queued_[c] = 0;
      const double g = improve_city(c);
      if (g > 0) {
        gain += g;
        push(c);
      }
    }
    for (size_t i = head; i < queue_.size(); ++i) queued_[queue_[i]] = 0;
    queue_.clear();
    return gain;
  }

  // Segment-local double bridge: x S1 S2 S3 y -> x S3 S2 S1 y with short
  // segments, so the search repairs it nearby. Returns the added length.
  double double_bridge() {
    const int lmax = std::max(1, std::min({kKickSegment, (m_ - 2) / 3, m_ / kKickFraction}));
    const int l1 = 1 + rng_.below(lmax), l2 = 1 + rng_.below(lmax), l3 = 1 + rng_.below(lmax);
    const int p = rng_.below(m_);
    auto at = [&](int off) { return tour_[(p + off) % m_]; };
    const int x = at(0), s1 = at(1), e1 = at(l1), s2 = at(l1 + 1), e2 = at(l1 + l2);
    const int s3 = at(l1 + l2 + 1), e3 = at(l1 + l2 + l3), y = at(l1 + l2 + l3 + 1);
    const double delta = d_(x, s3) + d_(e3, s2) + d_(e2, s1) + d_(e1, y) - d_(x, s1) - d_(e1, s2) - d_(e2, s3) -
                         d_(e3, y);
    buf_.clear();
    for (int o = l1 + l2 + 1; o <= l1 + l2 + l3; ++o) buf_.push_back(at(o));
    for (int o = l1 + 1; o <= l1 + l2; ++o) buf_.push_back(at(o));
    for (int o = 1; o <= l1; ++o) buf_.push_back(at(o));
    rewrite((p + 1) % m_);
    for (int c : {x, s1, e1, s2, e2, s3, e3, y}) push(c);
    return delta;
  }

  const Matrix<T>& d_;
  const int m_, k_;
  const double scale_;  // largest |entry|
  Rng rng_;
  const Clock::time_point deadline_, ascent_deadline_;
  const bool timed_;
  const bool restrict_;  // restricted search after kicks (kRestrictMinCities)
  HeldKarp<T> tree_;  // penalties and spanning tree behind the candidates
  std::vector<int> cand_, tour_, pos_, queue_, buf_;
  int max_k_ = kMaxK;  // exchanges per move in the current local search
  std::vector<double> edge_;  // edge_[p] = d(tour_[p], tour_[p + 1]) (cyclic)
  std::vector<double> cand_d_;  // cand_d_[i] = distance from a city to its candidate cand_[i]
  std::vector<char> queued_;
  // The move in progress (see feasible()) and its segment bookkeeping.
  int t_[2 * kMaxK], first_[kMaxK], order_[kMaxK], slot_[2 * kMaxK], partner_[2 * kMaxK];
  // Undo log of the current kick: (position, count) of each rewrite and the
  // cities it overwrote, in order.
  bool kicking_ = false;
  std::vector<std::pair<int, int>> log_spans_;
  std::vector<int> log_;
  std::vector<int> base_;  // base_[2c], base_[2c + 1]: the neighbours of c in the tour before the kick
};

// Exact optimum by dynamic programming over subsets (Held-Karp). A state whose
// length plus a lower bound on the rest (each unvisited city still needs an
// edge into it) reaches `ub` is never expanded, so a good heuristic bound
// leaves most of the table untouched. Returns an empty order if nothing is
// shorter than `ub`.
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

template <typename T>
double order_cost(const Matrix<T>& d, const std::vector<int>& order, bool path) {
  double s = 0;
  for (size_t i = 1; i < order.size(); ++i) s += d(order[i - 1], order[i]);
  if (!path && order.size() > 1) s += d(order.back(), order.front());
  return s;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

double max_entry(int64_t n) {
  return std::numeric_limits<double>::max() / (kEntryHeadroom * double(n + 1) * double(n + 1));
}

template <typename T>
double validate(const T* w, int64_t n) {
  // One branch-free pass over pairs (tiled so the transposed reads stay in
  // cache); only when it finds a problem do the slow loops name the entry.
  constexpr int64_t kTile = 32;
  bool finite = true;
  double scale = 0, worst = 0;  // worst: largest asymmetry beyond the relative tolerance
  for (int64_t i = 0; i < n; ++i) finite &= std::isfinite(double(w[i * n + i]));
  for (int64_t bi = 0; bi < n; bi += kTile)
    for (int64_t bj = bi; bj < n; bj += kTile)
      for (int64_t i = bi; i < std::min(n, bi + kTile); ++i)
        for (int64_t j = std::max(bj, i + 1); j < std::min(n, bj + kTile); ++j) {
          const double a = double(w[i * n + j]), b = double(w[j * n + i]);
          const double big = std::max(std::abs(a), std::abs(b));
          finite &= (a - a == 0) & (b - b == 0);  // NaN or inf give NaN
          scale = std::max(scale, big);
          worst = std::max(worst, std::abs(a - b) - kSymRtol * big);
        }
  if (!finite)
    for (int64_t i = 0; i < n * n; ++i)
      if (!std::isfinite(double(w[i])))
        throw std::invalid_argument("dist must be finite, got dist[" + std::to_string(i / n) + ", " +
                                    std::to_string(i % n) + "] = " + fmt(double(w[i])));
  const double limit = max_entry(n);
  if (scale > limit)
    for (int64_t i = 0; i < n * n; ++i)
      if (i / n != i % n && std::abs(double(w[i])) > limit)
        throw std::invalid_argument("dist entries must be at most " + fmt(limit) + " in magnitude for " +
                                    std::to_string(n) + " cities (path lengths must stay finite in float64), got dist[" +
                                    std::to_string(i / n) + ", " + std::to_string(i % n) + "] = " + fmt(double(w[i])));
  const double atol = kRelGain * scale;
  if (worst > atol)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) {
        const double a = double(w[i * n + j]), b = double(w[j * n + i]);
        if (std::abs(a - b) > kSymRtol * std::max(std::abs(a), std::abs(b)) + atol)
          throw std::invalid_argument("dist must be symmetric (relative tolerance " + fmt(kSymRtol) + "), got dist[" +
                                      std::to_string(i) + ", " + std::to_string(j) + "] = " + fmt(a) + " but dist[" +
                                      std::to_string(j) + ", " + std::to_string(i) + "] = " + fmt(b));
      }
  return scale;
}

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
    Search<T> search(d, scale, opt.seed, timed, deadline, after(timed ? kAscentShare * opt.time_limit : 0));
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
  return HeldKarp<T>(d).ascend_full();
}

template double validate<float>(const float*, int64_t);
template double validate<double>(const double*, int64_t);
template std::vector<int64_t> solve<float>(const float*, int64_t, const Options&);
template std::vector<int64_t> solve<double>(const double*, int64_t, const Options&);
template double lower_bound<float>(const float*, int64_t, bool);
template double lower_bound<double>(const double*, int64_t, bool);

}  // namespace neumeta::tsp
