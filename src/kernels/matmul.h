// Matrix products of stored weights (F32 / F16 / BF16) with float32 activations.
// Weights are [out, in] row-major as in Hugging Face checkpoints; activations are [tokens, in].
#pragma once
#include <cstdint>

#include "base/tensor.h"
#include "base/thread_pool.h"

namespace g3n::kernels {

// y[t][o] = sum_i w[o][i] * x[t][i] for o in [0, out), t in [0, n_tokens).
// `x_stride` / `y_stride` are row strides in floats (0 = dense: in / out).
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            int64_t x_stride = 0, int64_t y_stride = 0);

// Scalar oracle: the same product computed in double, one element at a time. For tests.
void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y);

// Dot product of two float32 vectors.
float dot(const float* a, const float* b, int64_t n);

}  // namespace g3n::kernels
