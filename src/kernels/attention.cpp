#include "kernels/attention.h"

#include <algorithm>

#include "kernels/elementwise.h"
#include "kernels/matmul.h"

namespace g3n::kernels {

void attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float scale, float* out, float* scores) {
  const int group = n_heads / n_kv_heads;
  const int64_t n = last - first + 1;
  const int64_t row = int64_t(n_kv_heads) * head_dim;
  for (int h = 0; h < n_heads; ++h) {
    const int j = h / group;
    const float* qh = q + int64_t(h) * head_dim;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t slot = (first + t) % kv.capacity;
      scores[t] = scale * dot(qh, kv.keys + slot * row + int64_t(j) * head_dim, head_dim);
    }
    softmax(scores, n);
    float* oh = out + int64_t(h) * head_dim;
    std::fill(oh, oh + head_dim, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t slot = (first + t) % kv.capacity;
      const float* vh = kv.values + slot * row + int64_t(j) * head_dim;
      const float p = scores[t];
      for (int d = 0; d < head_dim; ++d) oh[d] += p * vh[d];
    }
  }
}

}  // namespace g3n::kernels
