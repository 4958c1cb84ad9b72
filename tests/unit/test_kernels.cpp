// Kernels against scalar oracles: odd sizes, unaligned pointers, every weight dtype.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/dtype.h"
#include "base/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"

namespace g3n {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Weights {
  std::vector<uint8_t> bytes;
  TensorView view;
};

// Stores `values` ([out, in]) as `dtype`, starting `misalign` bytes into the buffer (an even offset
// keeps 16-bit elements aligned; the kernels must not assume more).
Weights make_weights(const std::vector<float>& values, int64_t out, int64_t in, DType dtype, size_t misalign) {
  Weights w;
  const size_t esz = dtype_size(dtype);
  w.bytes.resize(values.size() * esz + misalign + 16);
  uint8_t* base = w.bytes.data() + misalign;
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) std::memcpy(base + 4 * i, &values[i], 4);
    else if (dtype == DType::BF16) {
      uint16_t h = f32_to_bf16(values[i]);
      std::memcpy(base + 2 * i, &h, 2);
    } else {
      // f16 via a round trip through the float: exact for values representable in f16.
      const float f = values[i];
      uint32_t u;
      std::memcpy(&u, &f, 4);
      const uint32_t sign = (u >> 16) & 0x8000u;
      const int exp = int((u >> 23) & 0xff) - 127 + 15;
      uint16_t h = uint16_t(sign);
      if (exp > 0 && exp < 31) h = uint16_t(sign | (uint32_t(exp) << 10) | ((u >> 13) & 0x3ffu));
      std::memcpy(base + 2 * i, &h, 2);
    }
  }
  w.view.dtype = dtype;
  w.view.shape = {out, in};
  w.view.data = base;
  return w;
}

class MatmulTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t>> {};

TEST_P(MatmulTest, MatchesScalarOracle) {
  const auto [dtype, out, in, tokens] = GetParam();
  const auto values = randn(size_t(out * in), 1, 0.5f);
  Weights w = make_weights(values, out, in, dtype, dtype == DType::F32 ? 4 : 2);
  // Activations start one float into the buffer: not 32-byte aligned.
  std::vector<float> xbuf = randn(size_t(tokens * in) + 1, 2);
  const float* x = xbuf.data() + 1;
  std::vector<float> y(size_t(tokens * out)), ref(size_t(tokens * out));
  ThreadPool pool(2);
  kernels::matmul(w.view, x, tokens, y.data(), pool);
  kernels::matmul_reference(w.view, x, tokens, ref.data());
  for (size_t i = 0; i < y.size(); ++i)
    ASSERT_NEAR(y[i], ref[i], 1e-4 * std::sqrt(double(in)) + 1e-5 * std::fabs(ref[i])) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Sizes, MatmulTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 31, 33), ::testing::Values(1, 31, 33, 4095),
                                            ::testing::Values(1, 3)));

TEST(Kernels, DotOddSizes) {
  for (int64_t n : {0, 1, 15, 16, 17, 31, 33, 1000}) {
    auto a = randn(size_t(n) + 1, 3), b = randn(size_t(n) + 1, 4);
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += double(a[size_t(i) + 1]) * b[size_t(i)];
    EXPECT_NEAR(kernels::dot(a.data() + 1, b.data(), n), ref, 1e-4 * std::sqrt(double(n) + 1)) << n;
  }
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

TEST(Kernels, AttentionMatchesNaiveOverRing) {
  // 4 query heads, 2 kv heads, ring of 5 slots, attending positions 7..10 (slots wrap).
  const int H = 4, Hkv = 2, Dh = 6;
  const int64_t cap = 5, first = 7, last = 10;
  auto keys = randn(size_t(cap * Hkv * Dh), 8), values = randn(size_t(cap * Hkv * Dh), 9);
  auto q = randn(size_t(H * Dh), 10);
  std::vector<float> out(size_t(H * Dh)), scores(16);
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
    std::vector<std::atomic<int>> hits(size_t(n));
    pool.parallel_for(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

}  // namespace
}  // namespace g3n
