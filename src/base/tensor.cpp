#include "base/tensor.h"

#include <cstring>

#include "base/error.h"

namespace g3n {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

template <class DequantizeBlock>
void blocks_to_f32(const TensorView& t, int64_t offset, int64_t n, float* out, DequantizeBlock dequantize) {
  G3N_CHECK(offset % kQuantBlock == 0, "to_f32: offset ", offset, " of a ", dtype_name(t.dtype),
            " tensor is not a multiple of ", kQuantBlock);
  const uint8_t* p = static_cast<const uint8_t*>(t.data) + dtype_bytes(t.dtype, offset);
  const size_t block_bytes = dtype_size(t.dtype);
  for (; n >= kQuantBlock; n -= kQuantBlock, p += block_bytes, out += kQuantBlock) dequantize(p, out);
  if (n > 0) {  // partial last block
    float tmp[kQuantBlock];
    dequantize(p, tmp);
    std::memcpy(out, tmp, size_t(n) * sizeof(float));
  }
}

}  // namespace

void to_f32(const TensorView& t, int64_t offset, int64_t n, float* out) {
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, static_cast<const float*>(t.data) + offset, size_t(n) * 4);
      break;
    case DType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(t.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(t.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
      break;
    }
    case DType::Q8_0:
      blocks_to_f32(t, offset, n, out, dequantize_block_q8_0);
      break;
    case DType::Q4_0:
      blocks_to_f32(t, offset, n, out, dequantize_block_q4_0);
      break;
  }
}

}  // namespace g3n
