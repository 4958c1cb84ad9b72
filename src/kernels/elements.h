// Scalar access to stored weights, shared by the kernels' edge loops and scalar oracles (matmul.cpp,
// gemm.cpp): one element of a row of any dtype, the scale and integers of a Q8_0 / Q4_0 block (layout in
// base/dtype.h). No alignment is assumed.
#pragma once
#include <cstdint>
#include <cstring>

#include "base/dtype.h"

namespace g3n::kernels::detail {

// float16 bits -> float32 without branches on the common path (the scale of every quantised block
// goes through here). Exact for normals, subnormals, infinities and NaNs.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu;
  uint32_t bits = em << 13;
  float f;
  std::memcpy(&f, &bits, 4);
  f *= 0x1p112f;  // rebias the exponent 15 -> 127; subnormal halves become normal floats exactly
  if (em >= 0x7c00u) {
    bits = 0x7f800000u | ((em & 0x3ffu) << 13);
    std::memcpy(&f, &bits, 4);
  }
  std::memcpy(&bits, &f, 4);
  bits |= uint32_t(h & 0x8000u) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float block_scale(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return half_bits_to_float(h);
}

// Integer value (q or nibble - 8) of element j of a quantised block.
inline int block_int(DType t, const uint8_t* block, int j) {
  if (t == DType::Q8_0) return int8_t(block[2 + j]);
  return j < kQuantBlock / 2 ? int(block[2 + j] & 15) - 8 : int(block[2 + j - kQuantBlock / 2] >> 4) - 8;
}

// Element i of a row of `t`: the stored float, or d * q for block types.
inline float load_element(DType t, const uint8_t* row, int64_t i) {
  if (dtype_is_quantized(t)) {
    const uint8_t* block = row + size_t(i / kQuantBlock) * dtype_size(t);
    return block_scale(block) * float(block_int(t, block, int(i % kQuantBlock)));
  }
  if (t == DType::F32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, row + 2 * i, 2);
  return t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

}  // namespace g3n::kernels::detail
