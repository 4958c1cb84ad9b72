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
  // A tensor read from a GGUF file keeps the file's own encoding (ggml type id and bytes), which differs
  // from dtype / data when it was repacked at load (a k-quant as Q8_0); -1 when there is none. The
  // llama.cpp-compatible arithmetic (Numerics::kGgml) multiplies that encoding.
  int ggml_type = -1;
  const void* ggml_data = nullptr;

  int64_t dim(size_t i) const { return shape.at(i); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Bytes of one row (the last dimension). For block types the last dimension must be a
  // multiple of kQuantBlock (see dtype.h); rows then start on block boundaries.
  size_t row_bytes() const { return dtype_bytes(dtype, shape.back()); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(); }
  bool valid() const { return data != nullptr; }
};

std::string shape_str(const std::vector<int64_t>& shape);

// Copies `n` elements starting at element `offset` (row-major over the whole tensor) into float32.
// Block types are dequantised; for them `offset` must be a multiple of kQuantBlock (every row start
// is), `n` may be anything that stays inside the tensor. Throws g3n::Error on a misaligned offset.
void to_f32(const TensorView& t, int64_t offset, int64_t n, float* out);

}  // namespace g3n
