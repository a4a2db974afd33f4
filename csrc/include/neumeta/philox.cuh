// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
// a counter-based generator, so any (seed, sample, row) draws its noise without state.
#pragma once

#include "neumeta/common.cuh"

namespace neumeta {

struct U32x4 {
  uint32_t v[4];
};

// Multipliers and Weyl key increments of Philox4x32 from the paper.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

NM_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

NM_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kPhiloxM0, ctr.v[0], hi0, lo0);
    mulhilo32(kPhiloxM1, ctr.v[2], hi1, lo1);
    ctr = U32x4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return ctr;
}

// 24 random bits -> a float32 in [0, 1) with every value exactly representable.
NM_HD float uniform_from_bits(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// The six uniforms of one coordinate: counters (row, sample, 0, 0) and (row, sample, 1, 0), key = seed.
NM_HD void philox_uniforms(uint64_t seed, uint32_t sample, uint64_t row, float u[6]) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t r = static_cast<uint32_t>(row);
  const U32x4 a = philox4x32_10(U32x4{{r, sample, 0u, static_cast<uint32_t>(row >> 32)}}, k0, k1);
  const U32x4 b = philox4x32_10(U32x4{{r, sample, 1u, static_cast<uint32_t>(row >> 32)}}, k0, k1);
  for (int i = 0; i < 4; ++i) u[i] = uniform_from_bits(a.v[i]);
  u[4] = uniform_from_bits(b.v[0]);
  u[5] = uniform_from_bits(b.v[1]);
}

}  // namespace neumeta
