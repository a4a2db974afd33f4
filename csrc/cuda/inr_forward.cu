// Fused INR forward: coordinates -> noise -> normalisation -> Fourier features -> per-tensor ResMLP
// -> division -> scatter into the flat output, every segment in one launch.
//
// One thread block owns a tile of consecutive rows of one segment and keeps the tile's hidden
// activations in shared memory through all layers; weights stream from global memory (L2).
// K-sample averaging loops inside the block, so the output is written once.
// Reference-mode noise can send rows of a tile to a neighbouring tensor's MLP: the block runs
// each MLP present in the tile (at most two when noise <= 1) and keeps each row's own result.
//
// Two GEMM paths share that structure:
//   float32 (default): plain FFMA, register micro-tiles (neumeta/mlp.cuh);
//   bfloat16 / float16: WMMA tensor cores, fp32 accumulation, outputs rounded like torch's linear.
// The residual stream stays float32 in both, as in the torch backend.
#include <climits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "neumeta/common.cuh"
#include "neumeta/coordinates.cuh"
#include "neumeta/launch.h"
#include "neumeta/mlp.cuh"

namespace neumeta {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMicroRows = 4;      // float32 path: rows per warp
constexpr int kMicroCols = 8;      // float32 path: columns per lane, 32 apart
constexpr int kChunk = 32 * kMicroCols;  // float32 path: columns per pass

template <typename T> struct Tile;
template <> struct Tile<float> { static constexpr int kRows = kWarps * kMicroRows; };
template <> struct Tile<__nv_bfloat16> { static constexpr int kRows = 64; };  // 4 WMMA row fragments
template <> struct Tile<__half> { static constexpr int kRows = 64; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// A torch linear layer in compute type T returns its output rounded to T.
template <typename T> __device__ __forceinline__ float rounded(float v) { return to_float(from_float<T>(v)); }

// Shared-memory carve-up of one block, computed identically on host (size) and device (pointers).
template <typename T>
struct SmemLayout {
  size_t h, a, scratch, out, x, divisor, mlp, next, bytes;
  int lda;

  __host__ __device__ explicit SmemLayout(const ForwardParams& p) {
    constexpr int R = Tile<T>::kRows;
    // +8 elements per row: WMMA-legal pitch that spreads rows over banks.
    lda = (p.in_pad > p.hidden_pad ? p.in_pad : p.hidden_pad) + 8;
    size_t off = 0;
    auto take = [&off](size_t n) { const size_t at = off; off += (n + 127) / 128 * 128; return at; };
    h = take(sizeof(float) * R * p.hidden_pad);
    a = take(sizeof(T) * R * lda);
    scratch = take(sizeof(T) == sizeof(float) ? 0 : sizeof(float) * kWarps * 256);  // WMMA path only
    out = take(sizeof(float) * R * p.out_dim);
    x = take(sizeof(float) * R * 6);
    divisor = take(sizeof(float) * R);
    mlp = take(sizeof(int) * R);
    next = take(sizeof(int));
    bytes = off;
  }
};

template <typename T>
struct Smem {
  float* h;        // [R][hidden_pad] residual stream
  T* a;            // [R][lda] input of the next linear layer
  float* scratch;  // [kWarps][16*16] WMMA accumulator staging
  float* out;      // [R][kernel_numel] sum over samples of the divided outputs
  float* x;        // [R][6] normalised coordinates of the current sample
  float* divisor;  // [R] noisy column 5
  int* mlp;        // [R] MLP of each row, -1 past the segment's end
  int* next;       // the next MLP to run on this tile
  int lda;
};

template <typename T>
__device__ Smem<T> carve(const ForwardParams& p, char* base) {
  const SmemLayout<T> l(p);
  return Smem<T>{reinterpret_cast<float*>(base + l.h), reinterpret_cast<T*>(base + l.a),
                 reinterpret_cast<float*>(base + l.scratch), reinterpret_cast<float*>(base + l.out),
                 reinterpret_cast<float*>(base + l.x), reinterpret_cast<float*>(base + l.divisor),
                 reinterpret_cast<int*>(base + l.mlp), reinterpret_cast<int*>(base + l.next), l.lda};
}

// Writes the epilogue of hidden unit (r, n) given its GEMM sum.
template <typename T>
__device__ __forceinline__ void epilogue(const Smem<T>& s, const ForwardParams& p, const T* bias, int block,
                                         float scale, int r, int n, float acc) {
  float& h = s.h[r * p.hidden_pad + n];
  h = hidden_update(h, rounded<T>(acc + to_float(bias[n])), block, scale);
}

// h-update of one layer: s.h[:, :hidden_pad] <- epilogue(s.a[:, :k_count] @ wt + bias).
__device__ void dense(const Smem<float>& s, const ForwardParams& p, const float* __restrict__ wt,
                      const float* __restrict__ bias, int k_count, int block, float scale) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = warp * kMicroRows;
  for (int n0 = 0; n0 < p.hidden_pad; n0 += kChunk) {
    float acc[kMicroRows][kMicroCols] = {};
    gemm_microtile<kMicroRows, kMicroCols>(acc, s.a + r0 * s.lda, s.lda, wt + n0 + lane, p.ldw, 32, k_count);
#pragma unroll
    for (int i = 0; i < kMicroRows; ++i)
#pragma unroll
      for (int j = 0; j < kMicroCols; ++j) {
        const int n = n0 + lane + 32 * j;
        if (n < p.hidden_pad) epilogue(s, p, bias, block, scale, r0 + i, n, acc[i][j]);
      }
  }
}

// Tensor-core version: each warp task is all 64 rows x 32 columns (4 x 2 WMMA fragments).
template <typename T>
__device__ void dense(const Smem<T>& s, const ForwardParams& p, const T* __restrict__ wt,
                      const T* __restrict__ bias, int k_count, int block, float scale) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* scratch = s.scratch + warp * 256;
  for (int n0 = warp * 32; n0 < p.hidden_pad; n0 += kWarps * 32) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int c = 0; c < 2; ++c) wmma::fill_fragment(acc[i][c], 0.0f);
    // B fragments come straight from global memory (L2): load step k + 16 before the MMAs of step k.
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b[2], b_next[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) wmma::load_matrix_sync(b[c], wt + n0 + 16 * c, p.ldw);
    for (int k = 0; k < k_count; k += 16) {
      if (k + 16 < k_count) {
#pragma unroll
        for (int c = 0; c < 2; ++c)
          wmma::load_matrix_sync(b_next[c], wt + static_cast<int64_t>(k + 16) * p.ldw + n0 + 16 * c, p.ldw);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, s.a + 16 * i * s.lda + k, s.lda);
#pragma unroll
        for (int c = 0; c < 2; ++c) wmma::mma_sync(acc[i][c], a, b[c], acc[i][c]);
      }
#pragma unroll
      for (int c = 0; c < 2; ++c) b[c] = b_next[c];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        wmma::store_matrix_sync(scratch, acc[i][c], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32)
          epilogue(s, p, bias, block, scale, 16 * i + e / 16, n0 + 16 * c + e % 16, scratch[e]);
        __syncwarp();
      }
  }
#else
  __trap();  // the launcher refuses 16-bit compute below sm_80
#endif
}

// The next layer's input: s.a <- s.h in the compute type.
template <typename T>
__device__ void stage_hidden(const Smem<T>& s, const ForwardParams& p) {
  constexpr int R = Tile<T>::kRows;
  for (int i = threadIdx.x; i < R * p.hidden_pad; i += kThreads) {
    const int r = i / p.hidden_pad, n = i % p.hidden_pad;
    s.a[r * s.lda + n] = from_float<T>(s.h[i]);
  }
}

// Fourier features of the rows MLP m evaluates (zeros elsewhere, so padding rows stay finite).
template <typename T>
__device__ void stage_features(const Smem<T>& s, const ForwardParams& p, int m) {
  constexpr int R = Tile<T>::kRows;
  const int width = num_features(p.num_freqs);
  for (int i = threadIdx.x; i < R * p.in_pad; i += kThreads) {
    const int r = i / p.in_pad, f = i % p.in_pad;
    const float v = (s.mlp[r] == m && f < width) ? feature(s.x + 6 * r, f, p.freq_low) : 0.0f;
    s.a[r * s.lda + f] = from_float<T>(v);
  }
}

// All hidden layers of MLP m on the staged features; leaves the last hidden state in s.a.
template <typename T>
__device__ void run_hidden(const Smem<T>& s, const ForwardParams& p, int m) {
  const T* w0t = static_cast<const T*>(p.w0t) + static_cast<int64_t>(m) * p.in_pad * p.ldw;
  const T* b0 = static_cast<const T*>(p.b0) + static_cast<int64_t>(m) * p.ldw;
  dense(s, p, w0t, b0, p.in_pad, -1, 0.0f);
  __syncthreads();
  stage_hidden(s, p);
  __syncthreads();
  for (int b = 0; b < p.blocks; ++b) {
    const int64_t mb = static_cast<int64_t>(m) * p.blocks + b;
    const T* wt = static_cast<const T*>(p.wbt) + mb * p.hidden_pad * p.ldw;
    const T* bias = static_cast<const T*>(p.bb) + mb * p.ldw;
    dense(s, p, wt, bias, p.hidden_pad, b, p.scalars[mb]);
    __syncthreads();
    stage_hidden(s, p);
    __syncthreads();
  }
}

// Output layer for the used columns of the rows MLP m owns, divided and added to the sample sum.
template <typename T>
__device__ void accumulate_outputs(const Smem<T>& s, const ForwardParams& p, int m, int kn, int col0) {
  constexpr int R = Tile<T>::kRows;
  const T* wo = static_cast<const T*>(p.wo) + static_cast<int64_t>(m) * p.out_dim * p.hidden_pad;
  const T* bo = static_cast<const T*>(p.bo) + static_cast<int64_t>(m) * p.out_dim;
  for (int i = threadIdx.x; i < R * kn; i += kThreads) {
    const int r = i / kn, col = col0 + i % kn;
    if (s.mlp[r] != m) continue;
    const T* w = wo + static_cast<int64_t>(col) * p.hidden_pad;
    const T* x = s.a + r * s.lda;
    float acc = 0.0f;
    for (int k = 0; k < p.hidden_pad; ++k) acc = fmaf(to_float(x[k]), to_float(w[k]), acc);
    const float y = rounded<T>(acc + to_float(bo[col]));
    s.out[i] = add_rn(s.out[i], div_rn(y, s.divisor[r]));
  }
}

// Coordinates of this sample: normalised x, divisor and MLP of each row of the tile.
template <typename T>
__device__ void stage_coordinates(const Smem<T>& s, const ForwardParams& p, const SegmentDesc& seg,
                                  int64_t first, int count, int sample) {
  const int r = threadIdx.x;
  if (r >= Tile<T>::kRows) return;
  int m = -1;
  if (r < count) {
    const int64_t local = first + r, row = seg.row_offset + local;
    float c[6];
    base_coordinate(seg, local, p.num_tensors, c);
    if (p.noise != nullptr)
      add_given_noise(p.noise + (static_cast<int64_t>(sample) * p.num_rows + row) * 6, p.noise_mode, c);
    else if (sample_is_noisy(sample, p.samples, p.noise_scale))
      add_philox_noise(p.seed, sample, row, p.noise_scale, p.noise_mode, c);
    normalise(c, p.norm, s.x + 6 * r);
    s.divisor[r] = c[5];
    m = route(c[0], p.num_tensors);
  }
  s.mlp[r] = m;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) inr_forward_kernel(const ForwardParams p) {
  constexpr int R = Tile<T>::kRows;
  static_assert(R <= kThreads, "one thread per row stages the coordinates");
  extern __shared__ __align__(128) char smem[];
  const Smem<T> s = carve<T>(p, smem);
  const SegmentDesc seg = p.segments[find_segment(p.segments, p.num_segments, blockIdx.x)];
  const int64_t first = (static_cast<int64_t>(blockIdx.x) - seg.tile_start) * R;
  const int count = static_cast<int>(seg.rows - first < R ? seg.rows - first : R);
  const int kn = static_cast<int>(seg.kernel_numel);
  const int col0 = static_cast<int>(seg.col_start);

  for (int i = threadIdx.x; i < R * kn; i += kThreads) s.out[i] = 0.0f;
  for (int sample = 0; sample < p.samples; ++sample) {
    stage_coordinates(s, p, seg, first, count, sample);
    int prev = -1;
    for (;;) {
      __syncthreads();  // rows staged / previous MLP finished with s.next and s.a
      if (threadIdx.x == 0) {
        int m = INT_MAX;  // the smallest MLP above prev among the tile's rows
        for (int r = 0; r < count; ++r)
          if (s.mlp[r] > prev && s.mlp[r] < m) m = s.mlp[r];
        *s.next = m;
      }
      __syncthreads();
      const int m = *s.next;
      if (m == INT_MAX) break;
      stage_features(s, p, m);
      __syncthreads();
      run_hidden(s, p, m);
      accumulate_outputs(s, p, m, kn, col0);
      prev = m;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < count * kn; i += kThreads) {
    const float v = s.out[i];
    p.out[scatter_index(seg, first + i / kn, i % kn)] = p.samples > 1 ? div_rn(v, static_cast<float>(p.samples)) : v;
  }
}

__global__ void philox_noise_kernel(float* out, uint64_t seed, int samples, int64_t rows, float scale, int mode) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= samples * rows) return;
  const int sample = static_cast<int>(i / rows);
  float c[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  if (sample_is_noisy(sample, samples, scale)) add_philox_noise(seed, sample, i % rows, scale, mode, c);
  for (int j = 0; j < 6; ++j) out[i * 6 + j] = c[j];
}

template <typename T>
cudaError_t launch_typed(const ForwardParams& p, cudaStream_t stream) {
  const size_t bytes = SmemLayout<T>(p).bytes;
  cudaError_t err = cudaFuncSetAttribute(inr_forward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes));
  if (err != cudaSuccess) return err;
  inr_forward_kernel<T><<<static_cast<unsigned>(p.num_tiles), kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

int tile_rows(ComputeType type) {
  switch (type) {
    case ComputeType::kFloat32: return Tile<float>::kRows;
    case ComputeType::kBFloat16: return Tile<__nv_bfloat16>::kRows;
    default: return Tile<__half>::kRows;
  }
}

int weight_column_multiple(ComputeType type) { return type == ComputeType::kFloat32 ? kChunk : 32; }

size_t forward_smem_bytes(const ForwardParams& p, ComputeType type) {
  switch (type) {
    case ComputeType::kFloat32: return SmemLayout<float>(p).bytes;
    case ComputeType::kBFloat16: return SmemLayout<__nv_bfloat16>(p).bytes;
    default: return SmemLayout<__half>(p).bytes;
  }
}

cudaError_t launch_forward(const ForwardParams& p, ComputeType type, cudaStream_t stream) {
  if (p.num_tiles == 0) return cudaSuccess;
  switch (type) {
    case ComputeType::kFloat32: return launch_typed<float>(p, stream);
    case ComputeType::kBFloat16: return launch_typed<__nv_bfloat16>(p, stream);
    default: return launch_typed<__half>(p, stream);
  }
}

cudaError_t launch_philox_noise(float* out, uint64_t seed, int samples, int64_t rows, float scale, int mode,
                                cudaStream_t stream) {
  const int64_t n = samples * rows;
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  philox_noise_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0, stream>>>(
      out, seed, samples, rows, scale, mode);
  return cudaGetLastError();
}

}  // namespace neumeta
