// Streaming writer for .safetensors files: the header is written first from the declared tensor
// list, then the tensor bytes are appended in declaration order, in pieces of any size. Used to
// write multi-GB checkpoints without holding them in memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"

namespace g3n {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

class SafetensorsWriter {
 public:
  // Creates (truncates) `path` and writes the header. Throws g3n::Error on a bad tensor list
  // (duplicate or reserved name, negative dimension, size overflow) or an I/O failure.
  SafetensorsWriter(const std::string& path, std::vector<TensorInfo> tensors,
                    std::map<std::string, std::string> metadata = {{"format", "pt"}});
  // Closes the file; if finish() has not completed, the incomplete file is removed.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends raw bytes of the tensors, in declaration order; may be called many times per tensor
  // and a call may span tensors. Throws when more bytes arrive than the tensors declare.
  void write(const void* data, size_t nbytes);
  // Throws if the bytes written do not match the declared tensors (the file is then removed);
  // otherwise flushes and closes the file.
  void finish();

  uint64_t data_bytes() const { return total_; }     // bytes the tensors declare
  uint64_t bytes_written() const { return written_; }

 private:
  void close_and_remove();

  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t total_ = 0;
  uint64_t written_ = 0;
  bool finished_ = false;
};

}  // namespace g3n
