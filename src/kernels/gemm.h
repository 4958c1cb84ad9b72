// Cache-blocked matrix products for many rows: C[M, N] (+)= A[M, K] W^T (+ bias), with A float32
// activations (pixels of an image, frames of a clip, the tokens of a prompt) and W [N, K] the stored
// weights (F32 / F16 / BF16 / Q8_0 / Q4_0).
//
// kernels::matmul is built for decoding (a few tokens against weights streamed from memory); the media
// encoders and prefill instead multiply hundreds or thousands of rows against the same weights, where the
// work is bound by arithmetic, not memory. This kernel packs blocks of W into float32 panels of NR columns
// (the conversion from BF16 / F16, or the dequantisation d * q of Q8_0 / Q4_0 blocks, paid once per block
// for a whole block of rows: the product is then the float product of the dequantised weights, as
// matmul_reference, not matmul's int8-activation approximation), and a register-blocked
// micro-kernel keeps an MR x NR tile of C in registers (AVX-512: 6 rows x 64 columns, 24
// accumulators), broadcasting one element of A against NR / lanes vectors of W per step of k. Blocks
// of K (KC) and of N (NC) keep the packed W block in L2 and the MR rows of A in L1 while the tiles
// pass. Summation is in float32, in order of k within a tile. Threads from the caller's pool split
// the (M block, N block) tasks. Measured on the Sapphire-Rapids-class VM (AVX-512, one thread, BF16
// weights): ~150 GFLOP/s (85% of the FMA peak) for M = 750 .. 36864 and N, K = 512 .. 6144, against
// 60-90 for kernels::matmul; from about 32 rows up it is the faster of the two (gemm_preferred).
//
// Same Highway dispatch as matmul (one source compiled per SIMD target, kernels::force_simd_target
// picks one for tests); gemm_reference is the scalar oracle.
#pragma once
#include <cstdint>
#include <functional>

#include "base/tensor.h"
#include "base/thread_pool.h"
#include "kernels/matmul.h"

namespace g3n::kernels {

// Writes rows [m0, m0 + rows) x columns [k0, k0 + kc) of an A that is never stored whole (conv2d's
// im2col: the patches of some output pixels) to dst, row stride kc.
using GemmRowSource = std::function<void(int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst)>;

struct GemmOptions {
  int64_t a_stride = 0;  // row stride of A in floats (0 = K)
  int64_t c_stride = 0;  // row stride of C in floats (0 = N)
  const float* bias = nullptr;  // [N] added to every row of C, or null
  bool accumulate = false;      // C += A W^T (+ bias) instead of C = ...
  // W is stored [K, N] (C = A W): the attention products, whose "weights" are activations.
  bool weights_kn = false;
  // W's columns are a convolution's (channel, tap) pairs, [N, K / taps, taps] as PyTorch stores
  // [out, in, kh, kw]: the product takes them in (tap, channel) order instead, so that the matching
  // columns of an image patch are runs of contiguous channels (see conv2d). 1 = plain order.
  int64_t taps = 1;
  // Rows of A come from here instead of the `a` pointer (which may then be null).
  const GemmRowSource* a_source = nullptr;
  // Multiply by the first `columns` columns of W only (0 = all; W stored [N, K], taps 1): then K =
  // columns, rows keep their stored stride (a MatFormer FFN width of a down projection, as
  // MatmulOptions::columns). Block types: a multiple of 32.
  int64_t columns = 0;
};

// C[m][n] (+)= sum_k A[m][k] W[n][k] (+ bias[n]) for m < M, n < N; W [N, K] F32 / F16 / BF16 (or [K, N]
// with weights_kn), or Q8_0 / Q4_0 (blocks of 32 along each stored row: [N, K] with K whole blocks, or
// [K, N] with weights_kn, e.g. a transposed copy). No alignment needed; C must not overlap A or W. Throws g3n::Error on a bad shape.
void gemm(const TensorView& w, const float* a, int64_t m, float* c, ThreadPool& pool, const GemmOptions& options = {});

// Scalar oracle: the same product summed in double, one element at a time (honours every option).
void gemm_reference(const TensorView& w, const float* a, int64_t m, float* c, const GemmOptions& options = {});

// Attention of many query rows against one set of keys and values (multi-query attention with the
// heads flattened into rows): out[r] = softmax(scale * q[r] K^T) V for r < rows; q [rows, dk] rows
// q_stride apart (0 = dk), K [m, dk] and V [m, dv] dense, out [rows, dv] rows out_stride apart (0 = dv).
// Fused: each thread takes blocks of rows and keeps their scores in cache between the two products
// (gemm's micro-kernel, K and V packed once), the softmax as kernels::softmax_rows.
void attention_shared_kv(const float* q, int64_t rows, int64_t q_stride, const float* k, const float* v, int64_t m,
                         int64_t dk, int64_t dv, float scale, float* out, int64_t out_stride, ThreadPool& pool);
// Scalar oracle in double.
void attention_shared_kv_reference(const float* q, int64_t rows, int64_t q_stride, const float* k, const float* v,
                                   int64_t m, int64_t dk, int64_t dv, float scale, float* out, int64_t out_stride);

// Rows of activations from which gemm_preferred picks gemm.
inline constexpr int64_t kGemmMinRows = 32;

// Whether gemm beats matmul for `rows` rows of activations against these weights: enough rows to pay
// for packing W (below that, matmul reads the weights in place).
bool gemm_preferred(const TensorView& w, int64_t rows);

// y[t] = W x[t] for t < n_tokens, by gemm when gemm_preferred, otherwise kernels::matmul (any dtype;
// strides as matmul's, 0 = dense). What the model code calls for its big linear layers. The options form
// honours x_stride, y_stride and columns; quant_activations applies to the matmul path only (gemm
// multiplies block weights in float).
void linear(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, int64_t x_stride = 0,
            int64_t y_stride = 0);
void linear(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const MatmulOptions& options);

}  // namespace g3n::kernels
