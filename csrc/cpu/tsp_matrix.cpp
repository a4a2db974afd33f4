// Checks of the input matrix: finite, symmetric, entries small enough for float64 sums.
#include "tsp.h"
#include "tsp_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace neumeta::tsp {
namespace {

constexpr double kSymRtol = 1e-5;  // relative asymmetry still accepted
// The largest sums the solver forms hold about (n + 1)^2 entries' worth (a
// spanning tree under Held-Karp penalties, which grow to about n entries each);
// max_entry(n) leaves this factor of headroom on top.
constexpr double kEntryHeadroom = 1024;

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

template double validate<float>(const float*, int64_t);
template double validate<double>(const double*, int64_t);

}  // namespace neumeta::tsp
