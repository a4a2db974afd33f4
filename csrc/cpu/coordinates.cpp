#include "coordinates.h"

#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>

#include <stdexcept>
#include <string>

namespace neumeta::coordinates {

void fill(const at::Tensor& out, int64_t index, int64_t num_tensors, int64_t a_size, int64_t b_size, int64_t cols) {
  if (a_size < 0 || b_size < 0 || cols < 1)
    throw std::invalid_argument("coordinates: a_size and b_size must be >= 0 and cols >= 1, got a_size=" +
                                std::to_string(a_size) + ", b_size=" + std::to_string(b_size) +
                                ", cols=" + std::to_string(cols));
  int64_t rows = 0;
  if (c10::mul_overflows(a_size, b_size, &rows))  // a wrapped product could match a small `out`
    throw std::invalid_argument("coordinates: a_size * b_size = " + std::to_string(a_size) + " * " +
                                std::to_string(b_size) + " overflows int64");
  if (out.device().type() != at::kCPU || out.scalar_type() != at::kFloat || !out.is_contiguous() ||
      out.dim() != 2 || out.size(0) != rows || out.size(1) != 6)
    throw std::invalid_argument("coordinates: out must be a contiguous float32 CPU tensor of shape [" +
                                std::to_string(rows) + ", 6], got " + c10::str(out.sizes()));
  float* p = out.data_ptr<float>();
  const float i = float(index), l = float(num_tensors), a_f = float(a_size), c = float(cols);
  at::parallel_for(0, a_size, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t a = lo; a < hi; ++a) {
      float* row = p + a * b_size * 6;
      for (int64_t b = 0; b < b_size; ++b, row += 6) {
        row[0] = i;
        row[1] = float(a);
        row[2] = cols == 1 ? 0.f : float(b);
        row[3] = l;
        row[4] = a_f;
        row[5] = c;
      }
    }
  });
}

}  // namespace neumeta::coordinates
