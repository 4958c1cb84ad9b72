// 2-D convolutions (see conv.h). The depthwise loops are one Highway source compiled per SIMD target
// (foreach_target re-includes this file) and dispatched at run time; everything else is in the
// HWY_ONCE part below them.
#ifndef G3N_KERNELS_CONV_ONCE
#define G3N_KERNELS_CONV_ONCE

#include "kernels/conv.h"

#include <algorithm>
#include <vector>

#include "base/checked.h"
#include "base/error.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"

// As matmul.cpp: one vector-length-agnostic source, fixed-size targets only.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

namespace g3n::kernels::detail {

struct DepthwiseJob {
  const float* x = nullptr;     // [in_h, in_w, C]
  const float* wt = nullptr;    // [taps][C]: the weights tap-major, so channels are contiguous
  const float* bias = nullptr;  // [C] or null
  Conv2dShape s;
  float* y = nullptr;  // [out_h, out_w, C]
};

}  // namespace g3n::kernels::detail

#endif  // G3N_KERNELS_CONV_ONCE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/conv.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Output rows [oy0, oy1): for every pixel and block of 4 channel vectors, the accumulators stay in
// registers over all taps (2 loads per FMA); taps outside the image are skipped (zero padding).
void DepthwiseRows(const detail::DepthwiseJob& j, int64_t oy0, int64_t oy1) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const int64_t N = int64_t(hn::Lanes(d));
  const Conv2dShape& s = j.s;
  const int64_t C = s.in_c, KH = s.kernel_h, KW = s.kernel_w, OW = s.out_w();
  const int64_t c_vec = C / N * N;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t iy0 = oy * s.stride_h - s.pad_top;
    const int64_t ky0 = std::max<int64_t>(0, -iy0), ky1 = std::min(KH, s.in_h - iy0);
    for (int64_t ox = 0; ox < OW; ++ox) {
      const int64_t ix0 = ox * s.stride_w - s.pad_left;
      const int64_t kx0 = std::max<int64_t>(0, -ix0), kx1 = std::min(KW, s.in_w - ix0);
      float* out = j.y + (oy * OW + ox) * C;
      int64_t c = 0;
      for (; c + 4 * N <= c_vec; c += 4 * N) {
        V a0 = j.bias ? hn::LoadU(d, j.bias + c) : hn::Zero(d);
        V a1 = j.bias ? hn::LoadU(d, j.bias + c + N) : hn::Zero(d);
        V a2 = j.bias ? hn::LoadU(d, j.bias + c + 2 * N) : hn::Zero(d);
        V a3 = j.bias ? hn::LoadU(d, j.bias + c + 3 * N) : hn::Zero(d);
        for (int64_t ky = ky0; ky < ky1; ++ky)
          for (int64_t kx = kx0; kx < kx1; ++kx) {
            const float* xp = j.x + ((iy0 + ky) * s.in_w + ix0 + kx) * C + c;
            const float* wp = j.wt + (ky * KW + kx) * C + c;
            a0 = hn::MulAdd(hn::LoadU(d, wp), hn::LoadU(d, xp), a0);
            a1 = hn::MulAdd(hn::LoadU(d, wp + N), hn::LoadU(d, xp + N), a1);
            a2 = hn::MulAdd(hn::LoadU(d, wp + 2 * N), hn::LoadU(d, xp + 2 * N), a2);
            a3 = hn::MulAdd(hn::LoadU(d, wp + 3 * N), hn::LoadU(d, xp + 3 * N), a3);
          }
        hn::StoreU(a0, d, out + c);
        hn::StoreU(a1, d, out + c + N);
        hn::StoreU(a2, d, out + c + 2 * N);
        hn::StoreU(a3, d, out + c + 3 * N);
      }
      for (; c < c_vec; c += N) {
        V a = j.bias ? hn::LoadU(d, j.bias + c) : hn::Zero(d);
        for (int64_t ky = ky0; ky < ky1; ++ky)
          for (int64_t kx = kx0; kx < kx1; ++kx)
            a = hn::MulAdd(hn::LoadU(d, j.wt + (ky * KW + kx) * C + c),
                           hn::LoadU(d, j.x + ((iy0 + ky) * s.in_w + ix0 + kx) * C + c), a);
        hn::StoreU(a, d, out + c);
      }
      for (; c < C; ++c) {
        float a = j.bias ? j.bias[c] : 0.0f;
        for (int64_t ky = ky0; ky < ky1; ++ky)
          for (int64_t kx = kx0; kx < kx1; ++kx)
            a += j.wt[(ky * KW + kx) * C + c] * j.x[((iy0 + ky) * s.in_w + ix0 + kx) * C + c];
        out[c] = a;
      }
    }
  }
}

}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace g3n::kernels {

HWY_EXPORT(DepthwiseRows);

namespace {

void check_weights(const TensorView& w, const Conv2dShape& s) {
  G3N_CHECK(w.data != nullptr, "conv2d: no weight tensor");
  G3N_CHECK(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16, "conv2d: weights of type ",
            dtype_name(w.dtype), " are not supported (F32, F16, BF16)");
  const std::vector<int64_t> want = {s.out_c, s.in_c / s.groups, s.kernel_h, s.kernel_w};
  G3N_CHECK(w.shape == want, "conv2d: weight shape ", shape_str(w.shape), ", expected ", shape_str(want));
}

// The 4-D weight seen as the 2-D matrix [out_c, in_c / groups * kh * kw] (same memory).
TensorView as_matrix(const TensorView& w) {
  TensorView m = w;
  m.shape = {w.dim(0), w.dim(1) * w.dim(2) * w.dim(3)};
  return m;
}

void add_bias(const float* bias, int64_t n_pix, int64_t c, float* y, ThreadPool& pool) {
  if (!bias) return;
  pool.parallel_for(n_pix, 256, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* row = y + p * c;
      for (int64_t j = 0; j < c; ++j) row[j] += bias[j];
    }
  });
}

// groups = in_c = out_c: y[p][c] = bias[c] + sum_taps w[c][tap] * x[q(p, tap)][c].
void conv_depthwise(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y,
                    ThreadPool& pool) {
  const int64_t C = s.in_c, KH = s.kernel_h, KW = s.kernel_w, OH = s.out_h();
  // Weights as [tap][c] so the inner loop runs over contiguous channels.
  std::vector<float> wc(size_t(C * KH * KW)), wt(size_t(C * KH * KW));
  to_f32(w, 0, C * KH * KW, wc.data());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < KH * KW; ++t) wt[size_t(t * C + c)] = wc[size_t(c * KH * KW + t)];
  detail::DepthwiseJob j;
  j.x = x;
  j.wt = wt.data();
  j.bias = bias;
  j.s = s;
  j.y = y;
  pool.parallel_for(OH, 1, [&](int64_t oy0, int64_t oy1) { HWY_DYNAMIC_DISPATCH(DepthwiseRows)(j, oy0, oy1); });
}

// General convolution as one gemm per group whose rows of A are the output pixels' patches, gathered
// block by block as the gemm asks for them (never stored whole). The patch columns are taken tap-major,
// (ky, kx, c), so that each tap contributes a run of contiguous channels of the channels-last image;
// the gemm reads the weights' (c, ky, kx) columns in that order (GemmOptions::taps).
void conv_implicit_gemm(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y,
                        ThreadPool& pool) {
  const int64_t G = s.groups, Cg = s.in_c / G, Og = s.out_c / G, KW = s.kernel_w;
  const int64_t OW = s.out_w(), n_pix = s.out_h() * OW;
  const TensorView wm = as_matrix(w);
  for (int64_t g = 0; g < G; ++g) {
    const GemmRowSource patches = [&](int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t p = m0 + r, oy = p / OW, ox = p % OW;
        float* d = dst + r * kc;
        for (int64_t k = k0, k1 = k0 + kc; k < k1;) {
          const int64_t tap = k / Cg, c = k - tap * Cg, run = std::min(Cg - c, k1 - k);
          const int64_t iy = oy * s.stride_h - s.pad_top + tap / KW, ix = ox * s.stride_w - s.pad_left + tap % KW;
          if (iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w)
            std::copy_n(x + (iy * s.in_w + ix) * s.in_c + g * Cg + c, run, d);
          else
            std::fill(d, d + run, 0.0f);
          d += run;
          k += run;
        }
      }
    };
    // Rows [g*Og, (g+1)*Og) of the weight matrix are contiguous: a view of them is a matrix too.
    TensorView wg = wm;
    wg.shape = {Og, wm.dim(1)};
    wg.data = wm.row(g * Og);
    GemmOptions o;
    o.c_stride = s.out_c;
    o.bias = bias ? bias + g * Og : nullptr;
    o.taps = s.kernel_h * s.kernel_w;
    o.a_source = &patches;
    gemm(wg, nullptr, n_pix, y + g * Og, pool, o);
  }
}

// General convolution with few output pixels: im2col over tiles of output pixels, one matmul per tile
// and group.
void conv_im2col(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y,
                 ThreadPool& pool) {
  const int64_t G = s.groups, Cg = s.in_c / G, Og = s.out_c / G, KH = s.kernel_h, KW = s.kernel_w;
  const int64_t OW = s.out_w(), n_pix = s.out_h() * OW;
  const int64_t K = Cg * KH * KW;  // patch length = a row of the weight matrix
  const TensorView wm = as_matrix(w);
  // Tiles of about 2M floats (8 MB) of patches.
  const int64_t tile = std::max<int64_t>(16, std::min<int64_t>(n_pix, (int64_t(1) << 21) / std::max<int64_t>(K, 1)));
  std::vector<float> cols(size_t(checked_mul(uint64_t(tile), uint64_t(K), "conv2d im2col")));
  for (int64_t p0 = 0; p0 < n_pix; p0 += tile) {
    const int64_t np = std::min(tile, n_pix - p0);
    for (int64_t g = 0; g < G; ++g) {
      pool.parallel_for(np, 16, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) {
          const int64_t p = p0 + i, oy = p / OW, ox = p % OW;
          float* col = cols.data() + i * K;
          for (int64_t c = 0; c < Cg; ++c) {
            const int64_t ch = g * Cg + c;
            for (int64_t ky = 0; ky < KH; ++ky) {
              const int64_t iy = oy * s.stride_h - s.pad_top + ky;
              for (int64_t kx = 0; kx < KW; ++kx) {
                const int64_t ix = ox * s.stride_w - s.pad_left + kx;
                const bool inside = iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w;
                *col++ = inside ? x[(iy * s.in_w + ix) * s.in_c + ch] : 0.0f;
              }
            }
          }
        }
      });
      // Rows [g*Og, (g+1)*Og) of the weight matrix are contiguous: a view of them is a matrix too.
      TensorView wg = wm;
      wg.shape = {Og, K};
      wg.data = wm.row(g * Og);
      matmul(wg, cols.data(), np, y + p0 * s.out_c + g * Og, pool, /*x_stride=*/K, /*y_stride=*/s.out_c);
    }
  }
  add_bias(bias, n_pix, s.out_c, y, pool);
}

}  // namespace

void Conv2dShape::validate() const {
  G3N_CHECK(in_h > 0 && in_w > 0 && in_c > 0 && out_c > 0, "conv2d: empty input or output (", in_h, "x", in_w, "x",
            in_c, " -> ", out_c, " channels)");
  G3N_CHECK(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0, "conv2d: kernel ", kernel_h, "x", kernel_w,
            " / stride ", stride_h, "x", stride_w, " must be positive");
  G3N_CHECK(pad_top >= 0 && pad_bottom >= 0 && pad_left >= 0 && pad_right >= 0, "conv2d: negative padding");
  G3N_CHECK(groups > 0 && in_c % groups == 0 && out_c % groups == 0, "conv2d: ", groups,
            " groups do not divide the channels (", in_c, " in, ", out_c, " out)");
  G3N_CHECK(in_h + pad_top + pad_bottom >= kernel_h && in_w + pad_left + pad_right >= kernel_w, "conv2d: kernel ",
            kernel_h, "x", kernel_w, " larger than the padded input ", in_h + pad_top + pad_bottom, "x",
            in_w + pad_left + pad_right);
}

Padding same_padding(int64_t in, int64_t kernel, int64_t stride, int64_t dilation) {
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0);
  return {total / 2, total - total / 2};
}

void conv2d(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y, ThreadPool& pool) {
  s.validate();
  check_weights(w, s);
  const bool no_pad = s.pad_top == 0 && s.pad_bottom == 0 && s.pad_left == 0 && s.pad_right == 0;
  if (s.groups == 1 && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && no_pad) {
    if (gemm_preferred(as_matrix(w), s.in_h * s.in_w)) {
      GemmOptions o;
      o.bias = bias;
      gemm(as_matrix(w), x, s.in_h * s.in_w, y, pool, o);
    } else {
      matmul(as_matrix(w), x, s.in_h * s.in_w, y, pool);
      add_bias(bias, s.in_h * s.in_w, s.out_c, y, pool);
    }
  } else if (s.groups == s.in_c && s.out_c == s.in_c) {
    conv_depthwise(w, bias, x, s, y, pool);
  } else if (gemm_preferred(as_matrix(w), s.out_h() * s.out_w())) {
    conv_implicit_gemm(w, bias, x, s, y, pool);
  } else {
    conv_im2col(w, bias, x, s, y, pool);
  }
}

void conv2d_reference(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y) {
  s.validate();
  check_weights(w, s);
  const int64_t Cg = s.in_c / s.groups, Og = s.out_c / s.groups, OH = s.out_h(), OW = s.out_w();
  std::vector<float> wf(size_t(w.numel()));
  to_f32(w, 0, w.numel(), wf.data());
  for (int64_t oy = 0; oy < OH; ++oy)
    for (int64_t ox = 0; ox < OW; ++ox)
      for (int64_t o = 0; o < s.out_c; ++o) {
        const int64_t g = o / Og;
        double acc = bias ? double(bias[o]) : 0.0;
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t ky = 0; ky < s.kernel_h; ++ky)
            for (int64_t kx = 0; kx < s.kernel_w; ++kx) {
              const int64_t iy = oy * s.stride_h - s.pad_top + ky, ix = ox * s.stride_w - s.pad_left + kx;
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              const double wv = wf[size_t(((o * Cg + c) * s.kernel_h + ky) * s.kernel_w + kx)];
              acc += wv * double(x[(iy * s.in_w + ix) * s.in_c + g * Cg + c]);
            }
        y[(oy * OW + ox) * s.out_c + o] = float(acc);
      }
}

void chw_to_hwc(const float* x, int64_t c, int64_t h, int64_t w, float* y) {
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t p = 0; p < h * w; ++p) y[p * c + ch] = x[ch * h * w + p];
}

void hwc_to_chw(const float* x, int64_t h, int64_t w, int64_t c, float* y) {
  for (int64_t p = 0; p < h * w; ++p)
    for (int64_t ch = 0; ch < c; ++ch) y[ch * h * w + p] = x[p * c + ch];
}

}  // namespace g3n::kernels
#endif  // HWY_ONCE
