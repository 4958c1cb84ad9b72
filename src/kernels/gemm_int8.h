// Int8 GEMM of Q8_0 / Q4_0 weights for many rows of activations (prefill) on AVX-512 VNNI CPUs: the
// activations quantised per block of 32 as the matrix-vector kernels quantise them (QuantActivations::kInt8),
// integer block products by vpdpbusd. Result = matmul_reference_int8 up to the order of float additions.
#pragma once
#include <cstdint>
#include <functional>
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

// Q4_0 / Q8_0 weights repacked for the VNNI kernels ("panels"): 16 rows per panel; per panel and block of 32
// columns, the 16 rows' float16 scales (32 bytes), then the quants with 4 consecutive columns of one row per
// 32-bit lane, 16 rows per 64-byte vector (the same size as the 16 rows' blocks):
//  - Q4_0 (288 bytes): 4 vectors; vector h, lane r holds bytes 4h .. 4h+3 of row r's packed nibbles (low
//    nibbles: columns 4h .. 4h+3 of the block, high: 16+4h .. 16+4h+3), so a mask and a shift give two
//    vectors of unsigned quants q + 8;
//  - Q8_0 (544 bytes): 8 vectors; vector g, lane r holds row r's quants 4g .. 4g+3, stored as q + 128.
// Each vector then feeds vpdpbusd (16 rows x 4 columns) directly: no per-row shuffles, no horizontal sums.
// Rows past the matrix's in the last panel are zero. 64-byte aligned.
struct VnniPanels {
  DType dtype = DType::Q4_0;
  std::shared_ptr<uint8_t> bytes;
  int64_t rows = 0, cols = 0;
  size_t size = 0;  // bytes
  size_t block_bytes() const { return dtype == DType::Q4_0 ? 288 : 544; }
  const uint8_t* block(int64_t panel, int64_t b) const {
    return bytes.get() + (size_t(panel) * size_t(cols / 32) + size_t(b)) * block_bytes();
  }
};

// Whether the VNNI kernels run here (a CPU with AVX-512 VNNI, active SIMD path AVX3+VNNI).
bool vnni_panels_available();
// Repacks a Q4_0 or Q8_0 matrix (threads from pool when given). packed(first_byte, bytes), when given, is
// called with each range of the original's bytes as soon as it has been copied (a few MB at a time), so that
// the caller can release them while the rest is packed.
VnniPanels pack_vnni_panels(const TensorView& w, ThreadPool* pool = nullptr,
                            const std::function<void(const void*, size_t)>& packed = {});
// Row r of the repacked matrix as float32 (the original's dequantised row), n = cols.
void vnni_panel_row(const VnniPanels& panels, int64_t r, float* out);

// y[t] = W x[t] for t < n_tokens with W the first `rows` rows (<= panels.rows) of the repacked matrix;
// options: x_stride, y_stride, columns (a prefix of whole blocks). Activations quantised as
// QuantActivations::kInt8 quantises them: the result equals matmul's int8 product of the original weights
// (matmul_reference_int8) up to the order of float additions. Many rows go through gemm_int8's tiles (fed
// from the panels), few through a matrix-vector kernel that streams each panel once.
void matmul_vnni_panels(const VnniPanels& panels, int64_t rows, const float* x, int64_t n_tokens, float* y,
                        ThreadPool& pool, const MatmulOptions& options = {});

}  // namespace g3n::kernels
