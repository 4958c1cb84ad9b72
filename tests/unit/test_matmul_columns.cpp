// matmul over a column prefix of the weights (MatmulOptions::columns): the MatFormer down projection
// reads the first Fp columns of W_down [D, F] in place, rows F apart. Checked against the scalar
// oracles, against the dense kernel on a compact copy of the prefix (bit for bit), and with NaN in
// every column past the prefix, so that reading any of them would show.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/matmul.h"
#include "quant/quant.h"
#include "kernel_test_util.h"

namespace g3n {
namespace {

using test::randn;
using test::store_weights;
using test::StoredWeights;

// Makes every stored element of columns [cols, in) NaN: float types by their NaN pattern, block types
// by a NaN block scale (every element of a block is d * q).
void poison_tail(StoredWeights& w, int64_t cols) {
  const int64_t out = w.view.dim(0), in = w.view.dim(1);
  auto* base = const_cast<uint8_t*>(static_cast<const uint8_t*>(w.view.data));
  for (int64_t r = 0; r < out; ++r) {
    uint8_t* row = base + size_t(r) * w.view.row_bytes();
    if (dtype_is_quantized(w.view.dtype)) {
      const uint16_t nan_half = 0x7e00;
      for (int64_t b = cols / kQuantBlock; b < in / kQuantBlock; ++b)
        std::memcpy(row + size_t(b) * dtype_size(w.view.dtype), &nan_half, 2);
    } else if (w.view.dtype == DType::F32) {
      const float nan = NAN;
      for (int64_t i = cols; i < in; ++i) std::memcpy(row + 4 * i, &nan, 4);
    } else {
      const uint16_t nan16 = w.view.dtype == DType::BF16 ? 0x7fc0 : 0x7e00;
      for (int64_t i = cols; i < in; ++i) std::memcpy(row + 2 * i, &nan16, 2);
    }
  }
}

// The column prefix as a tensor of its own: the bytes of each row's first `cols` elements, packed.
StoredWeights compact_prefix(const TensorView& w, int64_t cols) {
  StoredWeights c;
  const size_t prefix = dtype_bytes(w.dtype, cols);
  c.bytes.resize(prefix * size_t(w.dim(0)));
  for (int64_t r = 0; r < w.dim(0); ++r) std::memcpy(c.bytes.data() + size_t(r) * prefix, w.row(r), prefix);
  c.view = {w.dtype, {w.dim(0), cols}, c.bytes.data()};
  return c;
}

// sum_i |w[o][i] x[t][i]| over the prefix, the scale of float rounding.
std::vector<double> abs_products(const TensorView& dense, const float* x, int64_t x_stride, int64_t tokens) {
  const int64_t out = dense.dim(0), in = dense.dim(1);
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<double> s(static_cast<size_t>(tokens * out));
  for (int64_t o = 0; o < out; ++o) {
    to_f32(dense, o * in, in, row.data());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < in; ++i) s[size_t(t * out + o)] += std::fabs(double(row[size_t(i)]) * x[t * x_stride + i]);
  }
  return s;
}

// dtype, rows, full width, used columns, tokens.
class MatmulColumnsTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t, int64_t>> {};

TEST_P(MatmulColumnsTest, PrefixMatchesOraclesAndReadsNothingPastIt) {
  const auto [dtype, out, in, cols, tokens] = GetParam();
  const size_t misalign = dtype == DType::F32 ? 4 : dtype_is_quantized(dtype) ? 1 : 2;
  StoredWeights w = store_weights(randn(size_t(out * in), 21, 0.5f), out, in, dtype, misalign);
  const StoredWeights dense = compact_prefix(w.view, cols);
  poison_tail(w, cols);
  // Activations as the decoder holds them: rows `in` apart (the full FFN width), one float off
  // alignment; the columns past the prefix hold garbage the product must not use.
  std::vector<float> xbuf = randn(size_t(tokens * in) + 1, 22);
  float* x = xbuf.data() + 1;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = cols; i < in; ++i) x[t * in + i] = 1e30f;
  std::vector<float> xdense(size_t(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) std::copy_n(x + t * in, cols, xdense.data() + t * cols);

  kernels::MatmulOptions o;
  o.x_stride = in;
  o.columns = cols;
  std::vector<float> ref(size_t(tokens * out)), ref_int8(size_t(tokens * out));
  kernels::matmul_reference(w.view, x, tokens, ref.data(), o);
  if (dtype_is_quantized(dtype)) kernels::matmul_reference_int8(w.view, x, tokens, ref_int8.data(), o);
  const auto scale = abs_products(dense.view, x, in, tokens);
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    test::for_each_simd_target([&] {
      for (auto qa : {kernels::QuantActivations::kInt8, kernels::QuantActivations::kFloat}) {
        if (qa == kernels::QuantActivations::kFloat && !dtype_is_quantized(dtype)) continue;
        kernels::MatmulOptions oq = o;
        oq.quant_activations = qa;
        std::vector<float> y(size_t(tokens * out), NAN), y_dense(size_t(tokens * out), NAN);
        kernels::matmul(w.view, x, tokens, y.data(), pool, oq);
        kernels::MatmulOptions od;
        od.quant_activations = qa;
        kernels::matmul(dense.view, xdense.data(), tokens, y_dense.data(), pool, od);
        const bool int8 = dtype_is_quantized(dtype) && qa == kernels::QuantActivations::kInt8;
        for (size_t i = 0; i < y.size(); ++i) {
          // The same kernel on the same prefix: the same sums in the same order.
          ASSERT_EQ(y[i], y_dense[i]) << "element " << i << " threads " << threads;
          const double tol = 2e-5 * scale[i] + 1e-6;
          ASSERT_NEAR(y[i], int8 ? ref_int8[i] : ref[i], tol) << "element " << i << " threads " << threads;
        }
      }
    });
  }
}

INSTANTIATE_TEST_SUITE_P(FloatTypes, MatmulColumnsTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 7, 33), ::testing::Values(4096),
                                            ::testing::Values(1, 31, 2048, 4095), ::testing::Values(1, 5)));
INSTANTIATE_TEST_SUITE_P(BlockTypes, MatmulColumnsTest,
                         ::testing::Combine(::testing::Values(DType::Q8_0, DType::Q4_0),
                                            ::testing::Values(1, 7, 33), ::testing::Values(4096),
                                            ::testing::Values(32, 96, 2048, 4064), ::testing::Values(1, 5)));

// A long prompt goes through the cache-blocked prefill walk (row chunks x token blocks).
TEST(MatmulColumns, PrefillEqualsTokenByToken) {
  const int64_t out = 300, in = 1024, cols = 512, tokens = 37;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    StoredWeights w = store_weights(randn(size_t(out * in), 23, 0.5f), out, in, dtype, 0);
    poison_tail(w, cols);
    const auto x = randn(size_t(tokens * in), 24);
    ThreadPool pool(2);
    kernels::MatmulOptions o;
    o.x_stride = in;
    o.columns = cols;
    std::vector<float> y(size_t(tokens * out)), y1(static_cast<size_t>(out));
    kernels::matmul(w.view, x.data(), tokens, y.data(), pool, o);
    for (int64_t t = 0; t < tokens; ++t) {
      kernels::matmul(w.view, x.data() + t * in, 1, y1.data(), pool, o);
      for (int64_t i = 0; i < out; ++i)
        ASSERT_EQ(y[size_t(t * out + i)], y1[size_t(i)]) << dtype_name(dtype) << " t " << t;
    }
  }
}

// A prefix that is not whole blocks of a block type, or longer than the row, is refused.
TEST(MatmulColumns, RejectsBadPrefixes) {
  StoredWeights q = store_weights(randn(64 * 4, 25), 4, 64, DType::Q8_0, 0);
  StoredWeights f = store_weights(randn(64 * 4, 25), 4, 64, DType::BF16, 0);
  std::vector<float> x(64), y(4);
  ThreadPool pool(1);
  kernels::MatmulOptions o;
  o.columns = 48;
  EXPECT_THROW(kernels::matmul(q.view, x.data(), 1, y.data(), pool, o), Error);
  EXPECT_NO_THROW(kernels::matmul(f.view, x.data(), 1, y.data(), pool, o));
  o.columns = 65;
  EXPECT_THROW(kernels::matmul(f.view, x.data(), 1, y.data(), pool, o), Error);
  o.columns = -1;
  EXPECT_THROW(kernels::matmul(f.view, x.data(), 1, y.data(), pool, o), Error);
}

}  // namespace
}  // namespace g3n
