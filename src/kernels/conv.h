// 2-D convolutions of float32 images with stored weights (F32 / F16 / BF16). Model-agnostic.
//
// Layout: images are channels-last, [H, W, C] row-major ("HWC"): pixel (y, x) channel c lives at
// x[(y * W + x) * C + c]. In this layout a 1x1 convolution is exactly kernels::matmul over the
// H*W pixels, and per-pixel channel norms read contiguous rows.
// Weights are PyTorch's [C_out, C_in / groups, kH, kW] (as stored in checkpoints), converted to
// float32 as they are read; products are summed in float32.
//
// Paths (chosen by conv2d; all compute the same sum up to float summation order):
//  - 1x1, stride 1, no padding, one group: one product over the pixels (kernels::gemm when there are
//    enough pixels to pay for packing the weights, kernels::gemm_preferred; else kernels::matmul);
//  - depthwise (groups = C_in = C_out): direct loops, vectorised across channels;
//  - anything else, many output pixels: an implicit-im2col gemm per group (the patches of a block of
//    pixels are gathered as the gemm needs them, tap-major so that each tap is a run of channels);
//  - anything else, few output pixels: im2col into tiles of output pixels (patch order (c, ky, kx),
//    the weight's own flattening), then one matmul per tile and group.
// Threads come from the caller's pool (never nested: matmul calls run outside parallel_for).
#pragma once
#include <cstdint>

#include "base/tensor.h"
#include "base/thread_pool.h"

namespace g3n::kernels {

struct Conv2dShape {
  int64_t in_h = 0, in_w = 0, in_c = 0;
  int64_t out_c = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;  // zero padding
  int64_t groups = 1;

  int64_t out_h() const { return (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w + pad_left + pad_right - kernel_w) / stride_w + 1; }
  // Throws g3n::Error naming the first inconsistent field (sizes, groups, an empty output).
  void validate() const;
};

// Zero padding of one dimension, before and after.
struct Padding {
  int64_t before = 0, after = 0;
};

// TensorFlow's 'same' padding (timm's pad_type='same', Conv2dSame): out = ceil(in / stride),
// total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0), before = total / 2
// (rounded down: an odd extra pixel goes after, i.e. bottom / right).
Padding same_padding(int64_t in, int64_t kernel, int64_t stride, int64_t dilation = 1);

// y[HWC, out_h x out_w x out_c] = conv(x[HWC, in_h x in_w x in_c], w) + bias.
// w: [out_c, in_c / groups, kernel_h, kernel_w], F32 / F16 / BF16. bias: out_c floats or null.
// y must not overlap x. Throws g3n::Error on a shape mismatch.
void conv2d(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y, ThreadPool& pool);

// Scalar oracle: the same convolution, one output at a time, summed in double. For tests.
void conv2d_reference(const TensorView& w, const float* bias, const float* x, const Conv2dShape& s, float* y);

// Layout changes between planar [C, H, W] and channels-last [H, W, C].
void chw_to_hwc(const float* x, int64_t c, int64_t h, int64_t w, float* y);
void hwc_to_chw(const float* x, int64_t h, int64_t w, int64_t c, float* y);

}  // namespace g3n::kernels
