// Kicks: the perturbations that move the local search out of a local optimum.
#pragma once

#include "tsp_matrix.h"
#include "tsp_tour.h"

#include <cstdint>
#include <vector>

namespace neumeta::tsp {

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

// Segment-local double bridge: x S1 S2 S3 y -> x S3 S2 S1 y with random
// short segments at a random place, so the search repairs it nearby. `buf`
// is scratch. Fills `touched` with the 8 cities whose tour edges changed and
// returns the added length.
template <typename T>
double double_bridge(const Matrix<T>& d, ArrayTour<T>& tour, Rng& rng, std::vector<int>& buf, int touched[8]);

}  // namespace neumeta::tsp
