// Int8 GEMM of Q8_0 / Q4_0 weights for many rows of activations (prefill) on AVX-512 VNNI CPUs: the
// activations quantised per block of 32 as the matrix-vector kernels quantise them (QuantActivations::kInt8),
// integer block products by vpdpbusd. Result = matmul_reference_int8 up to the order of float additions.
#pragma once
#include <cstdint>
#include <memory>

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

// Q4_0 weights repacked for the VNNI kernels ("panels"): 16 rows per panel; per panel and block of 32
// columns, 288 bytes (the size of the 16 rows' Q4_0 blocks): the 16 float16 scales, then 4 vectors of 64
// bytes where vector h, lane r holds bytes 4h .. 4h+3 of row r's packed nibbles (low nibbles: elements
// 4h .. 4h+3 of the block, high nibbles: elements 16+4h .. 16+4h+3). One 64-byte load then feeds two
// vpdpbusd (16 rows x 4 columns each) after a mask and a shift: no per-row shuffles, no horizontal sums.
// Rows past the matrix's in the last panel are zero. 64-byte aligned.
struct Q4Panels {
  std::shared_ptr<uint8_t> bytes;
  int64_t rows = 0, cols = 0;
  size_t size = 0;  // bytes
  const uint8_t* block(int64_t panel, int64_t b) const {
    return bytes.get() + (size_t(panel) * size_t(cols / 32) + size_t(b)) * 288;
  }
};

// Whether the VNNI kernels run here (a CPU with AVX-512 VNNI, active SIMD path AVX3+VNNI).
bool q4_panels_available();
// Repacks a Q4_0 matrix (threads from pool when given).
Q4Panels pack_q4_panels(const TensorView& w, ThreadPool* pool = nullptr);

// y[t] = W x[t] for t < n_tokens with W the first `rows` rows (<= panels.rows) of the repacked matrix;
// options: x_stride, y_stride, columns (a prefix of whole blocks). Activations quantised as
// QuantActivations::kInt8 quantises them: the result equals matmul's int8 product of the original Q4_0
// weights (matmul_reference_int8) up to the order of float additions. Many rows go through gemm_int8's
// tiles (fed from the panels), few through a matrix-vector kernel that streams each panel once.
void matmul_q4_panels(const Q4Panels& panels, int64_t rows, const float* x, int64_t n_tokens, float* y,
                      ThreadPool& pool, const MatmulOptions& options = {});

}  // namespace g3n::kernels
