// Helpers shared by the kernel unit tests: random inputs, weights stored in any dtype at a chosen
// misalignment, and a loop over every SIMD target the machine can run.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "base/dtype.h"
#include "base/tensor.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

namespace g3n::test {

// n normal(0, scale) floats from a fixed seed.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct StoredWeights {
  std::vector<uint8_t> bytes;
  TensorView view;
  std::vector<float> values;  // as stored, in float (rounded / dequantised)
};

// `values` stored as `dtype` (quant::quantize_tensor over [shape[0], the rest]) with the given shape,
// `misalign` bytes into the buffer: kernels may assume no alignment (GGUF blocks are 34 / 18 bytes apart).
inline StoredWeights store_weights(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype,
                                   size_t misalign = 0) {
  StoredWeights w;
  const int64_t rows = shape[0], cols = int64_t(values.size()) / rows;
  const quant::OwnedTensor t = quant::quantize_tensor(values.data(), rows, cols, dtype);
  w.bytes.resize(t.bytes.size() + misalign + 16);
  std::memcpy(w.bytes.data() + misalign, t.bytes.data(), t.bytes.size());
  w.view = {dtype, std::move(shape), w.bytes.data() + misalign};
  w.values.resize(values.size());
  to_f32(w.view, 0, int64_t(values.size()), w.values.data());
  return w;
}

// The same for a matrix [rows, cols].
inline StoredWeights store_weights(const std::vector<float>& values, int64_t rows, int64_t cols, DType dtype,
                                   size_t misalign) {
  return store_weights(values, std::vector<int64_t>{rows, cols}, dtype, misalign);
}

// Runs fn once with each SIMD target forced (the "+VNNI" entries only when with_vnni: they differ from
// plain AVX3 in the int8 matmul path alone), then restores the automatic choice.
template <class Fn>
void for_each_simd_target(const Fn& fn, bool with_vnni = true) {
  const auto targets = kernels::simd_targets();
  ASSERT_FALSE(targets.empty());
  for (const auto& t : targets) {
    if (t.vnni && !with_vnni) continue;
    kernels::force_simd_target(&t);
    SCOPED_TRACE("SIMD target " + t.name);
    ASSERT_EQ(kernels::active_simd_target(), t.name);
    fn();
  }
  kernels::force_simd_target(nullptr);
}

// The targets whose float kernels differ: "+VNNI" entries run the same code as plain AVX3 outside the
// int8 matmul path.
template <class Fn>
void for_each_float_target(const Fn& fn) {
  for_each_simd_target(fn, false);
}

}  // namespace g3n::test
