// conv2d's fast paths against the scalar oracle on every SIMD target: enough output pixels for the
// gemm paths (1x1 as one gemm with the bias fused, implicit im2col per group, tap-major weights), and
// depthwise convolutions with channel counts that fill 4-vector blocks, single vectors and a scalar tail.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/thread_pool.h"
#include "kernels/conv.h"
#include "kernels/matmul.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using test::randn;
using test::store_weights;
using test::StoredWeights;

struct Case {
  const char* name;
  int64_t h, w, c_in, c_out, k, stride, pad_before, pad_after, groups;
};

void check(const Case& k, DType dtype, int threads) {
  kernels::Conv2dShape s;
  s.in_h = k.h, s.in_w = k.w, s.in_c = k.c_in, s.out_c = k.c_out, s.kernel_h = s.kernel_w = k.k;
  s.stride_h = s.stride_w = k.stride;
  s.pad_top = s.pad_left = k.pad_before;
  s.pad_bottom = s.pad_right = k.pad_after;
  s.groups = k.groups;
  const int64_t cg = k.c_in / k.groups, wn = k.c_out * cg * k.k * k.k;
  const StoredWeights w = store_weights(randn(size_t(wn), 3), {k.c_out, cg, k.k, k.k}, dtype, dtype == DType::F32 ? 0 : 2);
  const std::vector<float> x = randn(size_t(k.h * k.w * k.c_in), 4), bias = randn(size_t(k.c_out), 5);
  const int64_t n_out = s.out_h() * s.out_w() * k.c_out;
  std::vector<float> y(size_t(n_out), NAN), ref(size_t(n_out), NAN);
  ThreadPool pool(threads);
  kernels::conv2d(w.view, bias.data(), x.data(), s, y.data(), pool);
  kernels::conv2d_reference(w.view, bias.data(), x.data(), s, ref.data());
  const double tol = 1e-5 * std::sqrt(double(cg * k.k * k.k)) * 4 + 1e-5;
  int bad = 0;
  for (int64_t i = 0; i < n_out; ++i)
    if (!(std::fabs(y[size_t(i)] - ref[size_t(i)]) <= tol * (1 + std::fabs(ref[size_t(i)]))) && ++bad <= 5)
      ADD_FAILURE() << k.name << " " << dtype_name(dtype) << " element " << i << ": " << y[size_t(i)] << " vs "
                    << ref[size_t(i)];
}

TEST(ConvPaths, GemmAndDepthwiseMatchTheOracle) {
  const Case cases[] = {
      {"1x1 gemm", 9, 11, 37, 70, 1, 1, 0, 0, 1},
      {"3x3 stride 2 implicit gemm", 23, 17, 19, 45, 3, 2, 0, 1, 1},
      {"stem-like 3 channels", 30, 26, 3, 16, 3, 2, 0, 1, 1},
      {"5x5 implicit gemm", 12, 13, 6, 9, 5, 1, 2, 2, 1},
      {"grouped implicit gemm", 10, 9, 12, 8, 3, 1, 1, 1, 4},
      {"depthwise 3x3, 100 channels", 9, 10, 100, 100, 3, 1, 1, 1, 100},
      {"depthwise 5x5 stride 2, 70 channels", 11, 12, 70, 70, 5, 2, 1, 2, 70},
      {"depthwise 5x5, 7 channels", 6, 5, 7, 7, 5, 1, 2, 2, 7},
  };
  test::for_each_float_target([&] {
    for (const Case& k : cases)
      for (DType dt : {DType::F32, DType::BF16, DType::F16}) check(k, dt, 1 + int(k.h % 3));
  });
}

}  // namespace
}  // namespace g3n
