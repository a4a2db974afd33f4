// Host harness of the CUDA kernel's shared math (csrc/include/neumeta), built with g++ by
// tests/test_cuda_sources.py and called through ctypes. nm_forward runs the float32 kernel's tile
// loop on the CPU with the same header functions, so the whole data flow is tested without a GPU;
// only the thread mapping and the WMMA path are left for the device.
#include <climits>
#include <cstdint>
#include <vector>

#include "neumeta/coordinates.cuh"
#include "neumeta/mlp.cuh"
#include "neumeta/philox.cuh"

using namespace neumeta;

namespace {

constexpr int kRows = 32;      // Tile<float>::kRows of the kernel
constexpr int kMicroRows = 4;  // as the kernel's float32 path
constexpr int kMicroCols = 8;
constexpr int kChunk = 32 * kMicroCols;

// One dense layer of the float32 path, the kernel's warps and lanes as loops.
void dense(const std::vector<float>& a, int lda, std::vector<float>& h, int hidden_pad, const float* wt, int ldw,
           const float* bias, int k_count, int block, float scale) {
  for (int warp = 0; warp < kRows / kMicroRows; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int n0 = 0; n0 < hidden_pad; n0 += kChunk) {
        const int r0 = warp * kMicroRows;
        float acc[kMicroRows][kMicroCols] = {};
        gemm_microtile<kMicroRows, kMicroCols>(acc, a.data() + r0 * lda, lda, wt + n0 + lane, ldw, 32, k_count);
        for (int i = 0; i < kMicroRows; ++i)
          for (int j = 0; j < kMicroCols; ++j) {
            const int n = n0 + lane + 32 * j;
            if (n < hidden_pad) {
              float& v = h[(r0 + i) * hidden_pad + n];
              v = hidden_update(v, acc[i][j] + bias[n], block, scale);
            }
          }
      }
}

}  // namespace

extern "C" {

void nm_philox(const uint32_t* ctr, const uint32_t* key, uint32_t* out) {
  const U32x4 r = philox4x32_10(U32x4{{ctr[0], ctr[1], ctr[2], ctr[3]}}, key[0], key[1]);
  for (int i = 0; i < 4; ++i) out[i] = r.v[i];
}

// out [samples, rows, 6]: what the kernel adds to each coordinate (philox_noise_kernel's loop).
void nm_noise(uint64_t seed, int samples, int64_t rows, float scale, int mode, float* out) {
  for (int k = 0; k < samples; ++k)
    for (int64_t r = 0; r < rows; ++r) {
      float c[6] = {0, 0, 0, 0, 0, 0};
      if (sample_is_noisy(k, samples, scale)) add_philox_noise(seed, k, r, scale, mode, c);
      for (int j = 0; j < 6; ++j) out[(k * rows + r) * 6 + j] = c[j];
    }
}

// out [rows, 6]: coordinate table, enumerated tile by tile as the kernel does.
void nm_coordinates(const int64_t* table, int num_segments, int num_tensors, int tile_rows, int64_t num_tiles,
                    float* out) {
  const SegmentDesc* segs = reinterpret_cast<const SegmentDesc*>(table);
  for (int64_t tile = 0; tile < num_tiles; ++tile) {
    const SegmentDesc& s = segs[find_segment(segs, num_segments, tile)];
    const int64_t first = (tile - s.tile_start) * tile_rows;
    for (int64_t local = first; local < first + tile_rows && local < s.rows; ++local)
      base_coordinate(s, local, num_tensors, out + (s.row_offset + local) * 6);
  }
}

// out [n, 6 + 12F]: Fourier features of raw coordinates c [n, 6].
void nm_features(const float* c, int64_t n, float norm, int freq_low, int num_freqs, float* out) {
  const int width = num_features(num_freqs);
  for (int64_t r = 0; r < n; ++r) {
    float x[6];
    normalise(c + 6 * r, norm, x);
    for (int f = 0; f < width; ++f) out[r * width + f] = feature(x, f, freq_low);
  }
}

void nm_route(const float* col0, int64_t n, int num_tensors, int32_t* out) {
  for (int64_t r = 0; r < n; ++r) out[r] = route(col0[r], num_tensors);
}

// For each flat output element: the coordinate row and INR output column it comes from.
void nm_scatter(const int64_t* table, int num_segments, int out_dim, int64_t* row_of, int32_t* col_of) {
  const SegmentDesc* segs = reinterpret_cast<const SegmentDesc*>(table);
  for (int i = 0; i < num_segments; ++i) {
    const SegmentDesc& s = segs[i];
    const int col0 = static_cast<int>(s.col_start);
    for (int64_t local = 0; local < s.rows; ++local)
      for (int j = 0; j < s.kernel_numel; ++j) {
        row_of[scatter_index(s, local, j)] = s.row_offset + local;
        col_of[scatter_index(s, local, j)] = col0 + j;
      }
  }
}

// The float32 kernel on the CPU: same arguments as neumeta_fast::inr_forward (weights packed by
// INR.stacked(column_multiple=256), segments from Layout.segment_table with 32-row tiles).
void nm_forward(const float* w0t, const float* b0, const float* wbt, const float* bb, const float* scalars,
                const float* wo, const float* bo, int num_tensors, int in_pad, int ldw, int blocks, int out_dim,
                int hidden_pad, const int64_t* table, int num_segments, int64_t num_tiles, const float* noise,
                uint64_t seed, float noise_scale, int samples, int noise_mode, float norm, int freq_low,
                int num_freqs, int64_t num_rows, float* out) {
  const SegmentDesc* segs = reinterpret_cast<const SegmentDesc*>(table);
  const int lda = (in_pad > hidden_pad ? in_pad : hidden_pad) + 8;
  std::vector<float> a(kRows * lda), h(kRows * hidden_pad), x(kRows * 6), divisor(kRows);
  std::vector<int> mlp(kRows);
  for (int64_t tile = 0; tile < num_tiles; ++tile) {
    const SegmentDesc& s = segs[find_segment(segs, num_segments, tile)];
    const int64_t first = (tile - s.tile_start) * kRows;
    const int count = static_cast<int>(s.rows - first < kRows ? s.rows - first : kRows);
    const int kn = static_cast<int>(s.kernel_numel);
    const int col0 = static_cast<int>(s.col_start);
    std::vector<float> sum(kRows * kn, 0.0f);
    for (int sample = 0; sample < samples; ++sample) {
      for (int r = 0; r < kRows; ++r) {
        mlp[r] = -1;
        if (r >= count) continue;
        const int64_t local = first + r, row = s.row_offset + local;
        float c[6];
        base_coordinate(s, local, num_tensors, c);
        if (noise != nullptr)
          add_given_noise(noise + (static_cast<int64_t>(sample) * num_rows + row) * 6, noise_mode, c);
        else if (sample_is_noisy(sample, samples, noise_scale))
          add_philox_noise(seed, sample, row, noise_scale, noise_mode, c);
        normalise(c, norm, &x[6 * r]);
        divisor[r] = c[5];
        mlp[r] = route(c[0], num_tensors);
      }
      for (int prev = -1;;) {
        int m = INT_MAX;
        for (int r = 0; r < count; ++r)
          if (mlp[r] > prev && mlp[r] < m) m = mlp[r];
        if (m == INT_MAX) break;
        for (int r = 0; r < kRows; ++r)
          for (int f = 0; f < in_pad; ++f)
            a[r * lda + f] = (mlp[r] == m && f < num_features(num_freqs)) ? feature(&x[6 * r], f, freq_low) : 0.0f;
        auto stage_hidden = [&] {
          for (int r = 0; r < kRows; ++r)
            for (int n = 0; n < hidden_pad; ++n) a[r * lda + n] = h[r * hidden_pad + n];
        };
        dense(a, lda, h, hidden_pad, w0t + static_cast<int64_t>(m) * in_pad * ldw, ldw, b0 + m * ldw, in_pad, -1, 0.0f);
        stage_hidden();
        for (int b = 0; b < blocks; ++b) {
          const int64_t mb = static_cast<int64_t>(m) * blocks + b;
          dense(a, lda, h, hidden_pad, wbt + mb * hidden_pad * ldw, ldw, bb + mb * ldw, hidden_pad, b, scalars[mb]);
          stage_hidden();
        }
        for (int i = 0; i < kRows * kn; ++i) {
          const int r = i / kn, col = col0 + i % kn;
          if (mlp[r] != m) continue;
          const float* w = wo + (static_cast<int64_t>(m) * out_dim + col) * hidden_pad;
          float acc = 0.0f;
          for (int k = 0; k < hidden_pad; ++k) acc = fmaf(a[r * lda + k], w[k], acc);
          sum[i] = add_rn(sum[i], div_rn(acc + bo[m * out_dim + col], divisor[r]));
        }
        prev = m;
      }
    }
    for (int i = 0; i < count * kn; ++i)
      out[scatter_index(s, first + i / kn, i % kn)] = samples > 1 ? div_rn(sum[i], static_cast<float>(samples)) : sum[i];
  }
}

}  // extern "C"
