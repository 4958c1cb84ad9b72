// kernels::gemm against its double-precision oracle: every weight type, every SIMD target, sizes that
// are multiples of nothing (edge tiles in M and N, several K blocks, several N blocks), 1..3 threads,
// unaligned pointers, strides, bias, accumulation, [K, N] weights, tap-major columns and rows of A from
// a callback.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/gemm_int8.h"
#include "kernels/matmul.h"
#include "quant/quant.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using test::randn;
using test::store_weights;
using test::StoredWeights;
using test::for_each_float_target;

struct Case {
  int64_t m, n, k;
};

// Checks gemm against gemm_reference: |y - ref| within float32 summation error, (k + 2) ulps of
// sum |w a| + |bias| + |c| (a bound for any summation order).
void expect_close(const TensorView& w, const float* a, int64_t m, int64_t n, int64_t k, const kernels::GemmOptions& o,
                  const std::vector<float>& c0, int threads) {
  const int64_t ldc = o.c_stride ? o.c_stride : n, lda = o.a_stride ? o.a_stride : k;
  std::vector<float> got = c0, want = c0;
  ThreadPool pool(threads);
  kernels::gemm(w, a, m, got.data(), pool, o);
  kernels::gemm_reference(w, a, m, want.data(), o);
  // The scale of rounding: the same sum over absolute values.
  std::vector<float> wf(size_t(w.numel()));
  to_f32(w, 0, w.numel(), wf.data());
  std::vector<float> arow(static_cast<size_t>(k));
  int bad = 0;
  for (int64_t i = 0; i < m; ++i) {
    if (o.a_source) (*o.a_source)(i, 1, 0, k, arow.data());
    else std::copy_n(a + i * lda, k, arow.data());
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = size_t(i * ldc + j);
      if (j >= n) {  // past N: untouched
        ASSERT_EQ(std::memcmp(&got[at], &c0[at], 4), 0) << "wrote past column " << n << " at row " << i;
        continue;
      }
      double scale = (o.bias ? std::fabs(o.bias[j]) : 0.0) + (o.accumulate ? std::fabs(c0[at]) : 0.0);
      const int64_t C = k / o.taps;
      for (int64_t q = 0; q < k; ++q) {
        const int64_t src = (q % C) * o.taps + q / C;
        const float wv = o.weights_kn ? wf[size_t(q * n + j)] : wf[size_t(j * w.dim(1) + src)];  // a prefix of rows
        scale += std::fabs(double(wv) * arow[size_t(q)]);
      }
      const double tol = double(k + 2) * 1.2e-7 * scale + 1e-30;
      if (!(std::fabs(double(got[at]) - double(want[at])) <= tol) && ++bad < 5)
        ADD_FAILURE() << "C[" << i << "][" << j << "] = " << got[at] << ", oracle " << want[at] << " (tol " << tol
                      << ")";
    }
  }
  EXPECT_EQ(bad, 0);
}

class GemmTest : public ::testing::TestWithParam<std::tuple<DType, int>> {};

TEST_P(GemmTest, MatchesOracleOnOddSizes) {
  const auto [dtype, threads] = GetParam();
  const size_t misalign = dtype == DType::F32 ? 4 : 2;
  const Case cases[] = {{1, 1, 1},   {7, 13, 5},    {37, 65, 129}, {100, 130, 300},
                        {193, 1030, 70}, {5, 200, 520}, {61, 17, 1},   {250, 3, 33}};
  for_each_float_target([&] {
    for (const Case& cs : cases) {
      SCOPED_TRACE("M " + std::to_string(cs.m) + " N " + std::to_string(cs.n) + " K " + std::to_string(cs.k));
      const StoredWeights w = store_weights(randn(size_t(cs.n * cs.k), 11, 0.5f), cs.n, cs.k, dtype, misalign);
      std::vector<float> abuf = randn(size_t(cs.m * cs.k) + 1, 12);
      const float* a = abuf.data() + 1;  // one float off alignment
      expect_close(w.view, a, cs.m, cs.n, cs.k, {}, std::vector<float>(size_t(cs.m * cs.n), -7.0f), threads);
    }
  });
}

TEST_P(GemmTest, StridesBiasAndAccumulation) {
  const auto [dtype, threads] = GetParam();
  const int64_t m = 45, n = 77, k = 301, lda = k + 3, ldc = n + 5;
  const StoredWeights w = store_weights(randn(size_t(n * k), 21, 0.5f), n, k, dtype, 0);
  const std::vector<float> a = randn(size_t(m * lda), 22);
  const std::vector<float> bias = randn(size_t(n), 23);
  const std::vector<float> c0 = randn(size_t(m * ldc), 24);
  for_each_float_target([&] {
    for (bool acc : {false, true})
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(std::string(acc ? "accumulate" : "overwrite") + (with_bias ? ", bias" : ""));
        kernels::GemmOptions o;
        o.a_stride = lda;
        o.c_stride = ldc;
        o.accumulate = acc;
        o.bias = with_bias ? bias.data() : nullptr;
        expect_close(w.view, a.data(), m, n, k, o, c0, threads);
      }
  });
}

TEST_P(GemmTest, WeightsStoredKN) {
  const auto [dtype, threads] = GetParam();
  const int64_t m = 70, n = 83, k = 270;
  const StoredWeights w = store_weights(randn(size_t(k * n), 31, 0.5f), k, n, dtype, 2);
  const std::vector<float> a = randn(size_t(m * k), 32);
  kernels::GemmOptions o;
  o.weights_kn = true;
  for_each_float_target([&] { expect_close(w.view, a.data(), m, n, k, o, std::vector<float>(size_t(m * n)), threads); });
}

TEST_P(GemmTest, TapMajorColumnsFromASource) {
  const auto [dtype, threads] = GetParam();
  // A 3x3 convolution's weights [out, in, 3, 3] seen as [out, in * 9], columns taken (tap, channel).
  const int64_t m = 53, n = 35, channels = 37, taps = 9, k = channels * taps;
  const StoredWeights w = store_weights(randn(size_t(n * k), 41, 0.5f), n, k, dtype, 0);
  const std::vector<float> full = randn(size_t(m * k), 42);
  const kernels::GemmRowSource source = [&](int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
    for (int64_t r = 0; r < rows; ++r) std::copy_n(full.data() + (m0 + r) * k + k0, kc, dst + r * kc);
  };
  const std::vector<float> bias = randn(size_t(n), 43);
  kernels::GemmOptions o;
  o.taps = taps;
  o.a_source = &source;
  o.bias = bias.data();
  for_each_float_target([&] { expect_close(w.view, nullptr, m, n, k, o, std::vector<float>(size_t(m * n)), threads); });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, GemmTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_threads" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(Gemm, LinearAgreesWithMatmulOnBothSidesOfTheThreshold) {
  ThreadPool pool(2);
  const int64_t n = 96, k = 200;
  const StoredWeights w = store_weights(randn(size_t(n * k), 51, 0.5f), n, k, DType::BF16, 0);
  for (int64_t m : {1, 8, 31, 32, 300}) {
    const std::vector<float> x = randn(size_t(m * k), 52);
    std::vector<float> y(size_t(m * n)), ref(size_t(m * n));
    kernels::linear(w.view, x.data(), m, y.data(), pool);
    kernels::matmul_reference(w.view, x.data(), m, ref.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-4 * (1 + std::fabs(ref[i]))) << "m " << m;
  }
}

TEST(Gemm, AttentionWithSharedKeysAndValues) {
  struct Shape {
    int64_t rows, m, dk, dv;
  };
  // Row blocks cut mid-tile, key counts cut mid-panel, dk and m past one K block, dv past one panel.
  const Shape shapes[] = {{1, 1, 1, 1}, {37, 49, 16, 16}, {100, 130, 64, 96}, {29, 600, 530, 70}};
  for_each_float_target([&] {
    for (const Shape& sh : shapes)
      for (int threads : {1, 3}) {
        SCOPED_TRACE("rows " + std::to_string(sh.rows) + " m " + std::to_string(sh.m) + " dk " +
                     std::to_string(sh.dk) + " dv " + std::to_string(sh.dv));
        ThreadPool pool(threads);
        const int64_t q_stride = sh.dk + 3, out_stride = sh.dv + 2;
        const std::vector<float> q = randn(size_t(sh.rows * q_stride), 61), k = randn(size_t(sh.m * sh.dk), 62),
                                 v = randn(size_t(sh.m * sh.dv), 63);
        std::vector<float> got(size_t(sh.rows * out_stride), 5.0f), want = got;
        const float scale = 1.0f / std::sqrt(float(sh.dk));
        kernels::attention_shared_kv(q.data(), sh.rows, q_stride, k.data(), v.data(), sh.m, sh.dk, sh.dv, scale,
                                     got.data(), out_stride, pool);
        kernels::attention_shared_kv_reference(q.data(), sh.rows, q_stride, k.data(), v.data(), sh.m, sh.dk, sh.dv,
                                               scale, want.data(), out_stride);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << "element " << i;
      }
  });
}

// Block weights (Q8_0 / Q4_0): dequantised while packing, so the product is the float product of the
// dequantised weights (the oracle's), for K of 1..many blocks, edge panels, several K blocks, strides,
// and a prefix of the columns (a MatFormer down projection) whose rows keep their stored stride.
class GemmBlockTest : public ::testing::TestWithParam<std::tuple<DType, int>> {};

TEST_P(GemmBlockTest, MatchesOracle) {
  const auto [dtype, threads] = GetParam();
  const Case cases[] = {{1, 1, 32}, {7, 13, 64}, {37, 65, 544}, {100, 130, 1056}, {193, 1030, 96}, {6, 64, 32}};
  for_each_float_target([&] {
    for (const Case& cs : cases) {
      SCOPED_TRACE("M " + std::to_string(cs.m) + " N " + std::to_string(cs.n) + " K " + std::to_string(cs.k));
      const StoredWeights w = store_weights(randn(size_t(cs.n * cs.k), 51, 0.5f), cs.n, cs.k, dtype, 1);  // odd address
      std::vector<float> abuf = randn(size_t(cs.m * cs.k) + 1, 52);
      expect_close(w.view, abuf.data() + 1, cs.m, cs.n, cs.k, {}, std::vector<float>(size_t(cs.m * cs.n), 3.0f),
                   threads);
    }
  });
}

TEST_P(GemmBlockTest, ColumnPrefixWithStrides) {
  const auto [dtype, threads] = GetParam();
  const int64_t m = 41, n = 70, k_full = 640, k = 288, lda = k_full, ldc = n + 3;
  const StoredWeights w = store_weights(randn(size_t(n * k_full), 61, 0.5f), n, k_full, dtype, 0);
  const std::vector<float> a = randn(size_t(m * lda), 62);
  kernels::GemmOptions o;
  o.a_stride = lda;
  o.c_stride = ldc;
  o.columns = k;
  for_each_float_target([&] { expect_close(w.view, a.data(), m, n, k, o, randn(size_t(m * ldc), 63), threads); });
  // The same prefix through linear(), on both sides of the threshold, against the float product.
  for (int64_t rows : {int64_t(3), kernels::kGemmMinRows + 1}) {
    kernels::MatmulOptions mo;
    mo.x_stride = lda;
    mo.columns = k;
    mo.quant_activations = kernels::QuantActivations::kFloat;
    std::vector<float> got(size_t(rows * n)), want(size_t(rows * n));
    ThreadPool pool(threads);
    kernels::linear(w.view, a.data(), rows, got.data(), pool, mo);
    kernels::matmul_reference(w.view, a.data(), rows, want.data(), mo);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::fabs(want[i]))) << i;
  }
}

TEST_P(GemmBlockTest, WeightsStoredKN) {  // a transposed copy [K, N], blocks along N; K any length
  const auto [dtype, threads] = GetParam();
  for (const Case& cs : {Case{70, 96, 270}, Case{33, 160, 7}, Case{5, 2048, 100}}) {
    SCOPED_TRACE("M " + std::to_string(cs.m) + " N " + std::to_string(cs.n) + " K " + std::to_string(cs.k));
    const StoredWeights w = store_weights(randn(size_t(cs.k * cs.n), 71, 0.5f), cs.k, cs.n, dtype, 3);
    const std::vector<float> a = randn(size_t(cs.m * cs.k), 72);
    kernels::GemmOptions o;
    o.weights_kn = true;
    for_each_float_target(
        [&] { expect_close(w.view, a.data(), cs.m, cs.n, cs.k, o, std::vector<float>(size_t(cs.m * cs.n)), threads); });
  }
}

// The int8 VNNI GEMM (prefill of Q8_0 / Q4_0 weights) against the int8 oracle (the same activation
// quantisation, products in double): edge tiles in M and N, K across packed chunks, odd addresses, strides, a
// column prefix, and linear() choosing it from kGemmMinRows rows.
TEST_P(GemmBlockTest, Int8GemmMatchesInt8Oracle) {
  const auto [dtype, threads] = GetParam();
  const StoredWeights probe = store_weights(randn(32, 1), 1, 32, dtype, 0);
  if (!kernels::gemm_int8_available(probe.view)) GTEST_SKIP() << "no AVX-512 VNNI here";
  ThreadPool pool(threads);
  const Case cases[] = {{1, 13, 32}, {5, 48, 544}, {37, 49, 1056}, {100, 130, 64}, {6, 1030, 96}};
  for (const Case& cs : cases) {
    for (bool prefix : {false, true}) {
      SCOPED_TRACE("M " + std::to_string(cs.m) + " N " + std::to_string(cs.n) + " K " + std::to_string(cs.k) +
                   (prefix ? " prefix" : ""));
      const int64_t k_full = prefix ? cs.k + 64 : cs.k, lda = k_full + 5, ldc = cs.n + 2;
      const StoredWeights w = store_weights(randn(size_t(cs.n * k_full), 81, 0.5f), cs.n, k_full, dtype, 1);
      const std::vector<float> a = randn(size_t(cs.m * lda), 82);
      kernels::MatmulOptions o;
      o.x_stride = lda;
      o.y_stride = ldc;
      o.columns = prefix ? cs.k : 0;
      std::vector<float> got(size_t(cs.m * ldc), -7.0f), want(size_t(cs.m * ldc), -7.0f);
      kernels::gemm_int8(w.view, a.data(), cs.m, got.data(), pool, o);
      kernels::matmul_reference_int8(w.view, a.data(), cs.m, want.data(), o);
      for (int64_t t = 0; t < cs.m; ++t) {
        for (int64_t c = 0; c < cs.n; ++c) {
          double mag = 0;
          for (int64_t i = 0; i < cs.k; ++i)
            mag += std::fabs(double(w.values[size_t(c * k_full + i)]) * a[size_t(t * lda + i)]);
          ASSERT_NEAR(got[size_t(t * ldc + c)], want[size_t(t * ldc + c)], 2e-6 * mag + 1e-6) << "t " << t << " c " << c;
        }
        for (int64_t c = cs.n; c < ldc; ++c) ASSERT_EQ(got[size_t(t * ldc + c)], -7.0f) << "wrote past row " << t;
      }
      if (cs.m >= kernels::kGemmMinRows) {  // linear() takes this path for enough rows
        std::vector<float> via_linear(size_t(cs.m * ldc), -7.0f);
        kernels::linear(w.view, a.data(), cs.m, via_linear.data(), pool, o);
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(via_linear[i], got[i]) << i;
      }
    }
  }
}

// Q4_0 / Q8_0 repacked into VNNI panels (decode and prefill of quantised projections, the LM head) against
// the int8 oracle: few rows (the matrix-vector kernel) and many (the GEMM tiles fed from the panels), a prefix of
// the rows (a MatFormer FFN width) and of the columns, strides, rows past the last full panel; and the rows read
// back (the token embedding).
TEST(Gemm, VnniPanelsMatchInt8Oracle) {
  if (!kernels::vnni_panels_available()) GTEST_SKIP() << "no AVX-512 VNNI here";
  ThreadPool pool(2);
  const int64_t n = 83, k_full = 608;
  for (DType dtype : {DType::Q4_0, DType::Q8_0}) {
    SCOPED_TRACE(dtype_name(dtype));
    const StoredWeights w = store_weights(randn(size_t(n * k_full), 91, 0.5f), n, k_full, dtype, 0);
    const kernels::VnniPanels panels = kernels::pack_vnni_panels(w.view, &pool);
    EXPECT_EQ(panels.size, size_t(6 * (k_full / 32)) * dtype_bytes(dtype, 16 * 32));  // the blocks' own size
    std::vector<float> row(static_cast<size_t>(k_full));
    for (int64_t r : {0, 15, 16, 82}) {
      kernels::vnni_panel_row(panels, r, row.data());
      for (int64_t i = 0; i < k_full; ++i) ASSERT_EQ(row[size_t(i)], w.values[size_t(r * k_full + i)]) << r << " " << i;
    }
    for (int64_t m : {1, 3, 4, 9, 10, 37}) {
      for (const auto& [rows, k] : {std::pair<int64_t, int64_t>{n, k_full}, {50, 544}}) {
        SCOPED_TRACE("M " + std::to_string(m) + " rows " + std::to_string(rows) + " K " + std::to_string(k));
        const int64_t lda = k_full + 3, ldc = rows + 1;
        const std::vector<float> a = randn(size_t(m * lda), 92 + uint32_t(m));
        kernels::MatmulOptions o;
        o.x_stride = lda;
        o.y_stride = ldc;
        o.columns = k == k_full ? 0 : k;
        std::vector<float> got(size_t(m * ldc), -7.0f), want(size_t(m * ldc), -7.0f);
        kernels::matmul_vnni_panels(panels, rows, a.data(), m, got.data(), pool, o);
        TensorView head = w.view;
        head.shape[0] = rows;
        kernels::matmul_reference_int8(head, a.data(), m, want.data(), o);
        for (int64_t t = 0; t < m; ++t) {
          for (int64_t c = 0; c < rows; ++c) {
            double mag = 0;
            for (int64_t i = 0; i < k; ++i)
              mag += std::fabs(double(w.values[size_t(c * k_full + i)]) * a[size_t(t * lda + i)]);
            ASSERT_NEAR(got[size_t(t * ldc + c)], want[size_t(t * ldc + c)], 2e-6 * mag + 1e-6) << "t " << t << " c " << c;
          }
          ASSERT_EQ(got[size_t(t * ldc + rows)], -7.0f) << "wrote past row " << t;
        }
      }
    }
    EXPECT_THROW(kernels::matmul_vnni_panels(panels, n + 1, nullptr, 1, nullptr, pool), Error);
  }
}

INSTANTIATE_TEST_SUITE_P(BlockTypes, GemmBlockTest,
                         ::testing::Combine(::testing::Values(DType::Q8_0, DType::Q4_0), ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_threads" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(Gemm, RejectsBadBlockUsesAndBadTaps) {
  ThreadPool pool(1);
  std::vector<float> v(64 * 64, 0.5f), a(64 * 64), c(64 * 64);
  const StoredWeights q = store_weights(v, 64, 64, DType::Q8_0, 0);
  kernels::GemmOptions o;
  o.taps = 2;
  EXPECT_THROW(kernels::gemm(q.view, a.data(), 1, c.data(), pool, o), Error);  // block weights with taps
  o = {};
  o.columns = 48;
  EXPECT_THROW(kernels::gemm(q.view, a.data(), 1, c.data(), pool, o), Error);  // not whole blocks
  o.columns = 96;
  EXPECT_THROW(kernels::gemm(q.view, a.data(), 1, c.data(), pool, o), Error);  // more columns than stored
  const StoredWeights f = store_weights(v, 64, 64, DType::F32, 0);
  o = {};
  o.taps = 5;
  EXPECT_THROW(kernels::gemm(f.view, a.data(), 1, c.data(), pool, o), Error);
  EXPECT_FALSE(kernels::gemm_preferred(q.view, kernels::kGemmMinRows - 1));
  EXPECT_TRUE(kernels::gemm_preferred(q.view, kernels::kGemmMinRows));
  EXPECT_TRUE(kernels::gemm_preferred(f.view, 1000));
}

TEST(Gemm, EmptyInnerDimensionGivesBias) {
  ThreadPool pool(2);
  std::vector<uint8_t> none(16);
  const TensorView w{DType::F32, {3, 0}, none.data()};
  const float bias[3] = {1, 2, 3};
  std::vector<float> c(6, 9.0f);
  kernels::GemmOptions o;
  o.bias = bias;
  kernels::gemm(w, nullptr, 2, c.data(), pool, o);
  EXPECT_EQ(c, (std::vector<float>{1, 2, 3, 1, 2, 3}));
}

}  // namespace
}  // namespace g3n
