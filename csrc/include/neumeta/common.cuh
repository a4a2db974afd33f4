// Shared by the CUDA kernels, the torch bindings and the host test harness.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NM_HD __host__ __device__ __forceinline__
#else
#define NM_HD inline
#endif

namespace neumeta {

enum NoiseMode : int { kNoiseReference = 0, kNoiseChannels = 1 };

// One row of the segment table (docs/spec.md §10): the fields of neumeta_fast.layout.SegmentRow, in its
// column order, all int64, so the table is a plain [n, 9] int64 tensor (tests/test_cuda_sources.py pins
// the order).
struct SegmentDesc {
  int64_t index;         // which MLP generates it (coordinate column 0)
  int64_t rows;          // A*B (4-D, 2-D) or A (1-D)
  int64_t cols;          // B, 1 for 1-D: the divisor column
  int64_t a_size;        // A
  int64_t kernel_numel;  // kh*kw for 4-D, 1 otherwise
  int64_t row_offset;    // first row of the coordinate table
  int64_t param_offset;  // first element of the flat output
  int64_t col_start;     // first INR output used (the centre slice of a small conv kernel)
  int64_t tile_start;    // first tile (thread block) of this segment
};

// Everything one fused forward launch needs. Weights are per-MLP stacks in the compute type,
// transposed to [K, ldw] so a warp reads consecutive output columns; zero padding keeps every
// GEMM dimension a multiple of the tile sizes.
struct ForwardParams {
  const void* w0t;        // [L, in_pad, ldw]
  const void* b0;         // [L, ldw]
  const void* wbt;        // [L, blocks, hidden_pad, ldw]
  const void* bb;         // [L, blocks, ldw]
  const float* scalars;   // [L, blocks]
  const void* wo;         // [L, out_dim, hidden_pad] (not transposed: one output column is a row)
  const void* bo;         // [L, out_dim]
  const SegmentDesc* segments;
  const float* noise;     // explicit [samples, num_rows, 6] noise or nullptr
  float* out;             // flat output
  uint64_t seed;
  float noise_scale;
  float norm;
  int noise_mode;
  int samples;
  int num_segments;
  int num_tensors;        // L
  int freq_low;
  int num_freqs;
  int in_pad;             // 6 + 12F rounded up to 16
  int hidden_pad;         // hidden_dim rounded up to 32
  int ldw;                // column pitch of the transposed weights (>= hidden_pad)
  int blocks;             // residual blocks per MLP
  int out_dim;
  int64_t num_rows;
  int64_t num_tiles;
};

}  // namespace neumeta
