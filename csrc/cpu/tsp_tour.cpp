#include "tsp_tour.h"

#include <algorithm>

namespace neumeta::tsp {

template <typename T>
ArrayTour<T>::ArrayTour(const Matrix<T>& d, std::vector<int> order)
    : d_(d), m_(int(order.size())), tour_(std::move(order)), pos_(m_, 0), edge_(m_) {
  for (int p = 0; p < m_; ++p) pos_[tour_[p]] = p;
  refresh_edges(0, m_);
}

template <typename T>
double ArrayTour<T>::cost() const {
  double s = 0;
  for (int p = 0; p < m_; ++p) s += d_(tour_[p], tour_[p + 1 == m_ ? 0 : p + 1]);
  return s;
}

template <typename T>
void ArrayTour<T>::rewrite(int at, const std::vector<int>& cities) {
  if (logging_) log_spans_.emplace_back(at, int(cities.size()));
  for (size_t o = 0; o < cities.size(); ++o) {
    const int p = int((at + o) % m_);
    if (logging_) log_.push_back(tour_[p]);
    put(p, cities[o]);
  }
  refresh_edges(at, int(cities.size()));
}

template <typename T>
void ArrayTour<T>::mark() {
  logging_ = true;
  log_spans_.clear();
  log_.clear();
}

template <typename T>
void ArrayTour<T>::undo() {
  for (auto it = log_spans_.rbegin(); it != log_spans_.rend(); ++it) {
    for (int o = it->second - 1; o >= 0; --o) {
      put((it->first + o) % m_, log_.back());
      log_.pop_back();
    }
    refresh_edges(it->first, it->second);
  }
  log_spans_.clear();
}

template <typename T>
void ArrayTour<T>::refresh_edges(int at, int len) {
  for (int o = -1, p = at == 0 ? m_ - 1 : at - 1; o < std::min(len, m_ - 1); ++o, p = p + 1 == m_ ? 0 : p + 1)
    edge_[p] = d_(tour_[p], tour_[p + 1 == m_ ? 0 : p + 1]);
}

template <typename T>
void Neighbours::reset(const ArrayTour<T>& tour) {
  const int m = tour.size();
  next_.resize(2 * size_t(m));
  for (int c = 0; c < m; ++c) next_[2 * c] = tour.next(c, true), next_[2 * c + 1] = tour.next(c, false);
}

template <typename T>
void Neighbours::update(const ArrayTour<T>& tour) {
  const int m = tour.size();
  for (const auto& [at, len] : tour.rewrites())
    for (int o = -1; o <= std::min(len, m - 2); ++o) {
      const int c = tour.at((at + o + m) % m);
      next_[2 * c] = tour.next(c, true), next_[2 * c + 1] = tour.next(c, false);
    }
}

template <typename T>
std::vector<int> nearest_neighbour_order(const Matrix<T>& d, int start) {
  std::vector<int> left, order;
  for (int c = 0; c < d.n; ++c) left.push_back(c);
  int cur = start;
  std::swap(left[cur], left.back());
  left.pop_back();
  order.push_back(cur);
  while (!left.empty()) {
    size_t best = 0;
    double bv = kInf;
    const T* w = d.w + size_t(cur) * d.n;  // row read: the matrix was checked symmetric
    for (size_t i = 0; i < left.size(); ++i) {
      const double v = double(w[left[i]]);
      if (v < bv) bv = v, best = i;
    }
    cur = left[best];
    left[best] = left.back();
    left.pop_back();
    order.push_back(cur);
  }
  if (d.m > d.n) order.push_back(d.n);
  return order;
}

template class ArrayTour<float>;
template class ArrayTour<double>;
template void Neighbours::reset(const ArrayTour<float>&);
template void Neighbours::reset(const ArrayTour<double>&);
template void Neighbours::update(const ArrayTour<float>&);
template void Neighbours::update(const ArrayTour<double>&);
template std::vector<int> nearest_neighbour_order(const Matrix<float>&, int);
template std::vector<int> nearest_neighbour_order(const Matrix<double>&, int);

}  // namespace neumeta::tsp
