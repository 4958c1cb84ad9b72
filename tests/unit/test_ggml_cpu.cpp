// ggml's CPU arithmetic (kernels/ggml_cpu.h) against scalar oracles. (Against libggml itself:
// tests/ggml_oracle, run by tests/parity/test_ggml_numerics.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/ggml_cpu.h"
#include "kernel_test_util.h"
#include "quant/ggml_types.h"

namespace g3n {
namespace {

namespace gc = kernels::ggml_cpu;

// Byte offsets of the float16 scales in one block of each type (everything else: any bits are valid).
std::vector<size_t> scale_offsets(int type) {
  switch (type) {
    case ggml::Q4_1:
    case ggml::Q5_1:
    case ggml::Q4_K:
    case ggml::Q5_K: return {0, 2};
    case ggml::Q2_K: return {80, 82};
    case ggml::Q3_K: return {108};
    case ggml::Q6_K: return {208};
    default: return {0};
  }
}

// Random blocks of `type` with scales of about `scale`.
std::vector<uint8_t> random_blocks(int type, int64_t rows, int64_t cols, uint32_t seed, float scale) {
  const ggml::TypeInfo* info = ggml::type_info(type);
  std::vector<uint8_t> w(ggml::row_bytes(type, cols) * size_t(rows));
  std::mt19937 rng(seed);
  for (auto& b : w) b = uint8_t(rng());
  std::uniform_real_distribution<float> u(0.25f * scale, scale);
  for (size_t b = 0; b < w.size() / size_t(info->type_size); ++b)
    for (size_t off : scale_offsets(type)) {
      const uint16_t h = f32_to_f16(u(rng));
      std::memcpy(w.data() + b * size_t(info->type_size) + off, &h, 2);
    }
  return w;
}

const int kTypes[] = {ggml::Q4_0, ggml::Q4_1, ggml::Q5_0, ggml::Q5_1, ggml::Q8_0, ggml::Q2_K,
                      ggml::Q3_K, ggml::Q4_K, ggml::Q5_K, ggml::Q6_K, ggml::IQ4_NL, ggml::IQ4_XS};

TEST(GgmlCpu, ProductsMatchTheDequantisedOracle) {
  ThreadPool pool(2);
  for (int type : kTypes) {
    SCOPED_TRACE(ggml::type_name(type));
    for (int64_t in : {256, 512 + 256}) {
      const int64_t out = 13, tokens = 4;
      const auto w = random_blocks(type, out, in, 3u + uint32_t(type), 0.01f);
      auto x = test::randn(size_t(tokens * in), 9u + uint32_t(in));
      // Strided rows: x rows in + 7 apart, y rows out + 3 apart.
      const int64_t xs = in + 7, ys = out + 3;
      std::vector<float> xp(size_t(tokens * xs), 0.0f), y(size_t(tokens * ys), -1.0f), want(size_t(tokens * out));
      for (int64_t t = 0; t < tokens; ++t) std::copy(x.begin() + t * in, x.begin() + (t + 1) * in, xp.begin() + t * xs);
      gc::matmul(type, w.data(), out, in, xp.data(), tokens, y.data(), pool, xs, ys);
      gc::matmul_reference(type, w.data(), out, in, x.data(), tokens, want.data());
      std::vector<float> deq(static_cast<size_t>(in));
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t o = 0; o < out; ++o) {
          ggml::dequantize_row(type, w.data() + size_t(o) * ggml::row_bytes(type, in), deq.data(), in);
          double mag = 0;
          for (int64_t i = 0; i < in; ++i) mag += std::fabs(double(deq[size_t(i)]) * x[size_t(t * in + i)]);
          ASSERT_NEAR(y[size_t(t * ys + o)], want[size_t(t * out + o)], 2e-6 * mag + 1e-7) << "token " << t << " row " << o;
        }
      EXPECT_EQ(y[size_t(ys - 1)], -1.0f) << "wrote past a row's outputs";
    }
  }
}

TEST(GgmlCpu, RejectsTypesAndShapesItCannotMultiply) {
  ThreadPool pool(1);
  std::vector<uint8_t> w(1024);
  std::vector<float> x(256), y(4);
  EXPECT_FALSE(gc::has_dot(ggml::F32));
  EXPECT_THROW(gc::matmul(ggml::F32, w.data(), 1, 256, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(gc::matmul(ggml::Q4_K, w.data(), 1, 96, x.data(), 1, y.data(), pool), Error);  // not whole blocks
}

TEST(GgmlCpu, Q8KQuantisationKeepsItsBounds) {
  for (float scale : {1e-4f, 1.0f, 300.0f}) {
    auto x = test::randn(1024, 77, scale);
    std::vector<gc::BlockQ8K> q(4);
    gc::quantize_q8_K(x.data(), 1024, q.data());
    for (int b = 0; b < 4; ++b) {
      float amax = 0;
      for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(x[size_t(b * 256 + j)]));
      for (int j = 0; j < 256; ++j)
        EXPECT_NEAR(q[size_t(b)].d * float(q[size_t(b)].qs[j]), x[size_t(b * 256 + j)], amax / 127 * 0.5001f + 1e-12f);
      for (int s = 0; s < 16; ++s) {
        int sum = 0;
        for (int j = 0; j < 16; ++j) sum += q[size_t(b)].qs[16 * s + j];
        EXPECT_EQ(q[size_t(b)].bsums[s], sum);
      }
    }
  }
  std::vector<float> zeros(256, 0.0f);
  gc::BlockQ8K z;
  gc::quantize_q8_K(zeros.data(), 256, &z);
  EXPECT_EQ(z.d, 0.0f);
  EXPECT_EQ(z.qs[7], 0);
}

TEST(GgmlCpu, Q8_0ScalesAreFloat16) {
  auto x = test::randn(64, 5, 3.0f);
  std::vector<int8_t> q(64);
  float d[2];
  int32_t sums[2];
  gc::quantize_q8_0(x.data(), 64, q.data(), d, sums);
  for (int b = 0; b < 2; ++b) {
    EXPECT_EQ(d[b], gc::round_f16(d[b]));
    float amax = 0;
    int s = 0;
    for (int j = 0; j < 32; ++j) {
      amax = std::max(amax, std::fabs(x[size_t(32 * b + j)]));
      s += q[size_t(32 * b + j)];
    }
    EXPECT_EQ(d[b], gc::round_f16(amax / 127));
    EXPECT_EQ(sums[b], s);
  }
}

TEST(GgmlCpu, GeluIsTheFloat16TableOfTanhGelu) {
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 0.0371f) x.push_back(v);
  std::vector<float> y = x;
  gc::gelu(y.data(), int64_t(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] <= -10.0f) {
      EXPECT_EQ(y[i], 0.0f);
    } else if (x[i] >= 10.0f) {
      EXPECT_EQ(y[i], x[i]);
    } else {
      const float h = gc::round_f16(x[i]);
      // gelu of the float16 input, rounded to float16: within one float16 ulp of g3n's own formula there.
      EXPECT_NEAR(y[i], gc::round_f16(kernels::gelu_tanh(h)), 1e-3f * std::fabs(y[i]) + 1e-7f) << x[i];
      EXPECT_NEAR(y[i], kernels::gelu_tanh(x[i]), 2e-3f * std::fabs(x[i]) + 1e-3f) << x[i];
    }
  }
}

TEST(GgmlCpu, RopeAndNormAgreeWithTheExactOnes) {
  const int heads = 3, dim = 64;
  for (float base : {1e4f, 1e6f})
    for (int64_t pos : {0, 1, 37, 900}) {
      auto a = test::randn(size_t(heads * dim), uint32_t(pos) + 1);
      auto b = a;
      std::vector<float> inv(dim / 2);
      for (int i = 0; i < dim / 2; ++i) inv[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(dim));
      kernels::rope_neox(a.data(), heads, dim, pos, inv.data());
      gc::rope_neox(b.data(), heads, dim, pos, base, 1.0f);
      for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 5e-3f) << "pos " << pos << " element " << i;
      if (pos == 0) {
        for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]);
      }
    }
  auto x = test::randn(640, 3, 5.0f);
  auto w = test::randn(640, 4);
  std::vector<float> p(640), q(640);
  kernels::rms_norm(x.data(), w.data(), 640, 1e-6f, p.data());
  gc::rms_norm(x.data(), w.data(), 640, 1e-6f, q.data());
  for (size_t i = 0; i < p.size(); ++i) ASSERT_NEAR(p[i], q[i], 1e-5f * std::fabs(p[i]) + 1e-7f);
}

// Q8_0 / Q5_0 products (read in place with AVX2 where there is one) follow ggml's vec_dot lane for lane: lane m
// of a block sums values 4m .. 4m+3 in integers, fma(d_w * d_x, lane, acc[m]) over the blocks, then the lanes
// reduce as (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)). Bit for bit against that scalar statement.
TEST(GgmlCpu, Q8_0AndQ5_0FollowVecDotsLanes) {
  ThreadPool pool(2);
  const int64_t out = 6, in = 640, nb = in / 32;
  for (int type : {ggml::Q8_0, ggml::Q5_0}) {
    SCOPED_TRACE(ggml::type_name(type));
    const auto w = random_blocks(type, out, in, 91u + uint32_t(type), 0.02f);
    const size_t bsz = size_t(ggml::type_info(type)->type_size);
    for (int64_t tokens : {1, 3, 9}) {
      const auto x = test::randn(size_t(tokens * in), 17u + uint32_t(tokens), 1.3f);
      std::vector<float> y(size_t(tokens * out));
      gc::matmul(type, w.data(), out, in, x.data(), tokens, y.data(), pool);
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<gc::BlockQ8_0> xq(static_cast<size_t>(nb));
        gc::quantize_q8_0(x.data() + t * in, in, xq.data());
        for (int64_t o = 0; o < out; ++o) {
          float acc[8] = {};
          for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* blk = w.data() + (size_t(o * nb + b)) * bsz;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            int q[32];
            if (type == ggml::Q8_0) {
              for (int j = 0; j < 32; ++j) q[j] = int8_t(blk[2 + j]);
            } else {
              uint32_t qh;
              std::memcpy(&qh, blk + 2, 4);
              for (int j = 0; j < 16; ++j) {
                q[j] = int((blk[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16;
                q[j + 16] = int((blk[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
              }
            }
            const float d = f16_to_f32(h) * xq[size_t(b)].d;
            for (int m = 0; m < 8; ++m) {
              int lane = 0;
              for (int k = 0; k < 4; ++k) lane += q[4 * m + k] * xq[size_t(b)].qs[4 * m + k];
              acc[m] = std::fma(d, float(lane), acc[m]);
            }
          }
          const float r0 = acc[4] + acc[0], r1 = acc[5] + acc[1], r2 = acc[6] + acc[2], r3 = acc[7] + acc[3];
          const float want = (r0 + r2) + (r1 + r3);
          ASSERT_EQ(y[size_t(t * out + o)], want) << "tokens " << tokens << " token " << t << " row " << o;
        }
      }
    }
  }
}

// expf_ggml (ggml_v_expf, one lane): within 2 ulp of exp, 0 far below, infinity far above.
TEST(GgmlCpu, ExpIsGgmlsApproximation) {
  for (float x = -100.0f; x < 88.0f; x += 0.173f) {
    const double want = std::exp(double(x));
    EXPECT_NEAR(gc::expf_ggml(x), want, 2.5 * std::fabs(want) * 1.2e-7 + 1e-38) << x;
  }
  EXPECT_EQ(gc::expf_ggml(-INFINITY), 0.0f);
  EXPECT_EQ(gc::expf_ggml(-200.0f), 0.0f);
  EXPECT_TRUE(std::isinf(gc::expf_ggml(200.0f)));
  EXPECT_EQ(gc::expf_ggml(0.0f), 1.0f);
}

// llama.cpp's attention (float16 cache, queries and probabilities) against a double-precision oracle on
// the same float16 values, for one token (vec_dot_f16's lanes) and for a batch (tinyBLAS's), over a
// sliding window that starts off a 16-cell boundary.
TEST(GgmlCpu, GgmlAttentionMatchesTheOracle) {
  const int heads = 4, kv_heads = 2, dim = 64;
  const int64_t n = 75, first = 5;
  auto keys = test::randn(size_t(n * kv_heads * dim), 4), values = test::randn(size_t(n * kv_heads * dim), 5);
  auto q = test::randn(size_t(heads * dim), 6, 0.3f);
  gc::round_to_f16(keys.data(), int64_t(keys.size()));
  gc::round_to_f16(values.data(), int64_t(values.size()));
  gc::round_to_f16(q.data(), int64_t(q.size()));
  const kernels::KvView kv{keys.data(), values.data(), n};
  for (bool single : {true, false}) {
    SCOPED_TRACE(single ? "one token" : "batch");
    std::vector<float> out(size_t(heads * dim)), scratch;
    gc::attend(q.data(), heads, kv_heads, dim, kv, first, n - 1, out.data(), scratch, single);
    for (int h = 0; h < heads; ++h) {
      const int j = h / (heads / kv_heads);
      std::vector<double> p(static_cast<size_t>(n), 0.0);
      double mx = -1e30, z = 0;
      for (int64_t t = first; t < n; ++t) {
        double s = 0;
        for (int e = 0; e < dim; ++e) s += double(q[size_t(h * dim + e)]) * keys[size_t((t * kv_heads + j) * dim + e)];
        p[size_t(t)] = s;
        mx = std::max(mx, s);
      }
      for (int64_t t = first; t < n; ++t) z += (p[size_t(t)] = std::exp(p[size_t(t)] - mx));
      for (int e = 0; e < dim; ++e) {
        double o = 0;
        for (int64_t t = first; t < n; ++t) o += p[size_t(t)] / z * values[size_t((t * kv_heads + j) * dim + e)];
        // The probabilities are rounded to float16 (relative 2^-11): the output moves by about that much.
        EXPECT_NEAR(out[size_t(h * dim + e)], o, 2e-3) << "head " << h << " element " << e;
      }
    }
  }
}

}  // namespace
}  // namespace g3n
