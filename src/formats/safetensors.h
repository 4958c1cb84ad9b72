// Reader for .safetensors files (https://github.com/huggingface/safetensors), which we treat as
// untrusted input: every length, offset and shape in the header is validated when the file is
// opened, so that a TensorView handed out afterwards never points outside the mapping.
//
// File layout: u64 little-endian header length N, then N bytes of UTF-8 JSON, then the data
// section. The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} with
// offsets relative to the data section, plus an optional "__metadata__" string->string map.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"
#include "base/tensor.h"

namespace g3n {

// One .safetensors file, memory-mapped, header fully validated at open.
class SafetensorsFile {
 public:
  // Throws g3n::Error naming the file and the problem (and the tensor, where there is one).
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return file_.path(); }
  // Tensors of the dtypes the engine computes with (F32/F16/BF16). The views stay valid for the
  // lifetime of this object (moves included: the mapping and the owned copies do not move).
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensors with a dtype valid in the safetensors spec that the engine does not support:
  // name -> dtype string ("F64", "I64", "U8", "BOOL", "F8_E4M3", ...).
  const std::map<std::string, std::string>& unsupported() const { return unsupported_; }

 private:
  SafetensorsFile() = default;

  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::string> unsupported_;
  // Copies of tensors whose data in the file is not aligned to their element size.
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

// All tensors of a Hugging Face checkpoint directory: either model.safetensors, or
// model.safetensors.index.json ("weight_map": tensor name -> shard file name) plus the shards.
// When both exist the index is used. With an index, the weight map is authoritative: a tensor
// present in a shard but not listed in the map is not an error, and is not exposed either.
class TensorStore {
 public:
  static TensorStore open_dir(const std::string& dir);  // throws g3n::Error

  TensorStore(TensorStore&&) noexcept = default;
  TensorStore& operator=(TensorStore&&) noexcept = default;
  TensorStore(const TensorStore&) = delete;
  TensorStore& operator=(const TensorStore&) = delete;

  // nullptr when absent; throws g3n::Error when the tensor exists with an unsupported dtype
  // (the message names the tensor, its dtype and its file).
  const TensorView* find(const std::string& name) const;
  // All tensor names, supported and unsupported, sorted.
  std::vector<std::string> names() const;
  // The opened files (one, or one per shard), in shard-name order.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  TensorStore() = default;

  struct Entry {
    const SafetensorsFile* file = nullptr;
    const TensorView* view = nullptr;     // null for unsupported dtypes
    const std::string* dtype = nullptr;   // the dtype string, for unsupported dtypes
  };
  // Adds `name` from `file`; returns false when the file has no such tensor.
  bool add(const std::string& name, const SafetensorsFile& file);

  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
};

}  // namespace g3n
