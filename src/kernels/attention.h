// Causal attention of one query token over a key/value cache, grouped-query style.
#pragma once
#include <cstdint>

namespace g3n::kernels {

// The cache holds `capacity` slots of [n_kv_heads, head_dim] keys and values; the key of absolute
// position t lives in slot t % capacity. The query (n_heads x head_dim) attends to positions
// [first, last] (inclusive). Query head h reads kv head h / (n_heads / n_kv_heads).
// out: [n_heads, head_dim]. scores: scratch of at least attend_scratch(last - first + 1) floats.
// SIMD (Highway, dispatched at run time); exp within 2 ulp of libm's.
struct KvView {
  const float* keys;
  const float* values;
  int64_t capacity;
};

void attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float scale, float* out, float* scores);

// Floats of `scores` scratch attend needs for n positions (the heads of a group are scored together).
constexpr int64_t attend_scratch(int64_t n) { return 4 * n; }

// Scalar oracle in double (for tests).
void attend_reference(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first,
                      int64_t last, float scale, float* out);

}  // namespace g3n::kernels
