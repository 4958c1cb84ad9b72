// A read-only view of a tensor stored somewhere else (usually a memory-mapped file).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/dtype.h"

namespace g3n {

struct TensorView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  int64_t dim(size_t i) const { return shape.at(i); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t row_bytes() const { return size_t(shape.back()) * dtype_size(dtype); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(); }
  bool valid() const { return data != nullptr; }
};

std::string shape_str(const std::vector<int64_t>& shape);

// Copies `n` elements starting at element `offset` into float32.
void to_f32(const TensorView& t, int64_t offset, int64_t n, float* out);

}  // namespace g3n
