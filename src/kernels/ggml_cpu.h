// ggml's CPU arithmetic: what llama.cpp computes, for reproducing its numbers (Numerics::kGgml).
//
// g3n's own products multiply the stored weights with float32 activations (or, for decode, int8
// activations with a float32 scale). llama.cpp's CPU backend instead converts the activations of every
// product to the weight type's "vec_dot_type" first, and keeps other intermediates in float16:
//  - Q4_0 / Q5_0 / Q8_0 / IQ4_NL weights meet Q8_0 activations: per block of 32, d = amax / 127 stored
//    as float16, q = round-half-even(x * 127 / amax); result = sum_b (d_w * d_x) * sum(q_w * q_x);
//  - Q4_1 / Q5_1 meet Q8_1 (the same, plus s = f16(d * sum q)): (d_w * d_x) * isum + m_w * s_x;
//  - the k-quants (Q2_K .. Q6_K) and IQ4_XS meet Q8_K: per block of 256, iscale = -127 / (the value of
//    largest magnitude), q = min(127, round-half-even(iscale * x)), d = 1 / iscale (float32), with the
//    sums of q per 16; result = sum_b d_w * d_x * sum_s scale_s * sum(q_w * q_x) - dmin_w * d_x * sum_s min_s * sum(q_x);
//  - F16 weights meet float16 activations, BF16 weights bfloat16 activations;
//  - the KV cache holds float16 keys and values; Q K^T rounds the query to float16, and the softmax
//    probabilities are rounded to float16 before they weight V (attention without flash attention);
//  - GELU (and GEGLU) reads a table of gelu(h) rounded to float16, indexed by f16(x), for -10 < x < 10;
//  - RoPE's angle for pair i is pos * s^i with s = freq_base^(-2 / head_dim), the power built by repeated
//    float multiplication.
// The activation quantisers here are bit-identical to ggml's x86 ones. The products, the attention and the
// RoPE add in the order of the kernels llama.cpp runs on an x86 AVX-512 build (ggml's vec_dot, llamafile's
// tinyBLAS, the tiled K-quant GEMM, the repacked Q4_0 / Q4_K GEMM / GEMV; see matmul and attend), so its logits
// come out bit for bit (tests/parity/test_llamacpp_gemma3.py); types without such a kernel here (Q2_K,
// Q3_K, IQ4_XS; IQ4_NL's vec_dot) use ggml's generic order, equal up to the order of float additions.
// tests/parity/test_ggml_numerics.py checks all of it against libggml itself.
#pragma once
#include <cstdint>
#include <vector>

#include "base/dtype.h"
#include "base/thread_pool.h"
#include "kernels/attention.h"

namespace g3n::kernels::ggml_cpu {

inline float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }
void round_to_f16(float* x, int64_t n);
void round_to_bf16(float* x, int64_t n);

// Q8_0 activations as ggml's quantize_row_q8_0: q [n], d [n / 32] (each the float16-rounded scale, as a
// float), sums [n / 32] (sum of q per block; may be null). n a multiple of 32.
void quantize_q8_0(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums);

// Activation blocks in the layouts the dot products below read (scales already as ggml rounds them).
struct BlockQ8_0 {
  float d;
  int8_t qs[32];
};
struct BlockQ8_1 {
  float d, s;  // f16(d), f16(d * sum q)
  int8_t qs[32];
};
struct BlockQ8K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
void quantize_q8_0(const float* x, int64_t n, BlockQ8_0* y);
void quantize_q8_1(const float* x, int64_t n, BlockQ8_1* y);
void quantize_q8_K(const float* x, int64_t n, BlockQ8K* y);

// Weight types with a dot product here: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS.
bool has_dot(int ggml_type);

// y[t][o] = ggml's product of the weight rows w [out][in] (ggml type `type`, rows contiguous) with x
// [n_tokens][in] (row stride x_stride, 0 = in), written with row stride y_stride (0 = out), as llama.cpp
// multiplies one batch of n_tokens (it picks its kernels by the batch size). Throws
// g3n::Error for a type has_dot() refuses or an `in` that is not whole blocks.
void matmul(int type, const void* w, int64_t out, int64_t in, const float* x, int64_t n_tokens, float* y,
            ThreadPool& pool, int64_t x_stride = 0, int64_t y_stride = 0);

// Scalar oracle for the tests: the dequantised weights times the dequantised activations (in that
// type's activation format), summed in double.
void matmul_reference(int type, const void* w, int64_t out, int64_t in, const float* x, int64_t n_tokens, float* y);

// ggml_v_expf (ggml's vectorised exp, AVX-512 / AVX2 builds) for one value.
float expf_ggml(float x);

// One query token's attention as llama.cpp computes it without flash attention, from a KV cache that
// holds float16 values (as floats) at cell = position: q (already scaled and rounded to float16) dot
// each key, 16 float lanes reduced as _mm512_reduce_add_ps; the softmax with expf_ggml, its sum in
// double over chunks of 16 cells; the probabilities rounded to float16; then each output element as 16
// lanes (the cells modulo 16) of fused multiply-adds, reduced the same way (llamafile's tinyBLAS, which
// llama.cpp uses for 2 or more tokens). single_token: both products as ggml_vec_dot_f16 adds (llama.cpp's
// products of one token: 4 x 16 lanes). out [n_heads][head_dim].
void attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float* out, std::vector<float>& scratch, bool single_token);

// ggml_vec_gelu_f32 with GGML_GELU_FP16, in place (its GEGLU multiplies this by the gate's other half).
void gelu(float* x, int64_t n);
// The table gelu reads, indexed by the float16 bits of x (for tests).
float gelu_table_entry(uint16_t h);

// ggml_rms_norm followed by ggml_mul by w (if w): float squares summed in double, scale = 1 / sqrtf(mean +
// eps), out = (x * scale) * w. out may be x.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out);

// ggml's NEOX RoPE of n_heads heads of head_dim at position pos (ext_factor 0, attn_factor 1).
void rope_neox(float* x, int n_heads, int head_dim, int64_t pos, float freq_base, float freq_scale);

}  // namespace g3n::kernels::ggml_cpu
