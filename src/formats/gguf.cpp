#include "formats/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <sstream>

#include "base/checked.h"
#include "base/error.h"
#include "quant/ggml_types.h"  // header-only type table: no link dependency on g3n_quant

namespace g3n {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kFixedHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, tensor count, kv count
// The smallest possible encodings, used to refuse counts the file cannot hold before allocating.
constexpr uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;        // key length, 1-byte key, value type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;  // name length, 1-byte name, n_dims = 0, type, offset

constexpr const char* kTypeNames[] = {"u8", "i8",     "u16",   "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
constexpr uint32_t kNumTypes = 13;

// Bytes of the smallest encoding of one value of type t (a string: its length; an array: its
// element type and count).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL: return 1;
    case GgufType::UINT16:
    case GgufType::INT16: return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32: return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
    case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

// Names and keys from the file as they appear in error messages: quoted, control and non-ASCII
// bytes escaped, cut short.
constexpr size_t kMaxShown = 120;
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  out += '"';
  if (s.size() > kMaxShown) out.append("... (").append(std::to_string(s.size())).append(" bytes)");
  return out;
}

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

std::string gguf_type_name(GgufType t) {
  const auto i = uint32_t(t);
  return i < kNumTypes ? kTypeNames[i] : "type " + std::to_string(i);
}

namespace gguf_detail {
void conversion_error(GgufType from, const char* to) { fail("value is ", gguf_type_name(from), ", not convertible to ", to); }
void range_error(const std::string& value, const char* to) { fail("value ", value, " does not fit in ", to); }
}  // namespace gguf_detail

size_t GgufArray::size() const {
  return std::visit([](const auto& v) { return v.size(); }, items);
}

const GgufArray& GgufValue::array() const {
  if (const auto* a = std::get_if<GgufArray>(&v_)) return *a;
  fail("value is ", gguf_type_name(type()), ", not an array");
}

std::string GgufValue::describe() const {
  std::ostringstream os;
  os << gguf_type_name(type()) << ' ';
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, GgufArray>) {
          os.str("");
          os << "array of " << v.size() << ' ' << gguf_type_name(v.element_type());
        } else if constexpr (std::is_same_v<V, std::string>) {
          os << quote(v);
        } else if constexpr (std::is_same_v<V, bool>) {
          os << (v ? "true" : "false");
        } else if constexpr (sizeof(V) == 1) {
          os << int(v);
        } else if constexpr (std::is_floating_point_v<V>) {
          os.precision(std::numeric_limits<V>::max_digits10);
          os << v;
        } else {
          os << v;
        }
      },
      v_);
  return os.str();
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // validated at open: fits int64
  return n;
}

uint64_t gguf_tensor_nbytes(int64_t ggml_type, const std::vector<int64_t>& dims) {
  const ggml::TypeInfo* t = ggml::type_info(ggml_type);
  if (!t) fail("unknown ggml type id ", ggml_type);
  if (dims.size() > kGgufMaxDims) fail(dims.size(), " dimensions, more than the ", kGgufMaxDims, " ggml allows");
  uint64_t numel = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] <= 0 || uint64_t(dims[i]) >= kGgufMaxDim)
      fail("dimension ", i, " (ne", i, ") is ", dims[i], "; dimensions must be in [1, 2^62)");
    if (__builtin_mul_overflow(numel, uint64_t(dims[i]), &numel) ||
        numel > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("element count of dimensions ", dims_str(dims), " overflows int64");
  }
  const uint64_t ne0 = dims.empty() ? 1 : uint64_t(dims[0]);
  if (ne0 % uint64_t(t->block_size) != 0)
    fail("ne0 = ", ne0, " is not a multiple of the ", t->name, " block size ", t->block_size);
  // numel is a multiple of ne0, hence of the block size.
  uint64_t nbytes;
  if (__builtin_mul_overflow(numel / uint64_t(t->block_size), uint64_t(t->type_size), &nbytes))
    fail("byte size of dimensions ", dims_str(dims), " x ", t->name, " overflows 64 bits");
  return nbytes;
}

// ---------------------------------------------------------------------------------------------

class GgufParser {
 public:
  GgufParser(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}

  void parse(GgufFile& f);

 private:
  uint64_t remaining() const { return size_ - pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("file truncated: ", what, " needs ", n, " bytes at offset ", pos_, " but the file ends at ", size_);
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what, uint64_t max_len) {
    const uint64_t len = read<uint64_t>(what);
    if (len > max_len) fail(what, " length ", len, " exceeds the limit of ", max_len, " bytes");
    if (len > remaining())
      fail("file truncated: ", what, " length ", len, " at offset ", pos_ - 8, " exceeds the ", remaining(),
           " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  GgufType read_type(const char* what) {
    const uint32_t t = read<uint32_t>(what);
    if (t >= kNumTypes) fail("unknown value type ", t);
    return GgufType(t);
  }
  GgufValue read_value(GgufType t);
  GgufArray read_array(int depth);
  template <class T>
  std::vector<T> read_pod_array(uint64_t n) {
    std::vector<T> v(static_cast<size_t>(n));  // n <= remaining() / sizeof(T), checked by the caller
    if (n) std::memcpy(v.data(), base_ + pos_, size_t(n) * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }
  bool read_bool() {
    const uint8_t b = read<uint8_t>("bool value");
    if (b > 1) fail("bool value ", int(b), " is neither 0 nor 1");
    return b != 0;
  }

  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

GgufValue GgufParser::read_value(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return read<uint8_t>("u8 value");
    case GgufType::INT8: return read<int8_t>("i8 value");
    case GgufType::UINT16: return read<uint16_t>("u16 value");
    case GgufType::INT16: return read<int16_t>("i16 value");
    case GgufType::UINT32: return read<uint32_t>("u32 value");
    case GgufType::INT32: return read<int32_t>("i32 value");
    case GgufType::FLOAT32: return read<float>("f32 value");
    case GgufType::BOOL: return read_bool();
    case GgufType::STRING: return read_string("string value", kGgufMaxStringBytes);
    case GgufType::ARRAY: return read_array(1);
    case GgufType::UINT64: return read<uint64_t>("u64 value");
    case GgufType::INT64: return read<int64_t>("i64 value");
    case GgufType::FLOAT64: return read<double>("f64 value");
  }
  fail("unknown value type ", uint32_t(t));
}

GgufArray GgufParser::read_array(int depth) {
  if (depth > kGgufMaxArrayDepth) fail("arrays nested more than ", kGgufMaxArrayDepth, " levels deep");
  const GgufType et = read_type("array element type");
  const uint64_t n = read<uint64_t>("array length");
  if (n > kGgufMaxArrayLength) fail("array length ", n, " exceeds the limit of ", kGgufMaxArrayLength);
  const uint64_t min_bytes = min_value_bytes(et);
  if (n > remaining() / min_bytes)
    fail("array of ", n, " ", gguf_type_name(et), " elements needs at least ", n, " x ", min_bytes,
         " bytes but only ", remaining(), " bytes are left in the file");

  GgufArray a;
  switch (et) {
    case GgufType::UINT8: a.items = read_pod_array<uint8_t>(n); break;
    case GgufType::INT8: a.items = read_pod_array<int8_t>(n); break;
    case GgufType::UINT16: a.items = read_pod_array<uint16_t>(n); break;
    case GgufType::INT16: a.items = read_pod_array<int16_t>(n); break;
    case GgufType::UINT32: a.items = read_pod_array<uint32_t>(n); break;
    case GgufType::INT32: a.items = read_pod_array<int32_t>(n); break;
    case GgufType::FLOAT32: a.items = read_pod_array<float>(n); break;
    case GgufType::UINT64: a.items = read_pod_array<uint64_t>(n); break;
    case GgufType::INT64: a.items = read_pod_array<int64_t>(n); break;
    case GgufType::FLOAT64: a.items = read_pod_array<double>(n); break;
    case GgufType::BOOL: {
      std::vector<bool> v(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) {
        const uint8_t b = base_[pos_++];  // n <= remaining() checked above
        if (b > 1) fail("array element ", i, ": bool value ", int(b), " is neither 0 nor 1");
        v[size_t(i)] = b != 0;
      }
      a.items = std::move(v);
      break;
    }
    case GgufType::STRING: {
      std::vector<std::string> v;
      v.reserve(size_t(n));
      for (uint64_t i = 0; i < n; ++i) {
        try {
          v.push_back(read_string("string", kGgufMaxStringBytes));
        } catch (const Error& e) {
          fail("array element ", i, ": ", e.what());
        }
      }
      a.items = std::move(v);
      break;
    }
    case GgufType::ARRAY: {
      std::vector<GgufArray> v;
      v.reserve(size_t(n));
      for (uint64_t i = 0; i < n; ++i) {
        try {
          v.push_back(read_array(depth + 1));
        } catch (const Error& e) {
          fail("array element ", i, ": ", e.what());
        }
      }
      a.items = std::move(v);
      break;
    }
  }
  return a;
}

void GgufParser::parse(GgufFile& f) {
  // ---- fixed header
  if (size_ < 4) fail("file is ", size_, " bytes, too short for the GGUF magic");
  if (std::memcmp(base_, kMagic, 4) != 0) {
    std::ostringstream os;
    os << std::hex;
    for (int i = 0; i < 4; ++i) os << (i ? " " : "") << "0x" << int(base_[i]);
    fail("not a GGUF file: the first 4 bytes are ", quote(std::string_view(reinterpret_cast<const char*>(base_), 4)),
         " (", os.str(), "), not \"GGUF\"");
  }
  pos_ = 4;
  const uint32_t version = read<uint32_t>("version");
  if (version == 1)
    fail("GGUF version 1 is not supported (only versions 2 and 3): version 1 files come from llama.cpp builds "
         "before August 2023 and must be converted again");
  if (version != 2 && version != 3) {
    const uint32_t swapped = (version >> 24) | ((version >> 8) & 0xff00u) | ((version << 8) & 0xff0000u) | (version << 24);
    if (swapped == 2 || swapped == 3)
      fail("big-endian GGUF files (version ", swapped, " stored big-endian) are not supported");
    fail("unsupported GGUF version ", version, " (only versions 2 and 3 are supported)");
  }
  f.version_ = version;
  const uint64_t n_tensors = read<uint64_t>("tensor count");
  const uint64_t n_kv = read<uint64_t>("metadata key-value count");
  if (n_tensors > kGgufMaxTensors) fail("tensor count ", n_tensors, " exceeds the limit of ", kGgufMaxTensors);
  if (n_kv > kGgufMaxKeyValues) fail("metadata key-value count ", n_kv, " exceeds the limit of ", kGgufMaxKeyValues);
  // Both below the caps, so the products cannot overflow.
  if (n_tensors * kMinTensorInfoBytes + n_kv * kMinKeyValueBytes > remaining())
    fail(n_tensors, " tensors and ", n_kv, " key-value pairs need at least ",
         n_tensors * kMinTensorInfoBytes + n_kv * kMinKeyValueBytes, " bytes of header, but the file has only ",
         remaining(), " bytes after its ", kFixedHeaderBytes, "-byte fixed header");

  // ---- metadata
  f.keys_.reserve(size_t(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    try {
      key = read_string("key", kGgufMaxKeyBytes);
      if (key.empty()) fail("key is empty");
    } catch (const Error& e) {
      fail("metadata pair #", i, ": ", e.what());
    }
    try {
      if (f.metadata_.count(key)) fail("duplicate key");
      const GgufType t = read_type("value type");
      f.metadata_.emplace(key, read_value(t));
      f.keys_.push_back(key);
    } catch (const Error& e) {
      fail("metadata key ", quote(key), ": ", e.what());
    }
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    if (a->type() != GgufType::UINT32)
      fail("metadata key \"general.alignment\": type is ", gguf_type_name(a->type()), ", must be u32");
    const uint32_t al = a->as<uint32_t>();
    if (!is_power_of_two(al))
      fail("metadata key \"general.alignment\": alignment ", al, " is not a power of two", al == 0 ? " (it is 0)" : "");
    f.alignment_ = al;
  }

  // ---- tensor infos
  f.tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    try {
      t.name = read_string("tensor name", kGgufMaxTensorNameBytes);
      if (t.name.empty()) fail("tensor name is empty");
    } catch (const Error& e) {
      fail("tensor #", i, ": ", e.what());
    }
    try {
      if (f.tensor_index_.count(t.name)) fail("duplicate tensor name");
      const uint32_t n_dims = read<uint32_t>("number of dimensions");
      if (n_dims > kGgufMaxDims) fail(n_dims, " dimensions, more than the ", kGgufMaxDims, " ggml allows");
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t ne = read<uint64_t>("dimension");
        if (ne == 0) fail("dimension ", d, " (ne", d, ") is 0");
        if (ne >= kGgufMaxDim)
          fail("dimension ", d, " (ne", d, ") is ", ne, " (", int64_t(ne), " as int64); dimensions must be below 2^62");
        t.dims.push_back(int64_t(ne));
      }
      const uint32_t type = read<uint32_t>("type");
      if (!ggml::type_info(type)) fail("unknown ggml type id ", type);
      t.type = int(type);
      t.offset = read<uint64_t>("data offset");
      t.nbytes = gguf_tensor_nbytes(t.type, t.dims);
    } catch (const Error& e) {
      fail("tensor ", quote(t.name), ": ", e.what());
    }
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  // ---- data section
  const uint64_t header_end = pos_;
  const uint64_t al = f.alignment_;
  const uint64_t data_offset = checked_add(header_end, al - 1, "data section offset") / al * al;
  f.data_offset_ = data_offset;
  f.data_size_ = data_offset <= size_ ? size_ - data_offset : 0;
  if (data_offset > size_ && !f.tensors_.empty())
    fail("the tensor data section would start at offset ", data_offset, " (header end ", header_end,
         " rounded up to the alignment ", al, "), past the end of the file (", size_, " bytes)");

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  ranges.reserve(f.tensors_.size());
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    GgufTensorInfo& t = f.tensors_[i];
    const std::string where = "tensor " + quote(t.name) + ": ";
    if (t.offset % al != 0) fail(where, "data offset ", t.offset, " is not a multiple of the alignment ", al);
    if (t.offset > f.data_size_)
      fail(where, "data offset ", t.offset, " is past the end of the data section (", f.data_size_,
           " bytes from file offset ", data_offset, ")");
    const uint64_t end = checked_add(t.offset, t.nbytes, "tensor data end");
    if (end > f.data_size_)
      fail(where, "data [", t.offset, ", ", end, ") of ", t.nbytes, " bytes extends ", end - f.data_size_,
           " byte(s) past the end of the file (the data section has ", f.data_size_, " bytes from file offset ",
           data_offset, ")");
    t.data = base_ + data_offset + t.offset;
    ranges.push_back({t.offset, end, i});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range &a = ranges[i - 1], &b = ranges[i];
    if (b.begin < a.end)
      fail("tensors ", quote(f.tensors_[a.index].name), " [", a.begin, ", ", a.end, ") and ",
           quote(f.tensors_[b.index].name), " [", b.begin, ", ", b.end, ") overlap");
  }

  // Element types are read through typed pointers: copy the (rare) tensors whose data is not
  // aligned to their element size, which only a general.alignment below 4 allows. Done last, so
  // that nothing is copied out of a file that turns out to be invalid.
  for (GgufTensorInfo& t : f.tensors_) {
    const ggml::TypeInfo* ti = ggml::type_info(t.type);
    if (ti->block_size != 1 || reinterpret_cast<uintptr_t>(t.data) % uint64_t(ti->type_size) == 0) continue;
    auto copy = std::make_unique_for_overwrite<uint8_t[]>(size_t(t.nbytes));
    std::memcpy(copy.get(), t.data, size_t(t.nbytes));
    t.data = copy.get();
    f.owned_.push_back(std::move(copy));
  }
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.file_ = MappedFile(path);  // names the path in its own errors
  try {
    GgufParser(f.file_.data(), f.file_.size()).parse(f);
  } catch (const Error& e) {
    fail(path, ": invalid GGUF file: ", e.what());
  }
  return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::at(const std::string& key) const {
  if (const GgufValue* v = find(key)) return *v;
  fail(path(), ": GGUF metadata key ", quote(key), " is missing");
}

void GgufFile::key_error(const std::string& key, const std::string& problem) const {
  fail(path(), ": GGUF metadata key ", quote(key), " (", at(key).describe(), "): ", problem);
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

TensorView GgufFile::view(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail(path(), ": no tensor ", quote(name), " in the GGUF file");
  TensorView v;
  switch (t->type) {
    case ggml::F32: v.dtype = DType::F32; break;
    case ggml::F16: v.dtype = DType::F16; break;
    case ggml::BF16: v.dtype = DType::BF16; break;
    case ggml::Q8_0: v.dtype = DType::Q8_0; break;
    case ggml::Q4_0: v.dtype = DType::Q4_0; break;
    default:
      fail(path(), ": tensor ", quote(name), " has type ", ggml::type_name(t->type),
           ", which the engine cannot use directly (F32, F16, BF16, Q8_0 and Q4_0 can be viewed; "
           "ggml::dequantize_row converts the others)");
  }
  v.shape = t->dims.empty() ? std::vector<int64_t>{1} : t->shape();
  v.data = t->data;
  return v;
}

}  // namespace g3n
