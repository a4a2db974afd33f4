// Argument checks shared by the CPU ops: a named std::invalid_argument (ValueError in Python)
// instead of a crash when a tensor is not what an op reads as raw memory.
#pragma once

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace neumeta {

// `t` must be a contiguous float32 CPU tensor of exactly `shape`.
inline void check_float_cpu(const at::Tensor& t, const char* op, const char* name, at::IntArrayRef shape) {
  if (t.device().type() != at::kCPU || t.scalar_type() != at::kFloat || !t.is_contiguous() || t.sizes() != shape)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be a contiguous float32 CPU tensor of shape " +
                                c10::str(shape) + ", got " + c10::str(t.sizes()) + " " +
                                std::string(c10::toString(t.scalar_type())) + " on " + t.device().str());
}

// `t` must have `dim` dimensions (checked before its sizes are read).
inline void check_dim(const at::Tensor& t, const char* op, const char* name, int64_t dim) {
  if (t.dim() != dim)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be " + std::to_string(dim) + "-D, got shape " +
                                c10::str(t.sizes()));
}

}  // namespace neumeta
