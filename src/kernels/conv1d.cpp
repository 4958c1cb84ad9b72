#include "kernels/conv1d.h"

namespace g3n::kernels {

void depthwise_conv1d_causal(const float* x, int64_t n_time, int64_t channels, const float* w, int64_t kernel,
                             float* y) {
  for (int64_t t = 0; t < n_time; ++t) {
    float* out = y + t * channels;
    for (int64_t c = 0; c < channels; ++c) out[c] = 0.0f;
    // Taps in the reference's order (k = 0 first), so the float sums round the same way.
    for (int64_t k = 0; k < kernel; ++k) {
      const int64_t src = t - (kernel - 1) + k;
      if (src < 0) continue;
      const float* in = x + src * channels;
      for (int64_t c = 0; c < channels; ++c) out[c] += w[c * kernel + k] * in[c];
    }
  }
}

}  // namespace g3n::kernels
