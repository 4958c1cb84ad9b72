#include "kernels/conv.h"

#include <algorithm>
#include <vector>

#include "base/checked.h"
#include "base/error.h"
#include "kernels/matmul.h"

namespace g3n::kernels {
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
  const int64_t C = s.in_c, KH = s.kernel_h, KW = s.kernel_w, OH = s.out_h(), OW = s.out_w();
  // Weights as [tap][c] so the inner loop runs over contiguous channels.
  std::vector<float> wc(size_t(C * KH * KW)), wt(size_t(C * KH * KW));
  to_f32(w, 0, C * KH * KW, wc.data());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < KH * KW; ++t) wt[size_t(t * C + c)] = wc[size_t(c * KH * KW + t)];
  pool.parallel_for(OH, 1, [&](int64_t oy0, int64_t oy1) {
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      for (int64_t ox = 0; ox < OW; ++ox) {
        float* __restrict acc = y + (oy * OW + ox) * C;
        if (bias) std::copy(bias, bias + C, acc);
        else std::fill(acc, acc + C, 0.0f);
        for (int64_t ky = 0; ky < KH; ++ky) {
          const int64_t iy = oy * s.stride_h - s.pad_top + ky;
          if (iy < 0 || iy >= s.in_h) continue;
          for (int64_t kx = 0; kx < KW; ++kx) {
            const int64_t ix = ox * s.stride_w - s.pad_left + kx;
            if (ix < 0 || ix >= s.in_w) continue;
            const float* __restrict xp = x + (iy * s.in_w + ix) * C;
            const float* __restrict wp = wt.data() + (ky * KW + kx) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += wp[c] * xp[c];
          }
        }
      }
    }
  });
}

// General convolution: im2col over tiles of output pixels, one matmul per tile and group.
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
    matmul(as_matrix(w), x, s.in_h * s.in_w, y, pool);
    add_bias(bias, s.in_h * s.in_w, s.out_c, y, pool);
  } else if (s.groups == s.in_c && s.out_c == s.in_c) {
    conv_depthwise(w, bias, x, s, y, pool);
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
