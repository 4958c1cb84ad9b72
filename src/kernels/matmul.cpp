// Matrix products of stored weights with float32 activations: one Highway source compiled once per
// SIMD target (foreach_target re-includes this file), dispatched at run time, and the scalar
// oracles the tests compare them with (at the end, in the HWY_ONCE part).
//
// Shape of the work (y[t][o] = sum_i w[o][i] x[t][i]):
//  - threads split the output rows (ThreadPool::parallel_for over tiles of 4 rows);
//  - a register tile is R rows x T tokens of accumulators (R = 4; T = 4 with 32 vector registers,
//    2 with 16), so every weight vector loaded (and converted: BF16 by a shift, F16 by vcvtph2ps,
//    Q8_0/Q4_0 unpacked) serves T tokens, and every activation vector R rows;
//  - prefill (n_tokens > 1) walks the rows in chunks that stay in L2 while all token tiles pass;
//  - block types (Q8_0 / Q4_0) by default quantise each token's activations to int8 per block of 32
//    (float32 scale) and multiply blocks in integers: int16 madd (pmaddwd / smlal) everywhere, and
//    on AVX-512 CPUs with VNNI vpdpbusd on two blocks per 512-bit instruction; each block's int32
//    sum is scaled by d_w * d_x into float accumulators. QuantActivations::kFloat instead
//    dequantises each weight block to float and uses FMA (see matmul.h for the accuracy of both).
//    Measured on a Sapphire-Rapids-class VM (bench_kernels, one thread, 8192x2048): int8 decode
//    0.76 ms vs 1.23 ms float for Q8_0 (weights in cache), prefill 100 vs 55 GFLOP/s.
#ifndef G3N_KERNELS_MATMUL_ONCE
#define G3N_KERNELS_MATMUL_ONCE

#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "kernels/elements.h"
#include "kernels/ggml_cpu.h"
#include "quant/quant.h"

// Scalable vectors (SVE, RVV) cannot be kept in arrays, which the register tiles use; Arm CPUs
// take the NEON path. AVX3_DL (Ice Lake) is left out on purpose: Highway 1.0.3 compiles it with
// GCC's "avxvnni" flag, and GCC then emits VEX-encoded vpdpbusd (AVX-VNNI), which Ice Lake and
// Cascade Lake, having only the EVEX AVX512-VNNI form, cannot execute. VNNI is used from the AVX3
// target instead, through explicit EVEX intrinsics gated on CPUID (VnniKernel below).
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

namespace g3n::kernels::detail {

struct MatmulJob {
  DType dtype = DType::F32;
  const uint8_t* w = nullptr;  // [out] rows of row_bytes, of which the first `in` elements are used
  size_t row_bytes = 0;
  int64_t in = 0, out = 0, n_tokens = 0;
  // Software prefetches along a row go no further than this byte offset: a column prefix (rows longer
  // than `in`) must not pull in the unused rest of each row. Dense rows: no limit.
  int64_t prefetch_limit = INT64_MAX;
  const float* x = nullptr;  // [n_tokens] rows of x_stride floats
  int64_t x_stride = 0;
  // int8 activations of block types: xq [n_tokens][in], xd and xsum [n_tokens][in / 32].
  const int8_t* xq = nullptr;
  const float* xd = nullptr;
  const int32_t* xsum = nullptr;
  float* y = nullptr;  // [n_tokens] rows of y_stride floats
  int64_t y_stride = 0;
  int64_t row_chunk = 0;    // rows per cache block when n_tokens > 1
  int64_t token_block = 1;  // tokens per cache block (a multiple of every token tile width)
  bool int8_act = false;
  // AVX-512 VNNI path: activations re-laid per token and pair of blocks (p = block / 2, vpairs
  // pairs per token): vx 64 bytes (Q8_0: biased by +128), vdx 16 floats (d of each block x 8),
  // vstart 16 int32 (Q4_0: -8 * sum(q) of each block in lanes 0 and 8).
  bool vnni = false;
  int64_t vpairs = 0;
  const uint8_t* vx = nullptr;
  const float* vdx = nullptr;
  const int32_t* vstart = nullptr;
};

struct SparseJob {
  DType dtype = DType::F32;
  const uint8_t* w = nullptr;  // transposed weights [in] rows of row_bytes
  size_t row_bytes = 0;
  const int32_t* rows = nullptr;
  const float* values = nullptr;
  int64_t n = 0;
  float* y = nullptr;
};

// Fills MatmulJob::vx / vdx / vstart from xq / xd / xsum; defined at the end.
void prepare_vnni_activations(const MatmulJob& j, uint8_t* vx, float* vdx, int32_t* vstart);

// Portable versions for the HWY_SCALAR target (CPUs without SSSE3); defined at the end.
void matmul_rows_portable(const MatmulJob& j, int64_t r0, int64_t r1);
float dot_portable(const float* a, const float* b, int64_t n);
void sum_rows_portable(const SparseJob& j, int64_t o0, int64_t o1);

}  // namespace g3n::kernels::detail

#endif  // G3N_KERNELS_MATMUL_ONCE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using detail::MatmulJob;
using detail::SparseJob;

int64_t TargetId() { return HWY_TARGET; }

#if HWY_TARGET == HWY_SCALAR

void MatmulRows(const MatmulJob& j, int64_t r0, int64_t r1) { detail::matmul_rows_portable(j, r0, r1); }
void QuantizeActivations(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums) {
  quant::quantize_row_q8_act(x, n, q, d, sums);
}
float Dot(const float* a, const float* b, int64_t n) { return detail::dot_portable(a, b, n); }
void SumRows(const SparseJob& j, int64_t o0, int64_t o1) { detail::sum_rows_portable(j, o0, o1); }

#else  // SIMD targets

// Rows per register tile, and tokens per tile: enough accumulators to cover FMA latency while the
// weight / activation vectors of a step still fit the register file (16 on SSE / AVX2, 32 on
// AVX-512 and AArch64).
constexpr int kTileRows = 4;
#if HWY_TARGET <= HWY_AVX3 || HWY_ARCH_ARM_A64
constexpr int kTileTokens = 4;
#else
constexpr int kTileTokens = 2;
#endif

// Software prefetch distance along each weight row: with 4 rows streamed at once the hardware
// prefetchers alone left decode ~25% below stream bandwidth.
constexpr int64_t kPrefetchBytes = 512;

HWY_INLINE float HalfToFloat(const uint8_t* block) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  uint16_t h;
  std::memcpy(&h, block, 2);
  return _cvtsh_ss(h);  // F16C
#else
  return detail::block_scale(block);
#endif
}

template <class D>
HWY_INLINE float ReduceToScalar(D d, hn::Vec<D> v) {
  return hn::GetLane(hn::SumOfLanes(d, v));
}

// ---------------------------------------------------------------- float-family weights

// N weights of a row starting at element i, as float32. BF16 widens by a 16-bit shift.
template <DType kT, class DF>
HWY_INLINE hn::Vec<DF> LoadWeights(DF df, const uint8_t* row, int64_t i) {
  if constexpr (kT == DType::F32) {
    return hn::LoadU(df, reinterpret_cast<const float*>(row) + i);
  } else if constexpr (kT == DType::BF16) {
    const hn::Rebind<hwy::bfloat16_t, DF> dbf;
    return hn::PromoteTo(df, hn::LoadU(dbf, reinterpret_cast<const hwy::bfloat16_t*>(row) + i));
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  }
}

template <DType kT>
struct FloatKernel {
  static constexpr int kRows = kTileRows;
  static constexpr int kTokens = kTileTokens;

  template <int R, int T>
  static HWY_INLINE void Tile(const MatmulJob& j, int64_t r, int64_t t0) {
    const hn::ScalableTag<float> df;
    using V = hn::Vec<decltype(df)>;
    const int64_t N = int64_t(hn::Lanes(df));
    const uint8_t* wr[R];
    const float* xt[T];
    for (int rr = 0; rr < R; ++rr) wr[rr] = j.w + size_t(r + rr) * j.row_bytes;
    for (int tt = 0; tt < T; ++tt) xt[tt] = j.x + (t0 + tt) * j.x_stride;
    V acc[R][T];
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) acc[rr][tt] = hn::Zero(df);
    int64_t i = 0;
    for (; i + N <= j.in; i += N) {
      V xv[T];
      for (int tt = 0; tt < T; ++tt) xv[tt] = hn::LoadU(df, xt[tt] + i);
      for (int rr = 0; rr < R; ++rr) {
        hwy::Prefetch(wr[rr] + std::min(i * int64_t(dtype_size(kT)) + kPrefetchBytes, j.prefetch_limit));
        const V wv = LoadWeights<kT>(df, wr[rr], i);
        for (int tt = 0; tt < T; ++tt) acc[rr][tt] = hn::MulAdd(wv, xv[tt], acc[rr][tt]);
      }
    }
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) {
        float s = ReduceToScalar(df, acc[rr][tt]);
        for (int64_t k = i; k < j.in; ++k) s += detail::load_element(kT, wr[rr], k) * xt[tt][k];
        j.y[(t0 + tt) * j.y_stride + r + rr] = s;
      }
  }
};

// ---------------------------------------------------------------- block weights, int8 activations

// The 32 integer weights of a block (q, or nibble - 8) as int16 vectors of the madd width.
template <DType kT, class D16>
HWY_INLINE void ExpandBlockI16(D16 d16, const uint8_t* block, hn::Vec<D16>* wv) {
  constexpr size_t N16 = hn::MaxLanes(d16);
  const uint8_t* qs = block + 2;
  if constexpr (kT == DType::Q8_0) {
    const hn::Rebind<int8_t, D16> d8;
    for (size_t k = 0; k < kQuantBlock / N16; ++k)
      wv[k] = hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const int8_t*>(qs) + k * N16));
  } else if constexpr (N16 == 32) {  // one vector: low nibbles are elements 0..15, high 16..31
    const hn::Half<D16> dh;
    const hn::RebindToUnsigned<decltype(dh)> du;
    const hn::Rebind<uint8_t, decltype(du)> du8;
    const auto v = hn::PromoteTo(du, hn::LoadU(du8, qs));
    const auto lo = hn::BitCast(dh, hn::And(v, hn::Set(du, 15)));
    const auto hi = hn::BitCast(dh, hn::ShiftRight<4>(v));
    wv[0] = hn::Sub(hn::Combine(d16, hi, lo), hn::Set(d16, 8));
  } else {
    const hn::RebindToUnsigned<D16> du;
    const hn::Rebind<uint8_t, D16> du8;
    constexpr size_t P = 16 / N16;
    for (size_t p = 0; p < P; ++p) {
      const auto v = hn::PromoteTo(du, hn::LoadU(du8, qs + p * N16));
      wv[p] = hn::Sub(hn::BitCast(d16, hn::And(v, hn::Set(du, 15))), hn::Set(d16, 8));
      wv[P + p] = hn::Sub(hn::BitCast(d16, hn::ShiftRight<4>(v)), hn::Set(d16, 8));
    }
  }
}

template <DType kT>
struct QuantInt8Kernel {
  static constexpr int kRows = kTileRows;
  static constexpr int kTokens = kTileTokens;

  template <int R, int T>
  static HWY_INLINE void Tile(const MatmulJob& j, int64_t r, int64_t t0) {
    const hn::CappedTag<int16_t, kQuantBlock> d16;
    const hn::Repartition<int32_t, decltype(d16)> d32;
    const hn::Repartition<float, decltype(d16)> df;
    const hn::Rebind<int8_t, decltype(d16)> d8;
    using VI16 = hn::Vec<decltype(d16)>;
    using VI32 = hn::Vec<decltype(d32)>;
    using VF = hn::Vec<decltype(df)>;
    constexpr size_t N16 = hn::MaxLanes(d16);
    constexpr size_t K = kQuantBlock / N16;
    const int64_t nb = j.in / kQuantBlock;
    const size_t bb = dtype_size(kT);
    const uint8_t* wr[R];
    for (int rr = 0; rr < R; ++rr) wr[rr] = j.w + size_t(r + rr) * j.row_bytes;
    VF acc[R][T];
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) acc[rr][tt] = hn::Zero(df);
    for (int64_t b = 0; b < nb; ++b) {
      VI16 xv[T][K];
      VF dx[T];
      for (int tt = 0; tt < T; ++tt) {
        const int8_t* xb = j.xq + (t0 + tt) * j.in + b * kQuantBlock;
        for (size_t k = 0; k < K; ++k) xv[tt][k] = hn::PromoteTo(d16, hn::LoadU(d8, xb + k * N16));
        dx[tt] = hn::Set(df, j.xd[(t0 + tt) * nb + b]);
      }
      for (int rr = 0; rr < R; ++rr) {
        const uint8_t* blk = wr[rr] + size_t(b) * bb;
        hwy::Prefetch(wr[rr] + std::min(b * int64_t(bb) + kPrefetchBytes, j.prefetch_limit));
        VI16 wv[K];
        ExpandBlockI16<kT>(d16, blk, wv);
        const VF dw = hn::Set(df, HalfToFloat(blk));
        for (int tt = 0; tt < T; ++tt) {
          VI32 s0 = hn::Zero(d32), s1 = hn::Zero(d32);
          for (size_t k = 0; k < K; ++k) s0 = hn::ReorderWidenMulAccumulate(d32, wv[k], xv[tt][k], s0, s1);
          const VF f = hn::ConvertTo(df, hn::Add(s0, s1));  // exact: |block sum| <= 32 * 127 * 127
          acc[rr][tt] = hn::MulAdd(hn::Mul(f, dx[tt]), dw, acc[rr][tt]);
        }
      }
    }
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) j.y[(t0 + tt) * j.y_stride + r + rr] = ReduceToScalar(df, acc[rr][tt]);
  }
};

// ---------------------------------------------------------------- block weights, float activations

// Integer weights k * N .. k * N + N - 1 of a block, as float (not yet scaled).
template <DType kT, class DF>
HWY_INLINE void ExpandBlockF32(DF df, const uint8_t* block, hn::Vec<DF>* wv) {
  constexpr size_t N = hn::MaxLanes(df);
  const hn::RebindToSigned<DF> di;
  const uint8_t* qs = block + 2;
  if constexpr (kT == DType::Q8_0) {
    const hn::Rebind<int8_t, DF> d8;
    for (size_t k = 0; k < kQuantBlock / N; ++k)
      wv[k] = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(qs) + k * N)));
  } else {
    const hn::RebindToUnsigned<DF> du;
    const hn::Rebind<uint8_t, DF> du8;
    constexpr size_t P = 16 / N;
    for (size_t p = 0; p < P; ++p) {
      const auto v = hn::PromoteTo(du, hn::LoadU(du8, qs + p * N));
      wv[p] = hn::ConvertTo(df, hn::Sub(hn::BitCast(di, hn::And(v, hn::Set(du, 15))), hn::Set(di, 8)));
      wv[P + p] = hn::ConvertTo(df, hn::Sub(hn::BitCast(di, hn::ShiftRight<4>(v)), hn::Set(di, 8)));
    }
  }
}

template <DType kT>
struct QuantFloatKernel {
  static constexpr int kRows = kTileRows;
  static constexpr int kTokens = kTileTokens == 4 ? 3 : 2;  // K float vectors of x per token

  template <int R, int T>
  static HWY_INLINE void Tile(const MatmulJob& j, int64_t r, int64_t t0) {
    const hn::CappedTag<float, 16> df;
    using VF = hn::Vec<decltype(df)>;
    constexpr size_t N = hn::MaxLanes(df);
    constexpr size_t K = kQuantBlock / N;
    const int64_t nb = j.in / kQuantBlock;
    const size_t bb = dtype_size(kT);
    const uint8_t* wr[R];
    const float* xt[T];
    for (int rr = 0; rr < R; ++rr) wr[rr] = j.w + size_t(r + rr) * j.row_bytes;
    for (int tt = 0; tt < T; ++tt) xt[tt] = j.x + (t0 + tt) * j.x_stride;
    VF acc[R][T];
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) acc[rr][tt] = hn::Zero(df);
    for (int64_t b = 0; b < nb; ++b) {
      VF xv[T][K];
      for (int tt = 0; tt < T; ++tt)
        for (size_t k = 0; k < K; ++k) xv[tt][k] = hn::LoadU(df, xt[tt] + b * kQuantBlock + k * N);
      for (int rr = 0; rr < R; ++rr) {
        const uint8_t* blk = wr[rr] + size_t(b) * bb;
        hwy::Prefetch(wr[rr] + std::min(b * int64_t(bb) + kPrefetchBytes, j.prefetch_limit));
        VF wv[K];
        ExpandBlockF32<kT>(df, blk, wv);
        const VF dw = hn::Set(df, HalfToFloat(blk));
        for (int tt = 0; tt < T; ++tt) {
          VF p = hn::Mul(wv[0], xv[tt][0]);
          for (size_t k = 1; k < K; ++k) p = hn::MulAdd(wv[k], xv[tt][k], p);
          acc[rr][tt] = hn::MulAdd(p, dw, acc[rr][tt]);
        }
      }
    }
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) j.y[(t0 + tt) * j.y_stride + r + rr] = ReduceToScalar(df, acc[rr][tt]);
  }
};

// ---------------------------------------------------------------- AVX-512 VNNI (x86 AVX3 target)
#if HWY_TARGET == HWY_AVX3
#define G3N_VNNI_ATTR __attribute__((target(HWY_TARGET_STR ",avx512vnni")))

// Two blocks per 512-bit vpdpbusd (unsigned x signed bytes, 4 products per int32 lane), activations
// prepared per pair of blocks by matmul() (see MatmulJob::vx). Lanes 0..7 of every vector belong
// to the first block of the pair, lanes 8..15 to the second, and so do the scale vectors.
//  Q8_0: x is stored biased (x + 128, unsigned), so sum (x + 128) w - 128 sum w = sum x w; the
//        128 sum w term comes from one more vpdpbusd per row and pair, shared by all tokens.
//  Q4_0: the nibbles are unsigned already; the -8 offset starts the accumulator at -8 sum(x).
template <DType kT>
struct VnniKernel {
  static constexpr int kRows = kTileRows;
  static constexpr int kTokens = kTileTokens;

  template <int R, int T>
  G3N_VNNI_ATTR static void Tile(const MatmulJob& j, int64_t r, int64_t t0) {
    const int64_t nb = j.in / kQuantBlock, np = j.vpairs;
    const size_t bb = dtype_size(kT);
    const uint8_t* wr[R];
    for (int rr = 0; rr < R; ++rr) wr[rr] = j.w + size_t(r + rr) * j.row_bytes;
    __m512 acc[R][T];
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) acc[rr][tt] = _mm512_setzero_ps();
    const __m512i pair_lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i bias = _mm512_set1_epi8(char(0x80));
    const __m512i low4 = _mm512_set1_epi8(15);
    for (int64_t p = 0; p < np; ++p) {
      const bool second = 2 * p + 1 < nb;  // false only for the last pair of an odd block count
      __m512i xv[T], start[T];
      const float* dx[T];
      for (int tt = 0; tt < T; ++tt) {
        const int64_t tp = (t0 + tt) * np + p;
        xv[tt] = _mm512_loadu_si512(j.vx + tp * 64);
        dx[tt] = j.vdx + tp * 16;
        if constexpr (kT == DType::Q4_0) start[tt] = _mm512_loadu_si512(j.vstart + tp * 16);
      }
      for (int rr = 0; rr < R; ++rr) {
        const uint8_t* b0 = wr[rr] + size_t(2 * p) * bb;
        const uint8_t* b1 = b0 + bb;
        _mm_prefetch(reinterpret_cast<const char*>(wr[rr]) + std::min(2 * p * int64_t(bb) + kPrefetchBytes, j.prefetch_limit),
                     _MM_HINT_T0);
        uint16_t h0, h1 = 0;
        std::memcpy(&h0, b0, 2);
        if (second) std::memcpy(&h1, b1, 2);
        const __m512 dw = _mm512_permutexvar_ps(
            pair_lanes, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(uint32_t(h0) | uint32_t(h1) << 16)))));
        if constexpr (kT == DType::Q8_0) {
          const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2));
          const __m256i w1 = second ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)) : _mm256_setzero_si256();
          const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
          const __m512i neg = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w));
          for (int tt = 0; tt < T; ++tt) {
            const __m512i s = _mm512_dpbusd_epi32(neg, xv[tt], w);
            acc[rr][tt] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_loadu_ps(dx[tt])), dw, acc[rr][tt]);
          }
        } else {
          const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2));
          const __m128i q1 = second ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + 2)) : _mm_setzero_si128();
          const __m256i qq = _mm256_set_m128i(q1, q0);
          __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(qq), _mm256_srli_epi16(qq, 4), 1);
          // [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1]: elements 0..31 of each block in order.
          q = _mm512_shuffle_i64x2(_mm512_and_si512(q, low4), _mm512_and_si512(q, low4), _MM_SHUFFLE(3, 1, 2, 0));
          for (int tt = 0; tt < T; ++tt) {
            const __m512i s = _mm512_dpbusd_epi32(start[tt], q, xv[tt]);
            acc[rr][tt] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_loadu_ps(dx[tt])), dw, acc[rr][tt]);
          }
        }
      }
    }
    for (int rr = 0; rr < R; ++rr)
      for (int tt = 0; tt < T; ++tt) j.y[(t0 + tt) * j.y_stride + r + rr] = _mm512_reduce_add_ps(acc[rr][tt]);
  }
};

#endif  // HWY_TARGET == HWY_AVX3

// ---------------------------------------------------------------- row / token walk

template <class Kernel, int T>
HWY_INLINE void RowTiles(const MatmulJob& j, int64_t c0, int64_t c1, int64_t t0) {
  int64_t r = c0;
  for (; r + Kernel::kRows <= c1; r += Kernel::kRows) Kernel::template Tile<Kernel::kRows, T>(j, r, t0);
  for (; r < c1; ++r) Kernel::template Tile<1, T>(j, r, t0);
}

// The last token tile may be narrower: pick the instantiation for its width.
template <class Kernel, int T>
HWY_INLINE void TokenTile(const MatmulJob& j, int64_t c0, int64_t c1, int64_t t0, int64_t nt) {
  if constexpr (T > 1) {
    if (nt < T) return TokenTile<Kernel, T - 1>(j, c0, c1, t0, nt);
  }
  RowTiles<Kernel, T>(j, c0, c1, t0);
}

// Prefill: a block of tokens whose activations stay in L2 meets a chunk of rows whose weights stay
// in L2; every token tile of the block passes over every row tile of the chunk.
template <class Kernel>
HWY_NOINLINE void Rows(const MatmulJob& j, int64_t r0, int64_t r1) {
  constexpr int T = Kernel::kTokens;
  const int64_t chunk = j.n_tokens == 1 ? r1 - r0 : j.row_chunk;
  for (int64_t b0 = 0; b0 < j.n_tokens; b0 += j.token_block) {
    const int64_t b1 = std::min(j.n_tokens, b0 + j.token_block);
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
      const int64_t c1 = std::min(r1, c0 + chunk);
      for (int64_t t = b0; t < b1; t += T) TokenTile<Kernel, T>(j, c0, c1, t, std::min<int64_t>(T, b1 - t));
    }
  }
}

void MatmulRows(const MatmulJob& j, int64_t r0, int64_t r1) {
  switch (j.dtype) {
    case DType::F32: return Rows<FloatKernel<DType::F32>>(j, r0, r1);
    case DType::BF16: return Rows<FloatKernel<DType::BF16>>(j, r0, r1);
    case DType::F16: return Rows<FloatKernel<DType::F16>>(j, r0, r1);
    case DType::Q8_0:
      if (!j.int8_act) return Rows<QuantFloatKernel<DType::Q8_0>>(j, r0, r1);
#if HWY_TARGET == HWY_AVX3
      if (j.vnni) return Rows<VnniKernel<DType::Q8_0>>(j, r0, r1);
#endif
      return Rows<QuantInt8Kernel<DType::Q8_0>>(j, r0, r1);
    case DType::Q4_0:
      if (!j.int8_act) return Rows<QuantFloatKernel<DType::Q4_0>>(j, r0, r1);
#if HWY_TARGET == HWY_AVX3
      if (j.vnni) return Rows<VnniKernel<DType::Q4_0>>(j, r0, r1);
#endif
      return Rows<QuantInt8Kernel<DType::Q4_0>>(j, r0, r1);
  }
}

// ---------------------------------------------------------------- activation quantisation

// Bit-identical to quant::quantize_row_q8_act: d = amax / 127, q = roundf(x * (1 / d)), with
// roundf (half away from zero) built from floor so every target rounds the same way.
void QuantizeActivations(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums) {
  const hn::CappedTag<float, kQuantBlock> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(di)> d8;
  using VF = hn::Vec<decltype(df)>;
  constexpr size_t N = hn::MaxLanes(df);
  constexpr size_t K = kQuantBlock / N;
  const VF half = hn::Set(df, 0.5f), one = hn::Set(df, 1.0f);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    VF v[K];
    VF amax = hn::Zero(df);
    for (size_t k = 0; k < K; ++k) {
      v[k] = hn::LoadU(df, xb + k * N);
      amax = hn::Max(amax, hn::Abs(v[k]));
    }
    const float db = hn::GetLane(hn::MaxOfLanes(df, amax)) / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    const VF vid = hn::Set(df, id);
    auto sum = hn::Zero(di);
    for (size_t k = 0; k < K; ++k) {
      const VF t = hn::Mul(v[k], vid);
      const VF a = hn::Abs(t);
      const VF f = hn::Floor(a);
      const VF r = hn::Add(f, hn::IfThenElseZero(hn::Ge(hn::Sub(a, f), half), one));
      const auto qi = hn::ConvertTo(di, hn::CopySignToAbs(r, t));
      sum = hn::Add(sum, qi);
      hn::StoreU(hn::DemoteTo(d8, qi), d8, q + b * kQuantBlock + int64_t(k * N));
    }
    d[b] = db;
    if (sums) sums[b] = hn::GetLane(hn::SumOfLanes(di, sum));
  }
}

// ---------------------------------------------------------------- dot

float Dot(const float* a, const float* b, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  auto s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + N), hn::LoadU(df, b + i + N), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + i + 2 * N), hn::LoadU(df, b + i + 2 * N), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + i + 3 * N), hn::LoadU(df, b + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float s = ReduceToScalar(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------- sparse: sum of selected rows

// y[o0, o1) = sum_k values[k] * w[rows[k]][o0, o1): the partial sums of a sub-chunk of outputs stay
// in L1 while the selected rows pass, four at a time. The rows are scattered, so hardware
// prefetchers cannot guess the next one: the next group's slices are prefetched by hand.
constexpr int64_t kSumChunk = 2048;

template <DType kT>
HWY_NOINLINE void SumRowsFloat(const SparseJob& j, int64_t o0, int64_t o1) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const int64_t N = int64_t(hn::Lanes(df));
  const int64_t esize = int64_t(dtype_size(kT));
  HWY_ALIGN float acc[kSumChunk];
  for (int64_t c0 = o0; c0 < o1; c0 += kSumChunk) {
    const int64_t len = std::min(kSumChunk, o1 - c0);
    const int64_t vlen = len / N * N;
    std::fill(acc, acc + len, 0.0f);
    for (int64_t k = 0; k < j.n; k += 4) {
      const int m_count = int(std::min<int64_t>(4, j.n - k));
      const uint8_t* p[4];
      const uint8_t* next[4];
      float s[4];
      for (int m = 0; m < 4; ++m) {
        // Missing rows of the last group repeat row k with a zero weight.
        const int64_t km = m < m_count ? k + m : k;
        p[m] = j.w + size_t(j.rows[km]) * j.row_bytes + c0 * esize;
        s[m] = m < m_count ? j.values[km] : 0.0f;
        const int64_t kn = std::min(j.n - 1, k + 4 + m);
        next[m] = j.w + size_t(j.rows[kn]) * j.row_bytes + c0 * esize;
      }
      const V v0 = hn::Set(df, s[0]), v1 = hn::Set(df, s[1]), v2 = hn::Set(df, s[2]), v3 = hn::Set(df, s[3]);
      for (int64_t o = 0; o < vlen; o += N) {
        if ((o * esize) % 64 == 0)
          for (int m = 0; m < 4; ++m) hwy::Prefetch(next[m] + o * esize);
        V a = hn::Load(df, acc + o);
        a = hn::MulAdd(LoadWeights<kT>(df, p[0], o), v0, a);
        a = hn::MulAdd(LoadWeights<kT>(df, p[1], o), v1, a);
        a = hn::MulAdd(LoadWeights<kT>(df, p[2], o), v2, a);
        a = hn::MulAdd(LoadWeights<kT>(df, p[3], o), v3, a);
        hn::Store(a, df, acc + o);
      }
      for (int64_t o = vlen; o < len; ++o)
        for (int m = 0; m < 4; ++m) acc[o] += s[m] * detail::load_element(kT, p[m], o);
    }
    std::memcpy(j.y + c0, acc, size_t(len) * sizeof(float));
  }
}

// Block types: o0, o1 are multiples of 32 (the pool splits in blocks).
template <DType kT>
HWY_NOINLINE void SumRowsQuant(const SparseJob& j, int64_t o0, int64_t o1) {
  const hn::CappedTag<float, 16> df;
  using V = hn::Vec<decltype(df)>;
  constexpr size_t N = hn::MaxLanes(df);
  constexpr size_t K = kQuantBlock / N;
  const size_t bb = dtype_size(kT);
  HWY_ALIGN float acc[kSumChunk];
  for (int64_t c0 = o0; c0 < o1; c0 += kSumChunk) {
    const int64_t len = std::min(kSumChunk, o1 - c0);
    const size_t first_block = size_t(c0 / kQuantBlock) * bb;
    std::fill(acc, acc + len, 0.0f);
    for (int64_t k = 0; k < j.n; k += 4) {
      const int m_count = int(std::min<int64_t>(4, j.n - k));
      const uint8_t* p[4];
      const uint8_t* next[4];
      float s[4];
      for (int m = 0; m < 4; ++m) {
        const int64_t km = m < m_count ? k + m : k;
        p[m] = j.w + size_t(j.rows[km]) * j.row_bytes + first_block;
        s[m] = m < m_count ? j.values[km] : 0.0f;
        next[m] = j.w + size_t(j.rows[std::min(j.n - 1, k + 4 + m)]) * j.row_bytes + first_block;
      }
      for (int64_t o = 0, off = 0; o < len; o += kQuantBlock, off += int64_t(bb)) {
        if (off % 64 < int64_t(bb))
          for (int m = 0; m < 4; ++m) hwy::Prefetch(next[m] + off);
        V a[K];
        for (size_t q = 0; q < K; ++q) a[q] = hn::Load(df, acc + o + q * N);
        for (int m = 0; m < 4; ++m) {
          V wv[K];
          ExpandBlockF32<kT>(df, p[m] + off, wv);
          const V scale = hn::Set(df, s[m] * HalfToFloat(p[m] + off));
          for (size_t q = 0; q < K; ++q) a[q] = hn::MulAdd(wv[q], scale, a[q]);
        }
        for (size_t q = 0; q < K; ++q) hn::Store(a[q], df, acc + o + q * N);
      }
    }
    std::memcpy(j.y + c0, acc, size_t(len) * sizeof(float));
  }
}

void SumRows(const SparseJob& j, int64_t o0, int64_t o1) {
  switch (j.dtype) {
    case DType::F32: return SumRowsFloat<DType::F32>(j, o0, o1);
    case DType::BF16: return SumRowsFloat<DType::BF16>(j, o0, o1);
    case DType::F16: return SumRowsFloat<DType::F16>(j, o0, o1);
    case DType::Q8_0: return SumRowsQuant<DType::Q8_0>(j, o0, o1);
    case DType::Q4_0: return SumRowsQuant<DType::Q4_0>(j, o0, o1);
  }
}

#endif  // SIMD targets

}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace g3n::kernels {

HWY_EXPORT(TargetId);
HWY_EXPORT(MatmulRows);
HWY_EXPORT(QuantizeActivations);
HWY_EXPORT(Dot);
HWY_EXPORT(SumRows);

namespace {

bool cpu_has_vnni() {
#if HWY_ARCH_X86 && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

// Whether the AVX3 path may use VNNI: the CPU's answer unless a test forced a target.
std::atomic<int> g_vnni{-1};  // -1: automatic

bool use_vnni() {
  const int v = g_vnni.load(std::memory_order_relaxed);
  if (v >= 0) return v != 0;
  static const bool has = cpu_has_vnni();
  return has;
}

// Per-thread scratch for quantised activations; grows to the largest call, never shrinks.
struct ActivationScratch {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> sums;
  std::vector<uint8_t> vx;
  std::vector<float> vdx;
  std::vector<int32_t> vstart;
};

template <class T>
void grow(std::vector<T>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
}

void check_matrix(const TensorView& w, const char* what) {
  G3N_CHECK(w.shape.size() == 2 && w.data != nullptr, what, ": expected a 2-D weight tensor, got ", shape_str(w.shape));
  if (dtype_is_quantized(w.dtype))
    G3N_CHECK(w.dim(1) % kQuantBlock == 0, what, ": ", dtype_name(w.dtype), " rows of ", w.dim(1),
              " values are not whole blocks of ", kQuantBlock);
}

// The columns a product uses: all, or a prefix of whole blocks.
int64_t checked_columns(const TensorView& w, int64_t columns, const char* what) {
  if (columns == 0) return w.dim(1);
  G3N_CHECK(columns > 0 && columns <= w.dim(1), what, ": a prefix of ", columns, " columns of a ", shape_str(w.shape),
            " tensor");
  G3N_CHECK(!dtype_is_quantized(w.dtype) || columns % kQuantBlock == 0, what, ": a prefix of ", columns,
            " columns of ", dtype_name(w.dtype), " weights is not whole blocks of ", kQuantBlock,
            " (a MatFormer width on quantised weights must be a multiple of ", kQuantBlock, ")");
  return columns;
}

}  // namespace

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, int64_t x_stride,
            int64_t y_stride) {
  matmul(w, x, n_tokens, y, pool, strided(x_stride, y_stride));
}

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const MatmulOptions& options) {
  check_matrix(w, "matmul");
  const int64_t out = w.dim(0), in = checked_columns(w, options.columns, "matmul");
  if (n_tokens <= 0 || out == 0) return;
  detail::MatmulJob j;
  j.dtype = w.dtype;
  j.w = static_cast<const uint8_t*>(w.data);
  j.row_bytes = w.row_bytes();  // the stored stride, also for a column prefix
  j.in = in;
  if (in < w.dim(1)) j.prefetch_limit = int64_t(dtype_bytes(w.dtype, in)) - 1;
  j.out = out;
  j.n_tokens = n_tokens;
  j.x = x;
  j.x_stride = options.x_stride ? options.x_stride : in;
  j.y = y;
  j.y_stride = options.y_stride ? options.y_stride : out;
  j.int8_act = dtype_is_quantized(w.dtype) && options.quant_activations != QuantActivations::kFloat;
  const bool ggml_act = options.quant_activations == QuantActivations::kGgml;
  if (j.int8_act) {
    // Per-thread scratch, grown to the largest call and kept: no allocation once warm.
    thread_local ActivationScratch scratch;
    const int64_t nb = in / kQuantBlock;
    grow(scratch.q, n_tokens * in);
    grow(scratch.d, n_tokens * nb);
    grow(scratch.sums, n_tokens * nb);
    for (int64_t t = 0; t < n_tokens; ++t) {
      if (ggml_act)
        ggml_cpu::quantize_q8_0(x + t * j.x_stride, in, scratch.q.data() + t * in, scratch.d.data() + t * nb,
                                scratch.sums.data() + t * nb);
      else
        HWY_DYNAMIC_DISPATCH(QuantizeActivations)(x + t * j.x_stride, in, scratch.q.data() + t * in,
                                                  scratch.d.data() + t * nb, scratch.sums.data() + t * nb);
    }
    j.xq = scratch.q.data();
    j.xd = scratch.d.data();
    j.xsum = scratch.sums.data();
    j.vnni = use_vnni() && HWY_DYNAMIC_DISPATCH(TargetId)() == HWY_AVX3;
    if (j.vnni) {
      j.vpairs = (nb + 1) / 2;
      grow(scratch.vx, n_tokens * j.vpairs * 64);
      grow(scratch.vdx, n_tokens * j.vpairs * 16);
      grow(scratch.vstart, n_tokens * j.vpairs * 16);
      detail::prepare_vnni_activations(j, scratch.vx.data(), scratch.vdx.data(), scratch.vstart.data());
      j.vx = scratch.vx.data();
      j.vdx = scratch.vdx.data();
      j.vstart = scratch.vstart.data();
    }
  }
  // Prefill walks rows in chunks of about 256 KiB of weights and tokens in blocks of about 512 KiB
  // of activations (as the kernels read them), so both stay in L2 while the tiles pass.
  j.row_chunk = std::clamp<int64_t>(int64_t((256 << 10) / std::max<size_t>(1, dtype_bytes(w.dtype, in))) / 4 * 4, 4, 256);
  const int64_t act_bytes = !j.int8_act ? 4 * in : j.vnni ? 3 * in : in;
  j.token_block = std::max<int64_t>(12, (512 << 10) / std::max<int64_t>(1, act_bytes) / 12 * 12);
  // Work is split in tiles of 4 rows; a task gets at least ~64k multiply-adds.
  constexpr int64_t kUnit = 4;
  const int64_t units = (out + kUnit - 1) / kUnit;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, in * n_tokens * kUnit));
  pool.parallel_for(units, grain, [&j](int64_t u0, int64_t u1) {
    HWY_DYNAMIC_DISPATCH(MatmulRows)(j, u0 * kUnit, std::min(j.out, u1 * kUnit));
  });
}

float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }

void quantize_activations(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums) {
  G3N_CHECK(n >= 0 && n % kQuantBlock == 0, "quantize_activations: length ", n, " is not a multiple of ", kQuantBlock);
  HWY_DYNAMIC_DISPATCH(QuantizeActivations)(x, n, q, d, sums);
}

void matmul_transposed_rows(const TensorView& w_t, const int32_t* rows, const float* values, int64_t n, float* y,
                            ThreadPool& pool) {
  check_matrix(w_t, "matmul_transposed_rows");
  detail::SparseJob j;
  j.dtype = w_t.dtype;
  j.w = static_cast<const uint8_t*>(w_t.data);
  j.row_bytes = w_t.row_bytes();
  j.rows = rows;
  j.values = values;
  j.n = n;
  j.y = y;
  const int64_t out = w_t.dim(1), in = w_t.dim(0);
  for (int64_t k = 0; k < n; ++k)
    G3N_CHECK(rows[k] >= 0 && rows[k] < in, "matmul_transposed_rows: row ", rows[k], " outside [0, ", in, ")");
  // Split the outputs in blocks of 32 (whole quantisation blocks), at least 512 outputs per task.
  const int64_t units = (out + kQuantBlock - 1) / kQuantBlock;
  pool.parallel_for(units, 16, [&j, out](int64_t u0, int64_t u1) {
    HWY_DYNAMIC_DISPATCH(SumRows)(j, u0 * kQuantBlock, std::min(out, u1 * kQuantBlock));
  });
}

void matmul_columns(const TensorView& w, const float* x, const int32_t* cols, int64_t n, float* y, ThreadPool& pool) {
  check_matrix(w, "matmul_columns");
  const int64_t out = w.dim(0), in = w.dim(1);
  for (int64_t k = 0; k < n; ++k)
    G3N_CHECK(cols[k] >= 0 && cols[k] < in, "matmul_columns: column ", cols[k], " outside [0, ", in, ")");
  struct Job {
    DType t;
    const uint8_t* base;
    size_t row_bytes;
    const float* x;
    const int32_t* cols;
    int64_t n;
    float* y;
  } job{w.dtype, static_cast<const uint8_t*>(w.data), w.row_bytes(), x, cols, n, y};
  pool.parallel_for(out, 64, [&job](int64_t r0, int64_t r1) {
    const Job& j = job;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = j.base + size_t(r) * j.row_bytes;
      float s = 0.0f;
      if (dtype_is_quantized(j.t)) {
        const size_t bb = dtype_size(j.t);
        for (int64_t k = 0; k < j.n; ++k) {
          const int32_t c = j.cols[k];
          const uint8_t* blk = row + size_t(c / kQuantBlock) * bb;
          s += detail::block_scale(blk) * float(detail::block_int(j.t, blk, int(c % kQuantBlock))) * j.x[c];
        }
      } else {
        for (int64_t k = 0; k < j.n; ++k) s += detail::load_element(j.t, row, j.cols[k]) * j.x[j.cols[k]];
      }
      j.y[r] = s;
    }
  });
}

int64_t nonzero_indices(const float* x, int64_t n, int32_t* idx) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) {
    idx[c] = int32_t(i);
    c += x[i] != 0.0f;
  }
  return c;
}

// ---------------------------------------------------------------- SIMD target selection

std::vector<SimdTarget> simd_targets() {
  static const std::vector<SimdTarget> targets = [] {
    std::vector<SimdTarget> v;
    for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
      if (t == HWY_AVX3 && cpu_has_vnni()) v.push_back({t, true, std::string(hwy::TargetName(t)) + "+VNNI"});
      v.push_back({t, false, hwy::TargetName(t)});
    }
    return v;
  }();
  return targets;
}

void force_simd_target(const SimdTarget* target) {
  if (target) {
    hwy::SetSupportedTargetsForTest(target->hwy_target);
    g_vnni.store(target->vnni ? 1 : 0);
  } else {
    hwy::SetSupportedTargetsForTest(0);
    g_vnni.store(-1);
  }
}

std::string active_simd_target() {
  const int64_t t = HWY_DYNAMIC_DISPATCH(TargetId)();
  std::string name = hwy::TargetName(t);
  if (t == HWY_AVX3 && use_vnni()) name += "+VNNI";
  return name;
}

// ---------------------------------------------------------------- portable code and oracles

namespace detail {

// Lays out the int8 activations for VnniKernel (see MatmulJob::vx): per token and pair of blocks.
void prepare_vnni_activations(const MatmulJob& j, uint8_t* vx, float* vdx, int32_t* vstart) {
  const int64_t nb = j.in / kQuantBlock, np = j.vpairs;
  const uint8_t flip = j.dtype == DType::Q8_0 ? 0x80 : 0;
  for (int64_t t = 0; t < j.n_tokens; ++t) {
    for (int64_t b = 0; b < 2 * np; ++b) {
      const int64_t tp = t * np + b / 2, half = b % 2;
      uint8_t* dst = vx + tp * 64 + half * 32;
      float* d = vdx + tp * 16 + half * 8;
      int32_t* s = vstart + tp * 16 + half * 8;
      if (b < nb) {
        const int8_t* src = j.xq + t * j.in + b * kQuantBlock;
        for (int k = 0; k < kQuantBlock; ++k) dst[k] = uint8_t(src[k]) ^ flip;
        std::fill(d, d + 8, j.xd[t * nb + b]);
        s[0] = -8 * j.xsum[t * nb + b];
      } else {  // padding block of an odd count: contributes nothing
        std::fill(dst, dst + 32, flip);
        std::fill(d, d + 8, 0.0f);
        s[0] = 0;
      }
      std::fill(s + 1, s + 8, 0);
    }
  }
}
float dot_portable(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void matmul_rows_portable(const MatmulJob& j, int64_t r0, int64_t r1) {
  thread_local std::vector<float> row;
  const int64_t nb = j.in / kQuantBlock;
  const size_t bb = dtype_size(j.dtype);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = j.w + size_t(r) * j.row_bytes;
    const TensorView view{j.dtype, {1, j.in}, wr};  // the used prefix of row r
    if (j.int8_act) {
      for (int64_t t = 0; t < j.n_tokens; ++t) {
        float s = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = wr + size_t(b) * bb;
          const int8_t* xq = j.xq + t * j.in + b * kQuantBlock;
          int32_t isum = 0;
          for (int k = 0; k < kQuantBlock; ++k) isum += block_int(j.dtype, blk, k) * xq[k];
          s += float(isum) * j.xd[t * nb + b] * block_scale(blk);
        }
        j.y[t * j.y_stride + r] = s;
      }
    } else {
      row.resize(size_t(j.in));
      to_f32(view, 0, j.in, row.data());
      for (int64_t t = 0; t < j.n_tokens; ++t)
        j.y[t * j.y_stride + r] = dot_portable(row.data(), j.x + t * j.x_stride, j.in);
    }
  }
}

void sum_rows_portable(const SparseJob& j, int64_t o0, int64_t o1) {
  std::fill(j.y + o0, j.y + o1, 0.0f);
  const int64_t out = int64_t(j.row_bytes / dtype_size(j.dtype)) * dtype_block_elems(j.dtype);
  const TensorView view{j.dtype, {1, out}, nullptr};
  float tmp[kQuantBlock];
  for (int64_t k = 0; k < j.n; ++k) {
    TensorView row = view;
    row.data = j.w + size_t(j.rows[k]) * j.row_bytes;
    for (int64_t o = o0; o < o1; o += kQuantBlock) {
      const int64_t len = std::min<int64_t>(kQuantBlock, o1 - o);
      to_f32(row, o, len, tmp);
      for (int64_t m = 0; m < len; ++m) j.y[o + m] += j.values[k] * tmp[m];
    }
  }
}

}  // namespace detail

void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y) {
  matmul_reference(w, x, n_tokens, y, MatmulOptions{});
}

void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y, const MatmulOptions& options) {
  check_matrix(w, "matmul_reference");
  const int64_t out = w.dim(0), full = w.dim(1), in = checked_columns(w, options.columns, "matmul_reference");
  const int64_t xs = options.x_stride ? options.x_stride : in, ys = options.y_stride ? options.y_stride : out;
  std::vector<float> row(static_cast<size_t>(full));
  for (int64_t r = 0; r < out; ++r) {
    to_f32(w, r * full, in, row.data());  // element by element from the row's start: the prefix only
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += double(row[size_t(i)]) * double(x[t * xs + i]);
      y[t * ys + r] = float(s);
    }
  }
}

void matmul_reference_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y) {
  matmul_reference_int8(w, x, n_tokens, y, MatmulOptions{});
}

void matmul_reference_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y,
                           const MatmulOptions& options) {
  check_matrix(w, "matmul_reference_int8");
  G3N_CHECK(dtype_is_quantized(w.dtype), "matmul_reference_int8: ", dtype_name(w.dtype), " is not a block type");
  const int64_t out = w.dim(0), in = checked_columns(w, options.columns, "matmul_reference_int8"), nb = in / kQuantBlock;
  const int64_t xs = options.x_stride ? options.x_stride : in, ys = options.y_stride ? options.y_stride : out;
  std::vector<int8_t> xq(size_t(n_tokens * in));
  std::vector<float> xd(size_t(n_tokens * nb));
  for (int64_t t = 0; t < n_tokens; ++t)
    quant::quantize_row_q8_act(x + t * xs, in, xq.data() + t * in, xd.data() + t * nb, nullptr);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t bb = dtype_size(w.dtype);
  for (int64_t r = 0; r < out; ++r) {
    const uint8_t* row = base + size_t(r) * w.row_bytes();
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + size_t(b) * bb;
        int64_t isum = 0;
        for (int k = 0; k < kQuantBlock; ++k) isum += detail::block_int(w.dtype, blk, k) * xq[size_t(t * in + b * kQuantBlock + k)];
        uint16_t h;
        std::memcpy(&h, blk, 2);
        s += double(isum) * double(xd[size_t(t * nb + b)]) * double(f16_to_f32(h));
      }
      y[t * ys + r] = float(s);
    }
  }
}

void matmul_columns_reference(const TensorView& w, const float* x, const int32_t* cols, int64_t n_cols, float* y) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<float> row(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    to_f32(w, r * in, in, row.data());
    double s = 0;
    for (int64_t k = 0; k < n_cols; ++k) s += double(row[size_t(cols[k])]) * double(x[cols[k]]);
    y[r] = float(s);
  }
}

void matmul_transposed_rows_reference(const TensorView& w_t, const int32_t* rows, const float* values, int64_t n,
                                      float* y) {
  const int64_t out = w_t.dim(1);
  std::vector<double> acc(size_t(out), 0.0);
  std::vector<float> row(static_cast<size_t>(out));
  for (int64_t k = 0; k < n; ++k) {
    to_f32(w_t, int64_t(rows[k]) * out, out, row.data());
    for (int64_t o = 0; o < out; ++o) acc[size_t(o)] += double(values[k]) * double(row[size_t(o)]);
  }
  for (int64_t o = 0; o < out; ++o) y[o] = float(acc[size_t(o)]);
}

}  // namespace g3n::kernels
#endif  // HWY_ONCE
