// Block quantisation: float32 <-> Q8_0 / Q4_0 (layouts in base/dtype.h, identical to GGUF's), plus
// whole-tensor conversion and the transposed copies the sparse FFN kernel wants.
//
// The rules are ggml's reference quantisers (ggml-quants.c; gguf-py's gguf.quants is bit-exact
// with them), so the bytes produced here equal llama.cpp's / gguf-py's for the same input.
// Per block of 32 values x, with d' = float16(d) the stored scale:
//
//  Q8_0:  d = max|x| / 127 (float32),  id = d ? 1/d : 0,  q = roundf(x * id) (half away from zero).
//         Error bound: |x - d' q| <= d/2 + 127 |d - d'| + 2^-20 |x|, and |d - d'| <= 2^-11 d while d'
//         is a normal float16 (so <= 0.5625 d overall; <= d/2 (1 + 1/8) worst case, typically ~d/2).
//  Q4_0:  m = the value of largest magnitude (the first on ties),  d = m / -8,  id = d ? 1/d : 0,
//         q = min(15, trunc(x * id + 8.5)),  value = d' (q - 8), so m itself is exact (q = 0).
//         Error bound: |x - d'(q - 8)| <= |d|/2 + 8 |d - d'| + 2^-20 |x| where x * id <= 7.5; values
//         on the far side of m beyond 7.5 |d| clip to q = 15: error up to |d| + 8 |d - d'| there.
//
// Activations for the integer kernels are quantised with Q8_0's rule but keep d in float32
// (quantize_row_q8_act): |x - d q| <= d/2 + 2^-20 |x| per element.
#pragma once
#include <cstdint>
#include <vector>

#include "base/dtype.h"
#include "base/tensor.h"
#include "base/thread_pool.h"

namespace g3n::quant {

// n must be a multiple of kQuantBlock. `out` receives n / 32 blocks (34 or 18 bytes each); it
// need not be aligned.
void quantize_row_q8_0(const float* x, int64_t n, void* out);
void quantize_row_q4_0(const float* x, int64_t n, void* out);
void dequantize_row_q8_0(const void* in, int64_t n, float* out);
void dequantize_row_q4_0(const void* in, int64_t n, float* out);

// Quantises n values (n a multiple of kQuantBlock) to int8 per block of 32 with float32 scales:
// q[i] = roundf(x[i] / d_b) with d_b = max|x in block b| / 127 (computed as for Q8_0). `sums`
// (may be null) receives sum(q) per block. This is the activation side of the integer kernels.
void quantize_row_q8_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums);

// A tensor that owns its bytes. view() points into `bytes`, so it stays valid as long as this
// object lives (moving it keeps the buffer).
struct OwnedTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorView view() const { return TensorView{dtype, shape, bytes.data()}; }
};

// Converts a 2-D tensor [rows, cols] of any dtype to `to` (any dtype; block types need cols % 32
// == 0). Rows are processed in parallel when a pool is given. Throws g3n::Error on bad shapes.
OwnedTensor convert_tensor(const TensorView& w, DType to, ThreadPool* pool = nullptr);

// Same, from a float32 buffer [rows, cols].
OwnedTensor quantize_tensor(const float* w, int64_t rows, int64_t cols, DType to, ThreadPool* pool = nullptr);

// The transposed copy [cols, rows] of a 2-D tensor [rows, cols], stored as `to` (block types then
// need rows % 32 == 0: blocks run along the original output dimension). This is the layout
// kernels::matmul_transposed_rows reads: keep one for layers multiplied with sparse activations.
OwnedTensor transpose_tensor(const TensorView& w, DType to, ThreadPool* pool = nullptr);

}  // namespace g3n::quant
