// Float32 steps of the per-tensor ResMLP on a tile of rows, shared by the exact kernel path and the
// host harness: one thread's TM x TN block of a GEMM, and the layer epilogues.
#pragma once

#include "neumeta/common.cuh"

namespace neumeta {

NM_HD float relu(float v) { return v < 0.0f ? 0.0f : v; }  // keeps NaN, as torch.relu: an overflow stays visible

// acc[i][j] += sum_k a[i*lda + k] * wt[k*ldw + j*col_stride] for k in [0, k_count): rows of the
// activation tile against columns of a transposed weight, accumulated in k order.
template <int TM, int TN>
NM_HD void gemm_microtile(float (&acc)[TM][TN], const float* __restrict__ a, int lda,
                          const float* __restrict__ wt, int ldw, int col_stride, int k_count) {
#if defined(__CUDA_ARCH__)
#pragma unroll 4  // lets the compiler issue the next steps' weight loads early
#endif
  for (int k = 0; k < k_count; ++k) {
    float w[TN];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 0; j < TN; ++j) w[j] = wt[static_cast<int64_t>(k) * ldw + j * col_stride];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int i = 0; i < TM; ++i) {
      const float x = a[i * lda + k];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(x, w[j], acc[i][j]);
    }
  }
}

// Epilogue of one hidden unit, `pre` = W x + b (already rounded to the compute type):
// h = relu(pre) after the first layer, h = s * relu(pre) + h after residual block b (block >= 0).
NM_HD float hidden_update(float h, float pre, int block, float scale) {
  return block < 0 ? relu(pre) : fmaf(relu(pre), scale, h);
}

}  // namespace neumeta
