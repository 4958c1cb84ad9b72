#include "formats/npy.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/checked.h"
#include "base/error.h"

namespace g3n {

// The data is written as the host stores it; '<f4' is only right on a little-endian host.
static_assert(std::endian::native == std::endian::little, "write_npy_f32 assumes a little-endian host");

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  uint64_t numel = 1;
  std::string dims;
  for (int64_t d : shape) {
    if (d < 0) fail("cannot write ", path, ": negative dimension ", d, " in shape");
    numel = checked_mul(numel, uint64_t(d), "npy element count");
    dims += std::to_string(d) + ", ";
  }
  const uint64_t nbytes = checked_mul(numel, 4, "npy byte size");
  // Python's repr of a tuple: "()", "(3,)", "(2, 3)".
  if (shape.size() == 1) dims.pop_back();                          // "3,"
  else if (!shape.empty()) dims.resize(dims.size() - 2);          // "2, 3"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";

  // Magic (6) + version (2) + header length (2) + header, padded with spaces and ended by '\n'
  // so that the data starts at a multiple of 64 bytes, as numpy writes it.
  constexpr size_t kPrefix = 10, kAlign = 64;
  const size_t unpadded = kPrefix + header.size() + 1;
  header.append((kAlign - unpadded % kAlign) % kAlign, ' ');
  header += '\n';
  if (header.size() > 65535) fail("cannot write ", path, ": shape has too many dimensions for .npy version 1.0");

  std::string prefix("\x93NUMPY\x01\x00", 8);
  prefix += char(header.size() & 0xff);
  prefix += char(header.size() >> 8);

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail("cannot create ", path, ": ", std::strerror(errno));
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), f) == prefix.size() &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (nbytes == 0 || std::fwrite(data, 1, size_t(nbytes), f) == nbytes);
  int err = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(path.c_str());
    fail("cannot write ", path, ": ", std::strerror(err));
  }
}

}  // namespace g3n
