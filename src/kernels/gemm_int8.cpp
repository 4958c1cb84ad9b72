// Int8 GEMM of Q8_0 / Q4_0 weights for many rows of activations (prefill), on AVX-512 VNNI CPUs.
//
// y[t][o] = sum_b d_w[o][b] * d_x[t][b] * sum_{k in b} q_w[o][k] * q_x[t][k]: the activations are quantised
// per block of 32 exactly as the matrix-vector kernels quantise them (kernels::quantize_activations), so a
// prompt's logits are computed with the same arithmetic as decoded tokens' (up to the order of float
// additions); matmul_reference_int8 is the oracle.
//
// Shape of the work:
//  - threads split the outputs in panels of kNR = 48 rows of W;
//  - per panel and chunk of kKC columns, the weights are packed as unsigned bytes, four consecutive
//    columns of one row per 32-bit lane, 16 rows per vector: [block][group of 4 columns][kNV][64 bytes]
//    (Q4_0: the nibble q + 8; Q8_0: q + 128), with each block's scales as floats (24 KiB: stays in L1);
//  - the micro-kernel broadcasts 4 activation bytes of a token and multiplies them with the kNV weight
//    vectors of that group by vpdpbusd (u8 x s8 -> s32, 64 products per instruction): kMR x kNV int32
//    accumulators per block of 32, then (isum - offset * sum q_x) * (d_w * d_x) is added to float
//    accumulators, offset = 8 (Q4_0) or 128 (Q8_0).
#include <immintrin.h>

// GCC 12 reports the _mm512_undefined_* placeholders inside <immintrin.h>'s gather and convert intrinsics
// as maybe-uninitialized (a known false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "kernels/gemm_int8.h"

namespace g3n::kernels {
namespace {

#define G3N_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

constexpr int kMR = 4;           // tokens per register tile
constexpr int kNV = 3;           // vectors of 16 outputs per tile
constexpr int64_t kNR = 16 * kNV;  // outputs per panel
constexpr int64_t kKC = 512;     // columns per packed chunk (a multiple of 32)
// From this many rows of activations, repacked Q4_0 goes through the GEMM tiles (fed from the panels).
constexpr int64_t kPanelTileRows = 10;

struct Job {
  DType t = DType::Q8_0;
  const uint8_t* w = nullptr;  // Q8_0 / Q4_0 rows of row_bytes, or null with `panels`
  size_t row_bytes = 0;
  const VnniPanels* panels = nullptr;
  int64_t out = 0, in = 0, m = 0;
  const int8_t* xq = nullptr;   // [m][in]
  const float* xd = nullptr;    // [m][in / 32]
  const int32_t* xs = nullptr;  // [m][in / 32]
  float* y = nullptr;
  int64_t ldy = 0;
};

// Packs rows [o0, o0 + kNR) (zeros past out), columns [k0, k0 + kc) of W: bytes [kc/32][8][kNV][64] and
// scales [kc/32][kNV][16].
G3N_VNNI void PackPanel(const Job& j, int64_t o0, int64_t k0, int64_t kc, uint8_t* bytes, float* scales) {
  alignas(64) uint8_t tmp[16][32];
  const size_t bb = dtype_size(j.t);
  const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(8));  // row r starts at dword 8 r of tmp
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < kc / 32; ++b) {
    if (j.panels) {  // repacked Q4_0: scales, then nibbles already 16 rows x 4 columns per vector
      for (int v = 0; v < kNV; ++v) {
        float* sc = scales + (b * kNV + v) * 16;
        const int64_t panel = o0 / 16 + v;
        if (panel * 16 >= j.out) {
          std::memset(sc, 0, 16 * sizeof(float));
          for (int g = 0; g < 8; ++g) std::memset(bytes + ((b * 8 + g) * kNV + v) * 64, 0, 64);
          continue;
        }
        const uint8_t* src = j.panels->block(panel, k0 / 32 + b);
        _mm512_storeu_ps(sc, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))));
        if (j.panels->dtype == DType::Q8_0) {
          for (int g = 0; g < 8; ++g)
            _mm512_storeu_si512(bytes + ((b * 8 + g) * kNV + v) * 64, _mm512_loadu_si512(src + 32 + 64 * g));
          continue;
        }
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        for (int h = 0; h < 4; ++h) {
          const __m512i q = _mm512_loadu_si512(src + 32 + 64 * h);
          _mm512_storeu_si512(bytes + ((b * 8 + h) * kNV + v) * 64, _mm512_and_si512(q, m4));
          _mm512_storeu_si512(bytes + ((b * 8 + 4 + h) * kNV + v) * 64, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4));
        }
      }
      continue;
    }
    for (int v = 0; v < kNV; ++v) {
      float* sc = scales + (b * kNV + v) * 16;
      for (int r = 0; r < 16; ++r) {
        const int64_t o = o0 + v * 16 + r;
        if (o >= j.out) {
          std::memset(tmp[r], 0, 32);
          sc[r] = 0.0f;
          continue;
        }
        const uint8_t* blk = j.w + size_t(o) * j.row_bytes + size_t((k0 / 32 + b)) * bb;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        sc[r] = f16_to_f32(h);
        if (j.t == DType::Q4_0) {
          const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp[r]), _mm_and_si128(qs, low));
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp[r] + 16), _mm_and_si128(_mm_srli_epi16(qs, 4), low));
        } else {
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
          _mm256_store_si256(reinterpret_cast<__m256i*>(tmp[r]), _mm256_xor_si256(q, _mm256_set1_epi8(char(0x80))));
        }
      }
      for (int g = 0; g < 8; ++g) {
        const __m512i lanes = _mm512_i32gather_epi32(_mm512_add_epi32(rows, _mm512_set1_epi32(g)), tmp, 4);
        _mm512_storeu_si512(bytes + ((b * 8 + g) * kNV + v) * 64, lanes);
      }
    }
  }
}

// acc[i][v] += the product of tokens t0 .. t0 + R over the packed chunk (nb blocks from block b0 of x).
template <int R>
G3N_VNNI void Tile(const Job& j, const uint8_t* bytes, const float* scales, int64_t nb, int64_t b0, int64_t t0,
                   int32_t offset, __m512 acc[kMR][kNV]) {
  const int64_t xb = j.in / 32;
  for (int64_t b = 0; b < nb; ++b) {
    __m512i ia[R][kNV];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < kNV; ++v) ia[i][v] = _mm512_setzero_si512();
    const int8_t* xq[R];
    for (int i = 0; i < R; ++i) xq[i] = j.xq + (t0 + i) * j.in + (b0 + b) * 32;
    const uint8_t* wb = bytes + b * 8 * kNV * 64;
    for (int g = 0; g < 8; ++g) {
      __m512i w[kNV];
      for (int v = 0; v < kNV; ++v) w[v] = _mm512_loadu_si512(wb + (g * kNV + v) * 64);
      for (int i = 0; i < R; ++i) {
        int32_t a4;
        std::memcpy(&a4, xq[i] + 4 * g, 4);
        const __m512i a = _mm512_set1_epi32(a4);
        for (int v = 0; v < kNV; ++v) ia[i][v] = _mm512_dpbusd_epi32(ia[i][v], w[v], a);
      }
    }
    __m512 dw[kNV];
    for (int v = 0; v < kNV; ++v) dw[v] = _mm512_loadu_ps(scales + (b * kNV + v) * 16);
    for (int i = 0; i < R; ++i) {
      const int64_t xi = (t0 + i) * xb + b0 + b;
      const __m512 dx = _mm512_set1_ps(j.xd[xi]);
      const __m512i corr = _mm512_set1_epi32(offset * j.xs[xi]);
      for (int v = 0; v < kNV; ++v)
        acc[i][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ia[i][v], corr)), _mm512_mul_ps(dw[v], dx),
                                    acc[i][v]);
    }
  }
}

template <int R>
G3N_VNNI void TileAndStore(const Job& j, const uint8_t* bytes, const float* scales, int64_t nb, int64_t b0, int64_t t0,
                           int64_t o0, bool first, int32_t offset) {
  __m512 acc[kMR][kNV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_setzero_ps();
  Tile<R>(j, bytes, scales, nb, b0, t0, offset, acc);
  for (int v = 0; v < kNV; ++v) {
    const int64_t o = o0 + v * 16;
    if (o >= j.out) break;
    const __mmask16 mask = j.out - o >= 16 ? __mmask16(0xffff) : __mmask16((1u << (j.out - o)) - 1);
    for (int i = 0; i < R; ++i) {
      float* yp = j.y + (t0 + i) * j.ldy + o;
      __m512 r = acc[i][v];
      if (!first) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, yp));
      _mm512_mask_storeu_ps(yp, mask, r);
    }
  }
}

G3N_VNNI void RunPanels(const Job& j, int64_t p0, int64_t p1) {
  thread_local std::vector<uint8_t> bytes;
  thread_local std::vector<float> scales;
  bytes.resize(size_t(kKC / 32 * 8 * kNV * 64));
  scales.resize(size_t(kKC / 32 * kNV * 16));
  const int32_t offset = j.t == DType::Q4_0 ? 8 : 128;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kNR;
    for (int64_t k0 = 0; k0 < j.in; k0 += kKC) {
      const int64_t kc = std::min(kKC, j.in - k0);
      PackPanel(j, o0, k0, kc, bytes.data(), scales.data());
      const bool first = k0 == 0;
      int64_t t = 0;
      for (; t + kMR <= j.m; t += kMR) TileAndStore<kMR>(j, bytes.data(), scales.data(), kc / 32, k0 / 32, t, o0, first, offset);
      switch (j.m - t) {
        case 1: TileAndStore<1>(j, bytes.data(), scales.data(), kc / 32, k0 / 32, t, o0, first, offset); break;
        case 2: TileAndStore<2>(j, bytes.data(), scales.data(), kc / 32, k0 / 32, t, o0, first, offset); break;
        case 3: TileAndStore<3>(j, bytes.data(), scales.data(), kc / 32, k0 / 32, t, o0, first, offset); break;
        default: break;
      }
    }
  }
}

// Few rows of activations over repacked panels [p0, p1): every panel streamed once, R tokens at a time.
template <int R, bool kQ4>
G3N_VNNI void PanelRows(const Job& j, int64_t p0, int64_t p1, int64_t t0) {
  const int64_t nb = j.in / 32, xb = j.in / 32;
  constexpr int64_t kBlock = kQ4 ? 288 : 544;
  constexpr int32_t kOffset = kQ4 ? 8 : 128;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int64_t p = p0; p < p1; ++p) {
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    const uint8_t* src = j.panels->block(p, 0);
    for (int64_t b = 0; b < nb; ++b, src += kBlock) {
      for (int64_t off = 0; off < kBlock; off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(src + kBlock * 8 + off), _MM_HINT_T0);
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
      __m512i wq[8];  // group g: columns 4g .. 4g+3 of the 16 rows, unsigned
      if constexpr (kQ4) {
        for (int h = 0; h < 4; ++h) {
          const __m512i q = _mm512_loadu_si512(src + 32 + 64 * h);
          wq[h] = _mm512_and_si512(q, m4);
          wq[4 + h] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        }
      } else {
        for (int g = 0; g < 8; ++g) wq[g] = _mm512_loadu_si512(src + 32 + 64 * g);
      }
      for (int i = 0; i < R; ++i) {
        const int8_t* xq = j.xq + (t0 + i) * j.in + b * 32;
        int32_t a[8];
        std::memcpy(a, xq, 32);
        __m512i is = _mm512_setzero_si512();
        for (int g = 0; g < 8; ++g) is = _mm512_dpbusd_epi32(is, wq[g], _mm512_set1_epi32(a[g]));
        const int64_t xi = (t0 + i) * xb + b;
        is = _mm512_sub_epi32(is, _mm512_set1_epi32(kOffset * j.xs[xi]));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dw, _mm512_set1_ps(j.xd[xi])), acc[i]);
      }
    }
    const int64_t o = p * 16;
    const __mmask16 mask = j.out - o >= 16 ? __mmask16(0xffff) : __mmask16((1u << (j.out - o)) - 1);
    for (int i = 0; i < R; ++i) _mm512_mask_storeu_ps(j.y + (t0 + i) * j.ldy + o, mask, acc[i]);
  }
}

template <bool kQ4>
G3N_VNNI void PanelRowsAll(const Job& j, int64_t p0, int64_t p1) {
  int64_t t = 0;
  for (; t + 4 <= j.m; t += 4) PanelRows<4, kQ4>(j, p0, p1, t);
  switch (j.m - t) {
    case 1: PanelRows<1, kQ4>(j, p0, p1, t); break;
    case 2: PanelRows<2, kQ4>(j, p0, p1, t); break;
    case 3: PanelRows<3, kQ4>(j, p0, p1, t); break;
    default: break;
  }
}

void PackVnniPanel(const TensorView& w, int64_t panel, uint8_t* dst) {
  const int64_t rows = w.dim(0), nb = w.dim(1) / 32;
  const size_t rb = w.row_bytes(), bb = dtype_size(w.dtype);
  const bool q4 = w.dtype == DType::Q4_0;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t b = 0; b < nb; ++b, dst += q4 ? 288 : 544) {
    uint32_t q[8][16];  // group g, row r: 4 bytes
    uint16_t d[16];
    for (int r = 0; r < 16; ++r) {
      const int64_t o = panel * 16 + r;
      if (o >= rows) {
        d[r] = 0;
        for (int g = 0; g < 8; ++g) q[g][r] = q4 ? 0u : 0x80808080u;  // zero weights (stored + 128)
        continue;
      }
      const uint8_t* blk = base + size_t(o) * rb + size_t(b) * bb;
      std::memcpy(&d[r], blk, 2);
      for (int g = 0; g < (q4 ? 4 : 8); ++g) {
        std::memcpy(&q[g][r], blk + 2 + 4 * g, 4);
        if (!q4) q[g][r] ^= 0x80808080u;  // int8 q -> unsigned q + 128
      }
    }
    std::memcpy(dst, d, 32);
    std::memcpy(dst + 32, q, q4 ? 256 : 512);
  }
}

bool cpu_supported() {
#if defined(__GNUC__) || defined(__clang__)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

// Quantises the n_tokens rows of x (stride xs) per block of 32 as QuantActivations::kInt8 does, into this
// thread's buffers (grown once, kept), and points j.xq / j.xd / j.xs at them.
void QuantizeRows(Job& j, const float* x, int64_t xs, ThreadPool& pool) {
  const int64_t in = j.in, nb = in / 32, n = j.m;
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> d;
  thread_local std::vector<int32_t> s;
  if (int64_t(q.size()) < n * in) q.resize(size_t(n * in));
  if (int64_t(d.size()) < n * nb) {
    d.resize(size_t(n * nb));
    s.resize(size_t(n * nb));
  }
  // (The caller's thread_local buffers, by pointer: a worker naming them would get its own.)
  int8_t* qp = q.data();
  float* dp = d.data();
  int32_t* sp = s.data();
  pool.parallel_for(n, 8, [=](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) quantize_activations(x + t * xs, in, qp + t * in, dp + t * nb, sp + t * nb);
  });
  j.xq = qp;
  j.xd = dp;
  j.xs = sp;
}

}  // namespace

bool vnni_panels_available() { return cpu_supported() && active_simd_target().find("+VNNI") != std::string::npos; }

bool gemm_int8_available(const TensorView& w) {
  return (w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0) && w.shape.size() == 2 && vnni_panels_available();
}

void gemm_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
               const MatmulOptions& options) {
  G3N_CHECK(gemm_int8_available(w), "gemm_int8: ", dtype_name(w.dtype), " weights on ", active_simd_target(),
            " (needs Q8_0 / Q4_0 and AVX-512 VNNI)");
  const int64_t in = options.columns ? options.columns : w.dim(1);
  G3N_CHECK(in > 0 && in <= w.dim(1) && in % 32 == 0, "gemm_int8: ", in, " columns of a ", shape_str(w.shape),
            " tensor are not whole blocks of 32");
  if (n_tokens <= 0 || w.dim(0) == 0) return;
  Job j;
  j.t = w.dtype;
  j.w = static_cast<const uint8_t*>(w.data);
  j.row_bytes = w.row_bytes();
  j.out = w.dim(0);
  j.in = in;
  j.m = n_tokens;
  QuantizeRows(j, x, options.x_stride ? options.x_stride : in, pool);
  j.y = y;
  j.ldy = options.y_stride ? options.y_stride : j.out;
  const int64_t panels = (j.out + kNR - 1) / kNR;
  pool.parallel_for(panels, 1, [&j](int64_t p0, int64_t p1) { RunPanels(j, p0, p1); });
}

VnniPanels pack_vnni_panels(const TensorView& w, ThreadPool* pool,
                            const std::function<void(const void*, size_t)>& packed) {
  G3N_CHECK((w.dtype == DType::Q4_0 || w.dtype == DType::Q8_0) && w.shape.size() == 2 && w.dim(1) % 32 == 0,
            "pack_vnni_panels: expected a Q4_0 or Q8_0 matrix, got ", dtype_name(w.dtype), " ", shape_str(w.shape));
  VnniPanels p;
  p.dtype = w.dtype;
  p.rows = w.dim(0);
  p.cols = w.dim(1);
  const int64_t panels = (p.rows + 15) / 16;
  const size_t panel_bytes = size_t(p.cols / 32) * p.block_bytes();
  p.size = size_t(panels) * panel_bytes;
  auto* mem = static_cast<uint8_t*>(std::aligned_alloc(64, std::max<size_t>(64, (p.size + 63) / 64 * 64)));
  G3N_CHECK(mem != nullptr, "pack_vnni_panels: cannot allocate ", p.size, " bytes");
  p.bytes = std::shared_ptr<uint8_t>(mem, [](uint8_t* q) { std::free(q); });
  auto run = [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) PackVnniPanel(w, i, mem + size_t(i) * panel_bytes);
  };
  constexpr int64_t kChunk = 256;  // panels (4096 rows) between two calls of `packed`
  for (int64_t c0 = 0; c0 < panels; c0 += kChunk) {
    const int64_t c1 = std::min(panels, c0 + kChunk);
    if (pool) pool->parallel_for(c1 - c0, 16, [&](int64_t a, int64_t b) { run(c0 + a, c0 + b); });
    else run(c0, c1);
    if (packed) {
      const int64_t r0 = c0 * 16, r1 = std::min(p.rows, c1 * 16);
      packed(static_cast<const uint8_t*>(w.data) + size_t(r0) * w.row_bytes(), size_t(r1 - r0) * w.row_bytes());
    }
  }
  return p;
}

void vnni_panel_row(const VnniPanels& p, int64_t r, float* out) {
  G3N_CHECK(r >= 0 && r < p.rows, "vnni_panel_row: row ", r, " of ", p.rows);
  const int lane = int(r % 16);
  for (int64_t b = 0; b < p.cols / 32; ++b) {
    const uint8_t* src = p.block(r / 16, b);
    uint16_t h;
    std::memcpy(&h, src + 2 * lane, 2);
    const float d = f16_to_f32(h);
    float* y = out + b * 32;
    for (int g = 0; g < (p.dtype == DType::Q4_0 ? 4 : 8); ++g) {
      const uint8_t* q = src + 32 + 64 * g + 4 * lane;
      for (int c = 0; c < 4; ++c) {
        if (p.dtype == DType::Q4_0) {
          y[4 * g + c] = d * float(int(q[c] & 15) - 8);
          y[16 + 4 * g + c] = d * float(int(q[c] >> 4) - 8);
        } else {
          y[4 * g + c] = d * float(int(q[c]) - 128);
        }
      }
    }
  }
}

void matmul_vnni_panels(const VnniPanels& panels, int64_t rows, const float* x, int64_t n_tokens, float* y,
                        ThreadPool& pool, const MatmulOptions& options) {
  G3N_CHECK(vnni_panels_available(), "matmul_vnni_panels: needs AVX-512 VNNI (active: ", active_simd_target(), ")");
  const int64_t in = options.columns ? options.columns : panels.cols;
  G3N_CHECK(rows > 0 && rows <= panels.rows && in > 0 && in <= panels.cols && in % 32 == 0, "matmul_vnni_panels: ",
            rows, " rows and ", in, " columns of a repacked ", panels.rows, " x ", panels.cols, " matrix");
  if (n_tokens <= 0) return;
  Job j;
  j.t = panels.dtype;
  j.panels = &panels;
  j.out = rows;
  j.in = in;
  j.m = n_tokens;
  QuantizeRows(j, x, options.x_stride ? options.x_stride : in, pool);
  j.y = y;
  j.ldy = options.y_stride ? options.y_stride : rows;
  if (n_tokens >= kPanelTileRows) {
    const int64_t tiles = (rows + kNR - 1) / kNR;
    pool.parallel_for(tiles, 1, [&j](int64_t p0, int64_t p1) { RunPanels(j, p0, p1); });
  } else {
    const int64_t count = (rows + 15) / 16;
    if (panels.dtype == DType::Q4_0)
      pool.parallel_for(count, 4, [&j](int64_t p0, int64_t p1) { PanelRowsAll<true>(j, p0, p1); });
    else
      pool.parallel_for(count, 4, [&j](int64_t p0, int64_t p1) { PanelRowsAll<false>(j, p0, p1); });
  }
}

}  // namespace g3n::kernels
