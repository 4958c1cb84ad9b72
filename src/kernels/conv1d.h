// 1-D convolutions over time on float32 [time, channels] rows. Model-agnostic.
#pragma once
#include <cstdint>

namespace g3n::kernels {

// Causal depthwise convolution (PyTorch Conv1d with groups = channels, no bias, after a left
// zero-pad of kernel - 1 steps): y[t][c] = sum_{k < kernel} w[c][k] * x[t - (kernel - 1) + k][c],
// with x[t < 0] = 0. x, y: [n_time, channels]; w: [channels, kernel]. y must not overlap x.
void depthwise_conv1d_causal(const float* x, int64_t n_time, int64_t channels, const float* w, int64_t kernel,
                             float* y);

}  // namespace g3n::kernels
