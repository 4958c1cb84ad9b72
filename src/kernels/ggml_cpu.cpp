// ggml's CPU arithmetic (see ggml_cpu.h). The block layouts are documented in quant/ggml_types.h.
//
// Products: each weight row is unpacked once into small integers with integer sub-block scales (and
// mins), then dotted in integers with every token's quantised activations; only the per-block scales
// are float, combined as ggml's generic C combines them.
#include "kernels/ggml_cpu.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "base/error.h"
#include "kernels/attention.h"
#include "quant/ggml_types.h"

namespace g3n::kernels::ggml_cpu {

namespace {

using ggml::kIq4nlValues;
using ggml::load_f16;
using ggml::load_u16;
using ggml::load_u32;

// ggml's nearest_int / _mm256_round_ps: round half to even (the default rounding mode).
int round_even(float x) { return int(std::nearbyint(x)); }

// What a weight type's activations are quantised to.
enum class Family { kNone, kQ8_0, kQ8_1, kQ8_K };

Family family(int type) {
  switch (type) {
    case ggml::Q4_0:
    case ggml::Q5_0:
    case ggml::Q8_0:
    case ggml::IQ4_NL: return Family::kQ8_0;
    case ggml::Q4_1:
    case ggml::Q5_1: return Family::kQ8_1;
    case ggml::Q2_K:
    case ggml::Q3_K:
    case ggml::Q4_K:
    case ggml::Q5_K:
    case ggml::Q6_K:
    case ggml::IQ4_XS: return Family::kQ8_K;
    default: return Family::kNone;
  }
}

// Elements per sub-block that shares one integer scale (Q8_K family), or the block (others).
int sub_len(int type) {
  switch (type) {
    case ggml::Q2_K:
    case ggml::Q3_K:
    case ggml::Q6_K: return 16;
    default: return 32;
  }
}

// One weight row as integers: q [in]; per sub-block an integer scale and min; per block d and dmin
// (Q4_1 / Q5_1: d and m).
struct UnpackedRow {
  std::vector<int8_t> q;
  std::vector<int32_t> scale, min;
  std::vector<float> d, dmin;
};

void k_scale_min(const uint8_t* s, int i, int* sc, int* mn) {
  if (i < 4) {
    *sc = s[i] & 63;
    *mn = s[i + 4] & 63;
  } else {
    *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
    *mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

// Unpacks block b (of the type's block size) into q, scale + sub, min + sub, d[b], dmin[b].
void unpack_block(int type, const uint8_t* blk, int8_t* q, int32_t* scale, int32_t* min, float* d, float* dmin) {
  switch (type) {
    case ggml::Q4_0:
      *d = load_f16(blk);
      for (int j = 0; j < 16; ++j) {
        q[j] = int8_t((blk[2 + j] & 15) - 8);
        q[j + 16] = int8_t((blk[2 + j] >> 4) - 8);
      }
      break;
    case ggml::Q4_1:
      *d = load_f16(blk);
      *dmin = load_f16(blk + 2);
      for (int j = 0; j < 16; ++j) {
        q[j] = int8_t(blk[4 + j] & 15);
        q[j + 16] = int8_t(blk[4 + j] >> 4);
      }
      break;
    case ggml::Q5_0:
      *d = load_f16(blk);
      ggml::q5_0_quants(blk, q);
      break;
    case ggml::Q5_1: {
      *d = load_f16(blk);
      *dmin = load_f16(blk + 2);
      const uint32_t qh = load_u32(blk + 4);
      for (int j = 0; j < 16; ++j) {
        q[j] = int8_t(int(blk[8 + j] & 15) | int((qh >> j) & 1) << 4);
        q[j + 16] = int8_t(int(blk[8 + j] >> 4) | int((qh >> (j + 16)) & 1) << 4);
      }
      break;
    }
    case ggml::Q8_0:
      *d = load_f16(blk);
      std::memcpy(q, blk + 2, 32);
      break;
    case ggml::IQ4_NL:
      *d = load_f16(blk);
      for (int j = 0; j < 16; ++j) {
        q[j] = kIq4nlValues[blk[2 + j] & 15];
        q[j + 16] = kIq4nlValues[blk[2 + j] >> 4];
      }
      break;
    case ggml::Q2_K: {
      const uint8_t* sc = blk;
      const uint8_t* qs = blk + 16;
      *d = load_f16(blk + 80);
      *dmin = load_f16(blk + 82);
      for (int s = 0; s < 16; ++s) {
        scale[s] = sc[s] & 15;
        min[s] = sc[s] >> 4;
      }
      for (int e = 0; e < 256; ++e) {
        const int n = e / 128, j = (e % 128) / 32, l = e % 32;
        q[e] = int8_t((qs[32 * n + l] >> (2 * j)) & 3);
      }
      break;
    }
    case ggml::Q3_K: {
      const uint8_t* hmask = blk;
      const uint8_t* qs = blk + 32;
      const uint8_t* sc = blk + 96;
      *d = load_f16(blk + 108);
      *dmin = 0;
      for (int s = 0; s < 16; ++s) {
        const int low = (sc[s % 8] >> (4 * (s / 8))) & 15;
        const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        scale[s] = (low | (high << 4)) - 32;
        min[s] = 0;
      }
      for (int e = 0; e < 256; ++e) {
        const int n = e / 128, j = (e % 128) / 32, l = e % 32;
        const int low = (qs[32 * n + l] >> (2 * j)) & 3;
        const int hbit = (hmask[l] >> (e / 32)) & 1;
        q[e] = int8_t(low - (hbit ? 0 : 4));
      }
      break;
    }
    case ggml::Q4_K:
    case ggml::Q5_K: {
      const bool five = type == ggml::Q5_K;
      *d = load_f16(blk);
      *dmin = load_f16(blk + 2);
      const uint8_t* scales = blk + 4;
      const uint8_t* qh = blk + 16;
      const uint8_t* qs = blk + (five ? 48 : 16);
      for (int s = 0; s < 8; ++s) {
        int sc, mn;
        k_scale_min(scales, s, &sc, &mn);
        scale[s] = sc;
        min[s] = mn;
        const uint8_t* qq = qs + 32 * (s / 2);
        const int shift = 4 * (s % 2);
        for (int l = 0; l < 32; ++l) {
          int v = (qq[l] >> shift) & 15;
          if (five) v |= ((qh[l] >> s) & 1) << 4;
          q[32 * s + l] = int8_t(v);
        }
      }
      break;
    }
    case ggml::Q6_K: {
      const uint8_t* ql = blk;
      const uint8_t* qh = blk + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
      *d = load_f16(blk + 208);
      *dmin = 0;
      for (int s = 0; s < 16; ++s) {
        scale[s] = sc[s];
        min[s] = 0;
      }
      for (int e = 0; e < 256; ++e) {
        const int n = e / 128, k = (e % 128) / 32, l = e % 32;
        const int low = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
        const int high = (qh[32 * n + l] >> (2 * k)) & 3;
        q[e] = int8_t((low | (high << 4)) - 32);
      }
      break;
    }
    case ggml::IQ4_XS: {
      *d = load_f16(blk);
      *dmin = 0;
      const uint16_t scales_h = load_u16(blk + 2);
      const uint8_t* scales_l = blk + 4;
      const uint8_t* qs = blk + 8;
      for (int s = 0; s < 8; ++s) {
        const int ls = ((scales_l[s / 2] >> (4 * (s % 2))) & 15) | (((scales_h >> (2 * s)) & 3) << 4);
        scale[s] = ls - 32;
        min[s] = 0;
        for (int j = 0; j < 16; ++j) {
          q[32 * s + j] = kIq4nlValues[qs[16 * s + j] & 15];
          q[32 * s + j + 16] = kIq4nlValues[qs[16 * s + j] >> 4];
        }
      }
      break;
    }
    default: fail("ggml numerics: no dot product for ", ggml::type_name(type));
  }
}

void unpack_row(int type, const uint8_t* row, int64_t in, UnpackedRow& u) {
  const ggml::TypeInfo* info = ggml::type_info(type);
  const int64_t bs = info->block_size, nb = in / bs;
  const int64_t subs = bs / sub_len(type);
  u.q.resize(size_t(in));
  u.scale.resize(size_t(nb * subs));
  u.min.resize(size_t(nb * subs));
  u.d.resize(size_t(nb));
  u.dmin.resize(size_t(nb));
  for (int64_t b = 0; b < nb; ++b)
    unpack_block(type, row + size_t(b) * size_t(info->type_size), u.q.data() + b * bs, u.scale.data() + b * subs,
                 u.min.data() + b * subs, &u.d[size_t(b)], &u.dmin[size_t(b)]);
}

inline int32_t idot(const int8_t* a, const int8_t* b, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += int32_t(a[i]) * int32_t(b[i]);
  return s;
}

// ---- The order of the float operations in llama.cpp's x86 kernels --------------------------------------
// Integer sums are exact in any order; what makes two implementations' floats differ is where the integer
// partial sums become floats and in which order those are added. llama.cpp's AVX2 / AVX-512 kernels keep
// 8 (or 16) float lanes per dot product and reduce them as a halving tree; the functions below follow them
// lane for lane (this file is compiled with -ffp-contract=off, so a fused multiply-add happens exactly
// where std::fma is written).

// hsum_float_8 (ggml) / hsum(__m256) (llamafile): (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)).
inline float hsum8(const float* a) {
  const float r0 = a[4] + a[0], r1 = a[5] + a[1], r2 = a[6] + a[2], r3 = a[7] + a[3];
  return (r0 + r2) + (r1 + r3);
}

// _mm512_reduce_add_ps as GCC expands it: halves of 8, then of 4, then (u0 + u2) + (u1 + u3).
inline float hsum16(const float* a) {
  float t[8];
  for (int i = 0; i < 8; ++i) t[i] = a[i + 8] + a[i];
  const float u0 = t[4] + t[0], u1 = t[5] + t[1], u2 = t[6] + t[2], u3 = t[7] + t[3];
  return (u0 + u2) + (u1 + u3);
}

// Q4_0 / Q5_0 / Q8_0 / IQ4_NL weights with Q8_0 activations: ggml_vec_dot_*_q8_0 (AVX2) and llamafile's
// tinyBLAS_Q0_AVX add the same way. Per block, lane m holds the integer sum of elements 4m .. 4m+3; the
// lanes accumulate fma(d_w * d_x, lane, acc) over the blocks; hsum8 at the end.
float dot32_lanes_scalar(const int8_t* wq, const float* wd, const BlockQ8_0* x, int64_t nb) {
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const float d = wd[b] * x[b].d;
    const int8_t* w = wq + 32 * b;
    for (int m = 0; m < 8; ++m) acc[m] = std::fma(d, float(idot(w + 4 * m, x[b].qs + 4 * m, 4)), acc[m]);
  }
  return hsum8(acc);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define G3N_HAVE_AVX2_ORDER 1
#define G3N_AVX2 __attribute__((target("avx2,fma,f16c")))
// One block of 32 weights w (int8) against Q8_0 activations x: |w| * (x * sign(w)) in byte pairs, then pairs
// of pairs, so lane m holds values 4m .. 4m+3 exactly; acc += (d_w * d_x) * lanes, fused.
G3N_AVX2 inline __m256 fma_block(__m256 acc, __m256i w, float d_w, const BlockQ8_0& x) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
  const __m256i lanes =
      _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(v, w)), _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_set1_ps(d_w * x.d), _mm256_cvtepi32_ps(lanes), acc);
}
G3N_AVX2 inline float hsum8(__m256 acc) {
  float a[8];
  _mm256_storeu_ps(a, acc);
  return hsum8(a);
}

G3N_AVX2 float dot32_lanes_avx2(const int8_t* wq, const float* wd, const BlockQ8_0* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b)
    acc = fma_block(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + 32 * b)), wd[b], x[b]);
  return hsum8(acc);
}

// The same on Q8_0 blocks read in place (34 bytes: float16 d, 32 int8).
G3N_AVX2 float dot_q8_0_raw_avx2(const uint8_t* row, const BlockQ8_0* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + 34 * b;
    acc = fma_block(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)), load_f16(blk), x[b]);
  }
  return hsum8(acc);
}

// And on Q5_0 blocks in place (22 bytes: float16 d, 32 high bits, 16 bytes of low nibbles): value j is
// (nibble j | high bit j << 4) - 16, values 0-15 in the low nibbles, 16-31 in the high ones.
G3N_AVX2 float dot_q5_0_raw_avx2(const uint8_t* row, const BlockQ8_0* x, int64_t nb) {
  const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                               2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + 22 * b;
    uint32_t qh;
    std::memcpy(&qh, blk + 2, 4);
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 6));
    const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(0x0F));
    const __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32(int32_t(qh)), byte_of_bit);
    const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit), _mm256_set1_epi8(0x10));
    acc = fma_block(acc, _mm256_sub_epi8(_mm256_or_si256(nib, high), _mm256_set1_epi8(16)), load_f16(blk), x[b]);
  }
  return hsum8(acc);
}
bool avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

float dot32_lanes(const int8_t* wq, const float* wd, const BlockQ8_0* x, int64_t nb) {
#ifdef G3N_HAVE_AVX2_ORDER
  if (avx2_fma()) return dot32_lanes_avx2(wq, wd, x, nb);
#endif
  return dot32_lanes_scalar(wq, wd, x, nb);
}

// Q6_K, ggml_vec_dot_q6_K_q8_K (AVX2; llama.cpp's products of fewer than 8 tokens): per block, lane m holds
// sum over the elements e with (e mod 32) / 4 == m of scale(e) * (q(e) + 32) * x(e), minus 32 * (the sums
// of x over sub-blocks 2m and 2m+1 times their scales); fma((d_x * d_w), lane, acc); hsum8.
float dot_q6_K_lanes(const UnpackedRow& w, const BlockQ8K* x, int64_t nb) {
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * 16;
    const BlockQ8K& xb = x[b];
    int32_t lane[8] = {};
    for (int g = 0; g < 8; ++g) {  // groups of 32 values: lane m takes values 4m .. 4m+3 of each
      const int32_t s0 = sc[2 * g], s1 = sc[2 * g + 1];
      for (int m = 0; m < 8; ++m) {
        const int e = 32 * g + 4 * m;
        int32_t p = 0;
        for (int k = 0; k < 4; ++k) p += (int32_t(q[e + k]) + 32) * int32_t(xb.qs[e + k]);
        lane[m] += (m < 4 ? s0 : s1) * p;
      }
    }
    for (int m = 0; m < 8; ++m)
      lane[m] -= 32 * (int32_t(xb.bsums[2 * m]) * sc[2 * m] + int32_t(xb.bsums[2 * m + 1]) * sc[2 * m + 1]);
    const float d = xb.d * w.d[size_t(b)];
    for (int m = 0; m < 8; ++m) acc[m] = std::fma(d, float(lane[m]), acc[m]);
  }
  return hsum8(acc);
}

// Q6_K in llama.cpp's tiled K-quant GEMM (8 or more tokens): each block's exact integer sum becomes one
// float, times d_w, times d_x, added to the running sum.
float dot_q6_K_tiled(const UnpackedRow& w, const BlockQ8K* x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * 16;
    int32_t isum = 0;
    for (int s = 0; s < 16; ++s) isum += sc[s] * idot(q + 16 * s, x[b].qs + 16 * s, 16);
    const float r = float(isum) * w.d[size_t(b)];
    sum = std::fma(r, x[b].d, sum);
  }
  return sum;
}

// Q4_1 / Q5_1, ggml_vec_dot_q4_1_q8_1 / q5_1_q8_1 (AVX2): the 8 lanes of the unsigned values times the
// activations, fma(lane, d_w * d_x, acc); the min term m_w * s_x summed apart (a fused multiply-add in
// ggml's build), added after hsum8.
float dot_q8_1_lanes(const UnpackedRow& w, const BlockQ8_1* x, int64_t nb) {
  float acc[8] = {};
  float summs = 0;
  for (int64_t b = 0; b < nb; ++b) {
    summs = std::fma(w.dmin[size_t(b)], x[b].s, summs);
    const float d = w.d[size_t(b)] * x[b].d;
    const int8_t* q = w.q.data() + 32 * b;
    for (int m = 0; m < 8; ++m) acc[m] = std::fma(float(idot(q + 4 * m, x[b].qs + 4 * m, 4)), d, acc[m]);
  }
  return hsum8(acc) + summs;
}

// Q5_K, ggml_vec_dot_q5_K_q8_K (AVX2; fewer than 8 tokens): lane m sums, over the groups of 32 values, the
// values 4m .. 4m+3 times their sub-block scale; fma(d_x * d_w, lane, acc) per block; the mins times the
// activation sums go in apart as summs += (-d_x * dmin_w) * sum (fused), added after hsum8.
float dot_q5_K_lanes(const UnpackedRow& w, const BlockQ8K* x, int64_t nb) {
  float acc[8] = {};
  float summs = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * 8;
    const int32_t* mn = w.min.data() + b * 8;
    const BlockQ8K& xb = x[b];
    const float d = xb.d * w.d[size_t(b)];
    const float dmin = -xb.d * w.dmin[size_t(b)];
    int32_t msum = 0;
    for (int s = 0; s < 8; ++s) msum += mn[s] * (int32_t(xb.bsums[2 * s]) + int32_t(xb.bsums[2 * s + 1]));
    summs = std::fma(dmin, float(msum), summs);
    int32_t lane[8] = {};
    for (int g = 0; g < 8; ++g)
      for (int m = 0; m < 8; ++m) lane[m] += sc[g] * idot(q + 32 * g + 4 * m, xb.qs + 32 * g + 4 * m, 4);
    for (int m = 0; m < 8; ++m) acc[m] = std::fma(d, float(lane[m]), acc[m]);
  }
  return hsum8(acc) + summs;
}

// Q4_K / Q5_K in llama.cpp's tiled K-quant GEMM (8 or more tokens, weights not repacked): per block the
// integer sums s1 (scales) and s2 (mins) become floats, r = fma(-dmin_w, s2, s1 * d_w), then sum = fma(r, d_x,
// sum).
float dot_kmin_tiled(const UnpackedRow& w, const BlockQ8K* x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * 8;
    const int32_t* mn = w.min.data() + b * 8;
    int32_t s1 = 0, s2 = 0;
    for (int s = 0; s < 8; ++s) {
      s1 += sc[s] * idot(q + 32 * s, x[b].qs + 32 * s, 32);
      s2 += mn[s] * (int32_t(x[b].bsums[2 * s]) + int32_t(x[b].bsums[2 * s + 1]));
    }
    const float r = std::fma(-w.dmin[size_t(b)], float(s2), float(s1) * w.d[size_t(b)]);
    sum = std::fma(r, x[b].d, sum);
  }
  return sum;
}

// Q4_K repacked 8 rows at a time (llama.cpp's CPU_REPACK buffer, rows a multiple of 8). The integer sums
// and their min corrections accumulate apart, each by fma: its GEMM (4 tokens at a time) once per 64
// values, its GEMV (the tokens left over) once per block of 256.
float dot_q4_K_repack(const UnpackedRow& w, const BlockQ8K* x, int64_t nb, bool gemm) {
  float acc = 0, acc_min = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * 8;
    const int32_t* mn = w.min.data() + b * 8;
    const float d = w.d[size_t(b)] * x[b].d, dmin = w.dmin[size_t(b)] * x[b].d;
    int32_t isum = 0, imin = 0;
    for (int s = 0; s < 8; ++s) {
      isum += sc[s] * idot(q + 32 * s, x[b].qs + 32 * s, 32);
      imin += mn[s] * (int32_t(x[b].bsums[2 * s]) + int32_t(x[b].bsums[2 * s + 1]));
      if (gemm && s % 2 == 1) {
        acc = std::fma(float(isum), d, acc);
        acc_min = std::fma(float(imin), dmin, acc_min);
        isum = imin = 0;
      }
    }
    if (!gemm) {
      acc = std::fma(float(isum), d, acc);
      acc_min = std::fma(float(imin), dmin, acc_min);
    }
  }
  return acc - acc_min;
}

float dot_q8_0(const UnpackedRow& w, const BlockQ8_0* x, int64_t nb) { return dot32_lanes(w.q.data(), w.d.data(), x, nb); }

// Q4_0 / IQ4_NL repacked 8 rows at a time (CPU_REPACK, rows a multiple of 8): its GEMM and GEMV both add one
// fma(block's integer sum, d_w * d_x) per block into a single accumulator.
float dot32_repack(const UnpackedRow& w, const BlockQ8_0* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b)
    acc = std::fma(float(idot(w.q.data() + 32 * b, x[b].qs, 32)), w.d[size_t(b)] * x[b].d, acc);
  return acc;
}

float dot_q8_K(const UnpackedRow& w, const BlockQ8K* x, int64_t nb, int L) {
  const int subs = 256 / L;
  float sumf = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = w.q.data() + b * 256;
    const int32_t* sc = w.scale.data() + b * subs;
    const int32_t* mn = w.min.data() + b * subs;
    int32_t isum = 0, msum = 0;
    for (int s = 0; s < subs; ++s) {
      isum += sc[s] * idot(q + s * L, x[b].qs + s * L, L);
      const int32_t bsum = L == 16 ? x[b].bsums[s] : x[b].bsums[2 * s] + x[b].bsums[2 * s + 1];
      msum += mn[s] * bsum;
    }
    const float d = w.d[size_t(b)] * x[b].d, dmin = w.dmin[size_t(b)] * x[b].d;
    sumf += d * float(isum) - dmin * float(msum);
  }
  return sumf;
}

void check_type(int type, int64_t in, const char* what) {
  G3N_CHECK(family(type) != Family::kNone, what, ": ggml numerics have no dot product for ", ggml::type_name(type));
  const int64_t bs = ggml::type_info(type)->block_size;
  G3N_CHECK(in > 0 && in % bs == 0, what, ": rows of ", in, " values are not whole ", ggml::type_name(type), " blocks of ",
            bs);
}

template <class T>
void grow(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

// ggml_gelu_f32 rounded to float16, for every float16 input.
const std::array<float, 65536>& gelu_table() {
  static const std::array<float, 65536> table = [] {
    std::array<float, 65536> t{};
    constexpr float kCoefA = 0.044715f;
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = f16_to_f32(uint16_t(h));
      // ggml's build contracts 1 + a*x*x into a fused multiply-add.
      t[h] = round_f16(0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * std::fma(kCoefA * x, x, 1.0f))));
    }
    return t;
  }();
  return table;
}

}  // namespace

void round_to_f16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_f16(x[i]);
}

void round_to_bf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

void quantize_q8_0(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums) {
  G3N_CHECK(n % 32 == 0, "quantize_q8_0: ", n, " values are not whole blocks of 32");
  for (int64_t b = 0; b < n / 32; ++b, x += 32, q += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) {
      q[j] = int8_t(round_even(x[j] * id));
      s += q[j];
    }
    d[b] = round_f16(amax / 127.0f);
    if (sums) sums[b] = s;
  }
}

void quantize_q8_0(const float* x, int64_t n, BlockQ8_0* y) {
  G3N_CHECK(n % 32 == 0, "quantize_q8_0: ", n, " values are not whole blocks of 32");
  for (int64_t b = 0; b < n / 32; ++b) quantize_q8_0(x + 32 * b, 32, y[b].qs, &y[b].d, nullptr);
}

void quantize_q8_1(const float* x, int64_t n, BlockQ8_1* y) {
  G3N_CHECK(n % 32 == 0, "quantize_q8_1: ", n, " values are not whole blocks of 32");
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) {
      y[b].qs[j] = int8_t(round_even(xb[j] * id));
      s += y[b].qs[j];
    }
    y[b].d = round_f16(d);
    y[b].s = round_f16(d * float(s));
  }
}

void quantize_q8_K(const float* x, int64_t n, BlockQ8K* y) {
  G3N_CHECK(n % 256 == 0, "quantize_q8_K: ", n, " values are not whole blocks of 256");
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float amax = 0, max = 0;
    for (int j = 0; j < 256; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    BlockQ8K& o = y[b];
    if (amax == 0.0f) {
      o.d = 0;
      std::memset(o.qs, 0, sizeof o.qs);
      std::memset(o.bsums, 0, sizeof o.bsums);
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < 256; ++j) o.qs[j] = int8_t(std::min(127, round_even(iscale * x[j])));
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += o.qs[16 * j + i];
      o.bsums[j] = int16_t(s);
    }
    o.d = 1.0f / iscale;
  }
}

bool has_dot(int ggml_type) { return family(ggml_type) != Family::kNone; }

void matmul(int type, const void* w, int64_t out, int64_t in, const float* x, int64_t n_tokens, float* y,
            ThreadPool& pool, int64_t x_stride, int64_t y_stride) {
  check_type(type, in, "ggml matmul");
  if (out <= 0 || n_tokens <= 0) return;
  const int64_t xs = x_stride ? x_stride : in, ys = y_stride ? y_stride : out;
  const Family fam = family(type);
  // The activations of every token, quantised once (per-caller scratch, kept between calls).
  thread_local std::vector<BlockQ8_0> a0;
  thread_local std::vector<BlockQ8_1> a1;
  thread_local std::vector<BlockQ8K> ak;
  const int64_t nb32 = in / 32, nb256 = in / 256;
  if (fam == Family::kQ8_0) grow(a0, n_tokens * nb32);
  else if (fam == Family::kQ8_1) grow(a1, n_tokens * nb32);
  else grow(ak, n_tokens * nb256);
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (fam == Family::kQ8_0) quantize_q8_0(x + t * xs, in, a0.data() + t * nb32);
    else if (fam == Family::kQ8_1) quantize_q8_1(x + t * xs, in, a1.data() + t * nb32);
    else quantize_q8_K(x + t * xs, in, ak.data() + t * nb256);
  }
  const auto* base = static_cast<const uint8_t*>(w);
  const size_t row_bytes = ggml::row_bytes(type, in);
  const int L = sub_len(type);
  const BlockQ8_0* p0 = a0.data();
  const BlockQ8_1* p1 = a1.data();
  const BlockQ8K* pk = ak.data();
  // llama.cpp multiplies the k-quants of a batch of 8 or more tokens with its tiled kernel.
  const bool tiled = n_tokens >= 8;
  // Its repacked Q4_K GEMM takes the tokens 4 at a time, the GEMV the rest.
  const int64_t n_gemm = n_tokens > 3 ? n_tokens - n_tokens % 4 : 0;
  // And its Q4_0 / IQ4_NL (x86 builds with AVX2).
  const bool repack32 = (type == ggml::Q4_0 || type == ggml::IQ4_NL) && out % 8 == 0;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, in * n_tokens));
  pool.parallel_for(out, grain, [&](int64_t r0, int64_t r1) {
    thread_local UnpackedRow u;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = base + size_t(r) * row_bytes;
#ifdef G3N_HAVE_AVX2_ORDER
      if ((type == ggml::Q8_0 || type == ggml::Q5_0) && avx2_fma()) {  // read in place
        for (int64_t t = 0; t < n_tokens; ++t)
          y[t * ys + r] = type == ggml::Q8_0 ? dot_q8_0_raw_avx2(row, p0 + t * nb32, nb32)
                                             : dot_q5_0_raw_avx2(row, p0 + t * nb32, nb32);
        continue;
      }
#endif
      unpack_row(type, row, in, u);
      for (int64_t t = 0; t < n_tokens; ++t) {
        float v;
        if (fam == Family::kQ8_0) v = repack32 ? dot32_repack(u, p0 + t * nb32, nb32) : dot_q8_0(u, p0 + t * nb32, nb32);
        else if (fam == Family::kQ8_1) v = dot_q8_1_lanes(u, p1 + t * nb32, nb32);
        else if (type == ggml::Q6_K) v = tiled ? dot_q6_K_tiled(u, pk + t * nb256, nb256) : dot_q6_K_lanes(u, pk + t * nb256, nb256);
        else if (type == ggml::Q4_K && out % 8 == 0) v = dot_q4_K_repack(u, pk + t * nb256, nb256, t < n_gemm);
        else if ((type == ggml::Q4_K || type == ggml::Q5_K) && tiled) v = dot_kmin_tiled(u, pk + t * nb256, nb256);
        else if (type == ggml::Q5_K) v = dot_q5_K_lanes(u, pk + t * nb256, nb256);
        else v = dot_q8_K(u, pk + t * nb256, nb256, L);
        y[t * ys + r] = v;
      }
    }
  });
}

void matmul_reference(int type, const void* w, int64_t out, int64_t in, const float* x, int64_t n_tokens, float* y) {
  check_type(type, in, "ggml matmul_reference");
  const Family fam = family(type);
  const auto* base = static_cast<const uint8_t*>(w);
  const size_t row_bytes = ggml::row_bytes(type, in);
  std::vector<float> wr(static_cast<size_t>(in)), xa(static_cast<size_t>(in));
  std::vector<BlockQ8_1> a1(size_t(in / 32));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x + t * in;
    // The activations as the type's format holds them.
    if (fam == Family::kQ8_0) {
      std::vector<BlockQ8_0> a(size_t(in / 32));
      quantize_q8_0(xt, in, a.data());
      for (int64_t i = 0; i < in; ++i) xa[size_t(i)] = a[size_t(i / 32)].d * float(a[size_t(i / 32)].qs[i % 32]);
    } else if (fam == Family::kQ8_1) {
      quantize_q8_1(xt, in, a1.data());
      for (int64_t i = 0; i < in; ++i) xa[size_t(i)] = a1[size_t(i / 32)].d * float(a1[size_t(i / 32)].qs[i % 32]);
    } else {
      std::vector<BlockQ8K> a(size_t(in / 256));
      quantize_q8_K(xt, in, a.data());
      for (int64_t i = 0; i < in; ++i) xa[size_t(i)] = a[size_t(i / 256)].d * float(a[size_t(i / 256)].qs[i % 256]);
    }
    for (int64_t o = 0; o < out; ++o) {
      const uint8_t* row = base + size_t(o) * row_bytes;
      ggml::dequantize_row(type, row, wr.data(), in);
      double s = 0;
      if (fam == Family::kQ8_1) {
        // Q4_1 / Q5_1: (d q + m) . x with the m part as ggml forms it, m * f16(d_x sum q_x) per block.
        for (int64_t b = 0; b < in / 32; ++b) {
          const uint8_t* blk = row + size_t(b) * size_t(ggml::type_info(type)->type_size);
          const double m = load_f16(blk + 2);
          for (int64_t i = 32 * b; i < 32 * b + 32; ++i) s += (double(wr[size_t(i)]) - m) * double(xa[size_t(i)]);
          s += m * double(a1[size_t(b)].s);
        }
      } else {
        for (int64_t i = 0; i < in; ++i) s += double(wr[size_t(i)]) * double(xa[size_t(i)]);
      }
      y[t * out + o] = float(s);
    }
  }
}

// ---- Attention as llama.cpp computes it without flash attention -----------------------------------------

float expf_ggml(float x) {
  const float r = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, r);
  const float n = z - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  return std::ldexp(j, int(n));  // _mm512_scalef_ps(j, n): n is integral here
}

namespace {

// tinyBLAS<16, __m512> (F16 x F16): lane i accumulates the products of elements i, i + 16, ... by fma.
float dot16_lanes_scalar(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  for (int64_t i = 0; i < n; ++i) acc[i % 16] = std::fma(a[i], b[i], acc[i % 16]);
  return hsum16(acc);
}

#ifdef G3N_HAVE_AVX2_ORDER
__attribute__((target("avx512f"))) float dot16_lanes_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  float l[16];
  _mm512_storeu_ps(l, acc);
  return hsum16(l);
}
bool avx512f() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
#endif

// acc[i] = fma(a[i], b[i], acc[i]); elementwise, so any vector width gives the same floats.
#ifdef G3N_HAVE_AVX2_ORDER
__attribute__((target("avx512f"))) void fma_elementwise_avx512(const float* a, const float* b, float* acc, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), _mm512_loadu_ps(acc + i)));
  for (; i < n; ++i) acc[i] = std::fma(a[i], b[i], acc[i]);
}
__attribute__((target("avx512f"))) void axpy_fma_avx512(float p, const float* v, float* acc, int64_t n) {
  int64_t i = 0;
  const __m512 vp = _mm512_set1_ps(p);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(vp, _mm512_loadu_ps(v + i), _mm512_loadu_ps(acc + i)));
  for (; i < n; ++i) acc[i] = std::fma(p, v[i], acc[i]);
}
#endif
void fma_elementwise(const float* a, const float* b, float* acc, int64_t n) {
#ifdef G3N_HAVE_AVX2_ORDER
  if (avx512f()) return fma_elementwise_avx512(a, b, acc, n);
#endif
  for (int64_t i = 0; i < n; ++i) acc[i] = std::fma(a[i], b[i], acc[i]);
}
// acc[i] = fma(p, v[i], acc[i]).
void axpy_fma(float p, const float* v, float* acc, int64_t n) {
#ifdef G3N_HAVE_AVX2_ORDER
  if (avx512f()) return axpy_fma_avx512(p, v, acc, n);
#endif
  for (int64_t i = 0; i < n; ++i) acc[i] = std::fma(p, v[i], acc[i]);
}

float dot16_lanes(const float* a, const float* b, int64_t n) {
#ifdef G3N_HAVE_AVX2_ORDER
  if (n % 16 == 0 && avx512f()) return dot16_lanes_avx512(a, b, n);
#endif
  return dot16_lanes_scalar(a, b, n);
}

// ggml_vec_dot_f16 (AVX-512 without FP16 arithmetic; llama.cpp's products of one token): 4 accumulators of
// 16 lanes over steps of 64, (acc0 + acc2) + (acc1 + acc3), reduced as hsum16 into a double; the rest in double.
float dot_f16_vecdot(const float* a, const float* b, int64_t n) {
  float acc[4][16] = {};
  const int64_t np = n - n % 64;
  for (int64_t i = 0; i < np; i += 64)
    for (int j = 0; j < 4; ++j) fma_elementwise(a + i + 16 * j, b + i + 16 * j, acc[j], 16);
  float s[16];
  for (int l = 0; l < 16; ++l) s[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
  double sum = hsum16(s);
  for (int64_t i = np; i < n; ++i) sum += double(a[i] * b[i]);
  return float(sum);
}

}  // namespace

void attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float* out, std::vector<float>& scratch, bool single_token) {
  const int group = n_heads / n_kv_heads;
  const int64_t row = int64_t(n_kv_heads) * head_dim;
  // Cells are positions (llama.cpp fills a fresh cache in order): the softmax sums chunks of 16 cells from
  // cell 0, and the value product's lanes are the cells modulo 16.
  const int64_t c0 = first / 16 * 16, c1 = last / 16 * 16 + 16;
  const int64_t n = c1 - c0;
  if (int64_t(scratch.size()) < n + 64 * int64_t(head_dim)) scratch.resize(size_t(n + 64 * int64_t(head_dim)));
  float* p = scratch.data();
  float* lanes = p + n;
  auto key = [&](int64_t t, int j) { return kv.keys + (t % kv.capacity) * row + int64_t(j) * head_dim; };
  auto value = [&](int64_t t, int j) { return kv.values + (t % kv.capacity) * row + int64_t(j) * head_dim; };
  for (int h = 0; h < n_heads; ++h) {
    const int j = h / group;
    const float* qh = q + int64_t(h) * head_dim;
    float max = -INFINITY;
    for (int64_t t = c0; t < c1; ++t) {
      float& s = p[t - c0];
      s = (t < first || t > last)  ? -INFINITY
          : single_token            ? dot_f16_vecdot(qh, key(t, j), head_dim)
                                    : dot16_lanes(qh, key(t, j), head_dim);
      max = std::max(max, s);
    }
    double sum = 0;
    for (int64_t c = c0; c < c1; c += 16) {
      float e[16];
      for (int i = 0; i < 16; ++i) e[i] = p[c - c0 + i] = expf_ggml(p[c - c0 + i] - max);
      sum += double(hsum16(e));
    }
    const float inv = float(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) p[i] = round_f16(p[i] * inv);
    // out[d] = sum over cells of p * v, by fma into lanes: tinyBLAS's 16 (cell % 16), or vec_dot_f16's 4 x 16
    // (cell / 16 % 4, cell % 16) for one token; then reduced as those reduce.
    const int n_acc = single_token ? 4 : 1;
    std::fill(lanes, lanes + 16 * n_acc * int64_t(head_dim), 0.0f);
    for (int64_t t = first; t <= last; ++t) {
      const float pt = p[t - c0];
      const float* v = value(t, j);
      const int64_t lane = single_token ? (t / 16 % 4) * 16 + t % 16 : t % 16;
      axpy_fma(pt, v, lanes + lane * head_dim, head_dim);
    }
    float* o = out + int64_t(h) * head_dim;
    for (int d = 0; d < head_dim; ++d) {
      float l[16];
      if (single_token) {
        auto at = [&](int a, int i) { return lanes[(a * 16 + i) * head_dim + d]; };
        for (int i = 0; i < 16; ++i) l[i] = (at(0, i) + at(2, i)) + (at(1, i) + at(3, i));
        o[d] = hsum16(l);  // (vec_dot_f16 widens this to double and back: no change)
      } else {
        for (int i = 0; i < 16; ++i) l[i] = lanes[i * head_dim + d];
        o[d] = hsum16(l);
      }
    }
  }
}

void gelu(float* x, int64_t n) {
  const auto& table = gelu_table();
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] <= -10.0f) x[i] = 0.0f;
    else if (x[i] < 10.0f) x[i] = table[f32_to_f16(x[i])];
  }
}

float gelu_table_entry(uint16_t h) { return gelu_table()[h]; }

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
  const float mean = float(sum / double(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) {
    const float y = x[i] * scale;
    out[i] = w ? y * w[i] : y;
  }
}

void rope_neox(float* x, int n_heads, int head_dim, int64_t pos, float freq_base, float freq_scale) {
  const int half = head_dim / 2;
  thread_local std::vector<float> cs;
  cs.resize(size_t(head_dim));
  const float theta_scale = std::pow(freq_base, -2.0f / float(head_dim));
  float theta = float(pos);
  for (int i = 0; i < half; ++i) {
    const float t = freq_scale * theta;
    cs[size_t(2 * i)] = std::cos(t);
    cs[size_t(2 * i + 1)] = std::sin(t);
    theta *= theta_scale;
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + int64_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float c = cs[size_t(2 * i)], s = cs[size_t(2 * i + 1)];
      const float x0 = v[i], x1 = v[i + half];
      // As GCC contracts ggml's rotation (C++, -ffp-contract=fast): the first product fused.
      v[i] = std::fma(x0, c, -(x1 * s));
      v[i + half] = std::fma(x0, s, x1 * c);
    }
  }
}

}  // namespace g3n::kernels::ggml_cpu
