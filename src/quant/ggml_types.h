// GGML tensor types as they appear in GGUF files: the type-id table (block size and bytes per
// block) and float32 conversion of rows of the common types.
//
// The table is header-only (constexpr) so that the GGUF reader (src/formats) can validate tensor
// sizes without linking this folder's library. Ids, block sizes and block bytes are ggml's
// (ggml.h enum ggml_type, ggml.c type_traits); ids that ggml has removed (31-33 Q4_0_4_4 ...,
// 36-38 IQ4_NL_4_4 ...) are unknown here, as they are to current ggml.
//
// Block layouts (all little-endian, f16 = IEEE half, QK_K = 256; "q" below is the unsigned
// quant read from the bits, element index e counts within the block):
//   F32 / F16 / BF16   one element each (4 / 2 / 2 bytes)
//   Q4_0  (32, 18)  d:f16, qs[16]                  e<16: qs[e]&15, else qs[e-16]>>4;  y = d*(q-8)
//   Q4_1  (32, 20)  d:f16, m:f16, qs[16]           q as Q4_0;                         y = d*q + m
//   Q5_0  (32, 22)  d:f16, qh:u32, qs[16]          q = nibble as Q4_0 | bit e of qh << 4; y = d*(q-16)
//   Q5_1  (32, 24)  d:f16, m:f16, qh:u32, qs[16]   q as Q5_0;                         y = d*q + m
//   Q8_0  (32, 34)  d:f16, qs:i8[32]               y = d*qs[e]
//   Q8_1  (32, 36)  d:f16, s:f16, qs:i8[32]        (a dot-product intermediate; never dequantised)
//   Q2_K  (256, 84) scales[16], qs[64], d:f16, dmin:f16
//         e = 128n + 32j + l: q = (qs[32n+l] >> 2j) & 3, sub-block s = e/16;
//         y = (d*(scales[s]&15))*q - dmin*(scales[s]>>4)
//   Q3_K  (256, 110) hmask[32], qs[64], scales[12] (16 packed 6-bit), d:f16
//         scale s (e/16): low 4 bits = scales[s%8] >> 4*(s/8), high 2 bits = scales[8+s%4] >> 2*(s/4);
//         q = ((qs[32n+l] >> 2j) & 3) - (bit (e/32) of hmask[l] ? 0 : 4);  y = (d*(scale-32))*q
//   Q4_K  (256, 144) d:f16, dmin:f16, scales[12] (8 packed 6-bit scales + 8 mins), qs[128]
//         sub-block s = e/32: q = (qs[32(s/2)+l] >> 4(s%2)) & 15;  y = (d*sc[s])*q - dmin*mn[s]
//         sc[s<4] = scales[s]&63, mn[s<4] = scales[s+4]&63,
//         sc[s>=4] = (scales[s+4]&15) | ((scales[s-4]>>6)<<4), mn[s>=4] = (scales[s+4]>>4) | ((scales[s]>>6)<<4)
//   Q5_K  (256, 176) d:f16, dmin:f16, scales[12], qh[32], qs[128]
//         q = Q4_K's nibble | ((qh[l] >> s) & 1) << 4 (s = e/32, l = e%32);   y as Q4_K
//   Q6_K  (256, 210) ql[128], qh[64], scales:i8[16], d:f16
//         e = 128n + 32k + l: q = (nibble k/2 of ql[64n + 32(k%2) + l]) | ((qh[32n+l] >> 2k) & 3) << 4;
//         y = (d*scales[e/16])*(q-32)
//   Q8_K  (256, 292) d:f32, qs:i8[256], bsums:i16[16]    y = d*qs[e]
//   IQ4_NL (32, 18)  d:f16, qs[16]: nibbles as Q4_0 index a fixed table of 16 int8 values; y = d*table[q]
//   IQ4_XS (256, 136) d:f16, scales_h:u16, scales_l[4], qs[128]: 8 sub-blocks of 32, each
//         scale = (nibble s of scales_l | ((scales_h >> 2s)&3) << 4) - 32, nibbles as IQ4_NL per 16 bytes
//
// Products are evaluated in the order written above, in float32, without fused multiply-add
// (ggml_types.cpp disables FP contraction), which is what gguf-py's numpy dequantisers compute;
// the results are bit-for-bit equal to gguf.quants.dequantize (tests/parity/test_gguf_dequant.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "base/dtype.h"

namespace g3n::ggml {

// ggml's type ids (enum ggml_type). Plain ints on purpose: ids come from untrusted files.
enum Type : int {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

inline constexpr int64_t kQK_K = 256;

struct TypeInfo {
  const char* name = nullptr;  // nullptr: no such type
  int64_t block_size = 0;      // elements per block (1 for element types)
  int64_t type_size = 0;       // bytes per block
};

namespace detail {
inline constexpr int kMaxTypeId = 41;
inline constexpr TypeInfo kTypes[kMaxTypeId + 1] = {
    /* 0 */ {"F32", 1, 4},
    /* 1 */ {"F16", 1, 2},
    /* 2 */ {"Q4_0", 32, 18},
    /* 3 */ {"Q4_1", 32, 20},
    /* 4 */ {},  // Q4_2, removed from ggml
    /* 5 */ {},  // Q4_3, removed
    /* 6 */ {"Q5_0", 32, 22},
    /* 7 */ {"Q5_1", 32, 24},
    /* 8 */ {"Q8_0", 32, 34},
    /* 9 */ {"Q8_1", 32, 36},
    /* 10 */ {"Q2_K", 256, 84},
    /* 11 */ {"Q3_K", 256, 110},
    /* 12 */ {"Q4_K", 256, 144},
    /* 13 */ {"Q5_K", 256, 176},
    /* 14 */ {"Q6_K", 256, 210},
    /* 15 */ {"Q8_K", 256, 292},
    /* 16 */ {"IQ2_XXS", 256, 66},
    /* 17 */ {"IQ2_XS", 256, 74},
    /* 18 */ {"IQ3_XXS", 256, 98},
    /* 19 */ {"IQ1_S", 256, 50},
    /* 20 */ {"IQ4_NL", 32, 18},
    /* 21 */ {"IQ3_S", 256, 110},
    /* 22 */ {"IQ2_S", 256, 82},
    /* 23 */ {"IQ4_XS", 256, 136},
    /* 24 */ {"I8", 1, 1},
    /* 25 */ {"I16", 1, 2},
    /* 26 */ {"I32", 1, 4},
    /* 27 */ {"I64", 1, 8},
    /* 28 */ {"F64", 1, 8},
    /* 29 */ {"IQ1_M", 256, 56},
    /* 30 */ {"BF16", 1, 2},
    /* 31 */ {},  // Q4_0_4_4, removed (repacked at load time now)
    /* 32 */ {},  // Q4_0_4_8, removed
    /* 33 */ {},  // Q4_0_8_8, removed
    /* 34 */ {"TQ1_0", 256, 54},
    /* 35 */ {"TQ2_0", 256, 66},
    /* 36 */ {},  // IQ4_NL_4_4, removed
    /* 37 */ {},  // IQ4_NL_4_8, removed
    /* 38 */ {},  // IQ4_NL_8_8, removed
    /* 39 */ {"MXFP4", 32, 17},
    /* 40 */ {"NVFP4", 64, 36},
    /* 41 */ {"Q1_0", 128, 18},
};
}  // namespace detail

// The table entry of a type id, or nullptr for an unknown (or removed) id.
inline constexpr const TypeInfo* type_info(int64_t type) {
  if (type < 0 || type > detail::kMaxTypeId) return nullptr;
  const TypeInfo& t = detail::kTypes[type];
  return t.name ? &t : nullptr;
}

// "Q4_K", or "unknown type 99".
inline std::string type_name(int64_t type) {
  const TypeInfo* t = type_info(type);
  return t ? std::string(t->name) : "unknown type " + std::to_string(type);
}

// Little-endian reads of block fields at any alignment.
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// The 32 signed quants q - 16 (in [-16, 15]) of a Q5_0 block; the values are d * q[e].
inline void q5_0_quants(const uint8_t* blk, int8_t* q) {
  const uint32_t qh = load_u32(blk + 2);
  for (int j = 0; j < 16; ++j) {
    q[j] = int8_t((int(blk[6 + j] & 15) | int((qh >> j) & 1) << 4) - 16);
    q[j + 16] = int8_t((int(blk[6 + j] >> 4) | int((qh >> (j + 16)) & 1) << 4) - 16);
  }
}

// The non-uniform 4-bit code book of IQ4_NL / IQ4_XS.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// True for the types dequantize_row converts: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K
// Q4_K Q5_K Q6_K Q8_K IQ4_NL IQ4_XS.
bool can_dequantize(int64_t type);
// True for the types quantize_row produces: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0.
bool can_quantize(int64_t type);

// Bytes taken by n consecutive elements of `type`: n / block_size * type_size. Throws g3n::Error
// for an unknown type, a negative n, or an n that is not a multiple of the block size.
size_t row_bytes(int64_t type, int64_t n);

// Converts n elements stored as `type` at `src` (any alignment) to float32. n must be a multiple
// of the type's block size. Throws g3n::Error (naming the type) for a type can_dequantize()
// refuses or a bad n; never reads more than row_bytes(type, n) bytes.
void dequantize_row(int ggml_type, const void* src, float* dst, int64_t n);

// Converts n floats to `type` (any alignment), byte-for-byte as ggml's reference quantisers and
// gguf-py's gguf.quants.quantize do: Q8_0 d = amax/127, q = roundf(x/d); Q4_0 / Q5_0 d = m/-8 and
// m/-16 (m the value of largest magnitude, first on ties), q = min(15|31, trunc(x/d + 8.5|16.5));
// Q4_1 / Q5_1 d = (max-min)/15|31, m = min, q = min(15|31, trunc((x-min)/d + 0.5)); F16 and BF16
// round to nearest even. Scales are stored as f16 (round to nearest even). NaN inputs give
// unspecified (but defined) codes. Throws g3n::Error for another type or a bad n.
void quantize_row(int ggml_type, const float* src, void* dst, int64_t n);

}  // namespace g3n::ggml
