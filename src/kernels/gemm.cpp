// Cache-blocked float32 GEMM for many rows (see gemm.h): one Highway source compiled per SIMD target
// (foreach_target re-includes this file), dispatched at run time; the scalar oracle and the public
// functions are in the HWY_ONCE part at the end.
//
// Shape of the work, C[M, N] = A[M, K] W^T:
//  1. Tasks are (M block, N block of NC columns); a cost model (GemmRun) picks the blocks so that the
//     threads get equal shares without packing W more often than needed.
//  2. In a task, for each block of KC columns: the task packs its block of W into float32 panels of
//     NR columns, [NC / NR][KC][NR] (zero columns past N), in this thread's buffer (L2): each panel a
//     transpose of NR rows of W, converted from the stored type (AVX-512: 16 x 16 in registers). Then
//     for each MR rows of A (kept in L1), for each panel: the micro-kernel adds the MR x KC by
//     KC x NR product to a register tile of C (first block: C = bias + ...).
//  3. The micro-kernel broadcasts A[i][k] and multiplies it with the NV vectors of panel row k:
//     MR * NV accumulators, NV loads and MR broadcasts per MR * NV FMAs.
// attention_shared_kv reuses 2 and 3: K and V packed once as panels, then each task runs a block of
// query rows through q K^T, softmax and P V with the scores in its own buffer.
#ifndef G3N_KERNELS_GEMM_ONCE
#define G3N_KERNELS_GEMM_ONCE

#include "kernels/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "kernels/elements.h"
#include "kernels/gemm_int8.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

// As matmul.cpp: scalable vectors cannot live in the register-tile arrays.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

#include <hwy/aligned_allocator.h>

namespace g3n::kernels::detail {

struct GemmJob {
  DType dtype = DType::F32;
  const uint8_t* w = nullptr;  // W [N, K] (or [K, N] when kn), rows of row_bytes
  size_t row_bytes = 0;
  bool kn = false;
  int64_t taps = 1;
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;  // [M] rows of lda floats, or rows from source
  int64_t lda = 0;
  const GemmRowSource* source = nullptr;
  float* c = nullptr;  // [M] rows of ldc floats
  int64_t ldc = 0;
  const float* bias = nullptr;
  bool accumulate = false;
};

struct AttentionJob {
  const float* q = nullptr;  // [rows] of q_stride floats, the first dk used
  int64_t rows = 0, q_stride = 0;
  const float* k = nullptr;  // [m, dk]
  const float* v = nullptr;  // [m, dv]
  int64_t m = 0, dk = 0, dv = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [rows] of out_stride floats
  int64_t out_stride = 0;
};

// Per-thread buffers, grown to the largest call and kept (no allocation once warm): slot 0 holds a
// task's packed W block, slot 1 the scores of an attention task, slot 2 a padded bias, slots 3 and 4
// attention's packed K and V.
inline float* gemm_scratch(int slot, size_t floats) {
  struct Buffer {
    hwy::AlignedFreeUniquePtr<float[]> p;
    size_t n = 0;
  };
  thread_local Buffer buffers[5];
  Buffer& b = buffers[slot];
  if (b.n < floats) {
    b.p = hwy::AllocateAligned<float>(floats);
    G3N_CHECK(b.p != nullptr, "gemm: cannot allocate ", floats * sizeof(float), " bytes of scratch");
    b.n = floats;
  }
  return b.p.get();
}

}  // namespace g3n::kernels::detail

#endif  // G3N_KERNELS_GEMM_ONCE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include "kernels/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using detail::GemmJob;

// Register tile: MR rows x NV vectors. 32 vector registers (AVX-512, AArch64): 6 x 4 = 24
// accumulators + 4 panel vectors + a broadcast; 16 registers: 6 x 2.
#if HWY_TARGET == HWY_SCALAR
constexpr int kMR = 4, kNV = 1;
#elif HWY_TARGET <= HWY_AVX3 || HWY_ARCH_ARM_A64
constexpr int kMR = 6, kNV = 4;
#else
constexpr int kMR = 6, kNV = 2;
#endif
// K block (at most): the MR rows of A (MR * KC floats) stay in L1 while the panels of an N block pass.
constexpr int64_t kKC = 512;
// The packed W block of a task (KC x NC floats) stays in L2. (Measured on a Sapphire-Rapids-class VM,
// one thread, BF16 weights: 6 x 4 tiles, KC 512 and 1 MiB blocks reach ~150 GFLOP/s, 85% of the FMA
// peak, for M = 750 .. 36864 and N, K = 512 .. 6144; 256 / 256 KiB ran ~10% slower, 8 x 3 and
// 12 x 2 tiles about the same.)
constexpr int64_t kBlockBytes = 1 << 20;

using DF = hn::ScalableTag<float>;
constexpr int64_t kLanes = int64_t(hn::MaxLanes(DF()));
constexpr int64_t kNR = kNV * kLanes;

// ---------------------------------------------------------------- packing W

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// In-register transpose of 16 x 16 floats: r[i][j] -> r[j][i] (unpack within 128-bit lanes, then
// shuffle the lanes: 64 shuffles for 256 elements).
HWY_INLINE void Transpose16x16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);      // lane l: r_i[4l], r_i+1[4l], r_i[4l+1], r_i+1[4l+1]
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);  // lane l: the same for columns 4l+2, 4l+3
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + c] lane l: rows g..g+3 at column 4l + c
    const __m512d t0 = _mm512_castps_pd(t[g]), t1 = _mm512_castps_pd(t[g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[g + 2]), t3 = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; ++c) {  // column 4l + c = lane l of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xee);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xee);
    r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
    r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
  }
}

// PackPanel for a full panel on AVX-512: 16 rows at a time, each read sequentially over the K block
// (16 streams the prefetchers follow), converted and transposed in registers.
void PackFullPanel512(DType t, const uint8_t* const* rows, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  const size_t es = dtype_size(t);
  for (int64_t g = 0; g < kNR; g += 16) {
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const uint8_t* src = rows[g + i] + size_t(k0 + k) * es;
        if (t == DType::F32) {
          r[i] = _mm512_loadu_ps(src);
        } else {
          const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
          r[i] = t == DType::BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                                  : _mm512_cvtph_ps(h);
        }
      }
      Transpose16x16(r);
      for (int j = 0; j < 16; ++j) _mm512_store_ps(dst + (k + j) * kNR + g, r[j]);
    }
    for (; k < kc; ++k)
      for (int i = 0; i < 16; ++i) dst[k * kNR + g + i] = detail::load_element(t, rows[g + i], k0 + k);
  }
}

// Elements [16 h, 16 h + 16) of a Q8_0 / Q4_0 block as float: d * q, as quant::dequantize_row_*.
HWY_INLINE __m512 DequantizeHalfBlock512(DType t, const uint8_t* blk, int h, __m512 d) {
  __m512i q;
  if (t == DType::Q8_0) {
    q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 + 16 * h)));
  } else {  // low nibbles are elements 0..15, high nibbles 16..31
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    q = _mm512_sub_epi32(h == 0 ? _mm512_and_si512(v, _mm512_set1_epi32(15)) : _mm512_srli_epi32(v, 4),
                         _mm512_set1_epi32(8));
  }
  return _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
}

// PackFullPanel512 for block weights (k0 and kc multiples of 32): per 16 rows, one block of each
// row dequantised into two vectors, then transposed as two 16 x 16 tiles.
void PackFullPanelQuant512(DType t, const uint8_t* const* rows, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  const size_t bb = dtype_size(t);
  for (int64_t g = 0; g < kNR; g += 16) {
    for (int64_t k = 0; k < kc; k += kQuantBlock) {
      __m512 lo[16], hi[16];
      for (int i = 0; i < 16; ++i) {
        const uint8_t* blk = rows[g + i] + size_t((k0 + k) / kQuantBlock) * bb;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
        lo[i] = DequantizeHalfBlock512(t, blk, 0, d);
        hi[i] = DequantizeHalfBlock512(t, blk, 1, d);
      }
      Transpose16x16(lo);
      Transpose16x16(hi);
      for (int j = 0; j < 16; ++j) {
        _mm512_store_ps(dst + (k + j) * kNR + g, lo[j]);
        _mm512_store_ps(dst + (k + 16 + j) * kNR + g, hi[j]);
      }
    }
  }
}
#endif

// Columns [k0, k0 + kc) of panel p of W^T (columns [p * NR, p * NR + NR) of W^T, i.e. rows of W), as
// dst[k][r] for k < kc; zero columns past N.
void PackPanel(const GemmJob& j, int64_t p, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  const int64_t n0 = p * kNR, nn = std::min<int64_t>(kNR, j.n - n0);
  const DType t = j.dtype;
  if (j.kn && dtype_is_quantized(t)) {  // W [K, N] in blocks along N: dequantise the blocks of the slice
    const size_t bb = dtype_size(t);
    const int64_t b0 = n0 / kQuantBlock, b1 = (n0 + nn + kQuantBlock - 1) / kQuantBlock;
    HWY_ALIGN float tmp[kNR + 2 * kQuantBlock];
    for (int64_t k = 0; k < kc; ++k) {
      const uint8_t* row = j.w + size_t(k0 + k) * j.row_bytes + size_t(b0) * bb;
      if (t == DType::Q8_0) quant::dequantize_row_q8_0(row, (b1 - b0) * kQuantBlock, tmp);
      else quant::dequantize_row_q4_0(row, (b1 - b0) * kQuantBlock, tmp);
      float* d = dst + k * kNR;
      std::copy(tmp + (n0 - b0 * kQuantBlock), tmp + (n0 - b0 * kQuantBlock) + nn, d);
      std::fill(d + nn, d + kNR, 0.0f);
    }
    return;
  }
  if (j.kn) {  // W [K, N]: row k of the panel is a slice of row k of W
    for (int64_t k = 0; k < kc; ++k) {
      const uint8_t* row = j.w + size_t(k0 + k) * j.row_bytes;
      float* d = dst + k * kNR;
      if (t == DType::F32) std::memcpy(d, row + 4 * n0, size_t(nn) * 4);
      else
        for (int64_t r = 0; r < nn; ++r) d[r] = detail::load_element(t, row, n0 + r);
      std::fill(d + nn, d + kNR, 0.0f);
    }
    return;
  }
  const uint8_t* rows[kNR];
  for (int64_t r = 0; r < kNR; ++r) rows[r] = j.w + size_t(n0 + std::min(r, nn - 1)) * j.row_bytes;
  if (j.taps > 1) {  // packed column q = tap * C + c reads stored column c * taps + tap
    const int64_t C = j.k / j.taps;
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t q = k0 + k, src = (q % C) * j.taps + q / C;
      float* d = dst + k * kNR;
      for (int64_t r = 0; r < nn; ++r) d[r] = detail::load_element(t, rows[r], src);
      std::fill(d + nn, d + kNR, 0.0f);
    }
    return;
  }
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if (nn == kNR) {
    if (dtype_is_quantized(t)) PackFullPanelQuant512(t, rows, k0, kc, dst);
    else PackFullPanel512(t, rows, k0, kc, dst);
    return;
  }
#endif
  if (dtype_is_quantized(t)) {  // k0, kc are multiples of 32: one block of every row at a time
    HWY_ALIGN float tmp[kNR * kQuantBlock];
    const size_t bb = dtype_size(t);
    for (int64_t k = 0; k < kc; k += kQuantBlock) {
      const size_t off = size_t((k0 + k) / kQuantBlock) * bb;
      for (int64_t r = 0; r < nn; ++r) {
        if (t == DType::Q8_0) quant::dequantize_row_q8_0(rows[r] + off, kQuantBlock, tmp + r * kQuantBlock);
        else quant::dequantize_row_q4_0(rows[r] + off, kQuantBlock, tmp + r * kQuantBlock);
      }
      for (int64_t kk = 0; kk < kQuantBlock; ++kk) {
        float* HWY_RESTRICT d = dst + (k + kk) * kNR;
        for (int64_t r = 0; r < nn; ++r) d[r] = tmp[r * kQuantBlock + kk];
        std::fill(d + nn, d + kNR, 0.0f);
      }
    }
    return;
  }
  // Transpose in blocks of KB columns: NR rows x KB converted into tmp (vector loads along each row),
  // then written out column by column.
  constexpr int64_t KB = 16;
  const hn::CappedTag<float, KB> dc;
  constexpr int64_t CL = int64_t(hn::MaxLanes(dc));
  HWY_ALIGN float tmp[kNR * KB];
  std::fill(tmp, tmp + kNR * KB, 0.0f);
  int64_t k = 0;
  for (; k + KB <= kc; k += KB) {
    const int64_t kk0 = k0 + k;
    for (int64_t r = 0; r < nn; ++r) {
      for (int64_t i = 0; i < KB; i += CL) {
        hn::Vec<decltype(dc)> v;
        if (t == DType::F32) {
          v = hn::LoadU(dc, reinterpret_cast<const float*>(rows[r]) + kk0 + i);
        } else if (t == DType::BF16) {
          const hn::Rebind<hwy::bfloat16_t, decltype(dc)> dbf;
          v = hn::PromoteTo(dc, hn::LoadU(dbf, reinterpret_cast<const hwy::bfloat16_t*>(rows[r]) + kk0 + i));
        } else {
          const hn::Rebind<hwy::float16_t, decltype(dc)> dh;
          v = hn::PromoteTo(dc, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(rows[r]) + kk0 + i));
        }
        hn::Store(v, dc, tmp + r * KB + i);
      }
    }
    for (int64_t kk = 0; kk < KB; ++kk) {
      float* HWY_RESTRICT d = dst + (k + kk) * kNR;
      for (int64_t r = 0; r < kNR; ++r) d[r] = tmp[r * KB + kk];
    }
  }
  for (; k < kc; ++k) {
    float* d = dst + k * kNR;
    for (int64_t r = 0; r < nn; ++r) d[r] = detail::load_element(t, rows[r], k0 + k);
    std::fill(d + nn, d + kNR, 0.0f);
  }
}

// ---------------------------------------------------------------- micro-kernel

// C[MR][NR] = (load_c ? C : 0) + (bias ? bias : 0) + A[MR][kc] B[kc][NR]; A rows lda apart, B a
// packed panel (aligned), C rows ldc apart (any alignment).
HWY_NOINLINE void MicroKernel(const float* HWY_RESTRICT a, int64_t lda, const float* HWY_RESTRICT b, int64_t kc,
                              float* HWY_RESTRICT c, int64_t ldc, bool load_c, const float* HWY_RESTRICT bias) {
  const DF df;
  using V = hn::Vec<DF>;
  V acc[kMR][kNV];
  for (int v = 0; v < kNV; ++v) {
    const V bv = bias ? hn::LoadU(df, bias + v * kLanes) : hn::Zero(df);
    for (int i = 0; i < kMR; ++i) acc[i][v] = load_c ? hn::Add(hn::LoadU(df, c + i * ldc + v * kLanes), bv) : bv;
  }
  const float* HWY_RESTRICT ar[kMR];
  for (int i = 0; i < kMR; ++i) ar[i] = a + i * lda;
  for (int64_t k = 0; k < kc; ++k) {
    V w[kNV];
    for (int v = 0; v < kNV; ++v) w[v] = hn::Load(df, b + k * kNR + v * kLanes);
    for (int i = 0; i < kMR; ++i) {
      const V x = hn::Set(df, ar[i][k]);
      for (int v = 0; v < kNV; ++v) acc[i][v] = hn::MulAdd(x, w[v], acc[i][v]);
    }
  }
  for (int i = 0; i < kMR; ++i)
    for (int v = 0; v < kNV; ++v) hn::StoreU(acc[i][v], df, c + i * ldc + v * kLanes);
}

// ---------------------------------------------------------------- driver

// One task: rows [m0, m1) x panels [p0, p1). For each block of KC columns of A, the task packs its
// block of W (KC x NC floats, in this thread's L2) and runs every MR rows of A (in L1) past it.
void RunTask(const GemmJob& j, const float* bias_padded, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t K = j.k;
  float* packed = detail::gemm_scratch(0, size_t((p1 - p0) * std::min(kKC, K) * kNR));
  HWY_ALIGN float panel_a[kMR * kKC];
  HWY_ALIGN float edge_c[kMR * kNR];
  // K blocks of equal size (at most KC): 640 = 320 + 320 rather than 512 + 128; whole blocks of 32
  // for block weights.
  const int64_t kb = (K + kKC - 1) / kKC;
  int64_t kc_max = (K + kb - 1) / kb;
  if (dtype_is_quantized(j.dtype) && !j.kn) kc_max = (kc_max + kQuantBlock - 1) / kQuantBlock * kQuantBlock;
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, K - k0);
    for (int64_t p = p0; p < p1; ++p) PackPanel(j, p, k0, kc, packed + (p - p0) * kc * kNR);
    const bool load_c = j.accumulate || k0 > 0;
    const float* bias = k0 == 0 ? bias_padded : nullptr;
    for (int64_t i0 = m0; i0 < m1; i0 += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, m1 - i0);
      const float* ap = j.a ? j.a + i0 * j.lda + k0 : nullptr;
      int64_t lda = j.lda;
      if (j.source || mr < kMR) {  // rows from the callback, or the last rows with zero rows below
        if (j.source) (*j.source)(i0, mr, k0, kc, panel_a);
        else
          for (int64_t i = 0; i < mr; ++i) std::memcpy(panel_a + i * kc, ap + i * j.lda, size_t(kc) * 4);
        std::fill(panel_a + mr * kc, panel_a + kMR * kc, 0.0f);
        ap = panel_a;
        lda = kc;
      }
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * kNR, nr = std::min<int64_t>(kNR, j.n - n0);
        const float* bp = packed + (p - p0) * kc * kNR;
        float* cp = j.c + i0 * j.ldc + n0;
        const float* bb = bias ? bias + n0 : nullptr;
        if (mr == kMR && nr == kNR) {
          MicroKernel(ap, lda, bp, kc, cp, j.ldc, load_c, bb);
        } else {  // an edge tile goes through a full-size copy
          if (load_c)
            for (int64_t i = 0; i < mr; ++i) std::memcpy(edge_c + i * kNR, cp + i * j.ldc, size_t(nr) * 4);
          MicroKernel(ap, lda, bp, kc, edge_c, kNR, load_c, bb);
          for (int64_t i = 0; i < mr; ++i) std::memcpy(cp + i * j.ldc, edge_c + i * kNR, size_t(nr) * 4);
        }
      }
    }
  }
}

void GemmRun(const GemmJob& j, ThreadPool& pool) {
  const int64_t panels = (j.n + kNR - 1) / kNR;
  float* bias_padded = nullptr;
  if (j.bias) {
    bias_padded = detail::gemm_scratch(2, size_t(panels * kNR));
    std::copy(j.bias, j.bias + j.n, bias_padded);
    std::fill(bias_padded + j.n, bias_padded + panels * kNR, 0.0f);
  }
  // Tasks: N blocks of nc panels (at most kBlockBytes of packed W per K block) x M blocks of mc rows.
  // Each task packs its W blocks itself, so splitting M costs packing again; splitting N does not,
  // but the threads must get equal shares. Chosen by a cost model in units of one multiply-add:
  // per task nc * NR * K * (rows + kPackCost), tasks in rounds of one per thread; among plans within
  // 3% of the best, the one with the most tasks (smaller tasks balance better on a busy machine).
  constexpr int64_t kPackCost = 30;  // packing one element of W ~ 30 multiply-adds (0.4 ns vs ~150 GFLOP/s)
  const int64_t max_nc = std::clamp<int64_t>(kBlockBytes / (kKC * kNR * 4), 1, panels);
  const int64_t threads = pool.size();
  int64_t nc_panels = max_nc, mc = j.m;
  {
    struct Choice {
      double cost;
      int64_t tasks, nc, mc;
    };
    std::vector<Choice> choices;
    for (int64_t nc = std::max<int64_t>(1, max_nc / 2); nc <= max_nc; ++nc) {
      const int64_t nb = (panels + nc - 1) / nc;
      const int64_t m_units = (j.m + kMR - 1) / kMR;
      for (int64_t mb = 1; mb <= std::min<int64_t>(16, m_units); ++mb) {
        const int64_t rows = (m_units + mb - 1) / mb * kMR, blocks = (j.m + rows - 1) / rows;
        if (blocks != mb) continue;
        const int64_t tasks = nb * mb, rounds = (tasks + threads - 1) / threads;
        choices.push_back({double(rounds) * double(nc) * double(rows + kPackCost), tasks, nc, rows});
      }
    }
    double best = 1e300;
    for (const Choice& c : choices) best = std::min(best, c.cost);
    int64_t most = 0;
    for (const Choice& c : choices)
      if (c.cost <= best * 1.03 && c.tasks > most) {
        most = c.tasks;
        nc_panels = c.nc;
        mc = c.mc;
      }
  }
  const int64_t n_blocks = (panels + nc_panels - 1) / nc_panels;
  const int64_t m_tasks = (j.m + mc - 1) / mc;
  pool.parallel_for(m_tasks * n_blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t nb = t / m_tasks, mb = t % m_tasks;
      const int64_t m0 = mb * mc, m1 = std::min(j.m, m0 + mc);
      const int64_t p0 = nb * nc_panels, p1 = std::min(panels, p0 + nc_panels);
      RunTask(j, bias_padded, m0, m1, p0, p1);
    }
  });
}

// ---------------------------------------------------------------- attention with shared K / V

// The C tile at c (rows, cols valid; ldc apart) = (load_c ? C : 0) + A B, through a full-size copy
// when the tile is cut by the edge of C.
HWY_INLINE void TileOrEdge(const float* a, int64_t lda, const float* b, int64_t kc, float* c, int64_t ldc, int64_t rows,
                           int64_t cols, bool load_c, float* edge_c) {
  if (rows == kMR && cols == kNR) {
    MicroKernel(a, lda, b, kc, c, ldc, load_c, nullptr);
    return;
  }
  if (load_c)
    for (int64_t i = 0; i < rows; ++i) std::memcpy(edge_c + i * kNR, c + i * ldc, size_t(cols) * 4);
  MicroKernel(a, lda, b, kc, edge_c, kNR, load_c, nullptr);
  for (int64_t i = 0; i < rows; ++i) std::memcpy(c + i * ldc, edge_c + i * kNR, size_t(cols) * 4);
}

// Rows [r0, r1) (at most kAttentionRows): scores S = q K^T into this thread's buffer, softmax of each
// row, out = S V; K and V packed as gemm panels (pk: [panels of m][dk][NR], pv: [panels of dv][m][NR]).
constexpr int64_t kAttentionRows = 4 * kMR;

void AttentionTask(const detail::AttentionJob& j, const float* pk, const float* pv, int64_t r0, int64_t r1) {
  const int64_t mp = (j.m + kNR - 1) / kNR * kNR;  // score columns, padded to whole panels
  float* S = detail::gemm_scratch(1, size_t(kAttentionRows * mp));
  HWY_ALIGN float panel_a[kMR * kKC];
  HWY_ALIGN float edge_c[kMR * kNR];
  const int64_t rows = r1 - r0;
  for (int64_t i0 = 0; i0 < rows; i0 += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, rows - i0);
    for (int64_t k0 = 0; k0 < j.dk; k0 += kKC) {
      const int64_t kc = std::min(kKC, j.dk - k0);
      const float* ap = j.q + (r0 + i0) * j.q_stride + k0;
      int64_t lda = j.q_stride;
      if (mr < kMR) {
        for (int64_t i = 0; i < kMR; ++i) {
          if (i < mr) std::memcpy(panel_a + i * kc, ap + i * j.q_stride, size_t(kc) * 4);
          else std::fill(panel_a + i * kc, panel_a + (i + 1) * kc, 0.0f);
        }
        ap = panel_a;
        lda = kc;
      }
      for (int64_t p = 0; p < mp / kNR; ++p)
        MicroKernel(ap, lda, pk + p * j.dk * kNR + k0 * kNR, kc, S + i0 * mp + p * kNR, mp, k0 > 0, nullptr);
    }
  }
  for (int64_t i = 0; i < rows; ++i) rows_simd::SoftmaxRow(S + i * mp, j.m, j.scale);
  for (int64_t i0 = 0; i0 < rows; i0 += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, rows - i0);
    for (int64_t p = 0; p * kNR < j.dv; ++p) {
      const int64_t nr = std::min<int64_t>(kNR, j.dv - p * kNR);
      float* cp = j.out + (r0 + i0) * j.out_stride + p * kNR;
      for (int64_t k0 = 0; k0 < j.m; k0 += kKC)
        TileOrEdge(S + i0 * mp + k0, mp, pv + p * j.m * kNR + k0 * kNR, std::min(kKC, j.m - k0), cp, j.out_stride, mr,
                   nr, k0 > 0, edge_c);
    }
  }
}

void AttentionRun(const detail::AttentionJob& a, ThreadPool& pool) {
  GemmJob jk;  // K [m, dk] as gemm weights: N = m keys, K = dk
  jk.dtype = DType::F32;
  jk.w = reinterpret_cast<const uint8_t*>(a.k);
  jk.row_bytes = size_t(a.dk) * 4;
  jk.n = a.m;
  jk.k = a.dk;
  GemmJob jv;  // V [m, dv] stored [K, N]: N = dv, K = m
  jv.dtype = DType::F32;
  jv.w = reinterpret_cast<const uint8_t*>(a.v);
  jv.row_bytes = size_t(a.dv) * 4;
  jv.kn = true;
  jv.n = a.dv;
  jv.k = a.m;
  const int64_t pk_panels = (a.m + kNR - 1) / kNR, pv_panels = (a.dv + kNR - 1) / kNR;
  float* pk = detail::gemm_scratch(3, size_t(pk_panels * a.dk * kNR));
  float* pv = detail::gemm_scratch(4, size_t(pv_panels * a.m * kNR));
  pool.parallel_for(pk_panels + pv_panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (p < pk_panels) PackPanel(jk, p, 0, a.dk, pk + p * a.dk * kNR);
      else PackPanel(jv, p - pk_panels, 0, a.m, pv + (p - pk_panels) * a.m * kNR);
    }
  });
  const int64_t blocks = (a.rows + kAttentionRows - 1) / kAttentionRows;
  pool.parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      AttentionTask(a, pk, pv, b * kAttentionRows, std::min(a.rows, (b + 1) * kAttentionRows));
  });
}

}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace g3n::kernels {

HWY_EXPORT(GemmRun);
HWY_EXPORT(AttentionRun);

namespace {

bool float_weights(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// N and K of the product, after checking the weights against the options.
void check(const TensorView& w, const GemmOptions& o, int64_t& n, int64_t& k) {
  G3N_CHECK(w.shape.size() == 2 && w.data != nullptr, "gemm: expected a 2-D weight tensor, got ", shape_str(w.shape));
  const bool quantized = dtype_is_quantized(w.dtype);
  G3N_CHECK(float_weights(w.dtype) || quantized, "gemm: weights of type ", dtype_name(w.dtype), " are not supported");
  G3N_CHECK(!quantized || o.taps == 1, "gemm: ", dtype_name(w.dtype), " weights with taps");
  n = o.weights_kn ? w.dim(1) : w.dim(0);
  k = o.weights_kn ? w.dim(0) : w.dim(1);
  if (o.columns > 0) {
    G3N_CHECK(!o.weights_kn && o.taps == 1 && o.columns <= k, "gemm: a prefix of ", o.columns, " columns of ",
              shape_str(w.shape), " weights");
    k = o.columns;
  }
  G3N_CHECK(!quantized || o.weights_kn || k % kQuantBlock == 0, "gemm: ", k, " columns of ", dtype_name(w.dtype),
            " weights are not whole blocks of ", kQuantBlock);
  G3N_CHECK(o.taps >= 1 && k % o.taps == 0 && (o.taps == 1 || !o.weights_kn), "gemm: ", o.taps,
            " taps do not divide the ", k, " columns of the weights");
}

}  // namespace

void gemm(const TensorView& w, const float* a, int64_t m, float* c, ThreadPool& pool, const GemmOptions& o) {
  int64_t n = 0, k = 0;
  check(w, o, n, k);
  if (m <= 0 || n <= 0) return;
  const int64_t ldc = o.c_stride ? o.c_stride : n;
  if (k == 0) {  // an empty sum: C = (C or 0) + bias
    for (int64_t i = 0; i < m; ++i)
      for (int64_t jj = 0; jj < n; ++jj) {
        float& y = c[i * ldc + jj];
        y = (o.accumulate ? y : 0.0f) + (o.bias ? o.bias[jj] : 0.0f);
      }
    return;
  }
  detail::GemmJob j;
  j.dtype = w.dtype;
  j.w = static_cast<const uint8_t*>(w.data);
  j.row_bytes = w.row_bytes();
  j.kn = o.weights_kn;
  j.taps = o.taps;
  j.m = m;
  j.n = n;
  j.k = k;
  j.a = a;
  j.lda = o.a_stride ? o.a_stride : k;
  j.source = o.a_source;
  G3N_CHECK(a != nullptr || o.a_source != nullptr, "gemm: no activations");
  j.c = c;
  j.ldc = ldc;
  j.bias = o.bias;
  j.accumulate = o.accumulate;
  HWY_DYNAMIC_DISPATCH(GemmRun)(j, pool);
}

void gemm_reference(const TensorView& w, const float* a, int64_t m, float* c, const GemmOptions& o) {
  int64_t n = 0, k = 0;
  check(w, o, n, k);
  const int64_t lda = o.a_stride ? o.a_stride : k, ldc = o.c_stride ? o.c_stride : n;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const size_t rb = w.row_bytes();
  const int64_t C = k / o.taps;
  std::vector<float> arow(size_t(std::max<int64_t>(k, 1)));
  for (int64_t i = 0; i < m; ++i) {
    const float* ar = a ? a + i * lda : nullptr;
    if (o.a_source) {
      (*o.a_source)(i, 1, 0, k, arow.data());
      ar = arow.data();
    }
    for (int64_t jj = 0; jj < n; ++jj) {
      double s = o.bias ? double(o.bias[jj]) : 0.0;
      for (int64_t q = 0; q < k; ++q) {
        // Column q of the product (tap-major when taps > 1) is stored column (q % C) * taps + q / C.
        const int64_t src = (q % C) * o.taps + q / C;
        const float wv = o.weights_kn ? detail::load_element(w.dtype, base + size_t(q) * rb, jj)
                                      : detail::load_element(w.dtype, base + size_t(jj) * rb, src);
        s += double(wv) * double(ar[q]);
      }
      float& y = c[i * ldc + jj];
      y = float(s + (o.accumulate ? double(y) : 0.0));
    }
  }
}

void attention_shared_kv(const float* q, int64_t rows, int64_t q_stride, const float* k, const float* v, int64_t m,
                         int64_t dk, int64_t dv, float scale, float* out, int64_t out_stride, ThreadPool& pool) {
  G3N_CHECK(rows >= 0 && m > 0 && dk > 0 && dv > 0, "attention: ", rows, " queries, ", m, " keys of ", dk, " / ", dv,
            " values");
  if (rows == 0) return;
  detail::AttentionJob j;
  j.q = q;
  j.rows = rows;
  j.q_stride = q_stride ? q_stride : dk;
  j.k = k;
  j.v = v;
  j.m = m;
  j.dk = dk;
  j.dv = dv;
  j.scale = scale;
  j.out = out;
  j.out_stride = out_stride ? out_stride : dv;
  HWY_DYNAMIC_DISPATCH(AttentionRun)(j, pool);
}

void attention_shared_kv_reference(const float* q, int64_t rows, int64_t q_stride, const float* k, const float* v,
                                   int64_t m, int64_t dk, int64_t dv, float scale, float* out, int64_t out_stride) {
  q_stride = q_stride ? q_stride : dk;
  out_stride = out_stride ? out_stride : dv;
  std::vector<double> p(static_cast<size_t>(m));
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < m; ++j) {
      double s = 0;
      for (int64_t i = 0; i < dk; ++i) s += double(q[r * q_stride + i]) * double(k[j * dk + i]);
      p[size_t(j)] = s * double(scale);
      mx = std::max(mx, p[size_t(j)]);
    }
    for (int64_t j = 0; j < m; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
    for (int64_t c = 0; c < dv; ++c) {
      double o = 0;
      for (int64_t j = 0; j < m; ++j) o += p[size_t(j)] / sum * double(v[j * dv + c]);
      out[r * out_stride + c] = float(o);
    }
  }
}

bool gemm_preferred(const TensorView& w, int64_t rows) {
  return w.shape.size() == 2 && (float_weights(w.dtype) || dtype_is_quantized(w.dtype)) && rows >= kGemmMinRows;
}

void linear(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, int64_t x_stride,
            int64_t y_stride) {
  linear(w, x, n_tokens, y, pool, strided(x_stride, y_stride));
}

void linear(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const MatmulOptions& options) {
  if (!gemm_preferred(w, n_tokens)) {
    matmul(w, x, n_tokens, y, pool, options);
    return;
  }
  if (options.quant_activations == QuantActivations::kInt8 && gemm_int8_available(w)) {
    // Quantised weights on a VNNI CPU: integer block products, as decode computes them.
    gemm_int8(w, x, n_tokens, y, pool, options);
    return;
  }
  GemmOptions o;
  o.a_stride = options.x_stride;
  o.c_stride = options.y_stride;
  o.columns = options.columns;
  gemm(w, x, n_tokens, y, pool, o);
}

}  // namespace g3n::kernels
#endif  // HWY_ONCE
