// Convolutions against the scalar oracle: odd sizes, strides, asymmetric padding, groups, depthwise,
// every weight dtype; 'same' padding against TensorFlow's rule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/conv.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using test::randn;
using test::store_weights;
using test::StoredWeights;

struct Case {
  int64_t h, w, c_in, c_out, kh, kw, sh, sw, pt, pb, pl, pr, groups;
};

void check_case(const Case& k, DType dtype, ThreadPool& pool, bool with_bias) {
  kernels::Conv2dShape s;
  s.in_h = k.h, s.in_w = k.w, s.in_c = k.c_in, s.out_c = k.c_out, s.kernel_h = k.kh, s.kernel_w = k.kw;
  s.stride_h = k.sh, s.stride_w = k.sw, s.pad_top = k.pt, s.pad_bottom = k.pb, s.pad_left = k.pl, s.pad_right = k.pr;
  s.groups = k.groups;
  const int64_t wn = k.c_out * (k.c_in / k.groups) * k.kh * k.kw;
  StoredWeights w = store_weights(randn(size_t(wn), 7 + uint32_t(wn)), {k.c_out, k.c_in / k.groups, k.kh, k.kw},
                                  dtype, dtype == DType::F32 ? 0 : 2);
  const std::vector<float> x = randn(size_t(k.h * k.w * k.c_in), 11 + uint32_t(k.h));
  const std::vector<float> bias = randn(size_t(k.c_out), 3);
  const int64_t n_out = s.out_h() * s.out_w() * k.c_out;
  std::vector<float> y(size_t(n_out), NAN), ref(size_t(n_out), NAN);
  kernels::conv2d(w.view, with_bias ? bias.data() : nullptr, x.data(), s, y.data(), pool);
  kernels::conv2d_reference(w.view, with_bias ? bias.data() : nullptr, x.data(), s, ref.data());
  // Float summation of K = c_in/groups * kh * kw unit-variance products: error ~ sqrt(K) * eps * |terms|.
  const double K = double(k.c_in / k.groups * k.kh * k.kw);
  const double tol = 1e-5 * std::sqrt(K) * 4 + 1e-5;
  for (int64_t i = 0; i < n_out; ++i)
    ASSERT_NEAR(y[size_t(i)], ref[size_t(i)], tol * (1 + std::fabs(ref[size_t(i)])))
        << "element " << i << " dtype " << dtype_name(dtype) << " case " << k.h << "x" << k.w << "x" << k.c_in
        << " -> " << k.c_out << " k" << k.kh << "x" << k.kw << " s" << k.sh << " g" << k.groups;
}

TEST(Conv, MatchesReferenceAllPaths) {
  ThreadPool pool(3);
  const std::vector<Case> cases = {
      // 1x1 (matmul path), odd sizes
      {7, 5, 13, 9, 1, 1, 1, 1, 0, 0, 0, 0, 1},
      // stem-like: 3 -> 8, 3x3 stride 2, TF-same padding (0, 1) on even input
      {10, 12, 3, 8, 3, 3, 2, 2, 0, 1, 0, 1, 1},
      // full 3x3 stride 1, symmetric padding, odd sizes
      {9, 7, 5, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1},
      // depthwise 5x5 stride 2, asymmetric padding
      {11, 9, 17, 17, 5, 5, 2, 2, 1, 2, 1, 2, 17},
      // depthwise 3x3 stride 1
      {6, 13, 33, 33, 3, 3, 1, 1, 1, 1, 1, 1, 33},
      // grouped (not depthwise): 4 groups
      {5, 6, 8, 12, 3, 3, 1, 1, 1, 1, 1, 1, 4},
      // depthwise multiplier 2 (groups = in, out = 2 in): im2col path
      {5, 5, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1, 6},
      // non-square kernel and strides, no padding
      {9, 10, 4, 6, 2, 3, 2, 3, 0, 0, 0, 0, 1},
      // 1x1 with stride 2 (im2col path)
      {7, 7, 5, 3, 1, 1, 2, 2, 0, 0, 0, 0, 1},
      // many output pixels: several im2col tiles
      {70, 64, 40, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},
  };
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (const Case& k : cases)
      for (bool b : {false, true}) check_case(k, dt, pool, b);
}

TEST(Conv, SinglePixelAndSingleThread) {
  ThreadPool pool(1);
  check_case({1, 1, 3, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1}, DType::F32, pool, true);
  check_case({1, 1, 5, 5, 5, 5, 1, 1, 2, 2, 2, 2, 5}, DType::BF16, pool, false);
}

TEST(Conv, SamePaddingIsTensorFlows) {
  // stride 1, odd kernel: symmetric
  EXPECT_EQ(kernels::same_padding(10, 3, 1).before, 1);
  EXPECT_EQ(kernels::same_padding(10, 3, 1).after, 1);
  EXPECT_EQ(kernels::same_padding(10, 5, 1).before, 2);
  // stride 2 on even input: extra pixel after
  EXPECT_EQ(kernels::same_padding(768, 3, 2).before, 0);
  EXPECT_EQ(kernels::same_padding(768, 3, 2).after, 1);
  EXPECT_EQ(kernels::same_padding(48, 5, 2).before, 1);
  EXPECT_EQ(kernels::same_padding(48, 5, 2).after, 2);
  // stride 2 on odd input
  EXPECT_EQ(kernels::same_padding(7, 3, 2).before, 1);
  EXPECT_EQ(kernels::same_padding(7, 3, 2).after, 1);
  // output size is ceil(in / stride)
  for (int64_t in : {1, 2, 7, 16, 33})
    for (int64_t k : {1, 3, 5})
      for (int64_t st : {1, 2}) {
        const auto p = kernels::same_padding(in, k, st);
        kernels::Conv2dShape s;
        s.in_h = in, s.in_w = in, s.in_c = 1, s.out_c = 1, s.kernel_h = k, s.kernel_w = k, s.stride_h = st,
        s.stride_w = st, s.pad_top = p.before, s.pad_bottom = p.after, s.pad_left = p.before, s.pad_right = p.after;
        EXPECT_EQ(s.out_h(), (in + st - 1) / st) << in << " " << k << " " << st;
      }
}

TEST(Conv, ShapeErrorsAreReported) {
  ThreadPool pool(1);
  kernels::Conv2dShape s;
  s.in_h = 4, s.in_w = 4, s.in_c = 6, s.out_c = 4, s.kernel_h = 3, s.kernel_w = 3, s.groups = 4;
  std::vector<float> w(4 * 6 * 9), x(4 * 4 * 6), y(64);
  TensorView wv{DType::F32, {4, 6, 3, 3}, w.data()};
  EXPECT_THROW(kernels::conv2d(wv, nullptr, x.data(), s, y.data(), pool), Error);  // groups do not divide 6
  s.groups = 1;
  wv.shape = {4, 6, 3, 2};
  try {
    kernels::conv2d(wv, nullptr, x.data(), s, y.data(), pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 6, 3, 2]"), std::string::npos) << e.what();
  }
}

TEST(Conv, LayoutRoundTrip) {
  const std::vector<float> x = randn(3 * 5 * 7, 1);
  std::vector<float> hwc(x.size()), back(x.size());
  kernels::chw_to_hwc(x.data(), 3, 5, 7, hwc.data());
  EXPECT_EQ(hwc[size_t((2 * 7 + 4) * 3 + 1)], x[size_t(1 * 35 + 2 * 7 + 4)]);
  kernels::hwc_to_chw(hwc.data(), 5, 7, 3, back.data());
  EXPECT_EQ(back, x);
}

}  // namespace
}  // namespace g3n
