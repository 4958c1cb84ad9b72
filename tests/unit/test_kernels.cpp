// Kernels against scalar oracles: odd sizes, unaligned pointers, every weight dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "quant/quant.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using test::randn;
using test::store_weights;
using test::StoredWeights;

// sum_i |w[o][i] x[t][i]| per output, from the dequantised weights: the scale of float rounding.
std::vector<double> abs_products(const TensorView& w, const float* x, int64_t tokens) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<double> s(static_cast<size_t>(tokens * out));
  for (int64_t o = 0; o < out; ++o) {
    to_f32(w, o * in, in, row.data());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < in; ++i) s[size_t(t * out + o)] += std::fabs(double(row[size_t(i)]) * x[t * in + i]);
  }
  return s;
}

// The documented bound of the int8-activation path against the float product: per block,
// d_x / 2 * sum |w| (plus the float rounding of x * (1 / d_x)).
std::vector<double> int8_activation_bound(const TensorView& w, const float* x, int64_t tokens) {
  const int64_t out = w.dim(0), in = w.dim(1), nb = in / kQuantBlock;
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<double> bound(static_cast<size_t>(tokens * out));
  for (int64_t o = 0; o < out; ++o) {
    to_f32(w, o * in, in, row.data());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t b = 0; b < nb; ++b) {
        double amax = 0, wsum = 0, wx = 0;
        for (int64_t k = b * kQuantBlock; k < (b + 1) * kQuantBlock; ++k) {
          amax = std::max(amax, std::fabs(double(x[t * in + k])));
          wsum += std::fabs(double(row[size_t(k)]));
          wx += std::fabs(double(row[size_t(k)]) * x[t * in + k]);
        }
        bound[size_t(t * out + o)] += amax / 127.0 / 2.0 * wsum + 1e-6 * wx;
      }
  }
  return bound;
}

using test::for_each_simd_target;

class MatmulTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t>> {};

TEST_P(MatmulTest, MatchesScalarOracle) {
  const auto [dtype, out, in, tokens] = GetParam();
  const auto values = randn(size_t(out * in), 1, 0.5f);
  const size_t misalign = dtype == DType::F32 ? 4 : dtype_is_quantized(dtype) ? 1 : 2;
  StoredWeights w = store_weights(values, out, in, dtype, misalign);
  // Activations start one float into the buffer: not 32-byte aligned.
  std::vector<float> xbuf = randn(size_t(tokens * in) + 1, 2);
  const float* x = xbuf.data() + 1;
  std::vector<float> ref(size_t(tokens * out)), ref_int8(size_t(tokens * out));
  kernels::matmul_reference(w.view, x, tokens, ref.data());
  const auto scale = abs_products(w.view, x, tokens);
  std::vector<double> bound;
  if (dtype_is_quantized(dtype)) {
    kernels::matmul_reference_int8(w.view, x, tokens, ref_int8.data());
    bound = int8_activation_bound(w.view, x, tokens);
  }
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for_each_simd_target([&] {
      std::vector<float> y(size_t(tokens * out), NAN);
      kernels::matmul(w.view, x, tokens, y.data(), pool);
      for (size_t i = 0; i < y.size(); ++i) {
        const double tol = 2e-5 * scale[i] + 1e-6;
        if (dtype_is_quantized(dtype)) {
          ASSERT_NEAR(y[i], ref_int8[i], tol) << "element " << i << " threads " << threads;
          ASSERT_NEAR(y[i], ref[i], bound[i] + tol) << "element " << i << " threads " << threads;
        } else {
          ASSERT_NEAR(y[i], ref[i], tol) << "element " << i << " threads " << threads;
        }
      }
      if (dtype_is_quantized(dtype)) {  // the float-activation path of block types
        kernels::MatmulOptions o;
        o.quant_activations = kernels::QuantActivations::kFloat;
        std::fill(y.begin(), y.end(), NAN);
        kernels::matmul(w.view, x, tokens, y.data(), pool, o);
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref[i], 2e-5 * scale[i] + 1e-6) << "kFloat element " << i << " threads " << threads;
      }
    });
  }
}

INSTANTIATE_TEST_SUITE_P(FloatTypes, MatmulTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 5, 33), ::testing::Values(1, 31, 33, 4095),
                                            ::testing::Values(1, 3, 7)));
INSTANTIATE_TEST_SUITE_P(BlockTypes, MatmulTest,
                         ::testing::Combine(::testing::Values(DType::Q8_0, DType::Q4_0),
                                            ::testing::Values(1, 5, 33), ::testing::Values(32, 96, 4096),
                                            ::testing::Values(1, 3, 7)));

TEST(Matmul, StridedActivationsAndOutputs) {
  // x rows 3 floats apart beyond `in`, y rows 2 beyond `out`; the gaps must stay untouched.
  const int64_t out = 37, in = 64, tokens = 5, xs = in + 3, ys = out + 2;
  for (DType dtype : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_0}) {
    StoredWeights w = store_weights(randn(size_t(out * in), 11, 0.5f), out, in, dtype, 0);
    const auto xs_buf = randn(size_t(tokens * xs), 12);
    std::vector<float> dense(size_t(tokens * in));
    for (int64_t t = 0; t < tokens; ++t) std::copy_n(xs_buf.data() + t * xs, in, dense.data() + t * in);
    ThreadPool pool(2);
    std::vector<float> y_dense(size_t(tokens * out)), y(size_t(tokens * ys), -7.0f);
    kernels::matmul(w.view, dense.data(), tokens, y_dense.data(), pool);
    kernels::matmul(w.view, xs_buf.data(), tokens, y.data(), pool, xs, ys);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t o = 0; o < out; ++o)
        ASSERT_EQ(y[size_t(t * ys + o)], y_dense[size_t(t * out + o)]) << dtype_name(dtype);
      for (int64_t o = out; o < ys; ++o) ASSERT_EQ(y[size_t(t * ys + o)], -7.0f);
    }
  }
}

TEST(Matmul, PrefillEqualsTokenByToken) {
  // Token tiles only share weight loads: each output sums the same terms in the same order as
  // the one-token product, so the results are identical.
  const int64_t out = 300, in = 256, tokens = 9;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    StoredWeights w = store_weights(randn(size_t(out * in), 13, 0.5f), out, in, dtype, 0);
    const auto x = randn(size_t(tokens * in), 14);
    ThreadPool pool(2);
    std::vector<float> y(size_t(tokens * out)), y1(static_cast<size_t>(out));
    kernels::matmul(w.view, x.data(), tokens, y.data(), pool);
    for (int64_t t = 0; t < tokens; ++t) {
      kernels::matmul(w.view, x.data() + t * in, 1, y1.data(), pool);
      for (int64_t o = 0; o < out; ++o)
        ASSERT_EQ(y[size_t(t * out + o)], y1[size_t(o)]) << dtype_name(dtype) << " t " << t;
    }
  }
}

TEST(Matmul, RejectsPartialBlocks) {
  std::vector<uint8_t> bytes(64 * 34);
  TensorView w{DType::Q8_0, {2, 48}, bytes.data()};
  std::vector<float> x(48), y(2);
  ThreadPool pool(1);
  EXPECT_THROW(kernels::matmul(w, x.data(), 1, y.data(), pool), Error);
}

TEST(Matmul, ActivationQuantiserIsBitExactOnEveryTarget) {
  // Random values plus exact ties (x * id = k + 0.5): roundf rounds them away from zero.
  auto x = randn(4096, 21, 3.0f);
  for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = j == 0 ? 127.0f : float(j - 16) + 0.5f;
  for (int j = 0; j < 32; ++j) x[size_t(64 + j)] = 0.0f;
  std::vector<int8_t> q_ref(x.size()), q(x.size());
  std::vector<float> d_ref(x.size() / 32), d(x.size() / 32);
  std::vector<int32_t> s_ref(x.size() / 32), s(x.size() / 32);
  quant::quantize_row_q8_act(x.data(), int64_t(x.size()), q_ref.data(), d_ref.data(), s_ref.data());
  EXPECT_EQ(q_ref[33], -15);  // -14.5
  EXPECT_EQ(q_ref[48], 1);    // 0.5
  for_each_simd_target([&] {
    kernels::quantize_activations(x.data(), int64_t(x.size()), q.data(), d.data(), s.data());
    EXPECT_EQ(q, q_ref);
    EXPECT_EQ(d, d_ref);
    EXPECT_EQ(s, s_ref);
  });
}

TEST(Kernels, DotOddSizes) {
  for_each_simd_target([] {
    for (int64_t n : {0, 1, 15, 16, 17, 31, 33, 63, 65, 1000}) {
      auto a = randn(size_t(n) + 1, 3), b = randn(size_t(n) + 1, 4);
      double ref = 0;
      for (int64_t i = 0; i < n; ++i) ref += double(a[size_t(i) + 1]) * b[size_t(i)];
      EXPECT_NEAR(kernels::dot(a.data() + 1, b.data(), n), ref, 1e-4 * std::sqrt(double(n) + 1)) << n;
    }
  });
}

TEST(Kernels, SimdTargetsListed) {
  const auto targets = kernels::simd_targets();
  ASSERT_FALSE(targets.empty());
  // The automatic choice is the best path listed.
  kernels::force_simd_target(nullptr);
  EXPECT_EQ(kernels::active_simd_target(), targets.front().name);
  for (const auto& t : targets) std::printf("[          ] SIMD path: %s\n", t.name.c_str());
}

// ---- sparse activations

class SparseTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t>> {};

TEST_P(SparseTest, ColumnsAndTransposedRowsMatchOracles) {
  const auto [dtype, out, in] = GetParam();
  const auto values = randn(size_t(out * in), 31, 0.5f);
  // About 5% of the activations nonzero (and at least one).
  auto x = randn(size_t(in), 32);
  std::mt19937 rng(33);
  for (auto& v : x)
    if (rng() % 20 != 0) v = 0.0f;
  x[size_t(in / 2)] = 1.5f;
  std::vector<int32_t> cols(static_cast<size_t>(in));
  const int64_t n = kernels::nonzero_indices(x.data(), in, cols.data());
  ASSERT_GT(n, 0);
  for (int64_t k = 0; k < n; ++k) ASSERT_NE(x[size_t(cols[size_t(k)])], 0.0f);
  std::vector<float> compact(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) compact[size_t(k)] = x[size_t(cols[size_t(k)])];

  ThreadPool pool(3);
  // Row-major [out, in] with columns selected.
  if (!dtype_is_quantized(dtype) || in % 32 == 0) {
    StoredWeights w = store_weights(values, out, in, dtype, dtype == DType::F32 ? 4 : 2);
    std::vector<float> ref(static_cast<size_t>(out)), dense(ref), y(ref);
    kernels::matmul_columns_reference(w.view, x.data(), cols.data(), n, ref.data());
    kernels::matmul_reference(w.view, x.data(), 1, dense.data());
    const auto scale = abs_products(w.view, x.data(), 1);
    kernels::matmul_columns(w.view, x.data(), cols.data(), n, y.data(), pool);
    for (int64_t o = 0; o < out; ++o) {
      ASSERT_NEAR(ref[size_t(o)], dense[size_t(o)], 1e-6 * scale[size_t(o)] + 1e-6);  // the rest is zero
      ASSERT_NEAR(y[size_t(o)], ref[size_t(o)], 2e-5 * scale[size_t(o)] + 1e-6) << o;
    }
  }
  // Transposed [in, out] with rows selected (block types: blocks along out).
  if (!dtype_is_quantized(dtype) || out % 32 == 0) {
    StoredWeights wf = store_weights(values, out, in, DType::F32, 0);
    const quant::OwnedTensor wt = quant::transpose_tensor(wf.view, dtype);
    std::vector<float> ref(static_cast<size_t>(out));
    kernels::matmul_transposed_rows_reference(wt.view(), cols.data(), compact.data(), n, ref.data());
    double scale = 0;
    for (int64_t k = 0; k < n; ++k) scale += std::fabs(compact[size_t(k)]);
    for_each_simd_target([&] {
      std::vector<float> y(size_t(out), NAN);
      kernels::matmul_transposed_rows(wt.view(), cols.data(), compact.data(), n, y.data(), pool);
      for (int64_t o = 0; o < out; ++o) ASSERT_NEAR(y[size_t(o)], ref[size_t(o)], 1e-5 * scale + 1e-6) << o;
    });
  }
}

INSTANTIATE_TEST_SUITE_P(FloatTypes, SparseTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 33, 1000, 2048), ::testing::Values(31, 4095)));
INSTANTIATE_TEST_SUITE_P(BlockTypes, SparseTest,
                         ::testing::Combine(::testing::Values(DType::Q8_0, DType::Q4_0),
                                            ::testing::Values(32, 96, 2048), ::testing::Values(96, 4096)));

TEST(Sparse, TransposeTensorMatchesSource) {
  const int64_t out = 64, in = 40;
  StoredWeights w = store_weights(randn(size_t(out * in), 41), out, in, DType::BF16, 0);
  const quant::OwnedTensor t = quant::transpose_tensor(w.view, DType::F32);
  ASSERT_EQ(t.shape, (std::vector<int64_t>{in, out}));
  std::vector<float> a(size_t(out * in)), b(size_t(out * in));
  to_f32(w.view, 0, out * in, a.data());
  to_f32(t.view(), 0, out * in, b.data());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) ASSERT_EQ(a[size_t(o * in + i)], b[size_t(i * out + o)]);
}

TEST(Kernels, RmsNorm) {
  auto x = randn(37, 5);
  auto w = randn(37, 6);
  std::vector<float> out(37), out_nw(37);
  kernels::rms_norm(x.data(), w.data(), 37, 1e-6f, out.data());
  kernels::rms_norm(x.data(), nullptr, 37, 1e-6f, out_nw.data());
  double ms = 0;
  for (float v : x) ms += double(v) * v;
  const double scale = 1.0 / std::sqrt(ms / 37 + 1e-6);
  for (size_t i = 0; i < 37; ++i) {
    EXPECT_NEAR(out[i], x[i] * scale * w[i], 1e-5);
    EXPECT_NEAR(out_nw[i], x[i] * scale, 1e-5);
  }
}

TEST(Kernels, GeluTanhKnownValues) {
  // torch.nn.functional.gelu(x, approximate="tanh") values.
  EXPECT_NEAR(kernels::gelu_tanh(0.0f), 0.0f, 1e-7);
  EXPECT_NEAR(kernels::gelu_tanh(1.0f), 0.8411920070648193f, 1e-6);
  EXPECT_NEAR(kernels::gelu_tanh(-1.0f), -0.15880802273750305f, 1e-6);
  EXPECT_NEAR(kernels::gelu_tanh(3.0f), 2.9963626861572266f, 1e-5);
}

TEST(Kernels, NormalIcdf) {
  // torch.distributions.Normal(0, 1).icdf(0.95) in float32 is 1.6448533535; the true value 1.64485362695.
  EXPECT_NEAR(kernels::normal_icdf(0.95), 1.6448536269514722, 1e-12);
  EXPECT_NEAR(kernels::normal_icdf(0.5), 0.0, 1e-12);
  EXPECT_NEAR(kernels::normal_icdf(0.025), -1.959963984540054, 1e-12);
}

TEST(Kernels, RopeNeoxRotatesHalves) {
  const int head_dim = 8, half = 4;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) inv[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / head_dim);
  auto x = randn(2 * head_dim, 7);
  auto y = x;
  kernels::rope_neox(y.data(), 2, head_dim, 5, inv.data());
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < half; ++i) {
      const float a = x[size_t(h * head_dim + i)], b = x[size_t(h * head_dim + i + half)];
      const float ang = 5.0f * inv[size_t(i)];
      EXPECT_NEAR(y[size_t(h * head_dim + i)], a * std::cos(ang) - b * std::sin(ang), 1e-6);
      EXPECT_NEAR(y[size_t(h * head_dim + i + half)], b * std::cos(ang) + a * std::sin(ang), 1e-6);
    }
}

// Every grouping (1 to 6 query heads per KV head: groups of up to 4 are scored together), head sizes
// that are and are not multiples of the vector width, a window that wraps the ring, every SIMD target.
TEST(Kernels, AttentionMatchesOracleOnEveryTarget) {
  struct Shape {
    int H, Hkv, Dh;
  };
  const Shape shapes[] = {{8, 2, 256}, {4, 4, 6}, {6, 1, 100}, {3, 1, 17}, {2, 1, 64}, {5, 1, 8}};
  const int64_t cap = 37;
  for_each_simd_target([&] {
    for (const Shape& sh : shapes)
      for (const auto& [first, last] : {std::pair<int64_t, int64_t>{0, 0}, {3, 29}, {20, 56}}) {
        SCOPED_TRACE("H " + std::to_string(sh.H) + " Hkv " + std::to_string(sh.Hkv) + " Dh " +
                     std::to_string(sh.Dh) + " positions " + std::to_string(first) + ".." + std::to_string(last));
        const auto keys = randn(size_t(cap * sh.Hkv * sh.Dh), 21), values = randn(size_t(cap * sh.Hkv * sh.Dh), 22);
        const auto q = randn(size_t(sh.H * sh.Dh), 23);
        const kernels::KvView kv{keys.data(), values.data(), cap};
        std::vector<float> got(size_t(sh.H * sh.Dh)), want(got.size());
        std::vector<float> scores(size_t(kernels::attend_scratch(last - first + 1)));
        const float scale = 1.0f / std::sqrt(float(sh.Dh));
        kernels::attend(q.data(), sh.H, sh.Hkv, sh.Dh, kv, first, last, scale, got.data(), scores.data());
        kernels::attend_reference(q.data(), sh.H, sh.Hkv, sh.Dh, kv, first, last, scale, want.data());
        for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-6 * (1 + std::fabs(want[i]))) << i;
      }
  });
}

TEST(Kernels, AttentionMatchesNaiveOverRing) {
  // 4 query heads, 2 kv heads, ring of 5 slots, attending positions 7..10 (slots wrap).
  const int H = 4, Hkv = 2, Dh = 6;
  const int64_t cap = 5, first = 7, last = 10;
  auto keys = randn(size_t(cap * Hkv * Dh), 8), values = randn(size_t(cap * Hkv * Dh), 9);
  auto q = randn(size_t(H * Dh), 10);
  std::vector<float> out(size_t(H * Dh)), scores(size_t(kernels::attend_scratch(last - first + 1)));
  kernels::attend(q.data(), H, Hkv, Dh, {keys.data(), values.data(), cap}, first, last, 0.5f, out.data(), scores.data());
  for (int h = 0; h < H; ++h) {
    const int j = h / 2;
    std::vector<double> s;
    double mx = -1e30;
    for (int64_t t = first; t <= last; ++t) {
      double d = 0;
      for (int e = 0; e < Dh; ++e) d += double(q[size_t(h * Dh + e)]) * keys[size_t((t % cap) * Hkv * Dh + j * Dh + e)];
      s.push_back(0.5 * d);
      mx = std::max(mx, 0.5 * d);
    }
    double z = 0;
    for (double& v : s) z += (v = std::exp(v - mx));
    for (int e = 0; e < Dh; ++e) {
      double o = 0;
      for (int64_t t = first; t <= last; ++t)
        o += s[size_t(t - first)] / z * values[size_t((t % cap) * Hkv * Dh + j * Dh + e)];
      EXPECT_NEAR(out[size_t(h * Dh + e)], o, 1e-5);
    }
  }
}

TEST(Base, Bf16RoundTrip) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7; even mantissa is 1.
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
}

TEST(Base, ThreadPoolCoversRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

}  // namespace
}  // namespace g3n
