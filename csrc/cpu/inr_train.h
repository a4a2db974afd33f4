// Training forward and backward of the ResMLP tails of many MLPs in one call, on the CPU, float32.
//
// Rows are grouped by the MLP that evaluates them: group g is rows [offsets[g], offsets[g + 1])
// of every [N, ...] tensor, evaluated by MLP mlps[g]. The first layer stays outside (its input is
// a feature matrix or the separable u[a] + v[b], built by autograd); these ops take its
// pre-activation z0 and do the rest of the network:
//   h_0 = relu(z0);  t_l = relu(W_l h_l + b_l),  h_{l+1} = h_l + s_l t_l  (l < nb);  out = Wo h_nb + bo.
// Weights are stacked over the L MLPs: wr [L, nb, H, H], br [L, nb, H], sc [L, nb], wo [L, O, H],
// bo [L, O]. The forward keeps h and t (what the backward needs, nothing recomputed); the backward
// runs each layer as its two GEMMs plus one fused pass (ReLU mask, scale, and the bias and scalar
// reductions). Inputs must be contiguous float32 CPU tensors; anything else is a named
// std::invalid_argument (ValueError in Python).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace neumeta::inr_train {

// {out [N, O], h [nb + 1, N, H], t [nb, N, H]}.
std::vector<at::Tensor> forward(const at::Tensor& z0, const std::vector<int64_t>& offsets,
                                const std::vector<int64_t>& mlps, const at::Tensor& wr, const at::Tensor& br,
                                const at::Tensor& sc, const at::Tensor& wo, const at::Tensor& bo);

// Gradients for d loss / d out = gout [N, O]: {dz0 [N, H], dwr, dbr, dsc, dwo, dbo} (zeros for MLPs
// that evaluate no row).
std::vector<at::Tensor> backward(const at::Tensor& gout, const at::Tensor& h, const at::Tensor& t,
                                 const std::vector<int64_t>& offsets, const std::vector<int64_t>& mlps,
                                 const at::Tensor& wr, const at::Tensor& sc, const at::Tensor& wo);

}  // namespace neumeta::inr_train
