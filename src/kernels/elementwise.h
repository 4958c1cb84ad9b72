// Norms, activations, RoPE and softmax on float32 rows. Model-agnostic.
#pragma once
#include <cstdint>

namespace g3n::kernels {

// out = x / sqrt(mean(x^2) + eps) * w   (w may be null: no scale). In place allowed (out == x).
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out);

// Root mean square of x: sqrt(mean(x^2)).
float rms(const float* x, int64_t n);

// tanh-approximated GELU (PyTorch "gelu_pytorch_tanh"), in place.
void gelu_tanh(float* x, int64_t n);
float gelu_tanh(float x);

// Rotary position embedding, NeoX ("rotate half") layout, over `n_heads` heads of `head_dim` stored
// back to back. inv_freq has head_dim / 2 entries. The angle is computed in float32 as the reference does.
void rope_neox(float* x, int n_heads, int head_dim, int64_t pos, const float* inv_freq);

// In-place softmax over n values (max-subtracted, float32 accumulation as the reference).
void softmax(float* x, int64_t n);

// Soft-cap: x = cap * tanh(x / cap).
void softcap(float* x, int64_t n, float cap);

// Inverse CDF of the standard normal distribution (double precision).
double normal_icdf(double p);

}  // namespace g3n::kernels
