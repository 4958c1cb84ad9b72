#include "formats/safetensors_writer.h"

#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "base/checked.h"
#include "base/error.h"
#include "base/tensor.h"

namespace g3n {

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<TensorInfo> tensors,
                                     std::map<std::string, std::string> metadata)
    : path_(path) {
  // ordered_json keeps insertion order: "__metadata__" first, then the tensors in the order
  // their bytes follow, as Python's safetensors writes them.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::set<std::string> seen;
  for (const TensorInfo& t : tensors) {
    if (t.name == "__metadata__") fail("cannot write ", path, ": tensor name \"__metadata__\" is reserved");
    if (!seen.insert(t.name).second) fail("cannot write ", path, ": duplicate tensor name \"", t.name, "\"");
    uint64_t nbytes = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) fail("cannot write ", path, ": tensor \"", t.name, "\" has negative dimension in shape ", shape_str(t.shape));
      nbytes = checked_mul(nbytes, uint64_t(d), "tensor byte size");
    }
    const uint64_t begin = total_;
    total_ = checked_add(total_, nbytes, "safetensors data size");
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {begin, total_}}};
  }

  std::string text;
  try {
    text = header.dump();  // throws on names or metadata that are not valid UTF-8
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write ", path, ": ", e.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) fail("cannot create ", path, ": ", std::strerror(errno));
  if (std::fwrite(len, 1, 8, file_) != 8 || std::fwrite(text.data(), 1, text.size(), file_) != text.size()) {
    const int e = errno;
    close_and_remove();
    fail("cannot write ", path, ": ", std::strerror(e));
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) close_and_remove();
}

void SafetensorsWriter::close_and_remove() {
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
    std::remove(path_.c_str());
  }
}

void SafetensorsWriter::write(const void* data, size_t nbytes) {
  if (!file_) fail("cannot write ", path_, ": the writer is already finished or failed");
  if (nbytes > total_ - written_)
    fail("cannot write ", path_, ": ", written_, " + ", nbytes, " bytes is more than the ", total_,
         " bytes the tensors declare");
  if (nbytes == 0) return;
  if (std::fwrite(data, 1, nbytes, file_) != nbytes) {
    const int e = errno;
    close_and_remove();
    fail("cannot write ", path_, ": ", std::strerror(e));
  }
  written_ += nbytes;
}

void SafetensorsWriter::finish() {
  if (!file_) fail("cannot finish ", path_, ": the writer is already finished or failed");
  if (written_ != total_) {
    close_and_remove();
    fail("cannot finish ", path_, ": ", written_, " bytes were written but the tensors declare ", total_);
  }
  // fclose flushes, so a full disk shows up here.
  const int rc = std::fclose(std::exchange(file_, nullptr));
  if (rc != 0) {
    const int e = errno;
    std::remove(path_.c_str());
    fail("cannot write ", path_, ": ", std::strerror(e));
  }
  finished_ = true;
}

}  // namespace g3n
