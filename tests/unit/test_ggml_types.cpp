// Tests for the GGML type table and row conversions (quant/ggml_types.h): hand-built blocks with
// values worked out from the block layouts, hand-computed quantisations, and - when
// tests/parity/test_gguf_dequant.py points G3N_GGUF_DEQUANT_CASE_DIR at a directory it prepared
// with gguf-py - a bit-for-bit comparison with gguf.quants on every tensor of that file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "quant/ggml_types.h"

namespace g3n {
namespace {

namespace fs = std::filesystem;

void put_u16(std::vector<uint8_t>& b, size_t off, uint16_t v) { std::memcpy(b.data() + off, &v, 2); }
void put_u32(std::vector<uint8_t>& b, size_t off, uint32_t v) { std::memcpy(b.data() + off, &v, 4); }

std::vector<float> deq(int type, const std::vector<uint8_t>& bytes) {
  const ggml::TypeInfo* t = ggml::type_info(type);
  EXPECT_NE(t, nullptr);
  const int64_t n = int64_t(bytes.size()) / t->type_size * t->block_size;
  std::vector<float> y(size_t(n), NAN);
  ggml::dequantize_row(type, bytes.data(), y.data(), n);
  return y;
}

// Every element equals expected(e) (float ==, so -0 == 0).
void expect_values(const std::vector<float>& y, const std::function<float(int)>& expected) {
  for (size_t e = 0; e < y.size(); ++e) EXPECT_EQ(y[e], expected(int(e))) << "element " << e;
}

std::vector<uint8_t> block(int type) { return std::vector<uint8_t>(size_t(ggml::type_info(type)->type_size), 0); }

constexpr uint16_t kHalfOne = 0x3c00, kHalfHalf = 0x3800, kHalfTwo = 0x4000, kHalfQuarter = 0x3400,
                   kHalfMinusOne = 0xbc00, kHalfMinusTwo = 0xc000;

// ============================================================================ the table

TEST(GgmlTypes, TableMatchesGgml) {
  struct Row {
    int id;
    const char* name;
    int64_t block, bytes;
  };
  const Row rows[] = {{0, "F32", 1, 4},       {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
                      {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
                      {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
                      {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292},  {20, "IQ4_NL", 32, 18},  {23, "IQ4_XS", 256, 136},
                      {24, "I8", 1, 1},       {26, "I32", 1, 4},       {28, "F64", 1, 8},       {30, "BF16", 1, 2},
                      {35, "TQ2_0", 256, 66}, {39, "MXFP4", 32, 17}};
  for (const Row& r : rows) {
    const ggml::TypeInfo* t = ggml::type_info(r.id);
    ASSERT_NE(t, nullptr) << r.name;
    EXPECT_STREQ(t->name, r.name);
    EXPECT_EQ(t->block_size, r.block) << r.name;
    EXPECT_EQ(t->type_size, r.bytes) << r.name;
    EXPECT_EQ(ggml::type_name(r.id), r.name);
  }
  for (int64_t id : {-1, 4, 5, 31, 32, 33, 36, 37, 38, 42, 1000}) EXPECT_EQ(ggml::type_info(id), nullptr) << id;
  EXPECT_EQ(ggml::type_name(99), "unknown type 99");
  EXPECT_EQ(ggml::row_bytes(ggml::Q4_K, 512), 288u);
  EXPECT_EQ(ggml::row_bytes(ggml::F16, 3), 6u);
  EXPECT_THROW(ggml::row_bytes(ggml::Q4_K, 100), Error);
  for (int id : {0, 1, 30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 20, 23}) EXPECT_TRUE(ggml::can_dequantize(id)) << id;
  for (int id : {9, 16, 24, 39, 99}) EXPECT_FALSE(ggml::can_dequantize(id)) << id;
  for (int id : {0, 1, 30, 2, 3, 6, 7, 8}) EXPECT_TRUE(ggml::can_quantize(id)) << id;
  for (int id : {12, 14, 20}) EXPECT_FALSE(ggml::can_quantize(id)) << id;
}

TEST(GgmlTypes, BadArgumentsThrow) {
  std::vector<uint8_t> b(1000);
  std::vector<float> y(1000);
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_NE(msg([&] { ggml::dequantize_row(99, b.data(), y.data(), 32); }).find("unknown GGML type id 99"),
            std::string::npos);
  EXPECT_NE(msg([&] { ggml::dequantize_row(ggml::IQ2_XXS, b.data(), y.data(), 256); })
                .find("GGML type IQ2_XXS (16) is not supported"),
            std::string::npos);
  EXPECT_NE(msg([&] { ggml::dequantize_row(ggml::Q4_0, b.data(), y.data(), 33); })
                .find("33 elements of Q4_0 is not a whole number of 32-element blocks"),
            std::string::npos);
  EXPECT_THROW(ggml::dequantize_row(ggml::Q8_0, b.data(), y.data(), -32), Error);
  EXPECT_THROW(ggml::quantize_row(ggml::Q4_K, y.data(), b.data(), 256), Error);
  EXPECT_THROW(ggml::quantize_row(ggml::Q8_0, y.data(), b.data(), 31), Error);
  ggml::dequantize_row(ggml::Q4_K, b.data(), y.data(), 0);  // nothing to do is fine
}

// ============================================================================ dequantisation

TEST(GgmlDequant, ElementTypes) {
  const float f[3] = {1.5f, -0.0f, 3e38f};
  std::vector<uint8_t> fb(12);
  std::memcpy(fb.data(), f, 12);
  const auto y = deq(ggml::F32, fb);
  EXPECT_EQ(std::memcmp(y.data(), f, 12), 0);

  std::vector<uint8_t> h(8);
  for (auto [i, v] : {std::pair{0, 0x3c00}, {1, 0x8001}, {2, 0x7c00}, {3, 0x7bff}}) put_u16(h, 2 * size_t(i), uint16_t(v));
  const auto yh = deq(ggml::F16, h);
  EXPECT_EQ(yh[0], 1.0f);
  EXPECT_EQ(yh[1], -std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(yh[2], INFINITY);
  EXPECT_EQ(yh[3], 65504.0f);

  std::vector<uint8_t> bf(6);
  put_u16(bf, 0, 0x3f80);
  put_u16(bf, 2, 0xc040);
  put_u16(bf, 4, 0x0001);
  const auto yb = deq(ggml::BF16, bf);
  EXPECT_EQ(yb[0], 1.0f);
  EXPECT_EQ(yb[1], -3.0f);
  EXPECT_EQ(yb[2], std::ldexp(1.0f, -133));
}

TEST(GgmlDequant, Q8_0) {
  auto b = block(ggml::Q8_0);
  put_u16(b, 0, kHalfMinusTwo);
  for (int j = 0; j < 32; ++j) b[2 + size_t(j)] = uint8_t(int8_t(8 * j - 128));
  expect_values(deq(ggml::Q8_0, b), [](int e) { return -2.0f * float(8 * e - 128); });
}

TEST(GgmlDequant, Q4_0) {
  auto b = block(ggml::Q4_0);
  put_u16(b, 0, kHalfTwo);
  b[2] = 0x1f;  // element 0: 15 - 8 = 7; element 16: 1 - 8 = -7
  b[17] = 0x80;  // element 15: 0 - 8; element 31: 8 - 8
  expect_values(deq(ggml::Q4_0, b), [](int e) {
    switch (e) {
      case 0: return 14.0f;
      case 16: return -14.0f;
      case 31: return 0.0f;
      default: return -16.0f;
    }
  });
}

TEST(GgmlDequant, Q4_1) {
  auto b = block(ggml::Q4_1);
  put_u16(b, 0, kHalfHalf);      // d = 0.5
  put_u16(b, 2, kHalfMinusOne);  // m = -1
  b[4] = 0x3a;                   // element 0: 10, element 16: 3
  expect_values(deq(ggml::Q4_1, b), [](int e) { return e == 0 ? 4.0f : e == 16 ? 0.5f : -1.0f; });
}

TEST(GgmlDequant, Q5_0) {
  auto b = block(ggml::Q5_0);
  put_u16(b, 0, kHalfOne);
  put_u32(b, 2, 0x80000001u);  // fifth bit of elements 0 and 31
  b[6] = 0xa3;                 // element 0: 3 | 16 = 19; element 16: 10
  expect_values(deq(ggml::Q5_0, b), [](int e) {
    switch (e) {
      case 0: return 3.0f;    // 19 - 16
      case 16: return -6.0f;  // 10 - 16
      case 31: return 0.0f;   // 16 - 16
      default: return -16.0f;
    }
  });
}

TEST(GgmlDequant, Q5_1) {
  auto b = block(ggml::Q5_1);
  put_u16(b, 0, kHalfHalf);  // d = 0.5
  put_u16(b, 2, kHalfOne);   // m = 1
  put_u32(b, 4, 1u << 16);   // fifth bit of element 16
  b[8] = 0x5f;               // element 0: 15; element 16: 5 | 16 = 21
  expect_values(deq(ggml::Q5_1, b), [](int e) { return e == 0 ? 8.5f : e == 16 ? 11.5f : 1.0f; });
}

TEST(GgmlDequant, Q2_K) {
  // scales[16] @0, qs[64] @16, d @80, dmin @82. Element e = 128n + 32j + l has
  // q = (qs[32n + l] >> 2j) & 3 and sub-block s = e / 16: y = d*(sc&15)*q - dmin*(sc>>4).
  auto b = block(ggml::Q2_K);
  put_u16(b, 80, kHalfOne);
  put_u16(b, 82, kHalfHalf);
  b[0] = 0x21;              // s=0: scale 1, min 2 -> y = q - 1
  b[5] = 0x13;              // s=5: scale 3, min 1 -> y = 3q - 0.5
  b[15] = 0xf4;             // s=15: scale 4, min 15 -> y = 4q - 7.5
  b[16 + 0] = 0x03;         // e=0: q=3
  b[16 + 17] = 0x20;        // e=81 (n=0, j=2, l=17): q=2
  b[16 + 63] = 0x40;        // e=255 (n=1, j=3, l=31): q=1
  expect_values(deq(ggml::Q2_K, b), [](int e) {
    if (e == 0) return 2.0f;
    if (e < 16) return -1.0f;
    if (e == 81) return 5.5f;
    if (e >= 80 && e < 96) return -0.5f;
    if (e == 255) return -3.5f;
    if (e >= 240) return -7.5f;
    return 0.0f;
  });
}

TEST(GgmlDequant, Q3_K) {
  // hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Scale s (e/16) = low 4 bits from
  // scales[s%8] >> 4(s/8), high 2 bits from scales[8 + s%4] >> 2(s/4), minus 32.
  // q = ((qs[32n + l] >> 2j) & 3) - (bit e/32 of hmask[l] set ? 0 : 4).
  auto b = block(ggml::Q3_K);
  put_u16(b, 108, kHalfHalf);
  for (int l = 0; l < 32; ++l) b[size_t(l)] = 0xff;  // no -4 offsets ...
  b[0] = 0xfe;                                        // ... except for e = 0
  b[96 + 0] = 0x05;                                   // s=0 low bits 5
  b[96 + 8] = 0x02;                                   // s=0 high bits 2: 37 - 32 = 5 -> d*5 = 2.5
  b[96 + 1] = 0x70;                                   // s=9 low bits 7
  b[96 + 9] = 0x30;                                   // s=9 high bits 3: 55 - 32 = 23 -> 11.5
  b[32 + 0] = 0x01;                                   // e=0: low 1, minus 4 -> -3
  b[32 + 54] = 0x02;                                  // e=150 (n=1, j=0, l=22): 2
  // Every other scale is 0 - 32 = -32 (d*(-32) = -16), every other q is 0.
  expect_values(deq(ggml::Q3_K, b), [](int e) { return e == 0 ? -7.5f : e == 150 ? 23.0f : 0.0f; });
}

TEST(GgmlDequant, Q4_K) {
  // d @0, dmin @2, scales[12] @4, qs[128] @16. Sub-block s = e/32:
  // q = (qs[32(s/2) + l] >> 4(s%2)) & 15; y = d*sc[s]*q - dmin*mn[s].
  auto b = block(ggml::Q4_K);
  put_u16(b, 0, kHalfTwo);
  put_u16(b, 2, kHalfOne);
  b[4 + 1] = 3;            // sc[1] = 3
  b[4 + 5] = 1;            // mn[1] = 1 -> y = 6q - 1
  b[4 + 10] = 0x21;        // sc[6] low 4 bits 1, mn[6] low 4 bits 2
  b[4 + 2] = 0x40;         // sc[6] high 2 bits 1 -> 17 (sc[2] stays 0)
  b[4 + 6] = 0x80;         // mn[6] high 2 bits 2 -> 34 (mn[2] stays 0) -> y = 34q - 34
  b[16 + 2] = 0x50;        // e=34 (s=1, l=2): q = 5
  b[16 + 96 + 7] = 0x03;   // e=199 (s=6, l=7): q = 3
  expect_values(deq(ggml::Q4_K, b), [](int e) {
    if (e == 34) return 29.0f;
    if (e >= 32 && e < 64) return -1.0f;
    if (e == 199) return 68.0f;
    if (e >= 192 && e < 224) return -34.0f;
    return 0.0f;
  });
}

TEST(GgmlDequant, Q5_K) {
  // d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48; q = Q4_K's nibble | bit s of qh[l] << 4.
  auto b = block(ggml::Q5_K);
  put_u16(b, 0, kHalfOne);
  put_u16(b, 2, kHalfHalf);
  b[4 + 0] = 2;            // sc[0] = 2
  b[4 + 4] = 4;            // mn[0] = 4 -> y = 2q - 2
  b[4 + 9] = 0x31;         // sc[5] = 1, mn[5] = 3 -> y = q - 1.5
  b[48 + 3] = 0x07;        // e=3 (s=0): nibble 7
  b[16 + 3] = 0x01;        //   + 16 -> 23
  b[48 + 64 + 10] = 0x90;  // e=170 (s=5, l=10): nibble 9
  b[16 + 10] = 0x20;       //   + 16 -> 25
  expect_values(deq(ggml::Q5_K, b), [](int e) {
    if (e == 3) return 44.0f;
    if (e < 32) return -2.0f;
    if (e == 170) return 23.5f;
    if (e >= 160 && e < 192) return -1.5f;
    return 0.0f;
  });
}

TEST(GgmlDequant, Q6_K) {
  // ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208. e = 128n + 32k + l:
  // q = nibble k/2 of ql[64n + 32(k%2) + l] | ((qh[32n + l] >> 2k) & 3) << 4; y = d*sc[e/16]*(q - 32).
  auto b = block(ggml::Q6_K);
  put_u16(b, 208, kHalfQuarter);
  b[192 + 0] = 4;                 // s=0: 0.25*4 = 1
  b[192 + 13] = uint8_t(-2);      // s=13: -0.5
  b[5] = 0x0a;                    // e=5: low 10
  b[128 + 5] = 0x02;              //   high 2 -> 42 - 32 = 10
  b[83] = 0x70;                   // e=211 (n=1, k=2, l=19): high nibble of ql[64 + 19] = 7
  b[128 + 51] = 0x10;             //   (qh[32 + 19] >> 4) & 3 = 1 -> 23 - 32 = -9
  expect_values(deq(ggml::Q6_K, b), [](int e) {
    if (e == 5) return 10.0f;
    if (e < 16) return -32.0f;
    if (e == 211) return 4.5f;
    if (e >= 208 && e < 224) return 16.0f;
    return 0.0f;
  });
}

TEST(GgmlDequant, Q8_K) {
  auto b = block(ggml::Q8_K);
  const float d = 0.5f;
  std::memcpy(b.data(), &d, 4);
  b[4] = uint8_t(-3);
  b[4 + 255] = 100;
  expect_values(deq(ggml::Q8_K, b), [](int e) { return e == 0 ? -1.5f : e == 255 ? 50.0f : 0.0f; });
}

TEST(GgmlDequant, IQ4_NL) {
  auto b = block(ggml::IQ4_NL);
  put_u16(b, 0, kHalfOne);
  b[2] = 0x0f;  // element 0: code 15 = 113; element 16: code 0 = -127
  for (size_t j = 3; j < 18; ++j) b[j] = 0x88;  // code 8 = 1
  expect_values(deq(ggml::IQ4_NL, b), [](int e) { return e == 0 ? 113.0f : e == 16 ? -127.0f : 1.0f; });
}

TEST(GgmlDequant, IQ4_XS) {
  // d @0, scales_h (u16) @2, scales_l[4] @4, qs[128] @8; sub-block s = e/32 has scale
  // (nibble s%2 of scales_l[s/2] | ((scales_h >> 2s) & 3) << 4) - 32 and 16 bytes of codes.
  auto b = block(ggml::IQ4_XS);
  put_u16(b, 0, kHalfHalf);
  put_u16(b, 2, 0x0080);   // s=3 high bits 2
  b[4 + 1] = 0x50;         // s=3 low bits 5 -> 37 - 32 = 5 -> 2.5
  b[8 + 48 + 4] = 0x80;    // e = 96 + 16 + 4 = 116: code 8 = 1
  // Other sub-blocks: scale -32 -> -16, code 0 = -127.
  expect_values(deq(ggml::IQ4_XS, b), [](int e) {
    if (e == 116) return 2.5f;
    if (e >= 96 && e < 128) return 2.5f * -127.0f;
    return -16.0f * -127.0f;
  });
}

TEST(GgmlDequant, RowsOfSeveralBlocksAndUnalignedSource) {
  // Three Q4_0 blocks starting at an odd address.
  std::vector<uint8_t> buf(1 + 3 * 18, 0);
  for (int k = 0; k < 3; ++k) {
    uint8_t* p = buf.data() + 1 + 18 * k;
    const uint16_t d = k == 0 ? kHalfOne : k == 1 ? kHalfTwo : kHalfHalf;
    std::memcpy(p, &d, 2);
    std::memset(p + 2, 0x99, 16);  // every code 9 -> +1
  }
  std::vector<float> y(96);
  ggml::dequantize_row(ggml::Q4_0, buf.data() + 1, y.data(), 96);
  for (int e = 0; e < 96; ++e) EXPECT_EQ(y[size_t(e)], e < 32 ? 1.0f : e < 64 ? 2.0f : 0.5f) << e;
}

// ============================================================================ quantisation

TEST(GgmlQuant, Q8_0HandComputed) {
  float x[32] = {127.0f, -63.5f, 0.5f, -0.5f, 2.4f, -2.6f};  // amax 127: d = 1, q = roundf(x)
  std::vector<uint8_t> q(34);
  ggml::quantize_row(ggml::Q8_0, x, q.data(), 32);
  std::vector<uint8_t> expected(34, 0);
  put_u16(expected, 0, kHalfOne);
  const int8_t codes[6] = {127, -64, 1, -1, 2, -3};  // halves round away from zero
  for (int j = 0; j < 6; ++j) expected[2 + size_t(j)] = uint8_t(codes[j]);
  EXPECT_EQ(q, expected);

  float zeros[32] = {};
  ggml::quantize_row(ggml::Q8_0, zeros, q.data(), 32);
  EXPECT_EQ(q, std::vector<uint8_t>(34, 0));
}

TEST(GgmlQuant, Q4_0HandComputed) {
  // The value of largest magnitude is -8 (x[3], first of the tie with x[5] = 8): d = -8 / -8 = 1,
  // q = min(15, trunc(x + 8.5)).
  float x[32] = {0.0f, 1.49f, -0.5f, -8.0f, 0.5f, 8.0f};
  x[16] = 7.4f;
  x[17] = -7.6f;
  std::vector<uint8_t> q(18);
  ggml::quantize_row(ggml::Q4_0, x, q.data(), 32);
  std::vector<uint8_t> expected(18, 0x88);
  put_u16(expected, 0, kHalfOne);
  // qs[j] = q[j] | q[j + 16] << 4
  expected[2] = 0xf8;  // 8 | 15 << 4
  expected[3] = 0x09;  // 9 | 0 << 4
  expected[4] = 0x88;  // 8 | 8 << 4
  expected[5] = 0x80;  // 0 | 8 << 4
  expected[6] = 0x89;  // 9
  expected[7] = 0x8f;  // 16 clamps to 15
  EXPECT_EQ(q, expected);

  // A positive maximum first: d = 4 / -8 = -0.5.
  float y[32] = {4.0f, -2.0f};
  ggml::quantize_row(ggml::Q4_0, y, q.data(), 32);
  std::vector<uint8_t> expected2(18, 0x88);
  put_u16(expected2, 0, 0xb800);
  expected2[2] = 0x80;  // -8 + 8.5 -> 0
  expected2[3] = 0x8c;  //  4 + 8.5 -> 12
  EXPECT_EQ(q, expected2);
  std::vector<float> back(32);
  ggml::dequantize_row(ggml::Q4_0, q.data(), back.data(), 32);
  EXPECT_EQ(back[0], 4.0f);
  EXPECT_EQ(back[1], -2.0f);
  EXPECT_EQ(back[2], 0.0f);
}

TEST(GgmlQuant, RoundTripsWithinHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(1024);
  for (auto& v : x) v = nd(rng);
  for (int type : {ggml::Q8_0, ggml::Q4_0, ggml::Q4_1, ggml::Q5_0, ggml::Q5_1, ggml::F16, ggml::BF16}) {
    std::vector<uint8_t> q(ggml::row_bytes(type, 1024));
    std::vector<float> y(1024);
    ggml::quantize_row(type, x.data(), q.data(), 1024);
    ggml::dequantize_row(type, q.data(), y.data(), 1024);
    for (int b = 0; b < 32; ++b) {
      const float* xb = x.data() + 32 * b;
      float lo = INFINITY, hi = -INFINITY;
      for (int k = 0; k < 32; ++k) lo = std::min(lo, xb[k]), hi = std::max(hi, xb[k]);
      const float amax = std::max(hi, -lo);
      // Half a quantisation step (a whole one where Q4_0 / Q5_0 clip the far side), plus the f16
      // rounding of the scales; F16 / BF16 round each value.
      float tol = 0.0f;
      switch (type) {
        case ggml::Q8_0: tol = amax / 127 * 0.5f; break;
        case ggml::Q4_0: tol = amax / 8; break;
        case ggml::Q5_0: tol = amax / 16; break;
        case ggml::Q4_1: tol = (hi - lo) / 15 * 0.5f; break;
        case ggml::Q5_1: tol = (hi - lo) / 31 * 0.5f; break;
        default: break;
      }
      tol = tol * 1.01f + 2e-3f * amax;
      for (int k = 0; k < 32; ++k) {
        const float xv = xb[k], yv = y[size_t(32 * b + k)];
        const float t = type == ggml::F16 ? std::fabs(xv) / 2048 + 3e-8f : type == ggml::BF16 ? std::fabs(xv) / 256 : tol;
        EXPECT_LE(std::fabs(xv - yv), t) << ggml::type_name(type) << " block " << b << " element " << k;
      }
    }
  }
}

// ============================================================================ parity with gguf-py

struct Npy {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A minimal .npy reader for what tests/parity/test_gguf_dequant.py writes: '<f4', C order.
Npy read_npy_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail(path, ": not a .npy file");
  const int major = uint8_t(bytes[6]);
  size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(path, ": truncated");
    for (int i = 3; i >= 0; --i) header_len = header_len << 8 | uint8_t(bytes[8 + size_t(i)]);
    start = 12;
  } else {
    fail(path, ": .npy version ", major, " is not supported");
  }
  if (start + header_len > bytes.size()) fail(path, ": truncated header");
  const std::string header = bytes.substr(start, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos) fail(path, ": not little-endian float32: ", header);
  if (header.find("'fortran_order': False") == std::string::npos) fail(path, ": not C order: ", header);
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) fail(path, ": no shape: ", header);
  Npy npy;
  std::string dims = header.substr(open + 10, close - open - 10);
  for (size_t pos = 0; pos < dims.size();) {
    const size_t comma = dims.find(',', pos);
    const std::string tok = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (tok.find_first_of("0123456789") != std::string::npos) npy.shape.push_back(std::stoll(tok));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  int64_t n = 1;
  for (int64_t d : npy.shape) n *= d;
  const size_t data_start = start + header_len;
  if (bytes.size() - data_start != size_t(n) * 4)
    fail(path, ": ", bytes.size() - data_start, " data bytes for ", n, " float32 values");
  npy.data.resize(size_t(n));
  if (n) std::memcpy(npy.data.data(), bytes.data() + data_start, size_t(n) * 4);
  return npy;
}

std::string hex_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", u);
  return buf;
}

// Driven by tests/parity/test_gguf_dequant.py: the directory holds case.gguf (written by gguf-py),
// <tensor>.npy (gguf.quants.dequantize of each tensor) and, for tensors gguf-py quantised from
// float32, <tensor>.src.npy (that input). Every tensor must dequantise bit-for-bit like gguf-py,
// and re-quantising the input must give the file's bytes. The file is then copied through
// GgufWriter to rewritten.gguf, which the Python side reads back with gguf-py's GGUFReader.
TEST(GgufDequantFromPython, CaseDirectory) {
  const char* dir = std::getenv("G3N_GGUF_DEQUANT_CASE_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "G3N_GGUF_DEQUANT_CASE_DIR is not set (tests/parity/test_gguf_dequant.py sets it)";
  const fs::path d(dir);
  const GgufFile f = GgufFile::open((d / "case.gguf").string());
  int compared = 0, quantized = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    SCOPED_TRACE(t.name + " (" + ggml::type_name(t.type) + ")");
    const Npy expected = read_npy_f32((d / (t.name + ".npy")).string());
    ASSERT_EQ(expected.shape, t.shape());
    const int64_t n = t.numel();
    std::vector<float> y(static_cast<size_t>(n));
    ggml::dequantize_row(t.type, t.data, y.data(), n);
    if (std::memcmp(y.data(), expected.data.data(), size_t(n) * 4) != 0) {
      int64_t bad = 0, first = -1;
      for (int64_t i = 0; i < n; ++i)
        if (std::memcmp(&y[size_t(i)], &expected.data[size_t(i)], 4) != 0) {
          if (first < 0) first = i;
          ++bad;
        }
      ADD_FAILURE() << bad << " of " << n << " values differ; first at " << first << ": g3n " << y[size_t(first)]
                    << " (" << hex_bits(y[size_t(first)]) << "), gguf-py " << expected.data[size_t(first)] << " ("
                    << hex_bits(expected.data[size_t(first)]) << ")";
    }
    ++compared;

    const fs::path src = d / (t.name + ".src.npy");
    if (fs::exists(src)) {
      const Npy x = read_npy_f32(src.string());
      ASSERT_EQ(x.shape, t.shape());
      ASSERT_TRUE(ggml::can_quantize(t.type));
      std::vector<uint8_t> q(size_t(t.nbytes));
      ggml::quantize_row(t.type, x.data.data(), q.data(), n);
      if (std::memcmp(q.data(), t.data, size_t(t.nbytes)) != 0) {
        const int64_t bs = ggml::type_info(t.type)->type_size;
        int64_t bad = 0, first = -1;
        for (int64_t b = 0; b < int64_t(t.nbytes) / bs; ++b)
          if (std::memcmp(q.data() + b * bs, t.data + b * bs, size_t(bs)) != 0) {
            if (first < 0) first = b;
            ++bad;
          }
        ADD_FAILURE() << "quantize_row: " << bad << " of " << int64_t(t.nbytes) / bs
                      << " blocks differ from gguf-py's bytes; first: block " << first;
      }
      ++quantized;
    }
  }

  {
    GgufWriter w((d / "rewritten.gguf").string(), f.alignment());
    for (const std::string& key : f.metadata_keys()) w.set(key, f.at(key));
    for (const GgufTensorInfo& t : f.tensors()) w.add_tensor(t.name, t.type, t.dims);
    for (const GgufTensorInfo& t : f.tensors()) w.write_tensor(t.name, t.data, size_t(t.nbytes));
    w.finish();
  }
  EXPECT_GT(compared, 0);
  std::printf("[gguf-dequant] tensors=%d quantized=%d\n", compared, quantized);
}

}  // namespace
}  // namespace g3n
