// The coordinate rows of one layout tensor (docs/spec.md §2), written by one pass over
// the output: a broadcast add in torch has an inner dimension of 6 and runs at
// a fraction of memory speed.
#pragma once

#include <ATen/ATen.h>

namespace neumeta::coordinates {

// out: contiguous float32 CPU [a_size * b_size, 6]; row a * b_size + b = [index, a, b', L, a_size, cols]
// with b' = b for 2-D/4-D tensors (cols = b_size) and 0 for 1-D ones (b_size = cols = 1).
// Negative sizes, cols < 1, an a_size * b_size that overflows int64 or an `out` of another shape
// are a named std::invalid_argument (ValueError in Python).
void fill(const at::Tensor& out, int64_t index, int64_t num_tensors, int64_t a_size, int64_t b_size, int64_t cols);

}  // namespace neumeta::coordinates
