// Streaming writer for GGUF version 3 files (layout in formats/gguf.h), readable by GgufFile, by
// llama.cpp and by gguf-py's GGUFReader.
//
// Use: set() the metadata and add_tensor() every tensor (name, ggml type, dims) first; then send
// the tensors' bytes in declaration order with write_tensor() (whole tensors, name-checked) or
// write() (pieces of any size, which may span tensors); then finish(). The header is written when
// the first tensor byte arrives (or at finish()), so a multi-GB file never has to be held in memory.
// Layout, as llama.cpp and gguf-py write it: metadata in the order set, tensor infos in
// declaration order, zero padding to the alignment, each tensor's data at the next aligned offset,
// zero padding after each tensor (the last one included).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "formats/gguf.h"

namespace g3n {

class GgufWriter {
 public:
  // Creates (truncates) `path`. `alignment` must be a power of two; a value other than 32 is
  // recorded as general.alignment (u32) unless set() records it first. Throws g3n::Error.
  explicit GgufWriter(const std::string& path, uint32_t alignment = kGgufDefaultAlignment);
  // Closes the file; if finish() has not completed, the incomplete file is removed.
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Adds a metadata pair (kept in call order). Throws g3n::Error for an empty key, a key longer
  // than kGgufMaxKeyBytes, a duplicate key, arrays nested deeper than kGgufMaxArrayDepth, a string
  // longer than kGgufMaxStringBytes, a general.alignment that is not a u32 equal to the writer's
  // alignment, or once the header has been written.
  void set(const std::string& key, GgufValue value);

  // Declares the next tensor: `dims` ne0 first (GGUF order; the reverse of a row-major shape).
  // Throws g3n::Error for a name that is empty, longer than 63 bytes (llama.cpp's GGML_MAX_NAME
  // limit) or already used, and for what gguf_tensor_nbytes() refuses; also once the header has
  // been written. Returns the tensor's byte size.
  uint64_t add_tensor(const std::string& name, int ggml_type, const std::vector<int64_t>& dims);

  // All of tensor `name`'s bytes at once; it must be the next tensor and nothing of it written yet,
  // and nbytes must be its size. Throws g3n::Error otherwise.
  void write_tensor(const std::string& name, const void* data, size_t nbytes);
  // The next bytes of tensor data, in declaration order, in pieces of any size (a piece may span
  // tensors; padding is inserted between them). Throws when more bytes arrive than declared.
  void write(const void* data, size_t nbytes);

  // Writes the header if no tensor data came (a metadata-only file), checks that every declared
  // tensor byte has been written, pads and closes. Throws g3n::Error (and removes the file)
  // otherwise, naming the first incomplete tensor.
  void finish();

  uint32_t alignment() const { return alignment_; }
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const { return data_total_; }  // the data section's size, padding included

 private:
  struct Tensor {
    std::string name;
    int type = 0;
    std::vector<int64_t> dims;
    uint64_t offset = 0;  // in the data section
    uint64_t nbytes = 0;
  };

  void write_header();
  void put(const void* p, size_t n);
  void put_zeros(uint64_t n);
  void check_open(const char* what) const;
  void close_and_remove();
  [[noreturn]] void io_error(int err);

  std::string path_;
  std::FILE* file_ = nullptr;
  uint32_t alignment_;
  bool alignment_set_ = false;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> keys_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> names_;
  uint64_t data_total_ = 0;  // end of the last tensor, padded to the alignment
  uint64_t pos_ = 0;         // bytes written to the file so far
  bool header_written_ = false;
  bool finished_ = false;
  // Streaming position: tensor index and bytes of it written so far.
  size_t cur_ = 0;
  uint64_t cur_written_ = 0;
};

}  // namespace g3n
