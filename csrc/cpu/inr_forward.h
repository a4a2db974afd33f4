// Inference forward of one ResMLP (docs/spec.md §8) on the CPU, float32: the GEMMs go to
// ATen's BLAS; bias, ReLU and the scaled residual run as one fused pass over
// each GEMM's output instead of the three eager passes (bias copy, relu_,
// addcmul_) that cost the torch backend about 30% over its bare GEMMs.
// Inputs must be contiguous float32 CPU tensors; anything else, and row ranges
// or sizes whose arithmetic overflows int64, is a named std::invalid_argument
// (ValueError in Python). ReLU keeps NaN, as torch.relu does.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace neumeta::inr_forward {

// The residual blocks and the output layer: block weights [hidden, hidden],
// biases [hidden] and scalars (one per block), wo [out_dim, hidden], bo [out_dim].
struct Tail {
  std::vector<at::Tensor> block_weights;
  std::vector<at::Tensor> block_biases;
  std::vector<double> scalars;
  at::Tensor wo;
  at::Tensor bo;
};

// pe [n, in] -> out [n, out_dim]; first layer w0 [hidden, in], b0 [hidden].
at::Tensor forward(const at::Tensor& pe, const at::Tensor& w0, const at::Tensor& b0, const Tail& tail);

// The same MLP on rows [row_start, row_start + rows) of one A x B tensor whose
// first-layer pre-activation separates over the coordinate table's a-major
// rows: pre[a * B + b] = u[a] + v[b] (u [A, hidden], v [B, hidden], the bias
// and every constant coordinate folded into v). Exact coordinates have this
// form because the Fourier features act on each coordinate separately.
at::Tensor forward_separable(const at::Tensor& u, const at::Tensor& v, int64_t row_start, int64_t rows,
                             const Tail& tail);

}  // namespace neumeta::inr_forward
