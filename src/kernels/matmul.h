// Matrix products of stored weights (F32 / F16 / BF16 / Q8_0 / Q4_0) with float32 activations.
// Weights are [out, in] row-major as in Hugging Face checkpoints; activations are [tokens, in].
//
// One portable SIMD source (Google Highway) compiled for every x86 / Arm target Highway offers and
// dispatched at run time for the CPU at hand; a scalar oracle for each kernel sits beside it.
// Threads come from the caller's pool; no allocation on the hot path (per-thread scratch grows once).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/tensor.h"
#include "base/thread_pool.h"

namespace g3n::kernels {

// How quantised weights (Q8_0 / Q4_0) meet the float activations.
enum class QuantActivations : uint8_t {
  // Default. Each token's activations are quantised per block of 32 to int8 with a float32 scale
  // (quant::quantize_row_q8_act) and blocks are multiplied in integers (AVX-512 VNNI, madd, ...).
  // Result = matmul_reference_int8 up to float summation order; versus the float product
  // (matmul_reference) the error of output o is at most sum over blocks b of
  // dx_b / 2 * sum_{i in b} |w[o][i]| with dx_b = max|x in b| / 127, i.e. at most
  // max|x_b| / 254 * sum_b |w| per block (plus float rounding).
  kInt8,
  // Each weight block is dequantised to float32 and multiplied with x by FMA: matmul_reference up
  // to float rounding, at some cost in speed.
  kFloat,
  // As kInt8, but the activations are quantised exactly as llama.cpp's CPU backend quantises them
  // (ggml_cpu::quantize_q8_0: q = round-half-even(x * 127 / amax), d rounded to float16): the product
  // is then ggml's Q8_0 / Q4_0 (and Q5_0, repacked exactly to Q8_0) dot product, up to the order of
  // float additions. For reproducing llama.cpp's numbers (Numerics::kGgml).
  kGgml,
};

struct MatmulOptions {
  int64_t x_stride = 0;  // row stride of x in floats (0 = in)
  int64_t y_stride = 0;  // row stride of y in floats (0 = out)
  QuantActivations quant_activations = QuantActivations::kInt8;
  // Multiply by the first `columns` columns of w only (0 = all): a strided view whose rows keep their
  // stored stride, so only that prefix of every row is read (a MatFormer FFN width of a down
  // projection). Then in = columns everywhere below. Block types: a multiple of 32 (whole blocks).
  int64_t columns = 0;
};

// Options with only the row strides set (the short forms of matmul and linear).
inline MatmulOptions strided(int64_t x_stride, int64_t y_stride) {
  MatmulOptions o;
  o.x_stride = x_stride;
  o.y_stride = y_stride;
  return o;
}

// y[t][o] = sum_i w[o][i] * x[t][i] for o in [0, out), i in [0, in), t in [0, n_tokens); in = w's
// columns or options.columns. `x_stride` / `y_stride` are row strides in floats (0 = dense: in /
// out). For block types, in must be a multiple of 32. x and y need no alignment; y must not overlap x.
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            int64_t x_stride = 0, int64_t y_stride = 0);
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const MatmulOptions& options);

// Scalar oracle: the same product computed in double from the dequantised weights and the float
// activations, one element at a time. For tests. The options form honours x_stride, y_stride and
// columns (quant_activations is ignored: this is the float product).
void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y);
void matmul_reference(const TensorView& w, const float* x, int64_t n_tokens, float* y, const MatmulOptions& options);

// Scalar oracle of the kInt8 path for block types: x quantised by quant::quantize_row_q8_act, exact
// integer block dot products, scaled by d_w * d_x and summed in double.
void matmul_reference_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y);
void matmul_reference_int8(const TensorView& w, const float* x, int64_t n_tokens, float* y,
                           const MatmulOptions& options);

// Dot product of two float32 vectors.
float dot(const float* a, const float* b, int64_t n);

// The SIMD activation quantiser of the kInt8 path: bit-identical to quant::quantize_row_q8_act
// (n a multiple of 32; sums may be null).
void quantize_activations(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums);

// ---- Sparse activations (one token) ----
//
// When only a few activations are nonzero (the FFN down projection under Gemma 3n's activation
// sparsity: ~5% of 16384), y = W[:, cols] x[cols]. With W stored [out, in] the selected columns
// are strided: every row touches most of its cache lines anyway (at 5% of bf16 columns, ~80% of
// 64-byte lines), so matmul_columns saves compute but little memory traffic. The fast form keeps a
// transposed copy W^T [in, out] (quant::transpose_tensor) and sums its selected rows, reading
// only n * out elements, contiguously: matmul_transposed_rows.

// y[o] = sum_k w[o][cols[k]] * x[cols[k]] for o in [0, out). x is the dense activation vector
// [in]; cols lists the (distinct) columns to use, any order.
void matmul_columns(const TensorView& w, const float* x, const int32_t* nonzero_cols, int64_t n_nonzero, float* y,
                    ThreadPool& pool);

// y[o] = sum_k values[k] * w_t[rows[k]][o] for o in [0, out) with w_t the transposed weights
// [in, out] (block types: out a multiple of 32). `values` is compact: values[k] goes with rows[k].
void matmul_transposed_rows(const TensorView& w_t, const int32_t* rows, const float* values, int64_t n, float* y,
                            ThreadPool& pool);

// Indices i with x[i] != 0, in increasing order, written to idx (room for n); returns their count.
int64_t nonzero_indices(const float* x, int64_t n, int32_t* idx);

// Scalar oracles (double accumulation).
void matmul_columns_reference(const TensorView& w, const float* x, const int32_t* cols, int64_t n_cols, float* y);
void matmul_transposed_rows_reference(const TensorView& w_t, const int32_t* rows, const float* values, int64_t n,
                                      float* y);

// ---- SIMD targets ----

// A code path the kernels can take: a Highway target (HWY_AVX3, HWY_AVX2, ..., HWY_SCALAR) and,
// on AVX3, whether the AVX-512 VNNI integer dot products are used.
struct SimdTarget {
  int64_t hwy_target = 0;
  bool vnni = false;
  std::string name;
};

// The paths compiled in and runnable on this CPU, best first.
std::vector<SimdTarget> simd_targets();
// Forces one of simd_targets() for all kernels (tests and benchmarks); nullptr restores the automatic
// choice. Must not be called while kernels run on other threads.
void force_simd_target(const SimdTarget* target);
// The path the kernels take now, e.g. "AVX3+VNNI".
std::string active_simd_target();

}  // namespace g3n::kernels
