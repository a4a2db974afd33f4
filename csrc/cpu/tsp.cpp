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

// A move must shorten the tour by more than this fraction of the edge lengths
// it touches: far above rounding noise, so float error can never make the
// search cycle, even on huge or tiny magnitudes.
constexpr double kRelGain = 1e-12;
constexpr double kSymRtol = 1e-5;    // relative asymmetry still accepted
constexpr int kCandidates = 10;      // candidates searched per city (the dummy included)
constexpr int kKickSegment = 100;    // longest segment a double bridge moves,
constexpr int kKickFraction = 8;     // and at most this fraction of the tour
// Subgradient ascent before the candidates: at most this many steps, and
// at most this many distance reads in all (each step reads the matrix once).
constexpr int kAscentSteps = 30;
constexpr int64_t kAscentWork = 8'000'000;
constexpr double kAscentStep = 0.1;   // first step, relative to the mean tree edge
constexpr double kAscentDecay = 0.9;
constexpr int kMaxDepth = 6;         // exchanges in one Lin-Kernighan move
constexpr int kDeepBreadth = 3;      // steps tried at its first level beyond 3-opt (one deeper)
constexpr int64_t kBranchMaxNodes = 50000;  // branch and bound gives way to Held-Karp beyond this
static_assert(kExactMaxN + 1 <= kBranchMaxCities, "paths add a dummy city");
constexpr int kMinSearchCities = 8;  // below this the exact solver works alone
// Converged: this many kicks per city in a row did not shorten the tour by
// more than kConvergedRtol (relative) in all.
constexpr int64_t kStallPerCity = 5;
constexpr double kConvergedRtol = 1e-6;
constexpr int64_t kMinStall = 100;
constexpr int64_t kExactStall = 20;  // kicks without gain before an exact search takes over

bool improves(double removed, double added) {
  return removed - added > kRelGain * (std::abs(removed) + std::abs(added));
}

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

// Iterated Lin-Kernighan search on an array tour (tour_[position] = city,
// pos_[city] = position): O(1) adjacency and orientation queries, a 2-opt
// move reverses the shorter side. Kicks are segment-local double bridges; a
// kick that makes the tour longer is undone from a log of the reversals it
// caused, so no step of the loop costs O(n) beyond its flips.
template <typename T>
class Search {
 public:
  Search(const Matrix<T>& d, uint64_t seed, Clock::time_point deadline, bool timed)
      : d_(d), m_(d.m), k_(std::min(kCandidates, d.m - 1)), rng_{seed}, deadline_(deadline), timed_(timed) {
    build_candidates();
    nearest_neighbour_tour();
  }

  // Runs until `stall_limit` kicks in a row gained less than kConvergedRtol
  // together, or the deadline. Returns the tour as cities in order.
  std::vector<int> run(int64_t stall_limit) {
    for (int p = 0; p < m_; ++p) push(tour_[p]);
    local_search(false);  // 3-opt first: much cheaper while most moves still gain
    for (int p = 0; p < m_; ++p) push(tour_[p]);
    local_search(true);
    double cost = tour_cost(), mark = cost;  // mark: the cost when the stall count last restarted
    int64_t stall = 0;
    for (int64_t kick = 0; stall < stall_limit; ++kick) {
      if (timed_ && (kick & 3) == 0 && Clock::now() >= deadline_) break;
      spans_.clear();
      const double delta = double_bridge() - local_search(true);
      if (delta <= 0) {  // equal cost is kept too: it lets the search drift on plateaus
        cost += delta;
        if (cost < mark - kConvergedRtol * std::abs(mark)) {
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
  // Minimum spanning tree of the real cities under d(a, b) + pi[a] + pi[b]
  // (Prim on the dense matrix, one row read per city). Fills parent_,
  // parent_w_ (the transformed length of the edge to the parent) and
  // tree_order_ (parents before children); returns the tree's length.
  double spanning_tree(const std::vector<double>& pi) {
    const int n = d_.n;
    parent_.assign(n, -1);
    parent_w_.assign(n, 0.0);
    tree_order_.clear();
    std::vector<double> key(n, kInf);
    std::vector<char> done(n, 0);
    double length = 0;
    key[0] = 0;
    for (int u = 0; u >= 0;) {
      done[u] = 1;
      tree_order_.push_back(u);
      parent_w_[u] = key[u];
      length += key[u];
      const T* w = d_.w + size_t(u) * n;
      int next = -1;
      for (int c = 0; c < n; ++c) {
        if (done[c]) continue;
        const double v = double(w[c]) + pi[u] + pi[c];
        if (v < key[c]) key[c] = v, parent_[c] = u;
        if (next < 0 || key[c] < key[next]) next = c;
      }
      u = next;
    }
    return length;
  }

  // A few steps of Held-Karp subgradient ascent: penalties pi push the
  // spanning tree towards degree 2 everywhere (closer to a path), which makes
  // the alpha values of its edges far more telling. Each step is one O(n^2)
  // tree, so large n get fewer. Leaves pi_ at the best lower bound seen and
  // the tree of pi_ built.
  void ascend() {
    const int n = d_.n;
    const int steps = int(std::clamp<int64_t>(kAscentWork / (int64_t(n) * n), 1, kAscentSteps));
    pi_.assign(n, 0.0);
    std::vector<double> pi = pi_;
    std::vector<int> deg(n);
    double best = -kInf;
    double t = 0;  // step length, set from the first tree's mean edge
    for (int s = 0;; ++s) {
      double bound = spanning_tree(pi);
      for (int c = 0; c < n; ++c) bound -= 2 * pi[c];
      const bool better = bound > best;
      if (better) best = bound, pi_ = pi;
      if (s + 1 == steps) {
        if (!better) spanning_tree(pi_);
        return;
      }
      std::fill(deg.begin(), deg.end(), 0);
      for (int c = 0; c < n; ++c)
        if (parent_[c] >= 0) ++deg[c], ++deg[parent_[c]];
      if (s == 0) t = kAscentStep * std::abs(bound) / n;
      for (int c = 0; c < n; ++c) pi[c] += t * (deg[c] - 2);
      t *= kAscentDecay;
    }
  }

  // Candidates by alpha-nearness (Helsgaun): alpha(a, b) is how much longer
  // the minimum spanning tree gets when forced to contain edge (a, b), that is
  // d(a, b) minus the longest edge on the tree path from a to b. Unlike plain
  // nearest neighbours it keeps the few long edges that join clusters. Each
  // list holds the k_ smallest alphas, then is sorted by distance so the
  // search can stop at the first candidate that cannot gain. For paths the
  // dummy (distance 0) comes first in every list; its own list holds the
  // cities farthest from their two nearest neighbours, the natural ends of a
  // path.
  void build_candidates() {
    const int n = d_.n;
    const bool dummy = m_ > n;
    const int kr = dummy ? k_ - 1 : k_;  // candidates among the real cities
    ascend();
    const std::vector<double>& pi = pi_;
    cand_.assign(size_t(m_) * k_, 0);
    std::vector<double> alpha(kr), dist(kr), beta(n), lonely(n);
    std::vector<int> mark(n, -1);
    for (int a = 0; a < n; ++a) {
      // beta[b]: longest edge on the tree path a..b. Ancestors of a first, then
      // every other city from its parent, in Prim order (parents come first).
      beta[a] = -kInf;
      for (int u = a; parent_[u] >= 0; u = parent_[u]) {
        beta[parent_[u]] = std::max(beta[u], parent_w_[u]);
        mark[parent_[u]] = a;
      }
      for (int b : tree_order_)
        if (b != a && mark[b] != a) beta[b] = std::max(beta[parent_[b]], parent_w_[b]);
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
      std::sort(row, row + kr, [&](int x, int y) { return w[x] != w[y] ? w[x] < w[y] : x < y; });
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
  // Is b on the path from a to c in direction fwd (ends included)?
  bool between(int a, int b, int c, bool fwd) const {
    if (!fwd) std::swap(a, c);
    const int pa = pos_[a], pb = pos_[b], pc = pos_[c];
    return pa <= pc ? (pa <= pb && pb <= pc) : (pb >= pa || pb <= pc);
  }

  void put(int p, int c) {
    tour_[p] = c;
    pos_[c] = p;
  }
  // Reverses tour positions i..j (cyclic, inclusive); doing it twice is a no-op.
  void reverse(int i, int j) {
    int len = j - i;
    if (len < 0) len += m_;
    for (int s = 0; s < (len + 1) / 2; ++s) {
      const int ci = tour_[i], cj = tour_[j];
      put(i, cj);
      put(j, ci);
      if (++i == m_) i = 0;
      if (--j < 0) j = m_ - 1;
    }
  }
  // Restores the tour from before the last kick: the reversals since, in
  // reverse order, then the segments the double bridge moved.
  void undo_kick() {
    for (auto it = spans_.rbegin(); it != spans_.rend(); ++it) reverse(it->first, it->second);
    for (size_t o = 0; o < bridged_.size(); ++o) put(int((bridge_at_ + o) % m_), bridged_[o]);
  }
  // Tentative flips of a Lin-Kernighan move are not applied but stacked as
  // reversed position spans (pending_): a city's position on the tour they
  // would give is its position reflected through each span in turn, the city
  // at a position is found by reflecting back in reverse order. Only a move
  // that closes shorter touches the arrays.
  static bool in_span(int p, std::pair<int, int> s) {
    return s.first <= s.second ? s.first <= p && p <= s.second : p >= s.first || p <= s.second;
  }
  int reflect(int p, std::pair<int, int> s) const {
    int q = s.first + s.second - p;  // the span's ends trade places
    if (s.first > s.second) q += p >= s.first ? m_ : 0;
    else if (q < 0) q += m_;
    return q >= m_ ? q - m_ : q;
  }
  int vpos(int c) const {
    int p = pos_[c];
    for (const auto& s : pending_)
      if (in_span(p, s)) p = reflect(p, s);
    return p;
  }
  int vnext(int c, bool fwd) const {
    int p = vpos(c) + (fwd ? 1 : -1);
    if (p == m_) p = 0;
    if (p < 0) p = m_ - 1;
    for (auto it = pending_.rbegin(); it != pending_.rend(); ++it)
      if (in_span(p, *it)) p = reflect(p, *it);
    return tour_[p];
  }

  // 2-opt on the tour with the pending flips: with b = next(a) and d =
  // next(c) in one direction, replaces edges (a, b), (c, d) by (a, c),
  // (b, d). Returns the positions to reverse, whichever side is shorter.
  std::pair<int, int> flip_span(int a, int b, int c) const {
    int i = vpos(b), j = vpos(c);
    if (vnext(a, true) != b) std::swap(i, j);
    int len = j - i;
    if (len < 0) len += m_;
    if (2 * (len + 1) > m_) {
      const int ni = j + 1 == m_ ? 0 : j + 1, nj = i == 0 ? m_ - 1 : i - 1;
      i = ni, j = nj;
    }
    return {i, j};
  }
  void apply(std::pair<int, int> span) {
    reverse(span.first, span.second);
    spans_.push_back(span);
  }
  void flip(int a, int b, int c) { apply(flip_span(a, b, c)); }

  void push(int c) {
    if (queued_[c]) return;
    queued_[c] = 1;
    queue_.push_back(c);
  }

  bool added_edge(int a, int b) const {
    for (const auto& e : added_)
      if ((e.first == a && e.second == b) || (e.first == b && e.second == a)) return true;
    return false;
  }

  // Deeper levels of a Lin-Kernighan move, on the tour with the pending
  // flips. Edge (t1, t2) of the current tour is the one to break next;
  // `removed` and `added` sum the edge lengths exchanged so far (the former
  // includes (t1, t2)). A step adds (t2, t3) and removes (t4, t3), t4 being
  // the neighbour of t3 that keeps a tour, by a pending 2-opt flip, after
  // which (t1, t4) is the edge to break. Steps go best partial gain first:
  // kDeepBreadth of them at the first level beyond 3-opt, one deeper. Stops
  // at the first step that closes shorter (returns the gain, its flips still
  // pending) or when no step keeps a positive partial gain (drops its flips,
  // returns 0).
  double deepen(int t1, int t2, double removed, double added, int level) {
    if (level >= kMaxDepth) return 0;
    struct Step {
      int t3, t4;
      double d23, d34;
    };
    Step steps[kCandidates];
    int count = 0;
    const bool fwd = vnext(t1, true) == t2;
    for (int i = 0; i < k_; ++i) {
      const int t3 = cand_[size_t(t2) * k_ + i];
      const double d23 = cand_d_[size_t(t2) * k_ + i];
      if (removed - added - d23 <= 0) break;  // candidates are sorted: no later one keeps a gain
      if (t3 == t1) continue;
      const int t4 = vnext(t3, !fwd);
      if (t4 == t2 || added_edge(t3, t4)) continue;
      steps[count++] = {t3, t4, d23, d_(t3, t4)};
    }
    const int breadth = std::min(count, level == 2 ? kDeepBreadth : 1);
    std::partial_sort(steps, steps + breadth, steps + count,
                      [](const Step& a, const Step& b) { return a.d34 - a.d23 > b.d34 - b.d23; });
    for (int i = 0; i < breadth; ++i) {
      const Step& st = steps[i];
      pending_.push_back(flip_span(t1, t2, st.t4));
      added_.emplace_back(t2, st.t3);
      const double r = removed + st.d34, a = added + st.d23, close = d_(st.t4, t1);
      const double g = improves(r, a + close) ? r - a - close : deepen(t1, st.t4, r, a, level + 1);
      if (g > 0) {
        push(t2), push(st.t3), push(st.t4);
        return g;
      }
      pending_.pop_back();
      added_.pop_back();
    }
    return 0;
  }

  // Lin-Kernighan chain grown from the 3-opt prefix t1..t6 (t2 = next(t1,
  // fwd), t4 = next(t3, !fwd), t6 the neighbour of t5 that keeps a tour):
  // applies it and returns its gain if one closes shorter, else 0.
  double chain(int t1, int t2, int t3, int t5, bool fwd) {
    const int t4 = next(t3, !fwd);
    const int t6 = between(t2, t5, t4, fwd) ? next(t5, fwd) : next(t5, !fwd);
    pending_.assign(1, flip_span(t1, t2, t4));
    pending_.push_back(flip_span(t1, t4, t6));
    added_.assign({{t2, t3}, {t4, t5}});
    const double g = deepen(t1, t6, d_(t1, t2) + d_(t3, t4) + d_(t5, t6), d_(t2, t3) + d_(t4, t5), 2);
    if (g > 0) {
      for (const auto& span : pending_) apply(span);
      for (int c : {t1, t2, t3, t4, t5, t6}) push(c);
    }
    pending_.clear();
    return g;
  }

  // Applies the first improving move that breaks an edge at t1; returns its
  // gain (0 if there is none). Tried in order: 2-opt and the sequential
  // 3-opt moves, evaluated from positions without touching the tour, then a
  // Lin-Kernighan chain grown from the most promising 3-opt start.
  double improve_city(int t1) {
    for (const bool fwd : {true, false}) {
      const int t2 = next(t1, fwd);
      const double d12 = d_(t1, t2);
      int c3 = -1, c5 = -1;  // most promising start of a deeper chain
      double c_gain = 0;
      for (int i = 0; i < k_; ++i) {
        const int t3 = cand_[size_t(t2) * k_ + i];
        const double d23 = cand_d_[size_t(t2) * k_ + i];
        const double g1 = d12 - d23;
        if (g1 <= 0) break;  // candidates are sorted: no later one can gain
        if (t3 == t1) continue;

        // t4 before t3: closing (t4, t1) is a 2-opt move; else go one level deeper.
        int t4 = next(t3, !fwd);
        if (t4 != t2) {
          const double d34 = d_(t3, t4);
          const double d41 = d_(t4, t1);
          if (improves(d12 + d34, d23 + d41)) {
            flip(t1, t2, t4);
            for (int c : {t1, t2, t3, t4}) push(c);
            return d12 + d34 - d23 - d41;
          }
          for (int j = 0; j < k_; ++j) {
            const int t5 = cand_[size_t(t4) * k_ + j];
            const double d45 = cand_d_[size_t(t4) * k_ + j];
            if (g1 + d34 - d45 <= 0) break;
            if (t5 == t1 || t5 == t3) continue;
            // After the 2-opt the segment t2..t4 runs backwards; t6 precedes t5 there.
            const int t6 = between(t2, t5, t4, fwd) ? next(t5, fwd) : next(t5, !fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t4);
              flip(t1, t4, t6);
              for (int c : {t1, t2, t3, t4, t5, t6}) push(c);
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
            const double g3 = g1 + d34 - d45 + d56;
            if (g3 > c_gain) c_gain = g3, c3 = t3, c5 = t5;
          }
        }

        // t4 after t3: (t2, t3) closes the segment t2..t3 into a loop, which a
        // third exchange (t5, t6) inside it must open again.
        t4 = next(t3, fwd);
        if (t4 == t1) continue;
        const double d34 = d_(t3, t4);
        for (int j = 0; j < k_; ++j) {
          const int t5 = cand_[size_t(t4) * k_ + j];
          const double d45 = cand_d_[size_t(t4) * k_ + j];
          if (g1 + d34 - d45 <= 0) break;
          if (!between(t2, t5, t3, fwd)) continue;
          if (t5 != t3) {  // segments t2..t5 and t6..t3 swap places
            const int t6 = next(t5, fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t5);
              flip(t1, t5, t3);
              flip(t1, t3, t6);
              for (int c : {t1, t2, t3, t4, t5, t6}) push(c);
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
          }
          if (t5 != t2) {  // both segments t2..t6 and t5..t3 reversed in place
            const int t6 = next(t5, !fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t6);
              flip(t2, t5, t3);
              for (int c : {t1, t2, t3, t4, t5, t6}) push(c);
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
          }
        }
      }
      if (deep_ && c3 >= 0) {
        const double g = chain(t1, t2, c3, c5, fwd);
        if (g > 0) return g;
      }
    }
    return 0;
  }

  // Runs moves until no queued city has one; returns the total gain.
  // `deep`: Lin-Kernighan chains too.
  double local_search(bool deep) {
    deep_ = deep;
    double gain = 0;
    size_t head = 0;
    while (head < queue_.size()) {
      if (timed_ && (head & 255) == 255 && Clock::now() >= deadline_) break;
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
    bridge_at_ = (p + 1) % m_;
    bridged_.clear();
    for (int o = 1; o <= l1 + l2 + l3; ++o) bridged_.push_back(at(o));
    buf_.clear();
    for (int o = l1 + l2 + 1; o <= l1 + l2 + l3; ++o) buf_.push_back(at(o));
    for (int o = l1 + 1; o <= l1 + l2; ++o) buf_.push_back(at(o));
    for (int o = 1; o <= l1; ++o) buf_.push_back(at(o));
    for (size_t o = 0; o < buf_.size(); ++o) put(int((bridge_at_ + o) % m_), buf_[o]);
    for (int c : {x, s1, e1, s2, e2, s3, e3, y}) push(c);
    return delta;
  }

  const Matrix<T>& d_;
  const int m_, k_;
  Rng rng_;
  const Clock::time_point deadline_;
  const bool timed_;
  std::vector<int> cand_, tour_, pos_, queue_, buf_;
  bool deep_ = true;  // local search with Lin-Kernighan chains
  std::vector<double> cand_d_;  // cand_d_[i] = distance from a city to its candidate cand_[i]
  // Spanning tree for the candidates: penalties, parents, edge lengths, order.
  std::vector<double> pi_, parent_w_;
  std::vector<int> parent_, tree_order_;
  std::vector<char> queued_;
  std::vector<std::pair<int, int>> added_;  // edges added by the Lin-Kernighan move in progress
  std::vector<std::pair<int, int>> pending_;  // its flips, not yet applied
  // Undo log of the current kick: the cities the double bridge moved (from
  // position bridge_at_ on) and the position spans reversed since.
  int bridge_at_ = 0;
  std::vector<int> bridged_;
  std::vector<std::pair<int, int>> spans_;
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

template <typename T>
void validate(const T* w, int64_t n) {
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
}

template <typename T>
std::vector<int64_t> solve(const T* dist, int64_t n64, const Options& opt) {
  const auto start = Clock::now();
  if (n64 > std::numeric_limits<int>::max() / 2) throw std::invalid_argument("too many cities: " + std::to_string(n64));
  validate(dist, n64);
  const int n = int(n64);
  std::vector<int64_t> result(n);
  for (int i = 0; i < n; ++i) result[i] = i;
  if (n <= (opt.path ? 2 : 3)) return result;  // every order is optimal

  const Matrix<T> d{dist, n, opt.path ? n + 1 : n};
  const Matrix<T> real{dist, n, n};
  const bool timed = opt.time_limit >= 0;
  const auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timed ? opt.time_limit : 0));

  std::vector<int> order;
  if (d.m >= kMinSearchCities) {
    Search<T> search(d, opt.seed, deadline, timed);
    // The exact search follows for small n: a few kicks give its pruning bound.
    const int64_t stall = n <= kExactMaxN ? kExactStall : std::max(kMinStall, kStallPerCity * d.m);
    const std::vector<int> tour = search.run(stall);
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
  for (int i = 0; i < n; ++i) result[i] = order[i];
  return result;
}

template void validate<float>(const float*, int64_t);
template void validate<double>(const double*, int64_t);
template std::vector<int64_t> solve<float>(const float*, int64_t, const Options&);
template std::vector<int64_t> solve<double>(const double*, int64_t, const Options&);

}  // namespace neumeta::tsp
