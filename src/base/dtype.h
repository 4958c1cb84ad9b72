// Element types of weights and their conversions to float32.
//
// Two kinds of type:
//  - element types (F32, F16, BF16): one value per element, dtype_size() bytes each;
//  - block types (Q8_0, Q4_0): rows are cut into blocks of kQuantBlock = 32 consecutive elements
//    along the last (input) dimension, each block stored as one float16 scale d followed by the
//    packed values. The byte layouts are GGUF's (ggml's block_q8_0 / block_q4_0), so tensors of a
//    GGUF file can be viewed in place:
//      Q8_0: 34 bytes = d (f16, little-endian) + 32 x int8 q;    value[j] = d * q[j]
//      Q4_0: 18 bytes = d (f16, little-endian) + 16 bytes qs;   value[j] = d * (nibble[j] - 8),
//            nibble[j] = qs[j] & 15 for j < 16 and qs[j - 16] >> 4 for j >= 16.
//    The last dimension of a block-typed tensor must be a multiple of 32, so every row starts a block.
//    Quantisation (float -> blocks) and its error bounds live in src/quant/quant.h.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace g3n {

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0 };

// Elements per block of a block type.
inline constexpr int64_t kQuantBlock = 32;
inline constexpr size_t kBlockBytesQ8_0 = 34;
inline constexpr size_t kBlockBytesQ4_0 = 18;

inline constexpr bool dtype_is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0; }

// Elements per storage unit: 1 for element types, kQuantBlock for block types.
inline constexpr int64_t dtype_block_elems(DType t) { return dtype_is_quantized(t) ? kQuantBlock : 1; }

// Bytes per storage unit: one element of an element type, or one whole block of a block type.
// (For a count of elements use dtype_bytes, which is right for both kinds.)
inline constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::Q8_0: return kBlockBytesQ8_0;
    case DType::Q4_0: return kBlockBytesQ4_0;
  }
  return 0;
}

// Bytes taken by n consecutive elements; for block types n must be a multiple of kQuantBlock
// (a partial block is not counted).
inline constexpr size_t dtype_bytes(DType t, int64_t n) {
  return size_t(n / dtype_block_elems(t)) * dtype_size(t);
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
  }
  return "?";
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE float32 -> float16, round to nearest even (as numpy's astype(float16) and F16C do):
// overflow gives +-inf, tiny values become subnormals or zero, NaN stays (quiet) NaN.
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((u >> 13) & 0x3ffu));  // NaN
  if (u >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (u >= 0x38800000u) {                                  // normal in f16 (>= 2^-14)
    const uint32_t r = u + 0xfffu + ((u >> 13) & 1u);      // round the 13 dropped bits, ties to even
    return uint16_t(sign | ((r - 0x38000000u) >> 13));     // rebias exponent 127 -> 15
  }
  // Subnormal or zero: adding 0.5 (whose ulp is 2^-24, the f16 subnormal step) rounds to even.
  float a;
  std::memcpy(&a, &u, 4);
  const float t = a + 0.5f;
  uint32_t tb;
  std::memcpy(&tb, &t, 4);
  return uint16_t(sign | (tb - 0x3f000000u));
}

// Dequantises one block (kQuantBlock values) of a block type; `block` need not be aligned.
inline void dequantize_block_q8_0(const void* block, float* out) {
  const auto* p = static_cast<const uint8_t*>(block);
  uint16_t h;
  std::memcpy(&h, p, 2);
  const float d = f16_to_f32(h);
  for (int j = 0; j < kQuantBlock; ++j) out[j] = d * float(int8_t(p[2 + j]));
}

inline void dequantize_block_q4_0(const void* block, float* out) {
  const auto* p = static_cast<const uint8_t*>(block);
  uint16_t h;
  std::memcpy(&h, p, 2);
  const float d = f16_to_f32(h);
  for (int j = 0; j < kQuantBlock / 2; ++j) {
    out[j] = d * float(int(p[2 + j] & 15) - 8);
    out[j + kQuantBlock / 2] = d * float(int(p[2 + j] >> 4) - 8);
  }
}

}  // namespace g3n
