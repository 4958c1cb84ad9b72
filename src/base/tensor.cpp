#include "base/tensor.h"

#include <cstring>

namespace g3n {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

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
  }
}

}  // namespace g3n
