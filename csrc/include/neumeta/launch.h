// Host entry points of the CUDA kernels (csrc/cuda/inr_forward.cu), called by the torch bindings.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "neumeta/common.cuh"

namespace neumeta {

enum class ComputeType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Rows of the coordinate table one thread block evaluates (tiles never cross segments).
int tile_rows(ComputeType type);
// The transposed weights' column pitch must be a multiple of this (the exact path reads whole
// 256-column chunks without bounds checks; the MMA path reads 32-column warp tasks).
int weight_column_multiple(ComputeType type);
// Dynamic shared memory one block of the forward kernel needs.
size_t forward_smem_bytes(const ForwardParams& p, ComputeType type);

cudaError_t launch_forward(const ForwardParams& p, ComputeType type, cudaStream_t stream);
// out[k, r, :] = the noise sample k adds to row r (zeros where the stream adds none).
cudaError_t launch_philox_noise(float* out, uint64_t seed, int samples, int64_t rows, float scale, int mode,
                                cudaStream_t stream);

}  // namespace neumeta
