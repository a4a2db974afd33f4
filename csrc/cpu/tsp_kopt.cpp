#include "tsp_kopt.h"

#include <cmath>
#include <utility>

namespace neumeta::tsp {
namespace {

// Candidates tried for the added edge of each exchange (index: exchanges so far).
constexpr int kBreadth[kMaxK] = {0, 5, 5, 3, 2};

}  // namespace

template <typename T>
KOpt<T>::KOpt(const Matrix<T>& d, ArrayTour<T>& tour, const Candidates& cand)
    : d_(d), tour_(tour), cand_(cand), m_(tour.size()), queued_(m_, 0) {}

template <typename T>
void KOpt<T>::push(int c) {
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
template <typename T>
bool KOpt<T>::feasible(int L) {
  for (int i = 0; i < L; ++i) {
    first_[i] = tour_.next(t_[2 * i], true) == t_[2 * i + 1] ? 2 * i : 2 * i + 1;  // the edge's earlier end
    order_[i] = i;
  }
  for (int i = 1; i < L; ++i)  // insertion sort of the edges by position
    for (int j = i; j > 0 && tour_.pos(t_[first_[order_[j]]]) < tour_.pos(t_[first_[order_[j - 1]]]); --j)
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

template <typename T>
int KOpt<T>::slot_city(int s, int L) const {
  const int r = s >> 1;
  return s & 1 ? t_[first_[order_[(r + 1) % L]]] : t_[first_[order_[r]] ^ 1];
}
// Applies the move feasible(L) just accepted. The longest segment stays in
// place; the others are written after it in their new order and direction.
template <typename T>
void KOpt<T>::apply(int L) {
  int keep = 0, keep_len = -1;
  for (int r = 0; r < L; ++r) {
    int len = tour_.pos(slot_city(2 * r + 1, L)) - tour_.pos(slot_city(2 * r, L));
    if (len < 0) len += m_;
    if (len > keep_len) keep = r, keep_len = len;
  }
  buf_.clear();
  for (int s = partner_[2 * keep + 1]; s != 2 * keep; s = partner_[s ^ 1]) {
    const int from = slot_city(s, L), to = slot_city(s ^ 1, L);
    for (int c = from;; c = tour_.next(c, !(s & 1))) {
      buf_.push_back(c);
      if (c == to) break;
    }
  }
  const int at = tour_.pos(slot_city(2 * keep + 1, L)) + 1;
  tour_.rewrite(at == m_ ? 0 : at, buf_);
}

template <typename T>
bool KOpt<T>::is_removed(int a, int b, int L) const {
  for (int i = 0; i < L; ++i)
    if ((t_[2 * i] == a && t_[2 * i + 1] == b) || (t_[2 * i] == b && t_[2 * i + 1] == a)) return true;
  return false;
}

template <typename T>
bool KOpt<T>::is_added(int a, int b, int L) const {
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
template <typename T>
double KOpt<T>::extend(int L, double R, double A, double touched) {
  const int t2 = t_[2 * L - 1];
  const int* cand = &cand_.cities[size_t(t2) * cand_.k];
  const double* cand_d = &cand_.dist[size_t(t2) * cand_.k];
  for (int i = 0, tried = 0; i < cand_.k && tried < kBreadth[L]; ++i) {
    const int t3 = cand[i];
    const double d23 = cand_d[i];
    if (!(R - A - d23 > 0)) continue;  // the gain criterion
    if (t3 == t_[0] || t3 == tour_.next(t2, true) || t3 == tour_.next(t2, false) || is_added(t2, t3, L)) continue;
    ++tried;
    for (const bool fwd : {true, false}) {
      const int t4 = tour_.next(t3, fwd);
      if (t4 == t_[0] || is_removed(t3, t4, L)) continue;
      t_[2 * L] = t3;
      t_[2 * L + 1] = t4;
      const double r34 = tour_.edge(t3, fwd), close = d_(t4, t_[0]);
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

template <typename T>
double KOpt<T>::improve_city(int t1, int max_k) {
  max_k_ = max_k;
  t_[0] = t1;
  for (const bool fwd : {true, false}) {
    t_[1] = tour_.next(t1, fwd);
    if (base_ && base_->has_edge(t1, t_[1])) continue;
    const double e = tour_.edge(t1, fwd);
    const double g = extend(1, e, 0, std::abs(e));
    if (g > 0) return g;
  }
  return 0;
}

template <typename T>
double KOpt<T>::local_search(int max_k, bool timed, Clock::time_point deadline) {
  max_k_ = max_k;
  double gain = 0;
  size_t head = 0;
  while (head < queue_.size()) {
    if (timed && (head & 15) == 15 && Clock::now() >= deadline) break;
    const int c = queue_[head++];
    queued_[c] = 0;
    const double g = improve_city(c, max_k);
    if (g > 0) {
      gain += g;
      push(c);
    }
  }
  for (size_t i = head; i < queue_.size(); ++i) queued_[queue_[i]] = 0;
  queue_.clear();
  return gain;
}

template class KOpt<float>;
template class KOpt<double>;

}  // namespace neumeta::tsp
