// Tests for the GGUF reader (crafted broken files must fail with a telling g3n::Error, never crash,
// never allocate what the file cannot account for), the streaming GGUF writer, and the round trip
// writer -> reader of every metadata type and several tensor types.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "quant/ggml_types.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define G3N_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define G3N_TEST_SANITIZED 1
#endif
#endif

namespace g3n {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("g3n_gguf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    EXPECT_TRUE(out.good()) << p;
    return p;
  }

  fs::path dir_;
};

// Limits the data segment (heap and private anonymous mappings) to its current size plus
// `headroom` while alive, so that an allocation sized from a corrupt count fails with
// std::bad_alloc (a test failure: only g3n::Error is acceptable) instead of quietly succeeding
// under overcommit. Inactive under sanitizers, whose shadow memory needs huge mappings.
class DataLimit {
 public:
  explicit DataLimit(uint64_t headroom) {
#ifndef G3N_TEST_SANITIZED
    if (getrlimit(RLIMIT_DATA, &old_) != 0) return;
    std::ifstream status("/proc/self/status");
    std::string line;
    uint64_t vm_data_kb = 0;
    while (std::getline(status, line))
      if (line.rfind("VmData:", 0) == 0) vm_data_kb = std::stoull(line.substr(7));
    if (vm_data_kb == 0) return;
    rlimit lim = old_;
    lim.rlim_cur = rlim_t(vm_data_kb * 1024 + headroom);
    if (old_.rlim_max != RLIM_INFINITY && lim.rlim_cur > old_.rlim_max) lim.rlim_cur = old_.rlim_max;
    active_ = setrlimit(RLIMIT_DATA, &lim) == 0;
#else
    (void)headroom;
#endif
  }
  ~DataLimit() {
    if (active_) setrlimit(RLIMIT_DATA, &old_);
  }
  DataLimit(const DataLimit&) = delete;
  DataLimit& operator=(const DataLimit&) = delete;

 private:
  rlimit old_{};
  bool active_ = false;
};

constexpr uint64_t kHeadroom = uint64_t(256) << 20;

// Builds GGUF bytes by hand.
struct Bytes {
  std::string b;

  template <class T>
  Bytes& pod(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Bytes& u8(uint8_t v) { return pod(v); }
  Bytes& u32(uint32_t v) { return pod(v); }
  Bytes& u64(uint64_t v) { return pod(v); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    b.append(s);
    return *this;
  }
  Bytes& raw(std::string_view s) {
    b.append(s);
    return *this;
  }
  Bytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    raw("GGUF");
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& key(std::string_view k, GgufType t) {
    str(k);
    return u32(uint32_t(t));
  }
  Bytes& kv_u32(std::string_view k, uint32_t v) { return key(k, GgufType::UINT32).u32(v); }
  Bytes& kv_str(std::string_view k, std::string_view v) { return key(k, GgufType::STRING).str(v); }
  Bytes& tensor(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type, uint64_t offset) {
    str(name);
    u32(uint32_t(dims.size()));
    for (uint64_t d : dims) u64(d);
    u32(type);
    return u64(offset);
  }
  Bytes& pad(size_t align) {
    while (b.size() % align) b += '\0';
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.append(n, '\0');
    return *this;
  }
};

// open() must throw g3n::Error whose message names the file and contains `needle`.
void expect_open_error(const std::string& p, const std::string& needle) {
  try {
    GgufFile::open(p);
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

// A valid file: two KV pairs, one F32 tensor of 4 elements whose data ends the file exactly.
Bytes valid_prefix(uint32_t version = 3) {
  Bytes b;
  b.header(version, 1, 2).kv_str("general.architecture", "gemma3n").kv_u32("gemma3n.block_count", 35);
  b.tensor("w", {4}, ggml::F32, 0).pad(32);
  return b;
}
std::string valid_file_bytes(uint32_t version = 3) {
  Bytes b = valid_prefix(version);
  for (float f : {1.0f, 2.0f, 3.0f, 4.0f}) b.pod(f);
  return b.b;
}

// ============================================================================ crafted bad files

using GgufReaderErrors = GgufTest;

TEST_F(GgufReaderErrors, ValidBaseFileOpens) {
  for (uint32_t version : {2u, 3u}) {
    const std::string p = write("ok.gguf", valid_file_bytes(version));
    const GgufFile f = GgufFile::open(p);
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.get_string("general.architecture"), "gemma3n");
    EXPECT_EQ(f.get_u32("gemma3n.block_count"), 35u);
    ASSERT_EQ(f.tensors().size(), 1u);
    const GgufTensorInfo& t = f.tensors()[0];
    EXPECT_EQ(t.name, "w");
    EXPECT_EQ(t.dims, std::vector<int64_t>{4});
    EXPECT_EQ(t.nbytes, 16u);
    float v[4];
    std::memcpy(v, t.data, 16);
    EXPECT_EQ(v[3], 4.0f);
  }
}

TEST_F(GgufReaderErrors, EmptyAndTinyFiles) {
  expect_open_error(write("empty.gguf", ""), "0 bytes, too short");
  expect_open_error(write("three.gguf", "GGU"), "3 bytes, too short");
  expect_open_error(path("missing.gguf"), "cannot open");
}

TEST_F(GgufReaderErrors, BadMagic) {
  std::string bytes = valid_file_bytes();
  bytes[3] = 'X';
  expect_open_error(write("m.gguf", bytes), "not a GGUF file: the first 4 bytes are \"GGUX\"");
  // A safetensors file (8-byte header length first) is recognisably not GGUF either.
  expect_open_error(write("st.gguf", std::string("\x10\0\0\0\0\0\0\0{}", 10)), "not a GGUF file");
}

TEST_F(GgufReaderErrors, UnknownVersions) {
  expect_open_error(write("v1.gguf", valid_file_bytes(1)), "GGUF version 1 is not supported (only versions 2 and 3)");
  expect_open_error(write("v4.gguf", valid_file_bytes(4)), "unsupported GGUF version 4");
  expect_open_error(write("v0.gguf", valid_file_bytes(0)), "unsupported GGUF version 0");
  expect_open_error(write("be.gguf", valid_file_bytes(0x03000000)), "big-endian");
}

TEST_F(GgufReaderErrors, HugeTensorCount) {
  Bytes b;
  b.header(3, uint64_t(1) << 60, 0).zeros(64);
  expect_open_error(write("t.gguf", b.b), "tensor count 1152921504606846976 exceeds the limit of 262144");
  // Below the cap, but the file cannot hold that many tensor infos.
  Bytes c;
  c.header(3, 100000, 0).zeros(1000);
  expect_open_error(write("t2.gguf", c.b), "100000 tensors and 0 key-value pairs need at least 2500000 bytes");
}

TEST_F(GgufReaderErrors, HugeKeyValueCount) {
  Bytes b;
  b.header(3, 0, ~uint64_t(0)).zeros(64);
  expect_open_error(write("k.gguf", b.b), "metadata key-value count 18446744073709551615 exceeds the limit of 65536");
  Bytes c;
  c.header(3, 0, 60000).zeros(1000);
  expect_open_error(write("k2.gguf", c.b), "0 tensors and 60000 key-value pairs need at least 840000 bytes");
}

TEST_F(GgufReaderErrors, StringLength2Pow63) {
  // As a key length ...
  Bytes b;
  b.header(3, 0, 1).u64(uint64_t(1) << 63).zeros(32);
  expect_open_error(write("k.gguf", b.b), "metadata pair #0: key length 9223372036854775808 exceeds the limit of 65535");
  // ... as a string value's length ...
  Bytes c;
  c.header(3, 0, 1).key("general.name", GgufType::STRING).u64(uint64_t(1) << 63).zeros(32);
  expect_open_error(write("v.gguf", c.b),
                    "metadata key \"general.name\": string value length 9223372036854775808 exceeds the limit");
  // ... and a length below the cap but past the end of the file.
  Bytes d;
  d.header(3, 0, 1).key("general.name", GgufType::STRING).u64(100).raw("short");
  expect_open_error(write("s.gguf", d.b), "string value length 100 at offset 48 exceeds the 5 bytes left in the file");
  // ... and as a tensor name.
  Bytes e;
  e.header(3, 1, 0).u64(uint64_t(1) << 63).zeros(64);
  expect_open_error(write("n.gguf", e.b), "tensor #0: tensor name length 9223372036854775808 exceeds the limit of 64");
}

TEST_F(GgufReaderErrors, DuplicateKeys) {
  Bytes b;
  b.header(3, 0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
  expect_open_error(write("d.gguf", b.b), "metadata key \"a.b\": duplicate key");
}

TEST_F(GgufReaderErrors, EmptyKeyAndBadKeyBytes) {
  Bytes b;
  b.header(3, 0, 1).kv_u32("", 1);
  expect_open_error(write("e.gguf", b.b), "metadata pair #0: key is empty");
  // Control bytes in a key are shown escaped.
  Bytes c;
  c.header(3, 0, 2).kv_u32("x\ny", 1).kv_u32("x\ny", 1);
  expect_open_error(write("c.gguf", c.b), "metadata key \"x\\x0ay\": duplicate key");
}

TEST_F(GgufReaderErrors, DuplicateTensorNames) {
  Bytes b;
  b.header(3, 2, 0).tensor("w", {8}, ggml::F32, 0).tensor("w", {8}, ggml::F32, 32).pad(32).zeros(64);
  expect_open_error(write("d.gguf", b.b), "tensor \"w\": duplicate tensor name");
}

TEST_F(GgufReaderErrors, BadTensorNames) {
  Bytes b;
  b.header(3, 1, 0).tensor("", {8}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("e.gguf", b.b), "tensor #0: tensor name is empty");
  Bytes c;
  c.header(3, 1, 0).tensor(std::string(65, 'n'), {8}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("l.gguf", c.b), "tensor #0: tensor name length 65 exceeds the limit of 64");
  Bytes d;  // 64 bytes is the spec's limit, and accepted
  d.header(3, 1, 0).tensor(std::string(64, 'n'), {8}, ggml::F32, 0).pad(32).zeros(32);
  EXPECT_EQ(GgufFile::open(write("ok.gguf", d.b)).tensors().at(0).name.size(), 64u);
}

TEST_F(GgufReaderErrors, Alignment) {
  Bytes b;
  b.header(3, 0, 1).kv_u32("general.alignment", 0);
  expect_open_error(write("a0.gguf", b.b), "\"general.alignment\": alignment 0 is not a power of two (it is 0)");
  Bytes c;
  c.header(3, 0, 1).kv_u32("general.alignment", 3);
  expect_open_error(write("a3.gguf", c.b), "\"general.alignment\": alignment 3 is not a power of two");
  Bytes d;
  d.header(3, 0, 1).key("general.alignment", GgufType::UINT64).u64(32);
  expect_open_error(write("a64.gguf", d.b), "\"general.alignment\": type is u64, must be u32");
}

TEST_F(GgufReaderErrors, FiveDimensions) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", {1, 1, 1, 1, 2}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("5d.gguf", b.b), "tensor \"w\": 5 dimensions, more than the 4 ggml allows");
}

TEST_F(GgufReaderErrors, BadDimensions) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", {4, ~uint64_t(0)}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("m1.gguf", b.b),
                    "tensor \"w\": dimension 1 (ne1) is 18446744073709551615 (-1 as int64); dimensions must be below 2^62");
  Bytes c;
  c.header(3, 1, 0).tensor("w", {4, 0}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("z.gguf", c.b), "tensor \"w\": dimension 1 (ne1) is 0");
  Bytes d;
  d.header(3, 1, 0).tensor("w", {uint64_t(1) << 62}, ggml::I8, 0).pad(32).zeros(32);
  expect_open_error(write("big.gguf", d.b), "dimension 0 (ne0) is 4611686018427387904");
}

TEST_F(GgufReaderErrors, ElementCountOverflow) {
  Bytes b;  // 2^31 * 2^31 * 2^31 = 2^93
  b.header(3, 1, 0).tensor("w", {uint64_t(1) << 31, uint64_t(1) << 31, uint64_t(1) << 31}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("o.gguf", b.b), "tensor \"w\": element count of dimensions [2147483648, 2147483648, 2147483648] overflows int64");
  // 2^62 elements fit int64, but not once multiplied by 4 bytes.
  Bytes c;
  c.header(3, 1, 0).tensor("w", {uint64_t(1) << 31, uint64_t(1) << 31}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("o2.gguf", c.b), "tensor \"w\": byte size of dimensions [2147483648, 2147483648] x F32 overflows");
}

TEST_F(GgufReaderErrors, UnknownTypeId) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", {32}, 99, 0).pad(32).zeros(32);
  expect_open_error(write("t.gguf", b.b), "tensor \"w\": unknown ggml type id 99");
  Bytes c;  // 31 was Q4_0_4_4, removed from ggml
  c.header(3, 1, 0).tensor("w", {32}, 31, 0).pad(32).zeros(32);
  expect_open_error(write("t31.gguf", c.b), "unknown ggml type id 31");
}

TEST_F(GgufReaderErrors, PartialBlock) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", {48, 2}, ggml::Q4_0, 0).pad(32).zeros(64);
  expect_open_error(write("p.gguf", b.b), "tensor \"w\": ne0 = 48 is not a multiple of the Q4_0 block size 32");
  Bytes c;
  c.header(3, 1, 0).tensor("w", {128}, ggml::Q4_K, 0).pad(32).zeros(256);
  expect_open_error(write("k.gguf", c.b), "ne0 = 128 is not a multiple of the Q4_K block size 256");
}

TEST_F(GgufReaderErrors, OffsetPastEnd) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", {4}, ggml::F32, uint64_t(1) << 40).pad(32).zeros(32);
  expect_open_error(write("o.gguf", b.b), "tensor \"w\": data offset 1099511627776 is past the end of the data section (32 bytes");
  Bytes c;  // offset + size overflows
  c.header(3, 1, 0).tensor("w", {4}, ggml::F32, ~uint64_t(0) - 31).pad(32).zeros(32);
  expect_open_error(write("o2.gguf", c.b), "is past the end of the data section");
}

TEST_F(GgufReaderErrors, DataOneByteShort) {
  std::string bytes = valid_file_bytes();
  EXPECT_NO_THROW(GgufFile::open(write("ok.gguf", bytes)));
  bytes.pop_back();
  expect_open_error(write("short.gguf", bytes), "tensor \"w\": data [0, 16) of 16 bytes extends 1 byte(s) past the end");
}

TEST_F(GgufReaderErrors, DataSectionPastEnd) {
  Bytes b;  // header only: the aligned data section would start beyond the end
  b.header(3, 1, 0).tensor("w", {4}, ggml::F32, 0);
  expect_open_error(write("d.gguf", b.b), "the tensor data section would start at offset 64 (header end 57");
  // Without tensors a file may end right after its header.
  Bytes c;
  c.header(3, 0, 1).kv_u32("a", 1);
  const GgufFile f = GgufFile::open(write("ok.gguf", c.b));
  EXPECT_EQ(f.data_size(), 0u);
  EXPECT_EQ(f.data(), nullptr);
}

TEST_F(GgufReaderErrors, MisalignedOffset) {
  Bytes b;
  b.header(3, 2, 0).tensor("a", {1}, ggml::F32, 0).tensor("b", {1}, ggml::F32, 4).pad(32).zeros(64);
  expect_open_error(write("m.gguf", b.b), "tensor \"b\": data offset 4 is not a multiple of the alignment 32");
}

TEST_F(GgufReaderErrors, OverlappingTensors) {
  Bytes b;
  b.header(3, 2, 0).tensor("a", {16}, ggml::F32, 0).tensor("b", {16}, ggml::F32, 32).pad(32).zeros(128);
  expect_open_error(write("o.gguf", b.b), "tensors \"a\" [0, 64) and \"b\" [32, 96) overlap");
  Bytes c;  // the same range twice
  c.header(3, 2, 0).tensor("a", {8}, ggml::F32, 0).tensor("b", {8}, ggml::F32, 0).pad(32).zeros(32);
  expect_open_error(write("o2.gguf", c.b), "overlap");
}

TEST_F(GgufReaderErrors, TruncatedAnywhereInTheHeader) {
  const std::string bytes = valid_file_bytes();
  const std::string p = path("t.gguf");
  // Every proper prefix of the file is invalid: inside the header it is truncated, after it the
  // tensor data is missing.
  for (size_t n = 0; n < bytes.size(); ++n) {
    write("t.gguf", bytes.substr(0, n));
    const std::string msg = error_of([&] { GgufFile::open(p); });
    ASSERT_NE(msg, "<no error>") << "prefix of " << n << " bytes";
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
  // Cuts at known places (header 24 bytes; key 1 ends at 71, key 2's name at 98, its value at
  // 106): the message says where.
  write("t.gguf", bytes.substr(0, 12));
  expect_open_error(p, "file truncated: tensor count needs 8 bytes at offset 8 but the file ends at 12");
  write("t.gguf", bytes.substr(0, 60));  // too short for even the smallest 2 pairs and 1 tensor info
  expect_open_error(p, "1 tensors and 2 key-value pairs need at least 53 bytes of header, but the file has only 36 bytes");
  write("t.gguf", bytes.substr(0, 90));
  expect_open_error(p, "metadata pair #1: file truncated: key length 19 at offset 71 exceeds the 11 bytes left");
  write("t.gguf", bytes.substr(0, 104));
  expect_open_error(p, "metadata key \"gemma3n.block_count\": file truncated: u32 value needs 4 bytes at offset 102 but "
                       "the file ends at 104");
  write("t.gguf", bytes.substr(0, 120));
  expect_open_error(p, "tensor \"w\": file truncated: dimension needs 8 bytes at offset 119");
}

TEST_F(GgufReaderErrors, HugeArrays) {
  Bytes b;
  b.header(3, 0, 1).key("a", GgufType::ARRAY).u32(uint32_t(GgufType::UINT8)).u64(uint64_t(1) << 62).zeros(64);
  expect_open_error(write("a.gguf", b.b), "metadata key \"a\": array length 4611686018427387904 exceeds the limit of 268435456");
  // Below the cap but more than the file holds: refused before anything is allocated.
  DataLimit limit(kHeadroom);
  Bytes c;
  c.header(3, 0, 1).key("a", GgufType::ARRAY).u32(uint32_t(GgufType::STRING)).u64(uint64_t(1) << 27).zeros(64);
  expect_open_error(write("s.gguf", c.b),
                    "array of 134217728 string elements needs at least 134217728 x 8 bytes but only 64 bytes are left");
  Bytes d;
  d.header(3, 0, 1).key("a", GgufType::ARRAY).u32(uint32_t(GgufType::ARRAY)).u64(uint64_t(1) << 26).zeros(64);
  expect_open_error(write("n.gguf", d.b), "array of 67108864 array elements needs at least 67108864 x 12 bytes");
  Bytes e;
  e.header(3, 0, 1).key("a", GgufType::ARRAY).u32(uint32_t(GgufType::FLOAT64)).u64(9).zeros(64);
  expect_open_error(write("f.gguf", e.b), "array of 9 f64 elements needs at least 9 x 8 bytes but only 64 bytes");
}

TEST_F(GgufReaderErrors, NestedArraysTooDeep) {
  auto nested = [](int depth) {
    Bytes b;
    b.header(3, 0, 1).key("deep", GgufType::ARRAY);
    for (int i = 1; i < depth; ++i) b.u32(uint32_t(GgufType::ARRAY)).u64(1);
    b.u32(uint32_t(GgufType::INT32)).u64(1).pod(int32_t(7));
    return b.b;
  };
  const GgufFile ok = GgufFile::open(write("8.gguf", nested(kGgufMaxArrayDepth)));
  const GgufArray* a = &ok.at("deep").array();
  for (int i = 1; i < kGgufMaxArrayDepth; ++i) a = &std::get<std::vector<GgufArray>>(a->items).at(0);
  EXPECT_EQ(std::get<std::vector<int32_t>>(a->items), std::vector<int32_t>{7});
  std::string needle = "metadata key \"deep\": ";
  for (int i = 0; i < kGgufMaxArrayDepth; ++i) needle += "array element 0: ";
  expect_open_error(write("9.gguf", nested(kGgufMaxArrayDepth + 1)), needle + "arrays nested more than 8 levels deep");
}

TEST_F(GgufReaderErrors, BadValueTypes) {
  Bytes b;
  b.header(3, 0, 1).key("t", GgufType(13)).u32(0);
  expect_open_error(write("t.gguf", b.b), "metadata key \"t\": unknown value type 13");
  Bytes c;
  c.header(3, 0, 1).key("t", GgufType::ARRAY).u32(0xffffffffu).u64(0);
  expect_open_error(write("a.gguf", c.b), "metadata key \"t\": unknown value type 4294967295");
  Bytes d;
  d.header(3, 0, 1).key("b", GgufType::BOOL).u8(2);
  expect_open_error(write("b.gguf", d.b), "metadata key \"b\": bool value 2 is neither 0 nor 1");
  Bytes e;
  e.header(3, 0, 1).key("b", GgufType::ARRAY).u32(uint32_t(GgufType::BOOL)).u64(3).u8(1).u8(0).u8(9);
  expect_open_error(write("ba.gguf", e.b), "array element 2: bool value 9 is neither 0 nor 1");
  Bytes f;
  f.header(3, 0, 1).key("s", GgufType::ARRAY).u32(uint32_t(GgufType::STRING)).u64(2).str("ok").u64(1000).raw("x");
  expect_open_error(write("sa.gguf", f.b), "metadata key \"s\": array element 1: file truncated: string length 1000");
}

TEST_F(GgufReaderErrors, AllocationStaysWithinTheFileSize) {
  // Counts just under the caps in tiny files: refused by the file-size bound, before any
  // allocation (DataLimit turns a large allocation into a test failure).
  DataLimit limit(kHeadroom);
  const std::vector<std::pair<std::string, std::string>> cases = [] {
    std::vector<std::pair<std::string, std::string>> v;
    Bytes a;
    a.header(3, kGgufMaxTensors, 0).zeros(16);
    v.emplace_back(a.b, "need at least");
    Bytes b;
    b.header(3, 0, kGgufMaxKeyValues).zeros(16);
    v.emplace_back(b.b, "need at least");
    Bytes c;
    c.header(3, 0, 1).key("k", GgufType::ARRAY).u32(uint32_t(GgufType::UINT64)).u64(kGgufMaxArrayLength).zeros(16);
    v.emplace_back(c.b, "needs at least");
    Bytes d;
    d.header(3, 0, 1).key("k", GgufType::STRING).u64(kGgufMaxStringBytes).zeros(16);
    v.emplace_back(d.b, "bytes left in the file");
    return v;
  }();
  for (size_t i = 0; i < cases.size(); ++i) {
    // Appended piece by piece: `"c" + std::to_string(i)` trips a false -Wrestrict in GCC 12 at -O3.
    std::string name = std::to_string(i);
    name += ".gguf";
    expect_open_error(write(name, cases[i].first), cases[i].second);
  }
}

// Flips random bytes of a valid file with many features; every result must open or fail with
// g3n::Error, and whatever opens must be safe to read completely.
TEST_F(GgufReaderErrors, FuzzRandomByteFlips) {
  const std::string base_path = path("base.gguf");
  {
    GgufWriter w(base_path);
    w.set("general.architecture", "gemma3n");
    w.set("u8", uint8_t(7));
    w.set("i16", int16_t(-3));
    w.set("f32", 0.5f);
    w.set("b", true);
    w.set("u64", uint64_t(1) << 40);
    w.set("f64", 2.5);
    w.set("tokens", std::vector<std::string>{"<pad>", "<eos>", "a", "bc"});
    w.set("scores", std::vector<float>{0.0f, -1.0f, -2.0f, -3.0f});
    w.set("flags", std::vector<bool>{true, false, true});
    w.set("nested", std::vector<GgufArray>{GgufArray{std::vector<int32_t>{1, 2}}, GgufArray{std::vector<int32_t>{3}}});
    w.add_tensor("f32", ggml::F32, {8, 2});
    w.add_tensor("q8", ggml::Q8_0, {32});
    w.add_tensor("q4k", ggml::Q4_K, {256});
    std::vector<uint8_t> bytes(64 + 34 + 144, 0x11);
    w.write(bytes.data(), bytes.size());
    w.finish();
  }
  std::string base;
  {
    std::ifstream in(base_path, std::ios::binary);
    base.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t header_bytes = size_t(GgufFile::open(base_path).data_offset());
  ASSERT_GT(header_bytes, 100u);

  // Rewriting a file 20,000 times is ~1000x faster on tmpfs than on a disk-backed /tmp.
  struct ScratchDir {
    fs::path dir;
    ~ScratchDir() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } shm;
  std::string p = path("fuzz.gguf");
  std::error_code ec;
  if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) {
    shm.dir = fs::path("/dev/shm") / ("g3n_gguf_fuzz_" + std::to_string(::getpid()));
    if (fs::create_directories(shm.dir, ec) || fs::is_directory(shm.dir, ec)) p = (shm.dir / "fuzz.gguf").string();
  }
  auto write_file = [](const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
  };

  DataLimit limit(kHeadroom);
  std::mt19937_64 rng(12345);
  int opened = 0, refused = 0;
  constexpr int kIterations = 20000;
  for (int it = 0; it < kIterations; ++it) {
    std::string bytes = base;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header, where the structure is; sometimes anywhere.
      const size_t pos = (rng() % 8 != 0) ? rng() % header_bytes : rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[pos] = char(rng()); break;                    // random byte
        case 1: bytes[pos] = char(bytes[pos] ^ (1 << (rng() % 8))); break;  // one bit
        default: bytes[pos] = char((rng() % 2) ? 0xff : 0x00); break;      // extremes
      }
    }
    if (rng() % 16 == 0) bytes.resize(rng() % bytes.size());  // and sometimes truncate
    write_file(p, bytes);
    try {
      const GgufFile f = GgufFile::open(p);
      ++opened;
      // Touch everything the file claims to have.
      for (const auto& [key, value] : f.metadata()) (void)value.describe();
      uint64_t sum = 0;
      for (const GgufTensorInfo& t : f.tensors()) {
        for (uint64_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
        if (ggml::can_dequantize(t.type)) {
          std::vector<float> out(size_t(t.numel()));
          ggml::dequantize_row(t.type, t.data, out.data(), t.numel());
        }
      }
      (void)sum;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(opened + refused, kIterations);
  EXPECT_GT(refused, 1000);
  std::printf("[ fuzz     ] %d byte-flipped files: %d opened, %d refused with g3n::Error\n", kIterations, opened,
              refused);
}

// ============================================================================ metadata access

using GgufMetadata = GgufTest;

TEST_F(GgufMetadata, TypedGettersConvertAndComplain) {
  const std::string p = path("m.gguf");
  {
    GgufWriter w(p);
    w.set("u8", uint8_t(200));
    w.set("i32.neg", int32_t(-5));
    w.set("u64.big", uint64_t(1) << 40);
    w.set("f64", 0.25);
    w.set("name", "gemma3n");
    w.set("ffn", std::vector<uint32_t>{16384, 16384, 8192});
    w.set("ids", std::vector<uint32_t>{1, 2, 3000000000u});
    w.set("swa", std::vector<bool>{true, false});
    w.finish();
  }
  const GgufFile f = GgufFile::open(p);
  EXPECT_EQ(f.get_u32("u8"), 200u);
  EXPECT_EQ(f.get_i64("u8"), 200);
  EXPECT_EQ(f.get_f32("u8"), 200.0f);
  EXPECT_EQ(f.get_i32("i32.neg"), -5);
  EXPECT_EQ(f.get_u64("u64.big"), uint64_t(1) << 40);
  EXPECT_EQ(f.get_f32("f64"), 0.25f);
  EXPECT_EQ(f.get_string("name"), "gemma3n");
  EXPECT_EQ(f.get_u32("missing", 7), 7u);
  EXPECT_EQ(f.get_string("missing", "x"), "x");
  EXPECT_TRUE(f.has("name"));
  EXPECT_FALSE(f.has("missing"));
  EXPECT_EQ(f.get_array<int32_t>("ffn"), (std::vector<int32_t>{16384, 16384, 8192}));
  EXPECT_EQ(f.get_array<float>("ffn"), (std::vector<float>{16384, 16384, 8192}));
  EXPECT_EQ(f.get_array<bool>("swa"), (std::vector<bool>{true, false}));
  EXPECT_EQ(f.get_array<int32_t>("missing", {1}), std::vector<int32_t>{1});
  EXPECT_EQ(f.at("ffn").describe(), "array of 3 u32");
  EXPECT_EQ(f.at("name").describe(), "string \"gemma3n\"");

  auto expect_error = [&](auto&& fn, const std::string& needle) {
    const std::string msg = error_of(fn);
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
  };
  expect_error([&] { f.get_u32("i32.neg"); }, "key \"i32.neg\" (i32 -5): value -5 does not fit in u32");
  expect_error([&] { f.get<uint8_t>("u64.big"); }, "value 1099511627776 does not fit in u8");
  expect_error([&] { f.get_u32("f64"); }, "key \"f64\" (f64 0.25): value is f64, not convertible to u32");
  expect_error([&] { f.get_string("u8"); }, "value is u8, not convertible to string");
  expect_error([&] { f.get_bool("u8"); }, "value is u8, not convertible to bool");
  expect_error([&] { f.get_u32("name"); }, "value is string, not convertible to u32");
  expect_error([&] { f.get_u32("missing"); }, "GGUF metadata key \"missing\" is missing");
  expect_error([&] { f.get_array<float>("name"); }, "value is string, not an array");
  expect_error([&] { f.get_array<int32_t>("ids"); }, "array element 2: value 3000000000 does not fit in i32");
  expect_error([&] { f.get_array<std::string>("ffn"); }, "array element 0: value is u32, not convertible to string");
}

// ============================================================================ writer -> reader

using GgufRoundTrip = GgufTest;

// One value of every type, arrays of every element type, empty and nested arrays.
std::vector<std::pair<std::string, GgufValue>> all_kinds_of_metadata() {
  std::vector<std::pair<std::string, GgufValue>> kv;
  kv.emplace_back("general.architecture", "gemma3n");
  kv.emplace_back("t.u8", uint8_t(255));
  kv.emplace_back("t.i8", int8_t(-128));
  kv.emplace_back("t.u16", uint16_t(65535));
  kv.emplace_back("t.i16", int16_t(-32768));
  kv.emplace_back("t.u32", uint32_t(4000000000u));
  kv.emplace_back("t.i32", int32_t(-2000000000));
  kv.emplace_back("t.f32", 1e-6f);
  kv.emplace_back("t.bool.true", true);
  kv.emplace_back("t.bool.false", false);
  kv.emplace_back("t.string", std::string("h\xc3\xa9llo \xe2\x96\x81world\0tail", 21));
  kv.emplace_back("t.string.empty", "");
  kv.emplace_back("t.u64", uint64_t(18446744073709551615u));
  kv.emplace_back("t.i64", int64_t(std::numeric_limits<int64_t>::min()));
  kv.emplace_back("t.f64", 3.141592653589793);
  kv.emplace_back("a.u8", std::vector<uint8_t>{0, 1, 255});
  kv.emplace_back("a.i8", std::vector<int8_t>{-1, 2});
  kv.emplace_back("a.u16", std::vector<uint16_t>{7, 65535});
  kv.emplace_back("a.i16", std::vector<int16_t>{-7});
  kv.emplace_back("a.u32", std::vector<uint32_t>{16384, 16384, 8192});
  kv.emplace_back("a.i32", std::vector<int32_t>{-1, 0, 1});
  kv.emplace_back("a.f32", std::vector<float>{0.0f, -INFINITY, 1.5f});
  kv.emplace_back("a.bool", std::vector<bool>{true, false, true, true});
  kv.emplace_back("a.string", std::vector<std::string>{"<pad>", "", "\xe2\x96\x81the", std::string(1000, 'x')});
  kv.emplace_back("a.u64", std::vector<uint64_t>{uint64_t(1) << 63});
  kv.emplace_back("a.i64", std::vector<int64_t>{-(int64_t(1) << 40)});
  kv.emplace_back("a.f64", std::vector<double>{1e300, -0.0});
  kv.emplace_back("a.empty", std::vector<float>{});
  kv.emplace_back("a.nested",
                  std::vector<GgufArray>{GgufArray{std::vector<std::string>{"a", "b"}}, GgufArray{std::vector<std::string>{}},
                                         GgufArray{std::vector<std::string>{"c"}}});
  kv.emplace_back("a.nested3", std::vector<GgufArray>{GgufArray{std::vector<GgufArray>{
                                   GgufArray{std::vector<int32_t>{1, 2, 3}}, GgufArray{std::vector<int32_t>{4}}}}});
  return kv;
}

struct TestTensor {
  std::string name;
  int type;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;
};

std::vector<TestTensor> some_tensors() {
  std::mt19937 rng(7);
  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(rng());
    return v;
  };
  std::vector<TestTensor> ts;
  std::vector<float> f = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> fb(24);
  std::memcpy(fb.data(), f.data(), 24);
  ts.push_back({"token_embd.weight", ggml::F32, {3, 2}, fb});
  ts.push_back({"blk.0.attn_norm.weight", ggml::F16, {5}, random_bytes(10)});
  ts.push_back({"blk.0.attn_q.weight", ggml::Q8_0, {64, 3}, random_bytes(34 * 6)});
  ts.push_back({"blk.0.ffn_up.weight", ggml::Q4_K, {256, 2, 1, 2}, random_bytes(144 * 4)});
  ts.push_back({"blk.0.ffn_down.weight", ggml::BF16, {7, 1}, random_bytes(14)});
  ts.push_back({"ids", ggml::I32, {3}, random_bytes(12)});
  ts.push_back({"scalar", ggml::F32, {}, fb});  // n_dims = 0: one element
  ts.back().bytes.resize(4);
  return ts;
}

void write_test_file(const std::string& p, uint32_t alignment, bool in_pieces) {
  GgufWriter w(p, alignment);
  for (auto& [k, v] : all_kinds_of_metadata()) w.set(k, v);
  const auto ts = some_tensors();
  for (const auto& t : ts) EXPECT_EQ(w.add_tensor(t.name, t.type, t.dims), t.bytes.size());
  if (in_pieces) {
    // Everything as one stream, cut into pieces of 1..7 bytes that straddle tensor boundaries.
    std::vector<uint8_t> all;
    for (const auto& t : ts) all.insert(all.end(), t.bytes.begin(), t.bytes.end());
    size_t pos = 0, k = 1;
    while (pos < all.size()) {
      const size_t n = std::min(all.size() - pos, k);
      w.write(all.data() + pos, n);
      pos += n;
      k = k % 7 + 1;
    }
  } else {
    for (const auto& t : ts) w.write_tensor(t.name, t.bytes.data(), t.bytes.size());
  }
  w.finish();
}

void check_test_file(const std::string& p, uint32_t alignment) {
  const GgufFile f = GgufFile::open(p);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  auto kv = all_kinds_of_metadata();
  if (alignment != 32) kv.emplace_back("general.alignment", alignment);
  ASSERT_EQ(f.metadata_keys().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f.metadata_keys()[i], kv[i].first);
    const GgufValue* v = f.find(kv[i].first);
    ASSERT_NE(v, nullptr) << kv[i].first;
    EXPECT_EQ(v->type(), kv[i].second.type()) << kv[i].first;
    EXPECT_TRUE(*v == kv[i].second) << kv[i].first << ": " << v->describe() << " vs " << kv[i].second.describe();
  }
  EXPECT_EQ(std::get<std::string>(f.at("t.string").storage()).size(), 21u);  // the NUL survives
  EXPECT_EQ(f.at("a.nested3").array().element_type(), GgufType::ARRAY);

  const auto ts = some_tensors();
  ASSERT_EQ(f.tensors().size(), ts.size());
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, ts[i].name);
    EXPECT_EQ(t.type, ts[i].type);
    EXPECT_EQ(t.dims, ts[i].dims);
    EXPECT_EQ(t.nbytes, ts[i].bytes.size());
    EXPECT_EQ(t.offset, expected_offset) << t.name;
    EXPECT_EQ(t.offset % alignment, 0u);
    EXPECT_EQ(std::memcmp(t.data, ts[i].bytes.data(), t.nbytes), 0) << t.name;
    EXPECT_EQ(f.find_tensor(t.name), &t);
    expected_offset += (t.nbytes + alignment - 1) / alignment * alignment;
  }
  EXPECT_EQ(f.data_size(), expected_offset);  // padded after the last tensor too
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);

  // Engine views: shape row-major (dims reversed).
  const TensorView v = f.view("token_embd.weight");
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{2, 3}));
  float x[6];
  to_f32(v, 0, 6, x);
  EXPECT_EQ(x[5], 6.0f);
  EXPECT_EQ(f.view("blk.0.attn_q.weight").dtype, DType::Q8_0);
  EXPECT_EQ(f.view("blk.0.attn_q.weight").shape, (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(f.view("scalar").shape, std::vector<int64_t>{1});
  EXPECT_NE(error_of([&] { f.view("blk.0.ffn_up.weight"); }).find("has type Q4_K, which the engine cannot use directly"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.view("nope"); }).find("no tensor \"nope\""), std::string::npos);
}

TEST_F(GgufRoundTrip, EveryMetadataTypeAndSeveralTensorTypes) {
  const std::string p = path("rt.gguf");
  write_test_file(p, 32, false);
  check_test_file(p, 32);
}

TEST_F(GgufRoundTrip, StreamedInPiecesGivesTheSameFile) {
  const std::string a = path("a.gguf"), b = path("b.gguf");
  write_test_file(a, 32, false);
  write_test_file(b, 32, true);
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(fa)), {}), sb((std::istreambuf_iterator<char>(fb)), {});
  EXPECT_EQ(sa.size(), fs::file_size(a));
  EXPECT_TRUE(sa == sb);
  check_test_file(b, 32);
}

TEST_F(GgufRoundTrip, OtherAlignments) {
  for (uint32_t al : {1u, 2u, 64u, 4096u}) {
    const std::string p = path("al" + std::to_string(al) + ".gguf");
    write_test_file(p, al, al == 64);
    check_test_file(p, al);
  }
  // With alignment 1 an F32 tensor can sit at an odd address: the reader hands out an aligned copy.
  const std::string p = path("odd.gguf");
  {
    GgufWriter w(p, 1);
    w.add_tensor("b", ggml::I8, {3});
    w.add_tensor("f", ggml::F32, {2});
    const uint8_t b[3] = {1, 2, 3};
    const float f[2] = {0.5f, -2.0f};
    w.write(b, 3);
    w.write(f, 8);
    w.finish();
  }
  const GgufFile f = GgufFile::open(p);
  const GgufTensorInfo* t = f.find_tensor("f");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->offset, 3u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % alignof(float), 0u);
  EXPECT_EQ(reinterpret_cast<const float*>(t->data)[1], -2.0f);
}

TEST_F(GgufRoundTrip, MetadataOnlyAndEmptyFile) {
  const std::string p = path("meta.gguf");
  {
    GgufWriter w(p);
    w.set("general.architecture", "gemma3n");
    w.finish();
  }
  const GgufFile f = GgufFile::open(p);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.get_string("general.architecture"), "gemma3n");
  const std::string q = path("nothing.gguf");
  {
    GgufWriter w(q);
    w.finish();
  }
  EXPECT_TRUE(GgufFile::open(q).metadata().empty());
}

// ============================================================================ writer misuse

using GgufWriterErrors = GgufTest;

TEST_F(GgufWriterErrors, RefusesBadDeclarations) {
  const std::string p = path("w.gguf");
  GgufWriter w(p);
  w.set("a", 1);
  EXPECT_NE(error_of([&] { w.set("a", 2); }).find("duplicate metadata key \"a\""), std::string::npos);
  EXPECT_NE(error_of([&] { w.set("", 2); }).find("empty metadata key"), std::string::npos);
  EXPECT_NE(error_of([&] { w.set("general.alignment", uint32_t(64)); }).find("must be the u32 32"), std::string::npos);
  EXPECT_NE(error_of([&] { w.set("general.alignment", int32_t(32)); }).find("not i32 32"), std::string::npos);
  GgufArray deep{std::vector<int32_t>{1}};
  for (int i = 0; i < kGgufMaxArrayDepth; ++i) deep = GgufArray{std::vector<GgufArray>{deep}};
  EXPECT_NE(error_of([&] { w.set("deep", deep); }).find("nested more than 8 levels"), std::string::npos);
  w.add_tensor("t", ggml::F32, {4});
  EXPECT_NE(error_of([&] { w.add_tensor("t", ggml::F32, {4}); }).find("duplicate tensor name \"t\""), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor(std::string(64, 'x'), ggml::F32, {4}); }).find("at most 63"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("u", 99, {4}); }).find("unknown ggml type id 99"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("u", ggml::Q4_0, {16}); }).find("not a multiple of the Q4_0 block size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("u", ggml::F32, {1, 1, 1, 1, 1}); }).find("5 dimensions"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("u", ggml::F32, {-1}); }).find("is -1"), std::string::npos);
  EXPECT_NE(error_of([&] { GgufWriter bad(path("x.gguf"), 24); }).find("alignment 24 is not a power of two"),
            std::string::npos);
  EXPECT_NE(error_of([&] { GgufWriter bad(path("no/such/dir.gguf")); }).find("cannot create"), std::string::npos);
}

TEST_F(GgufWriterErrors, OrderAndCountsAreChecked) {
  const float data[8] = {};
  {
    const std::string p = path("order.gguf");
    GgufWriter w(p);
    w.add_tensor("a", ggml::F32, {2});
    w.add_tensor("b", ggml::F32, {2});
    EXPECT_NE(error_of([&] { w.write_tensor("b", data, 8); }).find("the next tensor in declaration order is \"a\""),
              std::string::npos);
    EXPECT_NE(error_of([&] { w.write_tensor("a", data, 4); }).find("got 4 bytes, the tensor has 8"), std::string::npos);
    w.write_tensor("a", data, 8);
    EXPECT_NE(error_of([&] { w.set("late", 1); }).find("after tensor data was written"), std::string::npos);
    EXPECT_NE(error_of([&] { w.add_tensor("c", ggml::F32, {2}); }).find("after tensor data was written"),
              std::string::npos);
    w.write(data, 3);
    EXPECT_NE(error_of([&] { w.finish(); }).find("tensor \"b\" has 3 of its 8 bytes"), std::string::npos);
    EXPECT_FALSE(fs::exists(p)) << "an incomplete file must be removed";
  }
  {
    const std::string p = path("toomuch.gguf");
    GgufWriter w(p);
    w.add_tensor("a", ggml::F32, {2});
    EXPECT_NE(error_of([&] { w.write(data, 12); }).find("4 more bytes of tensor data than the declared tensors hold"),
              std::string::npos);
    EXPECT_FALSE(fs::exists(p));
    EXPECT_NE(error_of([&] { w.finish(); }).find("after an earlier error"), std::string::npos);
  }
  {
    const std::string p = path("abandoned.gguf");
    {
      GgufWriter w(p);
      w.add_tensor("a", ggml::F32, {2});
      w.write(data, 4);
    }  // destroyed without finish()
    EXPECT_FALSE(fs::exists(p));
  }
  {
    const std::string p = path("done.gguf");
    GgufWriter w(p);
    w.finish();
    EXPECT_NE(error_of([&] { w.finish(); }).find("after finish()"), std::string::npos);
    EXPECT_TRUE(fs::exists(p));
  }
}

}  // namespace
}  // namespace g3n
