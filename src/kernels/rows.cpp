// Row-wise kernels (see rows.h): one Highway source compiled per SIMD target (foreach_target
// re-includes this file), dispatched at run time; the public functions and the scalar oracles are in
// the HWY_ONCE part at the end.
#ifndef G3N_KERNELS_ROWS_ONCE
#define G3N_KERNELS_ROWS_ONCE

#include "kernels/rows.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

// As matmul.cpp: one vector-length-agnostic source, fixed-size targets only.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

#endif  // G3N_KERNELS_ROWS_ONCE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/rows.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include "kernels/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using namespace rows_simd;  // NOLINT(google-build-using-namespace): the shared per-target math

void RmsNormRow(const float* x, int64_t n, const RowNormOptions& o, float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const bool clip = o.clip > 0;
  VF s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    VF v0 = hn::LoadU(d, x + i), v1 = hn::LoadU(d, x + i + N), v2 = hn::LoadU(d, x + i + 2 * N),
       v3 = hn::LoadU(d, x + i + 3 * N);
    if (clip) {
      v0 = Clip(d, v0, o.clip), v1 = Clip(d, v1, o.clip), v2 = Clip(d, v2, o.clip), v3 = Clip(d, v3, o.clip);
    }
    s0 = hn::MulAdd(v0, v0, s0);
    s1 = hn::MulAdd(v1, v1, s1);
    s2 = hn::MulAdd(v2, v2, s2);
    s3 = hn::MulAdd(v3, v3, s3);
  }
  for (; i < n; i += N) {
    VF v = LoadPart(d, x + i, std::min(N, n - i));
    if (clip) v = Clip(d, v, o.clip);
    s0 = hn::MulAdd(v, v, s0);
  }
  const float ms = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)))) / float(n);
  const VF scale = hn::Set(d, 1.0f / std::sqrt(ms + o.eps));
  ForEachVector(n, [&](int64_t i, int64_t count) {
    VF v = LoadPart(d, x + i, count);
    if (o.clip > 0) v = Clip(d, v, o.clip);
    v = hn::Mul(v, scale);
    if (o.weight) v = hn::Mul(v, LoadPart(d, o.weight + i, count));
    StorePart(d, Activate(d, v, o.activation), out + i, count);
  });
}

void RmsNormRows(const float* x, int64_t r0, int64_t r1, int64_t n, const RowNormOptions& o, float* out) {
  for (int64_t r = r0; r < r1; ++r) RmsNormRow(x + r * n, n, o, out + r * n);
}

void SoftmaxRows(float* x, int64_t r0, int64_t r1, int64_t n, int64_t stride, float scale) {
  for (int64_t r = r0; r < r1; ++r) SoftmaxRow(x + r * stride, n, scale);
}

void ActivateRange(float* x, int64_t n, RowActivation act) {
  const DF d;
  ForEachVector(n, [&](int64_t i, int64_t count) {
    StorePart(d, Activate(d, LoadPart(d, x + i, count), act), x + i, count);
  });
}

void GluRows(const float* z, int64_t r0, int64_t r1, int64_t dim, float* out) {
  const DF d;
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = z + r * 2 * dim;
    const float* g = a + dim;
    float* o = out + r * dim;
    ForEachVector(dim, [&](int64_t i, int64_t count) {
      StorePart(d, hn::Mul(LoadPart(d, a + i, count), Sigmoid(d, LoadPart(d, g + i, count))), o + i, count);
    });
  }
}

void ScaleAddRows(float* y, const float* gamma, const float* residual, int64_t r0, int64_t r1, int64_t n) {
  const DF d;
  for (int64_t r = r0; r < r1; ++r) {
    float* row = y + r * n;
    const float* res = residual ? residual + r * n : nullptr;
    ForEachVector(n, [&](int64_t i, int64_t count) {
      VF v = LoadPart(d, row + i, count);
      if (gamma) v = hn::Mul(v, LoadPart(d, gamma + i, count));
      if (res) v = hn::Add(v, LoadPart(d, res + i, count));
      StorePart(d, v, row + i, count);
    });
  }
}

void AddScaled(float* x, const float* y, float s, int64_t n) {
  const DF d;
  const VF vs = hn::Set(d, s);
  ForEachVector(n, [&](int64_t i, int64_t count) {
    StorePart(d, hn::Add(LoadPart(d, x + i, count), hn::Mul(LoadPart(d, y + i, count), vs)), x + i, count);
  });
}

}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace g3n::kernels {

HWY_EXPORT(RmsNormRows);
HWY_EXPORT(SoftmaxRows);
HWY_EXPORT(ActivateRange);
HWY_EXPORT(GluRows);
HWY_EXPORT(ScaleAddRows);
HWY_EXPORT(AddScaled);

namespace {

// Rows per task: about 16k values each.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, n)); }

// Elementwise work in chunks of 16k values, each a multiple of 16 (whole vectors on every target).
constexpr int64_t kChunk = 1 << 14;

}  // namespace

void rms_norm_rows(const float* x, int64_t rows, int64_t n, const RowNormOptions& o, float* out, ThreadPool& pool) {
  if (rows <= 0 || n <= 0) return;
  pool.parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(RmsNormRows)(x, r0, r1, n, o, out);
  });
}

void softmax_rows(float* x, int64_t rows, int64_t n, int64_t stride, float scale, ThreadPool& pool) {
  if (rows <= 0 || n <= 0) return;
  pool.parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(SoftmaxRows)(x, r0, r1, n, stride, scale);
  });
}

void activate(float* x, int64_t n, RowActivation act, ThreadPool& pool) {
  if (n <= 0 || act == RowActivation::kNone) return;
  pool.parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * kChunk, i1 = std::min(n, c1 * kChunk);
    HWY_DYNAMIC_DISPATCH(ActivateRange)(x + i0, i1 - i0, act);
  });
}

void glu(const float* z, int64_t rows, int64_t d, float* out, ThreadPool& pool) {
  if (rows <= 0 || d <= 0) return;
  pool.parallel_for(rows, row_grain(d), [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(GluRows)(z, r0, r1, d, out);
  });
}

void scale_add_rows(float* y, const float* gamma, const float* residual, int64_t rows, int64_t n, ThreadPool& pool) {
  if (rows <= 0 || n <= 0 || (!gamma && !residual)) return;
  pool.parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(ScaleAddRows)(y, gamma, residual, r0, r1, n);
  });
}

void add_scaled(float* x, const float* y, float s, int64_t n, ThreadPool& pool) {
  if (n <= 0) return;
  pool.parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * kChunk, i1 = std::min(n, c1 * kChunk);
    HWY_DYNAMIC_DISPATCH(AddScaled)(x + i0, y + i0, s, i1 - i0);
  });
}

// ---------------------------------------------------------------- scalar oracles

float activation_reference(float x, RowActivation act) {
  const double v = x;
  switch (act) {
    case RowActivation::kGeluTanh:
      return float(0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
    case RowActivation::kSilu: return float(v / (1.0 + std::exp(-v)));
    case RowActivation::kNone: break;
  }
  return x;
}

void rms_norm_rows_reference(const float* x, int64_t rows, int64_t n, const RowNormOptions& o, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * n;
    auto clipped = [&](int64_t i) {
      const float v = row[i];
      return o.clip > 0 ? (v < -o.clip ? -o.clip : (v > o.clip ? o.clip : v)) : v;
    };
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(clipped(i)) * clipped(i);
    const double scale = 1.0 / std::sqrt(s / double(n) + double(o.eps));
    for (int64_t i = 0; i < n; ++i) {
      const double v = double(clipped(i)) * scale * (o.weight ? double(o.weight[i]) : 1.0);
      out[r * n + i] = activation_reference(float(v), o.activation);
    }
  }
}

void softmax_rows_reference(float* x, int64_t rows, int64_t n, int64_t stride, float scale) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(row[i]) * scale);
    for (int64_t i = 0; i < n; ++i) s += std::exp(double(row[i]) * scale - m);
    for (int64_t i = 0; i < n; ++i) row[i] = float(std::exp(double(row[i]) * scale - m) / s);
  }
}

}  // namespace g3n::kernels
#endif  // HWY_ONCE
