// Tests for the .npy writer: exact header and data bytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/error.h"
#include "formats/npy.h"

namespace g3n {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("g3n_npy_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
};

// The header numpy itself writes, padded to 64 bytes with spaces and ended by '\n'.
std::string expected_header(const std::string& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  std::string h = dict + std::string(total - 10 - dict.size() - 1, ' ') + "\n";
  std::string prefix("\x93NUMPY\x01\x00", 8);
  prefix += char(h.size() & 0xff);
  prefix += char(h.size() >> 8);
  return prefix + h;
}

TEST_F(Npy, TwoByThreeExactBytes) {
  const std::vector<float> v = {1.0f, -2.5f, 3.0f, 0.0f, 1e-3f, 7.0f};
  const std::string p = path("a.npy");
  write_npy_f32(p, v.data(), {2, 3});
  const std::string bytes = read_all(p);
  const std::string header = expected_header("(2, 3)");
  // Spelled out once, so a mistake shared by expected_header() and the writer still shows.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  ASSERT_EQ(header.size(), 128u);
  EXPECT_EQ(header.substr(0, 10), std::string("\x93NUMPY\x01\x00\x76\x00", 10));
  EXPECT_EQ(header.substr(10), dict + std::string(128 - 10 - dict.size() - 1, ' ') + "\n");
  ASSERT_EQ(bytes.size(), 128u + 24u);
  EXPECT_EQ(bytes.substr(0, 128), header);
  EXPECT_EQ(std::memcmp(bytes.data() + 128, v.data(), 24), 0);
}

TEST_F(Npy, OneDimAndScalarShapes) {
  const float v[3] = {1, 2, 3};
  write_npy_f32(path("b.npy"), v, {3});
  EXPECT_EQ(read_all(path("b.npy")), expected_header("(3,)") + std::string(reinterpret_cast<const char*>(v), 12));
  write_npy_f32(path("c.npy"), v, {});
  const std::string c = read_all(path("c.npy"));
  EXPECT_EQ(c, expected_header("()") + std::string(reinterpret_cast<const char*>(v), 4));
  write_npy_f32(path("d.npy"), nullptr, {0, 4});
  EXPECT_EQ(read_all(path("d.npy")), expected_header("(0, 4)"));
}

TEST_F(Npy, LongShapeStillAligned) {
  std::vector<int64_t> shape(12, 1);
  shape[0] = 1234567;
  std::vector<float> v(1234567, 0.5f);
  write_npy_f32(path("e.npy"), v.data(), shape);
  const std::string bytes = read_all(path("e.npy"));
  const size_t hlen = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
  EXPECT_EQ((10 + hlen) % 64, 0u);
  EXPECT_EQ(bytes[10 + hlen - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + hlen + v.size() * 4);
}

TEST_F(Npy, Errors) {
  const float v[1] = {1};
  try {
    write_npy_f32(path("no/such/dir/x.npy"), v, {1});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/x.npy"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_npy_f32(path("neg.npy"), v, {-1}), Error);
}

}  // namespace
}  // namespace g3n
