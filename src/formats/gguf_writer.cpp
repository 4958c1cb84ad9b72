#include "formats/gguf_writer.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <type_traits>

#include "base/checked.h"
#include "base/error.h"

namespace g3n {

static_assert(std::endian::native == std::endian::little, "the GGUF writer assumes a little-endian host");

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kMaxWrittenNameBytes = 63;  // llama.cpp: strlen(name) < GGML_MAX_NAME (64)

uint64_t align_up(uint64_t v, uint64_t a) { return checked_add(v, a - 1, "GGUF offset") / a * a; }

// Checks what the reader would refuse in a value: nesting depth, string and array lengths.
void validate_value(const GgufValue& v, const std::string& key);

void validate_array(const GgufArray& a, int depth, const std::string& key) {
  if (depth > kGgufMaxArrayDepth)
    fail("GGUF metadata key \"", key, "\": arrays nested more than ", kGgufMaxArrayDepth, " levels deep");
  if (a.size() > kGgufMaxArrayLength)
    fail("GGUF metadata key \"", key, "\": array length ", a.size(), " exceeds the limit of ", kGgufMaxArrayLength);
  if (const auto* strings = std::get_if<std::vector<std::string>>(&a.items)) {
    for (const std::string& s : *strings)
      if (s.size() > kGgufMaxStringBytes)
        fail("GGUF metadata key \"", key, "\": string of ", s.size(), " bytes exceeds the limit of ",
             kGgufMaxStringBytes);
  } else if (const auto* arrays = std::get_if<std::vector<GgufArray>>(&a.items)) {
    for (const GgufArray& inner : *arrays) validate_array(inner, depth + 1, key);
  }
}

void validate_value(const GgufValue& v, const std::string& key) {
  if (const auto* s = std::get_if<std::string>(&v.storage())) {
    if (s->size() > kGgufMaxStringBytes)
      fail("GGUF metadata key \"", key, "\": string of ", s->size(), " bytes exceeds the limit of ",
           kGgufMaxStringBytes);
  } else if (v.is_array()) {
    validate_array(v.array(), 1, key);
  }
}

}  // namespace

GgufWriter::GgufWriter(const std::string& path, uint32_t alignment) : path_(path), alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    fail("cannot write ", path, ": GGUF alignment ", alignment, " is not a power of two");
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) fail("cannot create ", path, ": ", std::strerror(errno));
  static constexpr size_t kBuffer = size_t(1) << 20;
  std::setvbuf(file_, nullptr, _IOFBF, kBuffer);
}

GgufWriter::~GgufWriter() {
  if (!finished_) close_and_remove();
}

void GgufWriter::close_and_remove() {
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
    std::remove(path_.c_str());
  }
}

void GgufWriter::io_error(int err) {
  close_and_remove();
  fail("cannot write ", path_, ": ", std::strerror(err));
}

void GgufWriter::check_open(const char* what) const {
  if (finished_) fail("GgufWriter(", path_, "): ", what, " after finish()");
  if (!file_) fail("GgufWriter(", path_, "): ", what, " after an earlier error removed the file");
}

void GgufWriter::put(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, file_) != n) io_error(errno);
  pos_ += n;
}

void GgufWriter::put_zeros(uint64_t n) {
  static const char zeros[256] = {};
  while (n) {
    const size_t k = size_t(std::min<uint64_t>(n, sizeof zeros));
    put(zeros, k);
    n -= k;
  }
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  check_open("set()");
  if (header_written_) fail("GgufWriter(", path_, "): set(\"", key, "\") after tensor data was written");
  if (key.empty()) fail("GgufWriter(", path_, "): empty metadata key");
  if (key.size() > kGgufMaxKeyBytes)
    fail("GgufWriter(", path_, "): metadata key of ", key.size(), " bytes exceeds the limit of ", kGgufMaxKeyBytes);
  if (keys_.count(key)) fail("GgufWriter(", path_, "): duplicate metadata key \"", key, "\"");
  if (kv_.size() >= kGgufMaxKeyValues)
    fail("GgufWriter(", path_, "): more than ", kGgufMaxKeyValues, " metadata pairs");
  if (key == "general.alignment") {
    if (value.type() != GgufType::UINT32 || value.as<uint32_t>() != alignment_)
      fail("GgufWriter(", path_, "): general.alignment must be the u32 ", alignment_,
           " the writer was created with, not ", value.describe());
    alignment_set_ = true;
  }
  validate_value(value, key);
  keys_.emplace(key, kv_.size());
  kv_.emplace_back(key, std::move(value));
}

uint64_t GgufWriter::add_tensor(const std::string& name, int ggml_type, const std::vector<int64_t>& dims) {
  check_open("add_tensor()");
  if (header_written_) fail("GgufWriter(", path_, "): add_tensor(\"", name, "\") after tensor data was written");
  if (name.empty()) fail("GgufWriter(", path_, "): empty tensor name");
  if (name.size() > kMaxWrittenNameBytes)
    fail("GgufWriter(", path_, "): tensor name \"", name, "\" has ", name.size(), " bytes; llama.cpp allows at most ",
         kMaxWrittenNameBytes);
  if (names_.count(name)) fail("GgufWriter(", path_, "): duplicate tensor name \"", name, "\"");
  if (tensors_.size() >= kGgufMaxTensors) fail("GgufWriter(", path_, "): more than ", kGgufMaxTensors, " tensors");
  Tensor t;
  try {
    t.nbytes = gguf_tensor_nbytes(ggml_type, dims);
  } catch (const Error& e) {
    fail("GgufWriter(", path_, "): tensor \"", name, "\": ", e.what());
  }
  t.name = name;
  t.type = ggml_type;
  t.dims = dims;
  t.offset = data_total_;
  data_total_ = align_up(checked_add(t.offset, t.nbytes, "GGUF data size"), alignment_);
  names_.emplace(name, tensors_.size());
  tensors_.push_back(std::move(t));
  return tensors_.back().nbytes;
}

namespace {

// Serialises values into a byte sink.
template <class Put>
struct Encoder {
  Put& put;

  template <class T>
  void pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(&v, sizeof v);
  }
  void string(const std::string& s) {
    pod(uint64_t(s.size()));
    put(s.data(), s.size());
  }
  void array(const GgufArray& a) {
    pod(uint32_t(a.element_type()));
    pod(uint64_t(a.size()));
    std::visit(
        [&](const auto& items) {
          using V = typename std::decay_t<decltype(items)>::value_type;
          if constexpr (std::is_same_v<V, bool>) {
            for (bool b : items) pod(uint8_t(b ? 1 : 0));
          } else if constexpr (std::is_same_v<V, std::string>) {
            for (const std::string& s : items) string(s);
          } else if constexpr (std::is_same_v<V, GgufArray>) {
            for (const GgufArray& inner : items) array(inner);
          } else {
            put(items.data(), items.size() * sizeof(V));
          }
        },
        a.items);
  }
  void value(const GgufValue& v) {
    std::visit(
        [&](const auto& x) {
          using V = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<V, bool>) {
            pod(uint8_t(x ? 1 : 0));
          } else if constexpr (std::is_same_v<V, std::string>) {
            string(x);
          } else if constexpr (std::is_same_v<V, GgufArray>) {
            array(x);
          } else {
            pod(x);
          }
        },
        v.storage());
  }
};

}  // namespace

void GgufWriter::write_header() {
  if (alignment_ != kGgufDefaultAlignment && !alignment_set_) {
    keys_.emplace("general.alignment", kv_.size());
    kv_.emplace_back("general.alignment", GgufValue(alignment_));
    alignment_set_ = true;
  }
  auto sink = [this](const void* p, size_t n) { put(p, n); };
  Encoder<decltype(sink)> enc{sink};
  put("GGUF", 4);
  enc.pod(kVersion);
  enc.pod(uint64_t(tensors_.size()));
  enc.pod(uint64_t(kv_.size()));
  for (const auto& [key, value] : kv_) {
    enc.string(key);
    enc.pod(uint32_t(value.type()));
    enc.value(value);
  }
  for (const Tensor& t : tensors_) {
    enc.string(t.name);
    enc.pod(uint32_t(t.dims.size()));
    for (int64_t d : t.dims) enc.pod(uint64_t(d));
    enc.pod(uint32_t(t.type));
    enc.pod(uint64_t(t.offset));
  }
  put_zeros(align_up(pos_, alignment_) - pos_);
  header_written_ = true;
}

void GgufWriter::write(const void* data, size_t nbytes) {
  check_open("write()");
  if (!header_written_) write_header();
  const auto* p = static_cast<const uint8_t*>(data);
  while (nbytes > 0) {
    if (cur_ >= tensors_.size()) {
      close_and_remove();
      fail("cannot write ", path_, ": ", nbytes, " more bytes of tensor data than the declared tensors hold");
    }
    const Tensor& t = tensors_[cur_];
    const size_t take = size_t(std::min<uint64_t>(nbytes, t.nbytes - cur_written_));
    put(p, take);
    p += take;
    nbytes -= take;
    cur_written_ += take;
    if (cur_written_ == t.nbytes) {
      put_zeros(align_up(t.nbytes, alignment_) - t.nbytes);
      ++cur_;
      cur_written_ = 0;
    }
  }
}

void GgufWriter::write_tensor(const std::string& name, const void* data, size_t nbytes) {
  check_open("write_tensor()");
  if (cur_ >= tensors_.size())
    fail("GgufWriter(", path_, "): write_tensor(\"", name, "\"): all declared tensors are already written");
  const Tensor& t = tensors_[cur_];
  if (t.name != name)
    fail("GgufWriter(", path_, "): write_tensor(\"", name, "\"): the next tensor in declaration order is \"", t.name,
         "\"");
  if (cur_written_ != 0)
    fail("GgufWriter(", path_, "): write_tensor(\"", name, "\"): ", cur_written_, " bytes of it were already written");
  if (nbytes != t.nbytes)
    fail("GgufWriter(", path_, "): write_tensor(\"", name, "\"): got ", nbytes, " bytes, the tensor has ", t.nbytes);
  write(data, nbytes);
}

void GgufWriter::finish() {
  check_open("finish()");
  if (!header_written_) write_header();
  if (cur_ < tensors_.size()) {
    const Tensor& t = tensors_[cur_];
    const std::string msg = "tensor \"" + t.name + "\" has " + std::to_string(cur_written_) + " of its " +
                            std::to_string(t.nbytes) + " bytes" +
                            (cur_ + 1 < tensors_.size()
                                 ? " (and " + std::to_string(tensors_.size() - cur_ - 1) + " more tensors are missing)"
                                 : "");
    close_and_remove();
    fail("cannot finish ", path_, ": ", msg);
  }
  if (std::fflush(file_) != 0) io_error(errno);
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::remove(path_.c_str());
    fail("cannot write ", path_, ": ", std::strerror(err));
  }
  finished_ = true;
}

}  // namespace g3n
