// Attention of one query token over the KV cache (see attention.h): one Highway source compiled per
// SIMD target (foreach_target re-includes this file), dispatched at run time; the scalar oracle is in
// the HWY_ONCE part at the end.
//
// The query heads that share a KV head (a group) are taken together, up to kMaxHeads at a time, so
// that each key and value row read from the cache serves all of them: scores = K q_g (one pass over
// the keys, a vector accumulator per head), softmax per head, then out_g = sum_t p_g[t] v_t walked in
// blocks of 4 vectors of the head dimension (4 x heads accumulators in registers).
#ifndef G3N_KERNELS_ATTENTION_ONCE
#define G3N_KERNELS_ATTENTION_ONCE

#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

// As matmul.cpp: fixed-size vector targets only (accumulator arrays).
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

#endif  // G3N_KERNELS_ATTENTION_ONCE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include "kernels/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using rows_simd::DF;
using rows_simd::VF;

constexpr int kMaxHeads = 4;

// scores[g][t] = scale * q_g . k_t for the G heads starting at q (head_dim apart), t < n.
template <int G>
HWY_INLINE void Scores(const float* q, int head_dim, const KvView& kv, int64_t row, int j, int64_t first, int64_t n,
                       float scale, float* scores) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const int64_t full = head_dim / N * N;
  for (int64_t t = 0; t < n; ++t) {
    const float* k = kv.keys + ((first + t) % kv.capacity) * row + int64_t(j) * head_dim;
    VF acc[G];
    for (int g = 0; g < G; ++g) acc[g] = hn::Zero(d);
    for (int64_t i = 0; i < full; i += N) {
      const VF kv_i = hn::LoadU(d, k + i);
      for (int g = 0; g < G; ++g) acc[g] = hn::MulAdd(hn::LoadU(d, q + g * head_dim + i), kv_i, acc[g]);
    }
    for (int g = 0; g < G; ++g) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[g]));
      for (int64_t i = full; i < head_dim; ++i) s += q[g * head_dim + i] * k[i];
      scores[g * n + t] = scale * s;
    }
  }
}

// out_g = sum_t scores[g][t] v_t for the G heads (out head_dim apart).
template <int G>
HWY_INLINE void Mix(const float* scores, const KvView& kv, int64_t row, int j, int64_t first, int64_t n, int head_dim,
                    float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t i = 0;
  for (; i + 4 * N <= head_dim; i += 4 * N) {
    VF acc[G][4];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) acc[g][c] = hn::Zero(d);
    for (int64_t t = 0; t < n; ++t) {
      const float* v = kv.values + ((first + t) % kv.capacity) * row + int64_t(j) * head_dim + i;
      VF vv[4];
      for (int c = 0; c < 4; ++c) vv[c] = hn::LoadU(d, v + c * N);
      for (int g = 0; g < G; ++g) {
        const VF p = hn::Set(d, scores[g * n + t]);
        for (int c = 0; c < 4; ++c) acc[g][c] = hn::MulAdd(p, vv[c], acc[g][c]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) hn::StoreU(acc[g][c], d, out + g * head_dim + i + c * N);
  }
  for (; i < head_dim; i += N) {  // the rest: one vector (or part of one) at a time
    const int64_t count = std::min<int64_t>(N, head_dim - i);
    VF acc[G];
    for (int g = 0; g < G; ++g) acc[g] = hn::Zero(d);
    for (int64_t t = 0; t < n; ++t) {
      const VF vv = rows_simd::LoadPart(d, kv.values + ((first + t) % kv.capacity) * row + int64_t(j) * head_dim + i, count);
      for (int g = 0; g < G; ++g) acc[g] = hn::MulAdd(hn::Set(d, scores[g * n + t]), vv, acc[g]);
    }
    for (int g = 0; g < G; ++g) rows_simd::StorePart(d, acc[g], out + g * head_dim + i, count);
  }
}

template <int G>
HWY_INLINE void Heads(const float* q, int head_dim, const KvView& kv, int64_t row, int j, int64_t first, int64_t n,
                      float scale, float* out, float* scores) {
  Scores<G>(q, head_dim, kv, row, j, first, n, scale, scores);
  for (int g = 0; g < G; ++g) rows_simd::SoftmaxRow(scores + g * n, n, 1.0f);
  Mix<G>(scores, kv, row, j, first, n, head_dim, out);
}

void Attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float scale, float* out, float* scores) {
  const int group = n_heads / n_kv_heads;
  const int64_t n = last - first + 1;
  const int64_t row = int64_t(n_kv_heads) * head_dim;
  for (int j = 0; j < n_kv_heads; ++j) {
    for (int g0 = 0; g0 < group; g0 += kMaxHeads) {
      const int h = j * group + g0;
      const float* qh = q + int64_t(h) * head_dim;
      float* oh = out + int64_t(h) * head_dim;
      switch (std::min(kMaxHeads, group - g0)) {
        case 1: Heads<1>(qh, head_dim, kv, row, j, first, n, scale, oh, scores); break;
        case 2: Heads<2>(qh, head_dim, kv, row, j, first, n, scale, oh, scores); break;
        case 3: Heads<3>(qh, head_dim, kv, row, j, first, n, scale, oh, scores); break;
        default: Heads<4>(qh, head_dim, kv, row, j, first, n, scale, oh, scores); break;
      }
    }
  }
}

}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace g3n::kernels {

HWY_EXPORT(Attend);

void attend(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first, int64_t last,
            float scale, float* out, float* scores) {
  HWY_DYNAMIC_DISPATCH(Attend)(q, n_heads, n_kv_heads, head_dim, kv, first, last, scale, out, scores);
}

void attend_reference(const float* q, int n_heads, int n_kv_heads, int head_dim, const KvView& kv, int64_t first,
                      int64_t last, float scale, float* out) {
  const int group = n_heads / n_kv_heads;
  const int64_t n = last - first + 1, row = int64_t(n_kv_heads) * head_dim;
  std::vector<double> s(static_cast<size_t>(n));
  for (int h = 0; h < n_heads; ++h) {
    const int j = h / group;
    double mx = -INFINITY;
    for (int64_t t = 0; t < n; ++t) {
      const float* k = kv.keys + ((first + t) % kv.capacity) * row + int64_t(j) * head_dim;
      double dot = 0;
      for (int e = 0; e < head_dim; ++e) dot += double(q[h * head_dim + e]) * double(k[e]);
      s[size_t(t)] = double(scale) * dot;
      mx = std::max(mx, s[size_t(t)]);
    }
    double z = 0;
    for (double& v : s) z += (v = std::exp(v - mx));
    for (int e = 0; e < head_dim; ++e) {
      double o = 0;
      for (int64_t t = 0; t < n; ++t)
        o += s[size_t(t)] / z * double(kv.values[((first + t) % kv.capacity) * row + int64_t(j) * head_dim + e]);
      out[h * head_dim + e] = float(o);
    }
  }
}

}  // namespace g3n::kernels
#endif  // HWY_ONCE
