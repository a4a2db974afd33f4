#include "tsp_testing.h"

#include "tsp.h"
#include "tsp_bound.h"
#include "tsp_candidates.h"
#include "tsp_exact.h"
#include "tsp_kicks.h"
#include "tsp_kopt.h"
#include "tsp_tour.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace neumeta::tsp::testing {
namespace {

constexpr int kMaxHeldKarpCities = 20;

// The validated matrix of n cities (n >= min_n), with the dummy for paths.
template <typename T>
Matrix<T> matrix(const T* dist, int64_t n, bool path, int min_n) {
  if (n < min_n || n > 100000) throw std::invalid_argument("n must be in [" + std::to_string(min_n) + ", 100000], got " + std::to_string(n));
  validate(dist, n);
  return Matrix<T>{dist, int(n), int(n) + (path ? 1 : 0)};
}

void check_tour(const std::vector<int>& tour, int m) {
  std::vector<int> sorted = tour;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < m; ++i)
    if (int(sorted.size()) != m || sorted[i] != i)
      throw std::invalid_argument("tour must be a permutation of range(" + std::to_string(m) + ")");
}

}  // namespace

template <typename T>
KickResult kick_and_undo(const T* dist, int64_t n, bool path, const std::vector<int>& tour, uint64_t seed) {
  const Matrix<T> d = matrix(dist, n, path, 8);
  check_tour(tour, d.m);
  const Candidates cand = search_candidates(d, -1.0);
  ArrayTour<T> t(d, tour);
  KOpt<T> kopt(d, t, cand);
  Rng rng{seed};
  std::vector<int> buf;
  int touched[8];
  t.mark();
  KickResult out;
  out.added = double_bridge(d, t, rng, buf, touched);
  for (const int c : touched) kopt.push(c);
  out.gain = kopt.local_search(kMaxK, false, Clock::time_point());
  out.kicked = t.cities();
  t.undo();
  out.restored = t.cities();
  return out;
}

template <typename T>
MoveResult move(const T* dist, int64_t n, bool path, const std::vector<int>& tour, int city, int max_k) {
  const Matrix<T> d = matrix(dist, n, path, 4);
  check_tour(tour, d.m);
  if (city < 0 || city >= d.m) throw std::invalid_argument("city must be in range(" + std::to_string(d.m) + ")");
  if (max_k < 2 || max_k > kMaxK) throw std::invalid_argument("max_k must be in [2, " + std::to_string(kMaxK) + "]");
  const Candidates cand = search_candidates(d, -1.0);
  ArrayTour<T> t(d, tour);
  KOpt<T> kopt(d, t, cand);
  const double gain = kopt.improve_city(city, max_k);
  return {gain, t.cities()};
}

template <typename T>
double ascent_bound(const T* dist, int64_t n, bool path) {
  const Matrix<T> d = matrix(dist, n, path, 3);
  return HeldKarp<T>(d).ascend();
}

template <typename T>
std::vector<int> candidates(const T* dist, int64_t n, bool path, const std::vector<double>& pi) {
  const Matrix<T> d = matrix(dist, n, path, 3);
  if (int64_t(pi.size()) != n) throw std::invalid_argument("pi must hold n = " + std::to_string(n) + " penalties");
  HeldKarp<T> tree(d);
  tree.set_penalty(pi);
  return alpha_candidates(d, tree).cities;
}

template <typename T>
std::vector<int> held_karp(const T* dist, int64_t n, bool path) {
  if (n > kMaxHeldKarpCities) throw std::invalid_argument("held_karp takes at most " + std::to_string(kMaxHeldKarpCities) + " cities");
  const Matrix<T> d = matrix(dist, n, false, 3);
  return tsp::held_karp(d, path, kInf);
}

template <typename T>
std::vector<int> branch_and_bound(const T* dist, int64_t n, double ub) {
  if (n > kBranchMaxCities) throw std::invalid_argument("branch_and_bound takes at most " + std::to_string(kBranchMaxCities) + " cities");
  const Matrix<T> d = matrix(dist, n, false, 3);
  std::vector<double> w(size_t(n) * n);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) w[a * n + b] = a == b ? 0.0 : d(a, b);
  bool complete = false;
  return tsp::branch_and_bound(w, int(n), ub, std::numeric_limits<int64_t>::max(), &complete);
}

#define NEUMETA_TSP_TESTING(T)                                                                          \
  template KickResult kick_and_undo(const T*, int64_t, bool, const std::vector<int>&, uint64_t);       \
  template MoveResult move(const T*, int64_t, bool, const std::vector<int>&, int, int);                \
  template double ascent_bound(const T*, int64_t, bool);                                               \
  template std::vector<int> candidates(const T*, int64_t, bool, const std::vector<double>&);           \
  template std::vector<int> held_karp(const T*, int64_t, bool);                                        \
  template std::vector<int> branch_and_bound(const T*, int64_t, double);
NEUMETA_TSP_TESTING(float)
NEUMETA_TSP_TESTING(double)
#undef NEUMETA_TSP_TESTING

}  // namespace neumeta::tsp::testing
