// Row conversions for GGML block types. Written from the block layouts documented in
// ggml_types.h; every product is formed in the order gguf-py's numpy code forms it, so that the
// float32 results are bit-for-bit identical.
//
// No fused multiply-add: with -mfma (or -march=native) GCC would contract d*q + m into one
// rounding, which differs from numpy's (and from ggml's generic C on a non-FMA build).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/ggml_types.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/dtype.h"
#include "base/error.h"

namespace g3n::ggml {

static_assert(std::endian::native == std::endian::little, "GGML blocks are little-endian; so is this code");

namespace {

float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
void store_f16(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}


// ---- 32-element block types

void deq_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(qs[j] & 15) - 8);
    y[j + 16] = d * float(int(qs[j] >> 4) - 8);
  }
}

void deq_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 15) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}

void deq_q5_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  int8_t q[32];
  q5_0_quants(b, q);
  for (int j = 0; j < 32; ++j) y[j] = d * float(q[j]);
}

void deq_q5_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = int(qs[j] & 15) | int((qh >> j) & 1) << 4;
    const int hi = int(qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = d * float(lo) + m;
    y[j + 16] = d * float(hi) + m;
  }
}

void deq_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < 32; ++j) y[j] = d * float(int8_t(b[2 + j]));
}

void deq_iq4_nl(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kIq4nlValues[qs[j] & 15]);
    y[j + 16] = d * float(kIq4nlValues[qs[j] >> 4]);
  }
}

// ---- 256-element super-block types (k-quants)

void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_f16(b + 80), dmin = load_f16(b + 82);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, j = (e % 128) / 32, l = e % 32;
    const uint8_t sc = scales[e / 16];
    const float dl = d * float(sc & 15);
    const float ml = dmin * float(sc >> 4);
    const int q = (qs[32 * n + l] >> (2 * j)) & 3;
    y[e] = dl * float(q) - ml;
  }
}

void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = load_f16(b + 108);
  float dl[16];
  for (int s = 0; s < 16; ++s) {
    const int low = (sc[s % 8] >> (4 * (s / 8))) & 15;
    const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    dl[s] = d * float((low | (high << 4)) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, j = (e % 128) / 32, l = e % 32;
    const int low = (qs[32 * n + l] >> (2 * j)) & 3;
    const int hbit = (hmask[l] >> (e / 32)) & 1;
    y[e] = dl[e / 16] * float(low - (hbit ? 0 : 4));
  }
}

// The 8 (scale, min) pairs of Q4_K / Q5_K: 6 bits each, packed into 12 bytes.
void k_scale_min(const uint8_t* s, int i, int* sc, int* mn) {
  if (i < 4) {
    *sc = s[i] & 63;
    *mn = s[i + 4] & 63;
  } else {
    *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
    *mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

void deq_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    int sc, mn;
    k_scale_min(scales, s, &sc, &mn);
    const float d1 = d * float(sc);
    const float m1 = dmin * float(mn);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) y[32 * s + l] = d1 * float((q[l] >> shift) & 15) - m1;
  }
}

void deq_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    int sc, mn;
    k_scale_min(scales, s, &sc, &mn);
    const float d1 = d * float(sc);
    const float m1 = dmin * float(mn);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 15) | (((qh[l] >> s) & 1) << 4);
      y[32 * s + l] = d1 * float(v) - m1;
    }
  }
}

void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = b + 192;
  const float d = load_f16(b + 208);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
    const int high = (qh[32 * n + l] >> (2 * k)) & 3;
    const float ds = d * float(int8_t(scales[e / 16]));
    y[e] = ds * float((low | (high << 4)) - 32);
  }
}

void deq_q8_k(const uint8_t* b, float* y) {
  const float d = load_f32(b);
  for (int e = 0; e < 256; ++e) y[e] = d * float(int8_t(b[4 + e]));
}

void deq_iq4_xs(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint16_t scales_h = load_u16(b + 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int s = 0; s < 8; ++s) {
    const int ls = ((scales_l[s / 2] >> (4 * (s % 2))) & 15) | (((scales_h >> (2 * s)) & 3) << 4);
    const float dl = d * float(ls - 32);
    const uint8_t* q = qs + 16 * s;
    for (int j = 0; j < 16; ++j) {
      y[32 * s + j] = dl * float(kIq4nlValues[q[j] & 15]);
      y[32 * s + j + 16] = dl * float(kIq4nlValues[q[j] >> 4]);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_dequantizer(int64_t type) {
  switch (type) {
    case Q4_0: return deq_q4_0;
    case Q4_1: return deq_q4_1;
    case Q5_0: return deq_q5_0;
    case Q5_1: return deq_q5_1;
    case Q8_0: return deq_q8_0;
    case Q2_K: return deq_q2_k;
    case Q3_K: return deq_q3_k;
    case Q4_K: return deq_q4_k;
    case Q5_K: return deq_q5_k;
    case Q6_K: return deq_q6_k;
    case Q8_K: return deq_q8_k;
    case IQ4_NL: return deq_iq4_nl;
    case IQ4_XS: return deq_iq4_xs;
    default: return nullptr;
  }
}

// ---- quantisers (reference rules of ggml-quants.c / gguf-py)

// float -> int with the C cast's truncation, for values already known to be in [lo, hi] when
// finite; NaN maps to lo (a plain cast would be undefined behaviour).
int trunc_clamped(float v, int lo, int hi) {
  if (!(v >= float(lo))) return lo;
  if (v >= float(hi)) return hi;
  return int(v);
}

void quant_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < 32; ++j) {
    const float r = std::round(x[j] * id);  // half away from zero, like C roundf
    b[2 + j] = uint8_t(int8_t(std::isnan(r) ? 0 : int(std::clamp(r, -128.0f, 127.0f))));
  }
}

// The value of largest magnitude (the first one on ties), as Q4_0 / Q5_0 use it.
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void quant_q4_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x) / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < 16; ++j) {
    const int lo = trunc_clamped(x[j] * id + 8.5f, 0, 15);
    const int hi = trunc_clamped(x[j + 16] * id + 8.5f, 0, 15);
    b[2 + j] = uint8_t(lo | (hi << 4));
  }
}

void quant_q5_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x) / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = trunc_clamped(x[j] * id + 16.5f, 0, 31);
    const int hi = trunc_clamped(x[j + 16] * id + 16.5f, 0, 31);
    b[6 + j] = uint8_t((lo & 15) | ((hi & 15) << 4));
    qh |= uint32_t(lo >> 4) << j;
    qh |= uint32_t(hi >> 4) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}

void min_max(const float* x, float* mn, float* mx) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

void quant_q4_1(const float* x, uint8_t* b) {
  float mn, mx;
  min_max(x, &mn, &mx);
  const float d = (mx - mn) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  store_f16(b + 2, mn);
  for (int j = 0; j < 16; ++j) {
    const int lo = trunc_clamped((x[j] - mn) * id + 0.5f, 0, 15);
    const int hi = trunc_clamped((x[j + 16] - mn) * id + 0.5f, 0, 15);
    b[4 + j] = uint8_t(lo | (hi << 4));
  }
}

void quant_q5_1(const float* x, uint8_t* b) {
  float mn, mx;
  min_max(x, &mn, &mx);
  const float d = (mx - mn) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  store_f16(b + 2, mn);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = trunc_clamped((x[j] - mn) * id + 0.5f, 0, 31);
    const int hi = trunc_clamped((x[j + 16] - mn) * id + 0.5f, 0, 31);
    b[8 + j] = uint8_t((lo & 15) | ((hi & 15) << 4));
    qh |= uint32_t(lo >> 4) << j;
    qh |= uint32_t(hi >> 4) << (j + 16);
  }
  std::memcpy(b + 4, &qh, 4);
}

using QuantFn = void (*)(const float*, uint8_t*);

QuantFn block_quantizer(int64_t type) {
  switch (type) {
    case Q4_0: return quant_q4_0;
    case Q4_1: return quant_q4_1;
    case Q5_0: return quant_q5_0;
    case Q5_1: return quant_q5_1;
    case Q8_0: return quant_q8_0;
    default: return nullptr;
  }
}

bool is_element_float(int64_t type) { return type == F32 || type == F16 || type == BF16; }

// Validates (type, n) for a conversion; returns the table entry.
const TypeInfo& check_row(int64_t type, int64_t n, const char* what, bool supported) {
  const TypeInfo* t = type_info(type);
  if (!t) fail(what, ": unknown GGML type id ", type);
  if (!supported) fail(what, ": GGML type ", t->name, " (", type, ") is not supported");
  if (n < 0 || n % t->block_size != 0)
    fail(what, ": ", n, " elements of ", t->name, " is not a whole number of ", t->block_size, "-element blocks");
  return *t;
}

}  // namespace

bool can_dequantize(int64_t type) { return is_element_float(type) || block_dequantizer(type) != nullptr; }

bool can_quantize(int64_t type) { return is_element_float(type) || block_quantizer(type) != nullptr; }

size_t row_bytes(int64_t type, int64_t n) {
  const TypeInfo* t = type_info(type);
  if (!t) fail("row_bytes: unknown GGML type id ", type);
  if (n < 0 || n % t->block_size != 0)
    fail("row_bytes: ", n, " elements of ", t->name, " is not a whole number of ", t->block_size, "-element blocks");
  uint64_t r;
  if (__builtin_mul_overflow(uint64_t(n / t->block_size), uint64_t(t->type_size), &r) || r > SIZE_MAX)
    fail("row_bytes: ", n, " elements of ", t->name, " overflow");
  return size_t(r);
}

void dequantize_row(int ggml_type, const void* src, float* dst, int64_t n) {
  const TypeInfo& t = check_row(ggml_type, n, "dequantize_row", can_dequantize(ggml_type));
  const auto* p = static_cast<const uint8_t*>(src);
  switch (ggml_type) {
    case F32:
      if (n) std::memcpy(dst, p, size_t(n) * 4);
      return;
    case F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(p + 2 * i));
      return;
    case BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
      return;
    default:
      break;
  }
  const BlockFn fn = block_dequantizer(ggml_type);
  const int64_t nb = n / t.block_size;
  for (int64_t i = 0; i < nb; ++i) fn(p + i * t.type_size, dst + i * t.block_size);
}

void quantize_row(int ggml_type, const float* src, void* dst, int64_t n) {
  const TypeInfo& t = check_row(ggml_type, n, "quantize_row", can_quantize(ggml_type));
  auto* p = static_cast<uint8_t*>(dst);
  switch (ggml_type) {
    case F32:
      if (n) std::memcpy(p, src, size_t(n) * 4);
      return;
    case F16:
      for (int64_t i = 0; i < n; ++i) store_f16(p + 2 * i, src[i]);
      return;
    case BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return;
    default:
      break;
  }
  const QuantFn fn = block_quantizer(ggml_type);
  const int64_t nb = n / t.block_size;
  for (int64_t i = 0; i < nb; ++i) fn(src + i * t.block_size, p + i * t.type_size);
}

}  // namespace g3n::ggml
