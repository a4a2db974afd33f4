// The solver's view of a distance matrix, and the tolerance on gains every piece shares.
#pragma once

#include <chrono>
#include <cstddef>
#include <limits>

namespace neumeta::tsp {

using Clock = std::chrono::steady_clock;
constexpr double kInf = std::numeric_limits<double>::infinity();

// A move must shorten the tour by more than this fraction of the summed
// |lengths| of the edges it touches: far above the rounding error of its gain
// (a few ulps of that sum, however the signs cancel), so every accepted move
// really shortens the tour and the search cannot cycle.
constexpr double kRelGain = 1e-12;

// Whether a move's computed gain is a real one (see kRelGain); `touched` is
// the sum of |length| of the edges it removes and adds. False for a NaN gain.
inline bool improves(double gain, double touched) { return gain > kRelGain * touched; }

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

}  // namespace neumeta::tsp
