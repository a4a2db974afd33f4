#include "inr_train.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "buffer_pool.h"
#include "tensor_checks.h"

namespace neumeta::inr_train {
namespace {

constexpr const char* kOp = "inr_train";
// Rows per task of a fused pass. Fixed (not per thread), so the reductions' order, and with it
// every gradient bit, does not depend on the thread count.
constexpr int64_t kBlockRows = 64;

int64_t num_blocks(int64_t rows) { return (rows + kBlockRows - 1) / kBlockRows; }

// Calls fn(first_row, end_row, block) for the fixed row blocks of [0, rows) of `hidden` columns, in
// parallel where a task gets at least at::internal::GRAIN_SIZE elements (smaller ones run inline: a
// parallel region for a 16-row group costs more than its pass).
template <typename Fn>
void for_row_blocks(int64_t rows, int64_t hidden, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / (kBlockRows * hidden));
  at::parallel_for(0, num_blocks(rows), grain, [&](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk) fn(blk * kBlockRows, std::min(rows, (blk + 1) * kBlockRows), blk);
  });
}

// ReLU keeps NaN (as torch.relu does), so a NaN parameter still shows in the output.
inline float relu(float v) { return v < 0.f ? 0.f : v; }

void check_groups(const std::vector<int64_t>& offsets, const std::vector<int64_t>& mlps, int64_t rows,
                  int64_t num_mlps) {
  if (offsets.size() != mlps.size() + 1)
    throw std::invalid_argument(std::string(kOp) + ": offsets must have one entry more than mlps, got " +
                                std::to_string(offsets.size()) + " and " + std::to_string(mlps.size()));
  if (offsets.front() != 0 || offsets.back() != rows)
    throw std::invalid_argument(std::string(kOp) + ": offsets must run from 0 to the " + std::to_string(rows) +
                                " rows, got " + std::to_string(offsets.front()) + " .. " +
                                std::to_string(offsets.back()));
  for (size_t g = 0; g < mlps.size(); ++g) {
    if (offsets[g + 1] < offsets[g])
      throw std::invalid_argument(std::string(kOp) + ": offsets must not decrease (group " + std::to_string(g) + ")");
    if (mlps[g] < 0 || mlps[g] >= num_mlps)
      throw std::invalid_argument(std::string(kOp) + ": MLP index " + std::to_string(mlps[g]) + " of group " +
                                  std::to_string(g) + " outside [0, " + std::to_string(num_mlps) + ")");
  }
}

int64_t largest_group(const std::vector<int64_t>& offsets) {
  int64_t n = 0;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) n = std::max(n, offsets[g + 1] - offsets[g]);
  return n;
}

// t = relu(t + b) in place (t holds h W^T), next = h + s * t. The row loops take __restrict__
// pointers: the compiler then vectorises them (no branches on signs, which mispredict half the time).
void block_forward(const float* h, float* t, float* next, const float* b, float s, int64_t rows, int64_t hidden) {
  for_row_blocks(rows, hidden, [&](int64_t lo, int64_t hi, int64_t) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* __restrict__ hi_row = h + i * hidden;
      const float* __restrict__ bias = b;
      float* __restrict__ t_row = t + i * hidden;
      float* __restrict__ next_row = next + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        const float v = relu(t_row[j] + bias[j]);
        t_row[j] = v;
        next_row[j] = hi_row[j] + s * v;
      }
    }
  });
}

// One block's backward pass before its GEMMs: dz = s * dh where t > 0 (else 0), and per row block
// the column sums of dz (bias gradient) and of dh * t (scalar gradient), reduced by the caller.
void block_backward(const float* dh, const float* t, float* dz, float s, int64_t rows, int64_t hidden,
                    float* db_part, float* ds_part) {
  for_row_blocks(rows, hidden, [&](int64_t lo, int64_t hi, int64_t blk) {
    float* __restrict__ db = db_part + blk * hidden;
    float* __restrict__ ds = ds_part + blk * hidden;
    std::fill(db, db + hidden, 0.f);
    std::fill(ds, ds + hidden, 0.f);
    for (int64_t i = lo; i < hi; ++i) {
      const float* __restrict__ t_row = t + i * hidden;
      const float* __restrict__ dh_row = dh + i * hidden;
      float* __restrict__ dz_row = dz + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        const float v = t_row[j], d = dh_row[j], scaled = d * s;  // computed unconditionally: the select vectorises
        const float z = v <= 0.f ? 0.f : scaled;  // torch's threshold_backward: a NaN t lets the gradient through
        dz_row[j] = z;
        db[j] += z;
        ds[j] += d * v;
      }
    }
  });
}

// out = x where mask > 0 (else 0), or relu(x) when mask is x: n elements, in parallel.
void masked_copy(const float* mask, const float* x, float* out, int64_t n) {
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t lo, int64_t hi) {
    const float* __restrict__ m = mask + lo;
    const float* __restrict__ v = x + lo;
    float* __restrict__ o = out + lo;
    for (int64_t i = 0; i < hi - lo; ++i) {
      const float value = v[i];  // loaded unconditionally, so the select vectorises
      o[i] = m[i] <= 0.f ? 0.f : value;
    }
  });
}

}  // namespace

std::vector<at::Tensor> forward(const at::Tensor& z0, const std::vector<int64_t>& offsets,
                                const std::vector<int64_t>& mlps, const at::Tensor& wr, const at::Tensor& br,
                                const at::Tensor& sc, const at::Tensor& wo, const at::Tensor& bo) {
  check_dim(z0, kOp, "z0", 2);
  check_dim(wr, kOp, "wr", 4);
  check_dim(wo, kOp, "wo", 3);
  const int64_t rows = z0.size(0), hidden = z0.size(1), num_mlps = wr.size(0), nb = wr.size(1), out_dim = wo.size(1);
  check_float_cpu(z0, kOp, "z0", {rows, hidden});
  check_float_cpu(wr, kOp, "wr", {num_mlps, nb, hidden, hidden});
  check_float_cpu(br, kOp, "br", {num_mlps, nb, hidden});
  check_float_cpu(sc, kOp, "sc", {num_mlps, nb});
  check_float_cpu(wo, kOp, "wo", {num_mlps, out_dim, hidden});
  check_float_cpu(bo, kOp, "bo", {num_mlps, out_dim});
  check_groups(offsets, mlps, rows, num_mlps);

  auto h = pooled_empty({nb + 1, rows, hidden}), t = pooled_empty({nb, rows, hidden});
  auto out = pooled_empty({rows, out_dim});
  masked_copy(z0.data_ptr<float>(), z0.data_ptr<float>(), h.data_ptr<float>(), rows * hidden);  // h_0 = relu(z0)
  const float* scalars = sc.data_ptr<float>();
  for (size_t g = 0; g < mlps.size(); ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0, m = mlps[g];
    if (n == 0) continue;
    for (int64_t l = 0; l < nb; ++l) {
      auto hl = h[l].narrow(0, r0, n), tl = t[l].narrow(0, r0, n);
      at::mm_out(tl, hl, wr[m][l].t());
      block_forward(hl.data_ptr<float>(), tl.data_ptr<float>(), h[l + 1].narrow(0, r0, n).data_ptr<float>(),
                    br[m][l].data_ptr<float>(), scalars[m * nb + l], n, hidden);
    }
    auto og = out.narrow(0, r0, n);
    at::addmm_out(og, bo[m], h[nb].narrow(0, r0, n), wo[m].t());
  }
  return {out, h, t};
}

std::vector<at::Tensor> backward(const at::Tensor& gout, const at::Tensor& h, const at::Tensor& t,
                                 const std::vector<int64_t>& offsets, const std::vector<int64_t>& mlps,
                                 const at::Tensor& wr, const at::Tensor& sc, const at::Tensor& wo) {
  check_dim(gout, kOp, "gout", 2);
  check_dim(h, kOp, "h", 3);
  check_dim(wr, kOp, "wr", 4);
  check_dim(wo, kOp, "wo", 3);
  const int64_t nb = h.size(0) - 1, rows = h.size(1), hidden = h.size(2), num_mlps = wr.size(0),
                out_dim = wo.size(1);
  check_float_cpu(gout, kOp, "gout", {rows, out_dim});
  check_float_cpu(t, kOp, "t", {nb, rows, hidden});
  check_float_cpu(wr, kOp, "wr", {num_mlps, nb, hidden, hidden});
  check_float_cpu(sc, kOp, "sc", {num_mlps, nb});
  check_float_cpu(wo, kOp, "wo", {num_mlps, out_dim, hidden});
  check_groups(offsets, mlps, rows, num_mlps);

  const auto opts = h.options();
  auto dz0 = pooled_empty({rows, hidden});
  // Weight gradients: the first group of an MLP writes its slices, later ones add, unused ones are zeroed.
  auto dwr = pooled_empty({num_mlps, nb, hidden, hidden}), dwo = pooled_empty({num_mlps, out_dim, hidden});
  std::vector<bool> seen(num_mlps, false);
  auto dbr = at::zeros({num_mlps, nb, hidden}, opts), dbo = at::zeros({num_mlps, out_dim}, opts);
  auto dsc = at::zeros({num_mlps, nb}, opts.dtype(at::kDouble));
  const int64_t most = largest_group(offsets);
  auto dh = pooled_empty({most, hidden}), dz = pooled_empty({most, hidden});
  auto db_part = pooled_empty({num_blocks(most), hidden}), ds_part = pooled_empty({num_blocks(most), hidden});
  const float* scalars = sc.data_ptr<float>();
  double* ds_total = dsc.data_ptr<double>();
  for (size_t g = 0; g < mlps.size(); ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0, m = mlps[g];
    if (n == 0) continue;
    auto go = gout.narrow(0, r0, n), dhg = dh.narrow(0, 0, n), dzg = dz.narrow(0, 0, n);
    auto parts = db_part.narrow(0, 0, num_blocks(n)), ds_parts = ds_part.narrow(0, 0, num_blocks(n));
    const float first = seen[m] ? 1.f : 0.f;  // beta of the weight-gradient GEMMs
    seen[m] = true;
    dwo[m].addmm_(go.t(), h[nb].narrow(0, r0, n), first);
    dbo[m].add_(go.sum(0));
    at::mm_out(dhg, go, wo[m]);
    for (int64_t l = nb - 1; l >= 0; --l) {
      block_backward(dhg.data_ptr<float>(), t[l].narrow(0, r0, n).data_ptr<float>(), dzg.data_ptr<float>(),
                     scalars[m * nb + l], n, hidden, parts.data_ptr<float>(), ds_parts.data_ptr<float>());
      dbr[m][l].add_(parts.sum(0));
      ds_total[m * nb + l] += ds_parts.sum(at::kDouble).item<double>();
      dwr[m][l].addmm_(dzg.t(), h[l].narrow(0, r0, n), first);
      dhg.addmm_(dzg, wr[m][l]);
    }
    masked_copy(h[0].narrow(0, r0, n).data_ptr<float>(), dhg.data_ptr<float>(), dz0.narrow(0, r0, n).data_ptr<float>(),
                n * hidden);
  }
  for (int64_t m = 0; m < num_mlps; ++m)
    if (!seen[m]) {
      dwr[m].zero_();
      dwo[m].zero_();
    }
  return {dz0, dwr, dbr, dsc.to(at::kFloat), dwo, dbo};
}

}  // namespace neumeta::inr_train
