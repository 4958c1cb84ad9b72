#include "kernels/matmul.h"

#include <algorithm>
#include <vector>

namespace g3n::kernels {

float dot(const float* a, const float* b, int64_t n) {
  // 16 independent partial sums let the compiler keep whole SIMD registers busy without -ffast-math.
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int j = kLanes / 2; j >= 1; j /= 2)
    for (int k = 0; k < j; ++k) acc[k] += acc[k + j];
  return acc[0] + tail;
}

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, int64_t x_stride,
            int64_t y_stride) {
  const int64_t out = w.dim(0), in = w.dim(1);
  if (x_stride == 0) x_stride = in;
  if (y_stride == 0) y_stride = out;
  // Rows per task: enough work per task to hide scheduling, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, in * n_tokens));
  pool.parallel_for(out, grain, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> row;
    if (w.dtype != DType::F32) row.resize(size_t(in));
    for (int64_t r = r0; r < r1; ++r) {
      const float* wr;
      if (w.dtype == DType::F32) {
        wr = static_cast<const float*>(w.data) + r * in;
      } else {
        to_f32(w, r * in, in, row.data());
        wr = row.data();
      }
      for (int64_t t = 0; t < n_tokens; ++t) y[t * y_stride + r] = dot(wr, x + t * x_stride, in);
    }
  });
}

void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<float> row(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    to_f32(w, r * in, in, row.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += double(row[size_t(i)]) * double(x[t * in + i]);
      y[t * out + r] = float(s);
    }
  }
}

}  // namespace g3n::kernels
