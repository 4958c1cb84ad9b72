// Row-wise and elementwise kernels for the media encoders' activations: RMS norms (with the clip
// before and the activation after them), softmax, SiLU, GLU, residual sums. Model-agnostic.
//
// One Highway source compiled per SIMD target and dispatched at run time (as matmul / gemm): the
// model code is compiled for the baseline ISA, where the compiler vectorises these loops for SSE2 at
// best, and libm's scalar expf / tanhf do not vectorise at all. exp is Highway's (within 2 ulp).
// Threads come from the caller's pool (rows, or chunks of elements, split among them). Scalar oracles
// sit beside the kernels for the tests.
#pragma once
#include <cstdint>

#include "base/thread_pool.h"

namespace g3n::kernels {

enum class RowActivation : uint8_t {
  kNone,
  kGeluTanh,  // PyTorch's gelu(approximate='tanh')
  kSilu,      // x * sigmoid(x)
};

struct RowNormOptions {
  const float* weight = nullptr;  // [n] scale after the norm, or null
  float eps = 1e-6f;
  // torch.clamp(x, -clip, clip) before the norm (NaN stays NaN); 0 = no clip.
  float clip = 0.0f;
  RowActivation activation = RowActivation::kNone;  // applied after the scale
};

// out[r] = act(c / sqrt(mean(c^2) + eps) * weight) with c = clip(x[r]), for rows of n floats (dense).
// The mean is summed in float32 (several partial sums); in place allowed (out == x).
void rms_norm_rows(const float* x, int64_t rows, int64_t n, const RowNormOptions& options, float* out,
                   ThreadPool& pool);

// x[r][0, n) = softmax(x[r][0, n) * scale) for rows `stride` floats apart (max-subtracted, float32 sums).
void softmax_rows(float* x, int64_t rows, int64_t n, int64_t stride, float scale, ThreadPool& pool);

// x = act(x) over n values.
void activate(float* x, int64_t n, RowActivation act, ThreadPool& pool);

// GLU over the feature axis: out[r][c] = z[r][c] * sigmoid(z[r][d + c]), z [rows, 2d], out [rows, d].
void glu(const float* z, int64_t rows, int64_t d, float* out, ThreadPool& pool);

// y[r] = y[r] * gamma (if gamma) + residual[r] (if residual) for rows of n floats: the reference's
// LayerScale then skip sum (the compiler may fuse the multiply and the add: one rounding, not two).
void scale_add_rows(float* y, const float* gamma, const float* residual, int64_t rows, int64_t n, ThreadPool& pool);

// x[i] = x[i] + y[i] * s (the reference's residual + branch * scale; possibly fused, as above).
void add_scaled(float* x, const float* y, float s, int64_t n, ThreadPool& pool);

// Scalar oracles (double where a sum is involved), one row / element at a time.
void rms_norm_rows_reference(const float* x, int64_t rows, int64_t n, const RowNormOptions& options, float* out);
void softmax_rows_reference(float* x, int64_t rows, int64_t n, int64_t stride, float scale);
float activation_reference(float x, RowActivation act);

}  // namespace g3n::kernels
