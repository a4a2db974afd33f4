// Per-row math of docs/spec.md: coordinates (§2), noise (§3, §4), routing (§5), normalisation (§6),
// Fourier features (§7), scatter (§10). The kernel and the host test harness call exactly these functions.
#pragma once

#include <cmath>

#include "neumeta/common.cuh"
#include "neumeta/philox.cuh"

namespace neumeta {

// Round-to-nearest arithmetic that --use_fast_math can neither approximate nor fuse into an FMA:
// the normalisation's last bit matters once the high Fourier frequencies amplify it.
NM_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
NM_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NM_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// The segment owning tile `tile`: the last one whose tile_start <= tile (segments are in order).
NM_HD int find_segment(const SegmentDesc* segments, int count, int64_t tile) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (segments[mid].tile_start <= tile) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// [i, a, b, L, A, B] of row `local` of a segment ([i, a, 0, L, A, 1] for 1-D: cols == 1 gives b == 0).
NM_HD void base_coordinate(const SegmentDesc& s, int64_t local, int num_tensors, float c[6]) {
  c[0] = static_cast<float>(s.index);
  c[1] = static_cast<float>(local / s.cols);
  c[2] = static_cast<float>(local % s.cols);
  c[3] = static_cast<float>(num_tensors);
  c[4] = static_cast<float>(s.a_size);
  c[5] = static_cast<float>(s.cols);
}

// Sample 0 stays clean when averaging K > 1 samples; a single sample is noisy whenever scale > 0.
NM_HD bool sample_is_noisy(int sample, int samples, float scale) { return scale > 0.0f && (samples == 1 || sample > 0); }

// Reference mode moves all six columns; channel mode only the channel positions (columns 1, 2).
NM_HD bool column_is_noisy(int mode, int col) { return mode == kNoiseReference || col == 1 || col == 2; }

// Adds (U[0,1) - 0.5) * scale from the Philox stream to the mode's columns.
NM_HD void add_philox_noise(uint64_t seed, int sample, int64_t row, float scale, int mode, float c[6]) {
  float u[6];
  philox_uniforms(seed, static_cast<uint32_t>(sample), static_cast<uint64_t>(row), u);
  for (int j = 0; j < 6; ++j)
    if (column_is_noisy(mode, j)) c[j] = add_rn(c[j], mul_rn(u[j] - 0.5f, scale));
}

// Adds an explicit noise row (already drawn by the caller) to the mode's columns.
NM_HD void add_given_noise(const float* n, int mode, float c[6]) {
  for (int j = 0; j < 6; ++j)
    if (column_is_noisy(mode, j)) c[j] = add_rn(c[j], n[j]);
}

// The MLP of a (possibly noisy) coordinate: int() of column 0, truncation toward zero. The clamp only
// guards memory: callers reject noise that could leave [0, L).
NM_HD int route(float c0, int num_tensors) {
  const int i = static_cast<int>(c0);
  return i < 0 ? 0 : (i >= num_tensors ? num_tensors - 1 : i);
}

// x = c / norm, then x[0:3] /= x[3:6], in this order.
NM_HD void normalise(const float c[6], float norm, float x[6]) {
  for (int j = 0; j < 6; ++j) x[j] = div_rn(c[j], norm);
  for (int j = 0; j < 3; ++j) x[j] = div_rn(x[j], x[j + 3]);
}

NM_HD int num_features(int num_freqs) { return 6 + 12 * num_freqs; }

// float32(2^e * pi): exact in double before the one rounding, like the torch backend's table.
NM_HD float frequency(int e) { return static_cast<float>(ldexp(3.141592653589793, e)); }

// Feature f of normalised x: x itself, then per frequency (outer) and dim (inner) sin then cos.
// sin/cos of the float32 angle are evaluated in double: exact range reduction up to 2^31 pi and
// immune to --use_fast_math, then rounded once.
NM_HD float feature(const float x[6], int f, int freq_low) {
  if (f < 6) return x[f];
  const int g = f - 6;
  const int j = (g % 12) >> 1;
  const double angle = mul_rn(x[j], frequency(freq_low + g / 12));
  return static_cast<float>((g & 1) ? cos(angle) : sin(angle));
}

// Flat-buffer position of output j (0 <= j < kernel_numel) of row `local`: rows are a-major and
// every target tensor is contiguous, so W[a, b, :, :] is kernel_numel consecutive elements.
NM_HD int64_t scatter_index(const SegmentDesc& s, int64_t local, int j) {
  return s.param_offset + local * s.kernel_numel + j;
}

}  // namespace neumeta
