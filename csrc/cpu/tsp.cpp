#include "tsp.h"

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
constexpr int kCandidates = 10;      // nearest neighbours searched per city
constexpr int kKickSegment = 100;    // longest segment a double bridge moves
constexpr int kMinSearchCities = 8;  // below this the exact solver works alone
// Converged: this many kicks per city in a row found nothing shorter.
constexpr int64_t kStallPerCity = 20;
constexpr int64_t kMinStall = 100;

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

// Iterated local search on an array tour (tour_[position] = city).
template <typename T>
class Search {
 public:
  Search(const Matrix<T>& d, uint64_t seed, Clock::time_point deadline, bool timed)
      : d_(d), m_(d.m), k_(std::min(kCandidates, d.m - 1)), rng_{seed}, deadline_(deadline), timed_(timed) {
    build_candidates();
    nearest_neighbour_tour();
  }

  // Runs until `stall_limit` kicks in a row found nothing shorter, or the
  // deadline. Returns the tour as cities in order.
  std::vector<int> run(int64_t stall_limit) {
    queue_all();
    local_search();
    double cost = tour_cost();
    int64_t stall = 0;
    for (int64_t kick = 0; stall < stall_limit; ++kick) {
      if (timed_ && (kick & 15) == 0 && Clock::now() >= deadline_) break;
      record_ = true;
      journal_.clear();
      const double delta = double_bridge() - local_search();
      if (delta <= 0) {  // equal cost is kept too: it lets the search drift on plateaus
        stall = delta < -kRelGain * std::abs(cost) ? 0 : stall + 1;
        cost += delta;
      } else {
        revert();
        ++stall;
      }
    }
    return tour_;
  }

 private:
  // Nearest neighbours by row scans (contiguous reads). The dummy, at distance
  // 0, is a candidate of every city, and any cities serve as its own.
  void build_candidates() {
    cand_.assign(size_t(m_) * k_, 0);
    std::vector<double> best(k_);
    for (int a = 0; a < m_; ++a) {
      int* row = &cand_[size_t(a) * k_];
      int filled = 0;
      auto offer = [&](int b, double v) {
        if (filled == k_ && v >= best[k_ - 1]) return;
        int i = filled < k_ ? filled++ : k_ - 1;  // insertion into the sorted short list
        for (; i > 0 && best[i - 1] > v; --i) {
          best[i] = best[i - 1];
          row[i] = row[i - 1];
        }
        best[i] = v;
        row[i] = b;
      };
      if (a == d_.n) {
        for (int b = 0; b < k_; ++b) offer(b, 0.0);
        continue;
      }
      if (m_ > d_.n) offer(d_.n, 0.0);
      const T* w = d_.w + size_t(a) * d_.n;
      for (int b = 0; b < d_.n; ++b)
        if (b != a) offer(b, double(w[b]));
    }
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
    if (record_) journal_.emplace_back(p, tour_[p]);
    tour_[p] = c;
    pos_[c] = p;
  }
  void revert() {
    for (auto it = journal_.rbegin(); it != journal_.rend(); ++it) {
      tour_[it->first] = it->second;
      pos_[it->second] = it->first;
    }
  }
  // Reverses tour positions i..j (cyclic, inclusive).
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
  // 2-opt: with b = next(a) and d = next(c) in one direction, replaces edges
  // (a, b), (c, d) by (a, c), (b, d). Reverses whichever side is shorter.
  void flip(int a, int b, int c) {
    int i = pos_[b], j = pos_[c];
    if (next(a, true) != b) std::swap(i, j);
    int len = j - i;
    if (len < 0) len += m_;
    if (2 * (len + 1) > m_) {
      const int ni = j + 1 == m_ ? 0 : j + 1, nj = i == 0 ? m_ - 1 : i - 1;
      i = ni, j = nj;
    }
    reverse(i, j);
  }

  void push(int c) {
    if (queued_[c]) return;
    queued_[c] = 1;
    queue_.push_back(c);
  }
  void queue_all() {
    for (int p = 0; p < m_; ++p) push(tour_[p]);
  }

  // Applies the first improving 2-opt or sequential 3-opt move that starts by
  // removing an edge at t1; returns its gain (0 if there is none).
  double improve_city(int t1) {
    for (int dir = 0; dir < 2; ++dir) {
      const bool fwd = dir == 0;
      const int t2 = next(t1, fwd);
      const double d12 = d_(t1, t2);
      for (int i = 0; i < k_; ++i) {
        const int t3 = cand_[size_t(t2) * k_ + i];
        const double d23 = d_(t2, t3);
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
            push_all({t1, t2, t3, t4});
            return d12 + d34 - d23 - d41;
          }
          for (int j = 0; j < k_; ++j) {
            const int t5 = cand_[size_t(t4) * k_ + j];
            const double d45 = d_(t4, t5);
            if (g1 + d34 - d45 <= 0) break;
            if (t5 == t1 || t5 == t3) continue;
            // After the 2-opt the segment t2..t4 runs backwards; t6 precedes t5 there.
            const int t6 = between(t2, t5, t4, fwd) ? next(t5, fwd) : next(t5, !fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t4);
              flip(t1, t4, t6);
              push_all({t1, t2, t3, t4, t5, t6});
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
          }
        }

        // t4 after t3: (t2, t3) closes the segment t2..t3 into a loop, which a
        // third exchange (t5, t6) inside it must open again.
        t4 = next(t3, fwd);
        if (t4 == t1) continue;
        const double d34 = d_(t3, t4);
        for (int j = 0; j < k_; ++j) {
          const int t5 = cand_[size_t(t4) * k_ + j];
          const double d45 = d_(t4, t5);
          if (g1 + d34 - d45 <= 0) break;
          if (!between(t2, t5, t3, fwd)) continue;
          if (t5 != t3) {  // segments t2..t5 and t6..t3 swap places
            const int t6 = next(t5, fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t5);
              flip(t1, t5, t3);
              flip(t1, t3, t6);
              push_all({t1, t2, t3, t4, t5, t6});
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
          }
          if (t5 != t2) {  // both segments t2..t6 and t5..t3 reversed in place
            const int t6 = next(t5, !fwd);
            const double d56 = d_(t5, t6), d61 = d_(t6, t1);
            if (improves(d12 + d34 + d56, d23 + d45 + d61)) {
              flip(t1, t2, t6);
              flip(t2, t5, t3);
              push_all({t1, t2, t3, t4, t5, t6});
              return d12 + d34 + d56 - d23 - d45 - d61;
            }
          }
        }
      }
    }
    return 0;
  }

  void push_all(std::initializer_list<int> cities) {
    for (int c : cities) push(c);
  }

  // Runs moves until no queued city has one; returns the total gain.
  double local_search() {
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
    const int lmax = std::max(1, std::min(kKickSegment, (m_ - 2) / 3));
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
    for (size_t o = 0; o < buf_.size(); ++o) put(int((p + 1 + o) % m_), buf_[o]);
    push_all({x, s1, e1, s2, e2, s3, e3, y});
    return delta;
  }

  const Matrix<T>& d_;
  const int m_, k_;
  Rng rng_;
  const Clock::time_point deadline_;
  const bool timed_;
  std::vector<int> cand_, tour_, pos_, queue_, buf_;
  std::vector<char> queued_;
  bool record_ = false;  // journal position writes so a failed kick can be undone
  std::vector<std::pair<int, int>> journal_;
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
    // Held-Karp follows for small n: plain local search (no kicks) gives its pruning bound.
    const int64_t stall = n <= kExactMaxN ? 0 : std::max(kMinStall, kStallPerCity * d.m);
    const std::vector<int> tour = search.run(stall);
    // Cut the cycle at the dummy (path) or rotate it to start at city 0 (tour).
    const int anchor = opt.path ? n : 0;
    const int at = int(std::find(tour.begin(), tour.end(), anchor) - tour.begin());
    for (int i = opt.path ? 1 : 0; i < d.m; ++i) order.push_back(tour[(at + i) % d.m]);
  }
  if (n <= kExactMaxN) {
    std::vector<int> exact = held_karp(real, opt.path, order.empty() ? kInf : order_cost(real, order, opt.path));
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
