// g3n's emulation of ggml's CPU arithmetic (src/kernels/ggml_cpu.h) against libggml itself.
//
// Loads the libggml-cpu / libggml-base shared libraries named by G3N_LIBGGML_DIR (tests/parity/
// test_ggml_numerics.py points it at llama-cpp-python's copy) and compares, for every weight type g3n
// multiplies the ggml way: the activation quantisers bit for bit, and each product with ggml's own
// vec_dot on weights quantised by ggml. Skips when the variable is unset.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/thread_pool.h"
#include "kernels/ggml_cpu.h"
#include "kernels/matmul.h"
#include "quant/ggml_types.h"

namespace g3n {
namespace {

namespace gc = kernels::ggml_cpu;

using FromFloat = void (*)(const float*, void*, int64_t);
using VecDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);
struct TraitsCpu {  // ggml-cpu.h struct ggml_type_traits_cpu
  FromFloat from_float;
  VecDot vec_dot;
  int vec_dot_type;
  int64_t nrows;
};
using GetTraits = const TraitsCpu* (*)(int);
using QuantizeChunk = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);

struct Ggml {
  void* cpu = nullptr;
  void* base = nullptr;
  GetTraits traits = nullptr;
  QuantizeChunk quantize = nullptr;
  const uint16_t* gelu_table = nullptr;
};

const Ggml* ggml() {
  static Ggml g = [] {
    Ggml r;
    const char* dir = std::getenv("G3N_LIBGGML_DIR");
    if (!dir) return r;
    const std::string d(dir);
    r.base = dlopen((d + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
    r.cpu = dlopen((d + "/libggml-cpu.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!r.base || !r.cpu) return Ggml{};
    reinterpret_cast<void (*)()>(dlsym(r.cpu, "ggml_cpu_init"))();
    r.traits = reinterpret_cast<GetTraits>(dlsym(r.cpu, "ggml_get_type_traits_cpu"));
    r.quantize = reinterpret_cast<QuantizeChunk>(dlsym(r.base, "ggml_quantize_chunk"));
    r.gelu_table = static_cast<const uint16_t*>(dlsym(r.cpu, "ggml_table_gelu_f16"));
    return r;
  }();
  return g.traits && g.quantize && g.gelu_table ? &g : nullptr;
}

#define REQUIRE_GGML()                                                                    \
  const Ggml* G = ggml();                                                                 \
  if (!G) GTEST_SKIP() << "G3N_LIBGGML_DIR does not name libggml-base.so / libggml-cpu.so"

std::vector<float> values(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  // Outliers, exact zeros and a block of equal values: the cases quantisers round differently.
  v[3] = 8 * scale;
  v[40] = 0.0f;
  for (size_t i = 64; i < 96 && i < n; ++i) v[i] = 0.5f * scale;
  return v;
}

// y [tokens][out] must equal ggml's vec_dot of each weight row (ggml type `type`) with x quantised by ggml:
// both sum the same integer block products, only the order of the float additions differs.
void expect_ggml_products(const Ggml* G, int type, const std::vector<uint8_t>& w, const std::vector<float>& x,
                          int64_t tokens, int64_t out, int64_t in, const std::vector<float>& y) {
  const TraitsCpu* t = G->traits(type);
  std::vector<uint8_t> xq(ggml::row_bytes(t->vec_dot_type, in));
  std::vector<float> deq(static_cast<size_t>(in));
  for (int64_t k = 0; k < tokens; ++k) {
    G->traits(t->vec_dot_type)->from_float(x.data() + k * in, xq.data(), in);
    for (int64_t o = 0; o < out; ++o) {
      const uint8_t* row = w.data() + size_t(o) * ggml::row_bytes(type, in);
      float want = 0;
      t->vec_dot(int(in), &want, 0, row, 0, xq.data(), 0, 1);
      ggml::dequantize_row(type, row, deq.data(), in);
      double mag = 0;
      for (int64_t i = 0; i < in; ++i) mag += std::fabs(double(deq[size_t(i)]) * x[size_t(k * in + i)]);
      ASSERT_NEAR(y[size_t(k * out + o)], want, 1e-5 * mag + 1e-6) << "token " << k << " row " << o;
    }
  }
}

TEST(GgmlOracle, ActivationQuantisersAreBitIdentical) {
  REQUIRE_GGML();
  for (uint32_t seed = 0; seed < 4; ++seed) {
    const int64_t n = 1024;
    const auto x = values(size_t(n), seed, seed == 3 ? 1e-3f : 2.0f);
    // Q8_0: 34-byte blocks, f16 d then 32 int8.
    std::vector<uint8_t> ref(size_t(n / 32) * 34);
    G->traits(ggml::Q8_0)->from_float(x.data(), ref.data(), n);
    std::vector<gc::BlockQ8_0> q0(size_t(n / 32));
    gc::quantize_q8_0(x.data(), n, q0.data());
    for (int64_t b = 0; b < n / 32; ++b) {
      uint16_t d;
      std::memcpy(&d, ref.data() + b * 34, 2);
      ASSERT_EQ(f16_to_f32(d), q0[size_t(b)].d) << "Q8_0 block " << b;
      ASSERT_EQ(0, std::memcmp(ref.data() + b * 34 + 2, q0[size_t(b)].qs, 32)) << "Q8_0 block " << b;
    }
    // Q8_1: f16 d, f16 s, 32 int8.
    std::vector<uint8_t> ref1(size_t(n / 32) * 36);
    G->traits(ggml::Q8_1)->from_float(x.data(), ref1.data(), n);
    std::vector<gc::BlockQ8_1> q1(size_t(n / 32));
    gc::quantize_q8_1(x.data(), n, q1.data());
    for (int64_t b = 0; b < n / 32; ++b) {
      uint16_t d, s;
      std::memcpy(&d, ref1.data() + b * 36, 2);
      std::memcpy(&s, ref1.data() + b * 36 + 2, 2);
      ASSERT_EQ(f16_to_f32(d), q1[size_t(b)].d) << "Q8_1 block " << b;
      ASSERT_EQ(f16_to_f32(s), q1[size_t(b)].s) << "Q8_1 block " << b;
      ASSERT_EQ(0, std::memcmp(ref1.data() + b * 36 + 4, q1[size_t(b)].qs, 32)) << "Q8_1 block " << b;
    }
    // Q8_K: f32 d, 256 int8, 16 int16 sums.
    std::vector<uint8_t> refk(size_t(n / 256) * 292);
    G->traits(ggml::Q8_K)->from_float(x.data(), refk.data(), n);
    std::vector<gc::BlockQ8K> qk(size_t(n / 256));
    gc::quantize_q8_K(x.data(), n, qk.data());
    for (int64_t b = 0; b < n / 256; ++b) {
      float d;
      std::memcpy(&d, refk.data() + b * 292, 4);
      ASSERT_EQ(d, qk[size_t(b)].d) << "Q8_K block " << b;
      ASSERT_EQ(0, std::memcmp(refk.data() + b * 292 + 4, qk[size_t(b)].qs, 256)) << "Q8_K block " << b;
      ASSERT_EQ(0, std::memcmp(refk.data() + b * 292 + 260, qk[size_t(b)].bsums, 32)) << "Q8_K block " << b;
    }
  }
}

TEST(GgmlOracle, ProductsEqualGgmlVecDot) {
  REQUIRE_GGML();
  ThreadPool pool(2);
  const int types[] = {ggml::Q4_0, ggml::Q4_1, ggml::Q5_0, ggml::Q5_1, ggml::Q8_0, ggml::Q2_K,
                       ggml::Q3_K, ggml::Q4_K, ggml::Q5_K, ggml::Q6_K, ggml::IQ4_NL, ggml::IQ4_XS};
  const int64_t out = 7, in = 768, tokens = 3;
  for (int type : types) {
    SCOPED_TRACE(ggml::type_name(type));
    ASSERT_TRUE(gc::has_dot(type));
    const auto wf = values(size_t(out * in), 11u + uint32_t(type), 0.05f);
    std::vector<uint8_t> w(ggml::row_bytes(type, in) * size_t(out));
    G->quantize(type, wf.data(), w.data(), 0, out, in, nullptr);
    const auto x = values(size_t(tokens * in), 5u + uint32_t(type), 1.5f);
    std::vector<float> y(size_t(tokens * out));
    gc::matmul(type, w.data(), out, in, x.data(), tokens, y.data(), pool);

    expect_ggml_products(G, type, w, x, tokens, out, in, y);
  }
}

// The SIMD matrix kernels with QuantActivations::kGgml on Q8_0 / Q4_0 weights (what the decoder uses for
// those types, and for Q5_0 repacked to Q8_0), on every SIMD target.
TEST(GgmlOracle, SimdKernelsWithGgmlActivationsEqualGgmlVecDot) {
  REQUIRE_GGML();
  ThreadPool pool(2);
  const int64_t out = 9, in = 1024;
  for (int type : {ggml::Q8_0, ggml::Q4_0}) {
    const auto wf = values(size_t(out * in), 21u + uint32_t(type), 0.05f);
    std::vector<uint8_t> w(ggml::row_bytes(type, in) * size_t(out));
    G->quantize(type, wf.data(), w.data(), 0, out, in, nullptr);
    TensorView view;
    view.dtype = type == ggml::Q8_0 ? DType::Q8_0 : DType::Q4_0;
    view.shape = {out, in};
    view.data = w.data();
    for (int64_t tokens : {1, 5, 40}) {
      const auto x = values(size_t(tokens * in), 7u + uint32_t(tokens), 1.5f);
      for (const auto& target : kernels::simd_targets()) {
        SCOPED_TRACE(ggml::type_name(type) + " " + target.name + " tokens " + std::to_string(tokens));
        kernels::force_simd_target(&target);
        std::vector<float> y(size_t(tokens * out));
        kernels::MatmulOptions o;
        o.quant_activations = kernels::QuantActivations::kGgml;
        kernels::matmul(view, x.data(), tokens, y.data(), pool, o);
        kernels::force_simd_target(nullptr);
        expect_ggml_products(G, type, w, x, tokens, out, in, y);
      }
    }
  }
}

// Products of fewer than 8 tokens (decode, short prompts) follow ggml's own vec_dot lane for lane for the
// 32-value block types, Q5_K and Q6_K: bit-identical results, not just close ones.
TEST(GgmlOracle, VecDotOrderIsGgmls) {
  REQUIRE_GGML();
  ThreadPool pool(2);
  const int64_t out = 5, in = 2048;
  for (int type : {ggml::Q4_0, ggml::Q4_1, ggml::Q5_0, ggml::Q5_1, ggml::Q8_0, ggml::Q5_K, ggml::Q6_K}) {
    SCOPED_TRACE(ggml::type_name(type));
    const auto wf = values(size_t(out * in), 31u + uint32_t(type), 0.05f);
    std::vector<uint8_t> w(ggml::row_bytes(type, in) * size_t(out));
    G->quantize(type, wf.data(), w.data(), 0, out, in, nullptr);
    for (int64_t tokens : {1, 3, 7}) {
      const auto x = values(size_t(tokens * in), 9u + uint32_t(tokens), 1.5f);
      std::vector<float> y(size_t(tokens * out));
      gc::matmul(type, w.data(), out, in, x.data(), tokens, y.data(), pool);
      const TraitsCpu* t = G->traits(type);
      std::vector<uint8_t> xq(ggml::row_bytes(t->vec_dot_type, in));
      for (int64_t k = 0; k < tokens; ++k) {
        G->traits(t->vec_dot_type)->from_float(x.data() + k * in, xq.data(), in);
        for (int64_t o = 0; o < out; ++o) {
          float want = 0;
          t->vec_dot(int(in), &want, 0, w.data() + size_t(o) * ggml::row_bytes(type, in), 0, xq.data(), 0, 1);
          ASSERT_EQ(y[size_t(k * out + o)], want) << "tokens " << tokens << " token " << k << " row " << o;
        }
      }
    }
  }
}

TEST(GgmlOracle, GeluTableIsGgmls) {
  REQUIRE_GGML();
  int differ = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float mine = gc::gelu_table_entry(uint16_t(h));
    const float theirs = f16_to_f32(G->gelu_table[h]);
    if (!(mine == theirs || (std::isnan(mine) && std::isnan(theirs)))) ++differ;
  }
  // Every entry, including the fused multiply-add ggml's build makes of 1 + a*x*x.
  EXPECT_EQ(differ, 0) << differ << " of 65536 entries differ";
}

}  // namespace
}  // namespace g3n
