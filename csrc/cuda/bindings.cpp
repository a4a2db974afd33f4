// Torch ops of neumeta_fast._C_cuda (loaded with torch.ops.load_library; no Python module):
//   neumeta_fast::inr_forward   fused INR forward into a new flat float32 buffer (CUDA, Meta)
//   neumeta_fast::philox_noise  the forward's noise stream, materialised for the backward's recompute
//   neumeta_fast::kernel_config tile rows and weight column multiple of a compute type
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "neumeta/launch.h"

namespace {

using neumeta::ComputeType;

// Error messages are built from std::string and std::to_string, never through an ostream: on the
// H200 image a message with a number in it (TORCH_CHECK formats through std::ostringstream) crashed
// this extension with SIGSEGV in basic_ostream::_M_insert<long> instead of raising the error.
std::string piece(const char* s) { return s; }
std::string piece(const std::string& s) { return s; }
std::string piece(at::ScalarType t) { return c10::toString(t); }
std::string piece(const c10::Device& d) { return d.str(); }
std::string piece(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
std::string piece(T v) { return std::to_string(v); }

template <typename... Args>
std::string message(const Args&... args) { return (std::string() + ... + piece(args)); }

// TORCH_CHECK without the ostream: a RuntimeError in Python with the message built only on failure.
#define NM_CHECK(cond, ...)                                       \
  do {                                                            \
    if (!(cond)) throw std::runtime_error(message(__VA_ARGS__)); \
  } while (0)

ComputeType compute_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ComputeType::kFloat32;
    case at::kBFloat16: return ComputeType::kBFloat16;
    case at::kHalf: return ComputeType::kFloat16;
    default: throw std::runtime_error(message("inr_forward: weights must be float32, bfloat16 or float16, got ", t));
  }
}

void check_input(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim, const at::Tensor& like) {
  NM_CHECK(t.scalar_type() == dtype, "inr_forward: ", name, " must be ", dtype, ", got ", t.scalar_type());
  NM_CHECK(t.dim() == dim, "inr_forward: ", name, " must be ", dim, "-D, got shape ", t.sizes());
  NM_CHECK(t.device() == like.device(), "inr_forward: ", name, " is on ", t.device(), ", expected ", like.device());
  NM_CHECK(t.is_contiguous(), "inr_forward: ", name, " must be contiguous");
}

void check_cuda(cudaError_t err, const char* what) {
  NM_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

at::Tensor inr_forward_cuda(const at::Tensor& w0t, const at::Tensor& b0, const at::Tensor& wbt, const at::Tensor& bb,
                            const at::Tensor& scalars, const at::Tensor& wo, const at::Tensor& bo,
                            const at::Tensor& segments, const std::optional<at::Tensor>& noise, int64_t seed,
                            double noise_scale, int64_t samples, int64_t noise_mode, double norm, int64_t freq_low,
                            int64_t num_freqs, int64_t num_rows, int64_t num_tiles, int64_t numel) {
  const at::ScalarType dt = w0t.scalar_type();
  const ComputeType type = compute_type(dt);
  check_input(w0t, "w0t", dt, 3, w0t);
  check_input(b0, "b0", dt, 2, w0t);
  check_input(wbt, "wbt", dt, 4, w0t);
  check_input(bb, "bb", dt, 3, w0t);
  check_input(scalars, "scalars", at::kFloat, 2, w0t);
  check_input(wo, "wo", dt, 3, w0t);
  check_input(bo, "bo", dt, 2, w0t);
  check_input(segments, "segments", at::kLong, 2, w0t);
  NM_CHECK(w0t.is_cuda(), "inr_forward: tensors must be on a CUDA device, got ", w0t.device());
  constexpr int64_t kColumns = sizeof(neumeta::SegmentDesc) / sizeof(int64_t);
  NM_CHECK(segments.size(1) == kColumns && segments.size(0) > 0, "inr_forward: segments must be [n > 0, ", kColumns,
           "], got ", segments.sizes());
  NM_CHECK(noise_mode == neumeta::kNoiseReference || noise_mode == neumeta::kNoiseChannels,
              "inr_forward: noise_mode must be 0 (reference) or 1 (channels), got ", noise_mode);
  NM_CHECK(samples >= 1, "inr_forward: samples must be >= 1, got ", samples);

  neumeta::ForwardParams p{};
  p.num_tensors = static_cast<int>(w0t.size(0));
  p.in_pad = static_cast<int>(w0t.size(1));
  p.ldw = static_cast<int>(w0t.size(2));
  p.blocks = static_cast<int>(wbt.size(1));
  p.out_dim = static_cast<int>(wo.size(1));
  p.hidden_pad = static_cast<int>(wo.size(2));
  const int64_t L = p.num_tensors;
  NM_CHECK(p.in_pad % 16 == 0 && p.in_pad >= 6 + 12 * num_freqs,
              "inr_forward: w0t rows must cover 6 + 12 * num_freqs features in a multiple of 16, got ", p.in_pad);
  NM_CHECK(p.hidden_pad % 32 == 0 && p.ldw >= p.hidden_pad && p.ldw % neumeta::weight_column_multiple(type) == 0,
              "inr_forward: hidden width ", p.hidden_pad, " must be a multiple of 32 and the weight pitch ", p.ldw,
              " a multiple of ", neumeta::weight_column_multiple(type));
  NM_CHECK(b0.sizes() == at::IntArrayRef({L, p.ldw}), "inr_forward: b0 must be [", L, ", ", p.ldw, "]");
  NM_CHECK(wbt.sizes() == at::IntArrayRef({L, p.blocks, p.hidden_pad, p.ldw}), "inr_forward: wbt has shape ",
              wbt.sizes());
  NM_CHECK(bb.sizes() == at::IntArrayRef({L, p.blocks, p.ldw}), "inr_forward: bb has shape ", bb.sizes());
  NM_CHECK(scalars.sizes() == at::IntArrayRef({L, p.blocks}), "inr_forward: scalars has shape ", scalars.sizes());
  NM_CHECK(bo.sizes() == at::IntArrayRef({L, p.out_dim}), "inr_forward: bo has shape ", bo.sizes());
  if (noise.has_value()) {
    check_input(*noise, "noise", at::kFloat, 3, w0t);
    NM_CHECK(noise->sizes() == at::IntArrayRef({samples, num_rows, 6}), "inr_forward: noise must be [", samples,
                ", ", num_rows, ", 6], got ", noise->sizes());
  }

  NM_CHECK(num_tiles >= 0 && num_tiles <= INT32_MAX, "inr_forward: num_tiles must lie in [0, 2^31), got ", num_tiles);

  c10::cuda::CUDAGuard guard(w0t.device());
  if (type != ComputeType::kFloat32) {
    int major = 0;
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, w0t.get_device()), "cudaDeviceGetAttribute");
    NM_CHECK(major >= 8, "inr_forward: ", dt, " tensor-core compute needs compute capability >= 8.0; use float32");
  }
  int smem_limit = 0;
  check_cuda(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, w0t.get_device()),
             "cudaDeviceGetAttribute");
  const size_t smem = neumeta::forward_smem_bytes(p, type);
  NM_CHECK(smem <= static_cast<size_t>(smem_limit), "inr_forward: hidden width ", p.hidden_pad, " with ", p.in_pad,
              " features needs ", smem, " bytes of shared memory per block, the device allows ", smem_limit,
              ": use the torch backend for this INR");

  at::Tensor out = at::empty({numel}, w0t.options().dtype(at::kFloat));
  p.w0t = w0t.data_ptr();
  p.b0 = b0.data_ptr();
  p.wbt = wbt.data_ptr();
  p.bb = bb.data_ptr();
  p.scalars = scalars.data_ptr<float>();
  p.wo = wo.data_ptr();
  p.bo = bo.data_ptr();
  p.segments = reinterpret_cast<const neumeta::SegmentDesc*>(segments.data_ptr<int64_t>());
  p.noise = noise.has_value() ? noise->data_ptr<float>() : nullptr;
  p.out = out.data_ptr<float>();
  p.seed = static_cast<uint64_t>(seed);
  p.noise_scale = static_cast<float>(noise_scale);
  p.norm = static_cast<float>(norm);
  p.noise_mode = static_cast<int>(noise_mode);
  p.samples = static_cast<int>(samples);
  p.num_segments = static_cast<int>(segments.size(0));
  p.num_tiles = num_tiles;
  p.freq_low = static_cast<int>(freq_low);
  p.num_freqs = static_cast<int>(num_freqs);
  p.num_rows = num_rows;
  check_cuda(neumeta::launch_forward(p, type, c10::cuda::getCurrentCUDAStream()), "inr_forward kernel launch");
  return out;
}

at::Tensor inr_forward_meta(const at::Tensor& w0t, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, int64_t, double, int64_t, int64_t, double, int64_t,
                            int64_t, int64_t, int64_t, int64_t numel) {
  return at::empty({numel}, w0t.options().dtype(at::kFloat));
}

void philox_noise_cuda(const at::Tensor& out, int64_t seed, double noise_scale, int64_t noise_mode) {
  NM_CHECK(out.is_cuda() && out.scalar_type() == at::kFloat && out.is_contiguous() && out.dim() == 3 &&
                  out.size(2) == 6,
              "philox_noise: out must be a contiguous float32 CUDA tensor [samples, rows, 6], got ", out.scalar_type(),
              " ", out.sizes(), " on ", out.device());
  c10::cuda::CUDAGuard guard(out.device());
  check_cuda(neumeta::launch_philox_noise(out.data_ptr<float>(), static_cast<uint64_t>(seed),
                                          static_cast<int>(out.size(0)), out.size(1), static_cast<float>(noise_scale),
                                          static_cast<int>(noise_mode), c10::cuda::getCurrentCUDAStream()),
             "philox_noise kernel launch");
}

void philox_noise_meta(const at::Tensor&, int64_t, double, int64_t) {}

std::vector<int64_t> kernel_config(int64_t compute) {
  NM_CHECK(compute >= 0 && compute <= 2, "kernel_config: compute must be 0 (float32), 1 (bfloat16) or 2 (float16)");
  const auto type = static_cast<ComputeType>(compute);
  return {neumeta::tile_rows(type), neumeta::weight_column_multiple(type)};
}

}  // namespace

// A fragment, not TORCH_LIBRARY: other extensions of the package may add ops to the same namespace.
TORCH_LIBRARY_FRAGMENT(neumeta_fast, m) {
  m.def("inr_forward(Tensor w0t, Tensor b0, Tensor wbt, Tensor bb, Tensor scalars, Tensor wo, Tensor bo, "
        "Tensor segments, Tensor? noise, int seed, float noise_scale, int samples, int noise_mode, float norm, "
        "int freq_low, int num_freqs, int num_rows, int num_tiles, int numel) -> Tensor");
  m.def("philox_noise(Tensor(a!) out, int seed, float noise_scale, int noise_mode) -> ()");
  m.def("kernel_config(int compute) -> int[]", &kernel_config);
}

TORCH_LIBRARY_IMPL(neumeta_fast, CUDA, m) {
  m.impl("inr_forward", &inr_forward_cuda);
  m.impl("philox_noise", &philox_noise_cuda);
}

TORCH_LIBRARY_IMPL(neumeta_fast, Meta, m) {
  m.impl("inr_forward", &inr_forward_meta);
  m.impl("philox_noise", &philox_noise_meta);
}
