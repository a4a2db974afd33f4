#include "inr_forward.h"

#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>

#include <stdexcept>
#include <string>

#include "buffer_pool.h"
#include "tensor_checks.h"

namespace neumeta::inr_forward {
namespace {

constexpr int64_t kGrainRows = 64;  // rows per parallel task of an epilogue pass

// max(v, 0) that keeps NaN, as torch.relu does: a NaN must reach the caller's finiteness check,
// not come out as a finite 0.
inline float relu(float v) { return v <= 0.f ? 0.f : v; }

// h = relu(h + b), in place.
void bias_relu(const at::Tensor& h, const float* b) {
  const int64_t k = h.size(1);
  float* p = h.data_ptr<float>();
  at::parallel_for(0, h.size(0), kGrainRows, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* row = p + i * k;
      for (int64_t j = 0; j < k; ++j) {
        row[j] = relu(row[j] + b[j]);
      }
    }
  });
}

// h += s * relu(t + b): one residual block's epilogue.
void residual(const at::Tensor& h, const at::Tensor& t, const float* b, float s) {
  const int64_t k = h.size(1);
  float* p = h.data_ptr<float>();
  const float* q = t.data_ptr<float>();
  at::parallel_for(0, h.size(0), kGrainRows, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* row = p + i * k;
      const float* in = q + i * k;
      for (int64_t j = 0; j < k; ++j) {
        row[j] += s * relu(in[j] + b[j]);
      }
    }
  });
}

void check(const at::Tensor& t, const char* name, at::IntArrayRef shape) { check_float_cpu(t, "inr_forward", name, shape); }

void check_tail(const Tail& tail, int64_t hidden) {
  if (tail.wo.dim() != 2) throw std::invalid_argument("inr_forward: wo must be 2-D");
  check(tail.wo, "wo", {tail.wo.size(0), hidden});
  check(tail.bo, "bo", {tail.wo.size(0)});
  if (tail.block_biases.size() != tail.block_weights.size() || tail.scalars.size() != tail.block_weights.size())
    throw std::invalid_argument("inr_forward: one bias and one scalar per block weight");
  for (size_t l = 0; l < tail.block_weights.size(); ++l) {
    check(tail.block_weights[l], "block weight", {hidden, hidden});
    check(tail.block_biases[l], "block bias", {hidden});
  }
}

// Activation buffers [rows, hidden] from the pool of reused buffers (buffer_pool.h): a fresh buffer
// per chunk is fresh pages from the OS every time, and their page faults cost up to 25% on top of
// the GEMMs.
at::Tensor scratch(int64_t rows, int64_t hidden) {
  int64_t numel = 0;
  if (c10::mul_overflows(rows, hidden, &numel))
    throw std::invalid_argument("inr_forward: " + std::to_string(rows) + " rows x " + std::to_string(hidden) +
                                " hidden activations overflow int64");
  return pooled_empty({rows, hidden});
}

// h holds the first layer's activations; runs the blocks in place, returns the outputs.
at::Tensor run_tail(const at::Tensor& h, const Tail& tail) {
  auto t = tail.block_weights.empty() ? h : scratch(h.size(0), h.size(1));
  for (size_t l = 0; l < tail.block_weights.size(); ++l) {
    at::mm_out(t, h, tail.block_weights[l].t());
    residual(h, t, tail.block_biases[l].data_ptr<float>(), static_cast<float>(tail.scalars[l]));
  }
  return at::addmm(tail.bo, h, tail.wo.t());  // out_dim is small: the bias copy costs nothing here
}

}  // namespace

at::Tensor forward(const at::Tensor& pe, const at::Tensor& w0, const at::Tensor& b0, const Tail& tail) {
  if (pe.dim() != 2 || w0.dim() != 2) throw std::invalid_argument("inr_forward: pe and w0 must be 2-D");
  const int64_t hidden = w0.size(0);
  check(pe, "pe", {pe.size(0), pe.size(1)});
  check(w0, "w0", {hidden, pe.size(1)});
  check(b0, "b0", {hidden});
  check_tail(tail, hidden);
  auto h = scratch(pe.size(0), hidden);
  at::mm_out(h, pe, w0.t());
  bias_relu(h, b0.data_ptr<float>());
  return run_tail(h, tail);
}

at::Tensor forward_separable(const at::Tensor& u, const at::Tensor& v, int64_t row_start, int64_t rows,
                             const Tail& tail) {
  if (u.dim() != 2 || v.dim() != 2) throw std::invalid_argument("inr_forward: u and v must be 2-D");
  const int64_t hidden = u.size(1), a_size = u.size(0), b_size = v.size(0);
  check(u, "u", {a_size, hidden});
  check(v, "v", {b_size, hidden});
  check_tail(tail, hidden);
  // Overflow-safe: row_start + rows and a_size * b_size can wrap and pass a naive bound check.
  int64_t total = 0;
  if (c10::mul_overflows(a_size, b_size, &total))
    throw std::invalid_argument("inr_forward: the " + std::to_string(a_size) + " x " + std::to_string(b_size) +
                                " tensor has more rows than int64 holds");
  if (row_start < 0 || rows < 0 || row_start > total || rows > total - row_start) {
    int64_t end = 0;
    const std::string end_str = c10::add_overflows(row_start, rows, &end)
                                    ? std::to_string(row_start) + " + " + std::to_string(rows)
                                    : std::to_string(end);
    throw std::invalid_argument("inr_forward: rows [" + std::to_string(row_start) + ", " + end_str + ") outside the " +
                                std::to_string(a_size) + " x " + std::to_string(b_size) + " tensor");
  }
  auto h = scratch(rows, hidden);
  float* p = h.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  at::parallel_for(0, rows, kGrainRows, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t r = row_start + i;
      const float* ua = up + (r / b_size) * hidden;
      const float* vb = vp + (r % b_size) * hidden;
      float* row = p + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        row[j] = relu(ua[j] + vb[j]);
      }
    }
  });
  return run_tail(h, tail);
}

}  // namespace neumeta::inr_forward
