// Reusable float32 buffers for the CPU ops' outputs and scratch.
//
// A fresh multi-megabyte tensor is fresh pages from the OS every call, and their page faults
// cost as much as a small layer's GEMMs (measured: a third of a training backward at hidden 128).
// The pool keeps the buffers it hands out and gives one again once nothing else refers to its
// storage (a freed output, a finished step), so a training loop reuses the same pages.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace neumeta {

// An uninitialised contiguous float32 CPU tensor of `shape` whose storage no live tensor shares.
inline at::Tensor pooled_empty(at::IntArrayRef shape) {
  constexpr size_t kMaxBuffers = 32;  // live outputs of a few steps; free ones beyond are dropped
  thread_local std::vector<at::Tensor> pool;
  int64_t numel = 1;
  for (const int64_t s : shape) numel *= s;
  at::Tensor* spare = nullptr;
  for (auto& buf : pool)
    if (buf.storage().use_count() == 1 && buf.numel() >= numel && (spare == nullptr || buf.numel() < spare->numel()))
      spare = &buf;  // the smallest free buffer that fits
  if (spare == nullptr) {
    if (pool.size() >= kMaxBuffers) {
      for (auto it = pool.begin(); it != pool.end(); ++it)
        if (it->storage().use_count() == 1) {
          pool.erase(it);
          break;
        }
    }
    pool.push_back(at::empty({numel}, at::kFloat));
    spare = &pool.back();
  }
  return spare->narrow(0, 0, numel).view(shape);
}

}  // namespace neumeta
