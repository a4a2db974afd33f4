#include "tsp_kicks.h"

#include <algorithm>

namespace neumeta::tsp {
namespace {

constexpr int kKickSegment = 100;  // longest segment a double bridge moves,
constexpr int kKickFraction = 8;   // and at most this fraction of the tour

}  // namespace

template <typename T>
double double_bridge(const Matrix<T>& d, ArrayTour<T>& tour, Rng& rng, std::vector<int>& buf, int touched[8]) {
  const int m = tour.size();
  const int lmax = std::max(1, std::min({kKickSegment, (m - 2) / 3, m / kKickFraction}));
  const int l1 = 1 + rng.below(lmax), l2 = 1 + rng.below(lmax), l3 = 1 + rng.below(lmax);
  const int p = rng.below(m);
  auto at = [&](int off) { return tour.at((p + off) % m); };
  const int x = at(0), s1 = at(1), e1 = at(l1), s2 = at(l1 + 1), e2 = at(l1 + l2);
  const int s3 = at(l1 + l2 + 1), e3 = at(l1 + l2 + l3), y = at(l1 + l2 + l3 + 1);
  const double delta =
      d(x, s3) + d(e3, s2) + d(e2, s1) + d(e1, y) - d(x, s1) - d(e1, s2) - d(e2, s3) - d(e3, y);
  buf.clear();
  for (int o = l1 + l2 + 1; o <= l1 + l2 + l3; ++o) buf.push_back(at(o));
  for (int o = l1 + 1; o <= l1 + l2; ++o) buf.push_back(at(o));
  for (int o = 1; o <= l1; ++o) buf.push_back(at(o));
  tour.rewrite((p + 1) % m, buf);
  const int cities[8] = {x, s1, e1, s2, e2, s3, e3, y};
  std::copy(cities, cities + 8, touched);
  return delta;
}

template double double_bridge(const Matrix<float>&, ArrayTour<float>&, Rng&, std::vector<int>&, int[8]);
template double double_bridge(const Matrix<double>&, ArrayTour<double>&, Rng&, std::vector<int>&, int[8]);

}  // namespace neumeta::tsp
