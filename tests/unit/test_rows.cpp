// Row-wise kernels (kernels/rows.h) against their double-precision oracles on every SIMD target:
// widths that are multiples of nothing (the padded last vector), 1..3 threads, clip, weights and every
// activation; NaN kept by the clip; softmax with strides and scales.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/rows.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using kernels::RowActivation;

using test::randn;
using test::for_each_float_target;

// |got - want| <= abs_tol + rel |want| + per_x |x| (x: the activation's input, when given).
void expect_near_rel(const std::vector<float>& got, const std::vector<float>& want, double rel, double abs_tol,
                     const std::vector<float>* x = nullptr, double per_x = 0) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = abs_tol + rel * std::fabs(double(want[i])) + (x ? per_x * std::fabs(double((*x)[i])) : 0.0);
    if (!(std::fabs(double(got[i]) - double(want[i])) <= tol) && ++bad <= 5)
      ADD_FAILURE() << "element " << i << ": " << got[i] << ", oracle " << want[i];
  }
}

TEST(Rows, RmsNormWithClipWeightAndActivation) {
  for_each_float_target([] {
    for (int threads : {1, 3})
      for (int64_t n : {1, 7, 16, 33, 640, 1541})
        for (RowActivation act : {RowActivation::kNone, RowActivation::kGeluTanh, RowActivation::kSilu})
          for (float clip : {0.0f, 1.5f}) {
            SCOPED_TRACE("n " + std::to_string(n) + " act " + std::to_string(int(act)) + " clip " +
                         std::to_string(clip));
            ThreadPool pool(threads);
            const int64_t rows = 37;
            const std::vector<float> x = randn(size_t(rows * n), 1, 3.0f), w = randn(size_t(n), 2);
            kernels::RowNormOptions o;
            o.weight = w.data();
            o.eps = 1e-6f;
            o.clip = clip;
            o.activation = act;
            std::vector<float> got(x.size()), want(x.size());
            kernels::rms_norm_rows(x.data(), rows, n, o, got.data(), pool);
            kernels::rms_norm_rows_reference(x.data(), rows, n, o, want.data());
            expect_near_rel(got, want, 2e-6, 2e-6);
            // In place, no weight.
            o.weight = nullptr;
            std::vector<float> inplace = x;
            kernels::rms_norm_rows(inplace.data(), rows, n, o, inplace.data(), pool);
            kernels::rms_norm_rows_reference(x.data(), rows, n, o, want.data());
            expect_near_rel(inplace, want, 2e-6, 2e-6);
          }
  });
}

TEST(Rows, ClipKeepsNaN) {
  ThreadPool pool(1);
  std::vector<float> x = {1.0f, NAN, 100.0f, -100.0f};
  kernels::RowNormOptions o;
  o.clip = 2.0f;
  std::vector<float> y(4);
  kernels::rms_norm_rows(x.data(), 1, 4, o, y.data(), pool);
  for (float v : y) EXPECT_TRUE(std::isnan(v));  // the mean is NaN: every output is
}

TEST(Rows, ActivationsOverRangeAndExtremes) {
  for_each_float_target([] {
    ThreadPool pool(2);
    std::vector<float> x = randn(100003, 3, 4.0f);
    for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 87.0f, -87.0f, 100.0f, -100.0f, 1e30f, -1e30f})
      x.push_back(v);
    for (RowActivation act : {RowActivation::kGeluTanh, RowActivation::kSilu}) {
      std::vector<float> got = x, want(x.size());
      kernels::activate(got.data(), int64_t(got.size()), act, pool);
      for (size_t i = 0; i < x.size(); ++i) want[i] = kernels::activation_reference(x[i], act);
      // GELU's 1 + tanh(u) cancels for negative x, as the reference's float32 formula does: the
      // error is a few ulps of 0.5 |x|, not of the result.
      expect_near_rel(got, want, 2e-6, 1e-7, &x, 2e-7);
    }
  });
}

TEST(Rows, SoftmaxWithStrideAndScale) {
  for_each_float_target([] {
    for (int64_t n : {1, 5, 16, 49, 576}) {
      ThreadPool pool(2);
      const int64_t rows = 23, stride = n + 3;
      std::vector<float> x = randn(size_t(rows * stride), 4, 5.0f);
      for (int64_t r = 0; r < rows; ++r) x[size_t(r * stride)] -= 50.0f;  // a very small value among the rest
      std::vector<float> got = x, want = x;
      kernels::softmax_rows(got.data(), rows, n, stride, 0.125f, pool);
      kernels::softmax_rows_reference(want.data(), rows, n, stride, 0.125f);
      expect_near_rel(got, want, 2e-6, 1e-9);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = n; i < stride; ++i) ASSERT_EQ(got[size_t(r * stride + i)], x[size_t(r * stride + i)]);
    }
  });
}

TEST(Rows, GluScaleAddAndAddScaled) {
  for_each_float_target([] {
    ThreadPool pool(3);
    const int64_t rows = 29, d = 45;
    const std::vector<float> z = randn(size_t(rows * 2 * d), 5, 4.0f);
    std::vector<float> out(size_t(rows * d));
    kernels::glu(z.data(), rows, d, out.data(), pool);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < d; ++c) {
        const double a = z[size_t(r * 2 * d + c)], g = z[size_t(r * 2 * d + d + c)];
        ASSERT_NEAR(out[size_t(r * d + c)], a / (1.0 + std::exp(-g)), 2e-6 * (1 + std::fabs(a)));
      }
    const std::vector<float> y0 = randn(size_t(rows * d), 6), gamma = randn(size_t(d), 7);
    const std::vector<float> res = randn(size_t(rows * d), 8);
    // Products and sums may be fused (one rounding instead of two): within an ulp of the terms.
    auto close = [](double got, double a, double b) {
      return std::fabs(got - (a + b)) <= 1.2e-7 * (std::fabs(a) + std::fabs(b));
    };
    std::vector<float> y = y0;
    kernels::scale_add_rows(y.data(), gamma.data(), res.data(), rows, d, pool);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(close(y[i], double(y0[i]) * gamma[i % size_t(d)], res[i])) << i;
    y = y0;
    kernels::scale_add_rows(y.data(), nullptr, res.data(), rows, d, pool);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y0[i] + res[i]);
    std::vector<float> big = randn(70001, 9), add = randn(70001, 10), ref = big;
    kernels::add_scaled(big.data(), add.data(), 0.5f, int64_t(big.size()), pool);
    for (size_t i = 0; i < big.size(); ++i) ASSERT_TRUE(close(big[i], ref[i], add[i] * 0.5)) << i;
  });
}

}  // namespace
}  // namespace g3n
