// Tests for the safetensors reader (crafted broken files must fail with a telling message), the
// streaming writer, and checkpoint directories (single file or sharded with an index).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"

namespace g3n {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("g3n_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void write_bytes(const std::string& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good()) << p;
  }

  // A safetensors file from a literal header and data section; `len` overrides the stored header
  // length.
  std::string make(const std::string& name, const std::string& header, const std::string& data = "",
                   std::optional<uint64_t> len = std::nullopt) {
    const uint64_t n = len.value_or(header.size());
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes += char(uint8_t(n >> (8 * i)));
    bytes += header;
    bytes += data;
    const std::string p = path(name);
    write_bytes(p, bytes);
    return p;
  }

  fs::path dir_;
};

// open() must throw g3n::Error whose message names the file and contains `needle`.
void expect_open_error(const std::string& p, const std::string& needle) {
  try {
    SafetensorsFile::open(p);
    ADD_FAILURE() << "open(" << p << ") did not throw; expected an error containing: " << needle;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
    EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string u16_bytes(const std::vector<uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 2);
}

std::vector<float> read_f32(const TensorView& t) {
  std::vector<float> out(size_t(t.numel()));
  to_f32(t, 0, t.numel(), out.data());
  return out;
}

// ----------------------------------------------------------------------------- broken files

using SafetensorsFileErrors = SafetensorsTest;

TEST_F(SafetensorsFileErrors, ZeroBytes) {
  const std::string p = path("zero.safetensors");
  write_bytes(p, "");
  expect_open_error(p, "shorter than the 8-byte header length");
}

TEST_F(SafetensorsFileErrors, SevenBytes) {
  const std::string p = path("seven.safetensors");
  write_bytes(p, std::string(7, '\0'));
  expect_open_error(p, "7 bytes, shorter than the 8-byte header length");
}

TEST_F(SafetensorsFileErrors, MissingFile) { expect_open_error(path("nope.safetensors"), "cannot open"); }

TEST_F(SafetensorsFileErrors, HeaderLengthZero) { expect_open_error(make("z", "", "abc", 0), "header length is 0"); }

TEST_F(SafetensorsFileErrors, HeaderLengthLargerThanFile) {
  expect_open_error(make("h", "{}", "", 1000), "header length 1000 is larger than the file");
}

TEST_F(SafetensorsFileErrors, HeaderLengthLargerThanCap) {
  expect_open_error(make("h", "{}", "", 100'000'001), "larger than the limit of 100000000 bytes");
  expect_open_error(make("h2", "{}", "", ~uint64_t(0)), "larger than the limit");
}

TEST_F(SafetensorsFileErrors, TruncatedData) {
  // Declares 4 floats, the data section holds 2.
  const std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  expect_open_error(make("t", h, f32_bytes({1, 2})), "extend past the end of the data section (8 bytes)");
}

TEST_F(SafetensorsFileErrors, OffsetsPastEnd) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})";
  const std::string p = make("o", h, f32_bytes({1, 2, 3, 4}));
  expect_open_error(p, "tensor \"w\": data_offsets [16, 24] extend past the end");
}

TEST_F(SafetensorsFileErrors, BeginAfterEnd) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})";
  expect_open_error(make("b", h, f32_bytes({1, 2, 3})), "tensor \"w\": data_offsets begin 8 is after end 4");
}

TEST_F(SafetensorsFileErrors, OverlappingTensors) {
  const std::string h =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_open_error(make("ov", h, f32_bytes({1, 2, 3})), "overlap");
  // The same range twice is an overlap too.
  const std::string h2 =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_open_error(make("ov2", h2, f32_bytes({1, 2})), "overlap");
}

TEST_F(SafetensorsFileErrors, UnknownDtype) {
  const std::string h = R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})";
  expect_open_error(make("u", h, std::string(16, '\0')), "tensor \"w\": unknown dtype \"F128\"");
  const std::string h2 = R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})";
  expect_open_error(make("u2", h2, std::string(4, '\0')), "unknown dtype \"f32\"");
}

TEST_F(SafetensorsFileErrors, SizeDoesNotMatchShape) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  expect_open_error(make("s", h, f32_bytes({1, 2})), "does not match 12 bytes for shape [3] of F32");
  const std::string h2 = R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})";
  expect_open_error(make("s2", h2, f32_bytes({1, 2, 3, 4})), "does not match 8 bytes");
}

TEST_F(SafetensorsFileErrors, ShapeOverflow) {
  // 2^40 * 2^40 elements overflows 64 bits.
  const std::string h = R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})";
  expect_open_error(make("ovf", h, f32_bytes({1})), "overflows");
  // 2^62 elements fit uint64, but not once multiplied by 32 bits.
  const std::string h2 = R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})";
  expect_open_error(make("ovf2", h2, f32_bytes({1})), "overflows");
  // A single dimension beyond int64.
  const std::string h3 = R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]}})";
  expect_open_error(make("ovf3", h3, f32_bytes({1})), "fits int64");
}

TEST_F(SafetensorsFileErrors, NegativeDim) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})";
  expect_open_error(make("n", h, std::string(16, '\0')), "shape dimension -1 is negative");
}

TEST_F(SafetensorsFileErrors, NonIntegerDim) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})";
  expect_open_error(make("f", h, std::string(8, '\0')), "is not a non-negative integer");
  const std::string h2 = R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})";
  expect_open_error(make("f2", h2, std::string(8, '\0')), "is not a non-negative integer");
}

TEST_F(SafetensorsFileErrors, DuplicateNames) {
  const std::string h =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expect_open_error(make("d", h, f32_bytes({1, 2})), "duplicate key \"w\"");
  // Duplicates inside an entry are just as ambiguous.
  const std::string h2 = R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})";
  expect_open_error(make("d2", h2, f32_bytes({1})), "duplicate key \"dtype\"");
}

TEST_F(SafetensorsFileErrors, NonUtf8Header) {
  const char* bad[] = {
      "\xff",          // never valid
      "\xc0\xaf",      // overlong '/'
      "\xed\xa0\x80",  // UTF-16 surrogate
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xe2\x82",      // truncated sequence
  };
  int i = 0;
  for (const char* b : bad) {
    const std::string h = std::string(R"({"w)") + b + R"(":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    expect_open_error(make("utf" + std::to_string(i++), h, f32_bytes({1})), "header is not valid UTF-8");
  }
  // Valid multi-byte names are fine.
  const std::string ok = R"({"wé€😀":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const auto f = SafetensorsFile::open(make("utf_ok", ok, f32_bytes({1})));
  EXPECT_EQ(f.tensors().count("wé€😀"), 1u);
}

TEST_F(SafetensorsFileErrors, LongNamesAreCutShortInMessages) {
  const std::string name(10000, 'x');
  const std::string h = R"({")" + name + R"(":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})";
  const std::string p = make("long", h, f32_bytes({1}));
  expect_open_error(p, "(10000 bytes): unknown dtype \"F99\"");
  EXPECT_LT(error_of([&] { SafetensorsFile::open(p); }).size(), 1000u);
}

TEST_F(SafetensorsFileErrors, HeaderNotJson) {
  expect_open_error(make("j", "{not json", std::string(8, '\0')), "header is not valid JSON");
  expect_open_error(make("j2", R"({"w":{"dtype":"F32"} trailing)"), "header is not valid JSON");
  // Some bytes with a NUL inside.
  expect_open_error(make("j3", std::string("{\0}", 3)), "header is not valid JSON");
}

TEST_F(SafetensorsFileErrors, HeaderJsonArray) {
  expect_open_error(make("arr", "[1,2]   "), "header is not a JSON object");
  expect_open_error(make("str", "\"x\""), "header is not a JSON object");
}

TEST_F(SafetensorsFileErrors, DeeplyNestedHeaderDoesNotCrash) {
  const size_t depth = 200000;
  expect_open_error(make("deep", std::string(depth, '[') + std::string(depth, ']')), "not a JSON object");
  expect_open_error(make("deep2", std::string(depth, '[')), "not valid JSON");
}

TEST_F(SafetensorsFileErrors, MissingOrBadFields) {
  const std::string data(16, '\0');
  expect_open_error(make("m1", R"({"w":{"dtype":"F32","shape":[1]}})", data), "tensor \"w\": missing \"data_offsets\"");
  expect_open_error(make("m2", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", data), "missing \"dtype\"");
  expect_open_error(make("m3", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", data), "missing \"shape\"");
  expect_open_error(make("m4", R"({"w":[1,2]})", data), "tensor \"w\": entry is not a JSON object");
  expect_open_error(make("m5", R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", data),
                    "\"dtype\" is not a string");
  expect_open_error(make("m6", R"({"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", data),
                    "\"shape\" is not an array");
  expect_open_error(make("m7", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", data),
                    "\"data_offsets\" is not an array of two integers");
  expect_open_error(make("m8", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", data),
                    "are not non-negative integers");
}

TEST_F(SafetensorsFileErrors, BadMetadata) {
  expect_open_error(make("md1", R"({"__metadata__":{"a":1}})"), "\"__metadata__\" value of \"a\" is not a string");
  expect_open_error(make("md2", R"({"__metadata__":["a"]})"), "\"__metadata__\" is not an object");
}

TEST_F(SafetensorsFileErrors, SubByteDtypeMustFillWholeBytes) {
  const std::string h = R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})";
  expect_open_error(make("f4", h, std::string(2, '\0')), "whole number of bytes");
  const std::string ok = R"({"w":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})";
  EXPECT_EQ(SafetensorsFile::open(make("f4ok", ok, std::string(2, '\0'))).unsupported().at("w"), "F4");
}

// ----------------------------------------------------------------------------- valid files

using SafetensorsFileRead = SafetensorsTest;

TEST_F(SafetensorsFileRead, AllSupportedDtypes) {
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
  const std::vector<uint16_t> h16 = {0x3c00, 0xc000, 0x3555, 0x0001};  // 1, -2, ~1/3, smallest subnormal
  const std::vector<uint16_t> b16 = {0x3f80, 0xbfc0, 0x7f80, 0x0000};   // 1, -1.5, inf, 0
  const std::string data = f32_bytes(a) + u16_bytes(h16) + u16_bytes(b16);
  const std::string h =
      R"({"__metadata__":{"format":"pt","note":"x"},)"
      R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("h":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},)"
      R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[32,40]},)"
      R"("empty":{"dtype":"F32","shape":[0,5],"data_offsets":[40,40]}})";
  std::string padded = h;
  padded.append((8 - padded.size() % 8) % 8, ' ');
  const auto f = SafetensorsFile::open(make("ok", padded, data));

  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_TRUE(f.unsupported().empty());
  const TensorView& ta = f.tensors().at("a");
  EXPECT_EQ(ta.dtype, DType::F32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
  EXPECT_EQ(read_f32(ta), a);

  const TensorView& th = f.tensors().at("h");
  EXPECT_EQ(th.dtype, DType::F16);
  EXPECT_EQ(th.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(std::memcmp(th.data, h16.data(), 8), 0);
  const auto hv = read_f32(th);
  EXPECT_EQ(hv[0], 1.0f);
  EXPECT_EQ(hv[1], -2.0f);
  EXPECT_EQ(hv[3], std::ldexp(1.0f, -24));

  const TensorView& tb = f.tensors().at("b");
  EXPECT_EQ(tb.dtype, DType::BF16);
  EXPECT_EQ(tb.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(std::memcmp(tb.data, b16.data(), 8), 0);
  const auto bv = read_f32(tb);
  EXPECT_EQ(bv[0], 1.0f);
  EXPECT_EQ(bv[1], -1.5f);
  EXPECT_TRUE(std::isinf(bv[2]));

  EXPECT_EQ(f.tensors().at("empty").numel(), 0);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "x");
  EXPECT_EQ(f.metadata().size(), 2u);
}

TEST_F(SafetensorsFileRead, MisalignedHeaderStillReadsCorrectValues) {
  const std::vector<float> a = {1.0f, 2.0f, -3.5f};
  const std::vector<uint16_t> b16 = {0x3f80, 0x4000, 0xc040};  // 1, 2, -3
  const std::string h =
      R"({"b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  // Try every header padding, so the data section starts at each offset modulo 8.
  for (int pad = 0; pad < 8; ++pad) {
    const std::string p = make("mis" + std::to_string(pad), h + std::string(size_t(pad), ' '),
                               f32_bytes(a) + u16_bytes(b16));
    auto f = SafetensorsFile::open(p);
    const TensorView& ta = f.tensors().at("a");
    const TensorView& tb = f.tensors().at("b");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ta.data) % 4, 0u) << pad;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tb.data) % 2, 0u) << pad;
    EXPECT_EQ(read_f32(ta), a) << pad;
    EXPECT_EQ(read_f32(tb), (std::vector<float>{1.0f, 2.0f, -3.0f})) << pad;
    // Views must survive moving the file object.
    SafetensorsFile moved = std::move(f);
    EXPECT_EQ(read_f32(moved.tensors().at("a")), a) << pad;
  }
}

TEST_F(SafetensorsFileRead, UnsupportedDtypesAreListed) {
  const std::string h =
      R"({"i":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("u":{"dtype":"U8","shape":[3],"data_offsets":[16,19]},)"
      R"("q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[19,20]},)"
      R"("w":{"dtype":"F32","shape":[1],"data_offsets":[20,24]}})";
  const auto f = SafetensorsFile::open(make("unsup", h, std::string(24, '\0')));
  EXPECT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.unsupported().size(), 3u);
  EXPECT_EQ(f.unsupported().at("i"), "I64");
  EXPECT_EQ(f.unsupported().at("u"), "U8");
  EXPECT_EQ(f.unsupported().at("q"), "F8_E4M3");
}

TEST_F(SafetensorsFileRead, NullMetadataAndEmptyHeader) {
  EXPECT_TRUE(SafetensorsFile::open(make("nm", R"({"__metadata__":null})")).metadata().empty());
  const auto f = SafetensorsFile::open(make("e", "{}      "));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
}

// ----------------------------------------------------------------------------- writer

using SafetensorsWriterTest = SafetensorsTest;

TEST_F(SafetensorsWriterTest, RoundTrip) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<uint16_t> h = {0x3c00, 0x4000, 0x4200};
  const std::vector<uint16_t> b = {0x3f80, 0x4000};
  const std::string p = path("out.safetensors");
  {
    SafetensorsWriter w(p,
                        {{"layer.a", DType::F32, {2, 3}},
                         {"layer.h", DType::F16, {3}},
                         {"empty", DType::F32, {0}},
                         {"layer.b", DType::BF16, {1, 2}}},
                        {{"format", "pt"}, {"k", "v"}});
    EXPECT_EQ(w.data_bytes(), 24u + 6u + 4u);
    // Pieces that split tensors and span tensor boundaries.
    const std::string all = f32_bytes(a) + u16_bytes(h) + u16_bytes(b);
    w.write(all.data(), 5);
    w.write(all.data() + 5, 0);
    w.write(all.data() + 5, 22);
    w.write(all.data() + 27, all.size() - 27);
    w.finish();
  }
  std::ifstream in(p, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  EXPECT_EQ(len[0] % 8, 0) << "header must be padded to 8 bytes";

  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("k"), "v");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors().at("layer.a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(read_f32(f.tensors().at("layer.a")), a);
  EXPECT_EQ(read_f32(f.tensors().at("layer.h")), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(f.tensors().at("layer.b").dtype, DType::BF16);
  EXPECT_EQ(read_f32(f.tensors().at("layer.b")), (std::vector<float>{1, 2}));
  EXPECT_EQ(f.tensors().at("empty").numel(), 0);
}

TEST_F(SafetensorsWriterTest, ByteCountMismatchThrowsAndRemovesFile) {
  const std::string p = path("bad.safetensors");
  {
    SafetensorsWriter w(p, {{"a", DType::F32, {2}}});
    const float x[3] = {1, 2, 3};
    EXPECT_NE(error_of([&] { w.write(x, 12); }).find("more than the 8 bytes"), std::string::npos);
    w.write(x, 4);
    EXPECT_NE(error_of([&] { w.finish(); }).find("4 bytes were written but the tensors declare 8"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(p));
  {
    SafetensorsWriter w(p, {{"a", DType::F32, {2}}});  // abandoned without finish()
  }
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(SafetensorsWriterTest, RejectsBadTensorLists) {
  const std::string p = path("x.safetensors");
  EXPECT_NE(error_of([&] { SafetensorsWriter(p, {{"a", DType::F32, {1}}, {"a", DType::F16, {1}}}); })
                .find("duplicate tensor name \"a\""),
            std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsWriter(p, {{"__metadata__", DType::F32, {1}}}); }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsWriter(p, {{"a", DType::F32, {-1}}}); }).find("negative"), std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsWriter(p, {{"a", DType::F32, {int64_t(1) << 62, 8}}}); }).find("overflow"),
            std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsWriter(p, {{"bad\xff", DType::F32, {1}}}); }).find("UTF-8"), std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsWriter(path("no/such/dir/x.safetensors"), {}); }).find("cannot create"),
            std::string::npos);
}

// ----------------------------------------------------------------------------- directories

using SafetensorsStore = SafetensorsTest;

// Writes a file with F32 tensors of the given names; tensor i holds {i, i + 0.5}.
void write_f32_file(const std::string& p, const std::vector<std::string>& names, float base = 0) {
  std::vector<TensorInfo> infos;
  for (const auto& n : names) infos.push_back({n, DType::F32, {2}});
  SafetensorsWriter w(p, infos);
  for (size_t i = 0; i < names.size(); ++i) {
    const float v[2] = {base + float(i), base + float(i) + 0.5f};
    w.write(v, sizeof v);
  }
  w.finish();
}

TEST_F(SafetensorsStore, SingleFile) {
  write_f32_file(path("model.safetensors"), {"b", "a"});
  const auto s = TensorStore::open_dir(dir_.string());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"a", "b"}));
  ASSERT_NE(s.find("b"), nullptr);
  EXPECT_EQ(read_f32(*s.find("b")), (std::vector<float>{0, 0.5f}));
  EXPECT_EQ(read_f32(*s.find("a")), (std::vector<float>{1, 1.5f}));
  EXPECT_EQ(s.find("c"), nullptr);
}

TEST_F(SafetensorsStore, FindThrowsForUnsupportedDtype) {
  make("model.safetensors",
       R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       std::string(12, '\0'));
  const auto s = TensorStore::open_dir(dir_.string());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"ids", "w"}));
  EXPECT_NE(s.find("w"), nullptr);
  const std::string msg = error_of([&] { s.find("ids"); });
  EXPECT_NE(msg.find("tensor \"ids\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("I64"), std::string::npos) << msg;
}

TEST_F(SafetensorsStore, ShardedWithIndex) {
  write_f32_file(path("model-00001-of-00002.safetensors"), {"x", "y", "unlisted"}, 0);
  write_f32_file(path("model-00002-of-00002.safetensors"), {"z"}, 10);
  // A model.safetensors next to the index must be ignored.
  write_f32_file(path("model.safetensors"), {"other"});
  write_bytes(path("model.safetensors.index.json"),
              R"({"metadata":{"total_size":32},"weight_map":{)"
              R"("x":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors",)"
              R"("z":"model-00002-of-00002.safetensors"}})");
  auto s = TensorStore::open_dir(dir_.string());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(s.files().size(), 2u);
  EXPECT_EQ(read_f32(*s.find("x")), (std::vector<float>{0, 0.5f}));
  EXPECT_EQ(read_f32(*s.find("y")), (std::vector<float>{1, 1.5f}));
  EXPECT_EQ(read_f32(*s.find("z")), (std::vector<float>{10, 10.5f}));
  EXPECT_EQ(s.find("other"), nullptr);
  // The store's views survive moving the store.
  TensorStore moved = std::move(s);
  EXPECT_EQ(read_f32(*moved.find("z")), (std::vector<float>{10, 10.5f}));
}

TEST_F(SafetensorsStore, IndexErrors) {
  write_f32_file(path("s1.safetensors"), {"x"});
  const std::string index = path("model.safetensors.index.json");
  auto expect = [&](const std::string& json, const std::string& needle) {
    write_bytes(index, json);
    const std::string msg = error_of([&] { TensorStore::open_dir(dir_.string()); });
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
    EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  };
  expect(R"({"weight_map":{"x":"s1.safetensors","y":"missing.safetensors"}})", "shard \"missing.safetensors\"");
  expect(R"({"weight_map":{"x":"s1.safetensors","w":"s1.safetensors"}})",
         "tensor \"w\" is mapped to shard \"s1.safetensors\", which does not contain it");
  expect(R"({"weight_map":{"x":"../s1.safetensors"}})", "is not a plain file name");
  expect(R"({"weight_map":{"x":"sub/s1.safetensors"}})", "is not a plain file name");
  expect(R"({"weight_map":{"x":".."}})", "is not a plain file name");
  expect(R"({"weight_map":{"x":""}})", "is not a plain file name");
  expect(R"({"weight_map":{"x":3}})", "is not a string");
  expect(R"({"weight_map":["x"]})", "\"weight_map\" is not an object");
  expect(R"({"metadata":{}})", "missing \"weight_map\"");
  expect(R"([])", "index is not a JSON object");
  expect(R"({"weight_map":)", "index is not valid JSON");
  expect(R"({"weight_map":{"x":"s1.safetensors","x":"s1.safetensors"}})", "duplicate key \"x\"");
  expect("{\"weight_map\":{\"x\xff\":\"s1.safetensors\"}}", "not valid UTF-8");
  expect("", "index is not valid JSON");
}

TEST_F(SafetensorsStore, BrokenShardNamesTheShard) {
  make("s1.safetensors", R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", "");
  write_bytes(path("model.safetensors.index.json"), R"({"weight_map":{"x":"s1.safetensors"}})");
  const std::string msg = error_of([&] { TensorStore::open_dir(dir_.string()); });
  EXPECT_NE(msg.find("s1.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;
}

TEST_F(SafetensorsStore, EmptyDirectory) {
  const std::string msg = error_of([&] { TensorStore::open_dir(dir_.string()); });
  EXPECT_NE(msg.find(dir_.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { TensorStore::open_dir(path("nonexistent")); }).find("nonexistent"), std::string::npos);
}

}  // namespace
}  // namespace g3n
