// NumPy .npy output, for dumping activations to compare against the reference implementation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"

namespace g3n {

// Writes a float32 array as .npy format version 1.0: little-endian '<f4', C order, header padded
// so that the data starts at a multiple of 64 bytes. Throws g3n::Error naming the path on a bad
// shape or an I/O failure.
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace g3n
