// Int8 GEMM of Q8_0 / Q4_0 weights for many rows of activations (prefill) on AVX-512 VNNI CPUs: the
// activations quantised per block of 32 as the matrix-vector kernels quantise them (QuantActivations::kInt8),
// integer block products by vpdpbusd. Result = matmul_reference_int8 up to the order of float additions.
#pragma once
#include <cstdint>

#include "base/tensor.h"
#include "base/thread_pool.h"
#include "kernels/matmul.h"

namespace g3n::kernels {

// Whether gemm_int8 runs here for these weights: Q8_0 / Q4_0 matrices, a CPU with AVX-512 VNNI, and the
// kernels' active SIMD path is AVX3+VNNI (force_simd_target can turn it off).
bool gemm_int8_available(const TensorView& w);

// y[t] = W x[t] for t < n_tokens; options: x_stride, y_stride, columns (a prefix of whole blocks).
// Throws g3n::Error where gemm_int8_available is false.
void gemm_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
               const MatmulOptions& options = {});

}  // namespace g3n::kernels
