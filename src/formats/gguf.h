// Reader for GGUF files (llama.cpp / ggml's model format), versions 2 and 3, little-endian.
// The file is untrusted input: every count, length, type, dimension and offset is validated when it
// is opened, and nothing is allocated beyond what the file's size can account for, so that a
// GgufTensorInfo handed out afterwards never points outside the mapping.
//
// File layout (all integers little-endian; "string" = u64 byte length + bytes, no terminator):
//   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//   kv_count x { string key, u32 value_type, value }
//       value: u8 i8 u16 i16 u32 i32 f32 bool(1 byte) string u64 i64 f64, or
//              array = u32 element_type, u64 count, count x value (arrays may nest)
//   tensor_count x { string name, u32 n_dims, n_dims x u64 ne (ne0 first), u32 ggml_type, u64 offset }
//   padding to `alignment` (metadata key general.alignment, u32, default 32)
//   data section: tensor i occupies [offset_i, offset_i + nbytes_i), offsets relative to its start.
// Version 1 (u32 counts and dimensions, 2023 pre-releases) is refused; versions 2 and 3 share one
// layout (3 only added big-endian files, which are refused too).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"
#include "base/tensor.h"

namespace g3n {

// ---------------------------------------------------------------------------------------------
// Limits on untrusted files. Real models are far below all of them (Gemma 3n: ~850 tensors,
// ~40 keys, 262 144-entry vocabulary arrays).

inline constexpr uint64_t kGgufMaxTensors = uint64_t(1) << 18;     // tensors per file
inline constexpr uint64_t kGgufMaxKeyValues = uint64_t(1) << 16;   // metadata pairs per file
inline constexpr uint64_t kGgufMaxKeyBytes = 65535;                // spec: keys are at most 2^16 - 1 bytes
inline constexpr uint64_t kGgufMaxTensorNameBytes = 64;            // spec: names are at most 64 bytes
inline constexpr uint64_t kGgufMaxStringBytes = uint64_t(1) << 30; // one string value
inline constexpr uint64_t kGgufMaxArrayLength = uint64_t(1) << 28; // elements of one array
inline constexpr int kGgufMaxArrayDepth = 8;                       // an array of arrays ... (outermost = 1)
inline constexpr uint32_t kGgufMaxDims = 4;                        // GGML_MAX_DIMS
inline constexpr uint64_t kGgufMaxDim = uint64_t(1) << 62;         // every ne must be in [1, 2^62)
inline constexpr uint32_t kGgufDefaultAlignment = 32;

// ---------------------------------------------------------------------------------------------
// Metadata values

// Value types of GGUF metadata (enum gguf_type). The numbering is the file's.
enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
// "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
// or "type N" for a value outside the enum.
std::string gguf_type_name(GgufType t);

struct GgufArray;
// The elements of an array. The alternative's index is the element type (GgufType numbering), so
// an empty array still has a type.
using GgufArrayItems =
    std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>, std::vector<int16_t>,
                 std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>, std::vector<bool>,
                 std::vector<std::string>, std::vector<GgufArray>, std::vector<uint64_t>, std::vector<int64_t>,
                 std::vector<double>>;

struct GgufArray {
  GgufArrayItems items;

  GgufType element_type() const { return GgufType(items.index()); }
  size_t size() const;
  bool operator==(const GgufArray&) const = default;
};

namespace gguf_detail {
template <class T, class V>
struct is_alternative;
template <class T, class... Ts>
struct is_alternative<T, std::variant<Ts...>> : std::bool_constant<(std::is_same_v<T, Ts> || ...)> {};
[[noreturn]] void conversion_error(GgufType from, const char* to);
[[noreturn]] void range_error(const std::string& value, const char* to);
template <class T>
constexpr const char* target_name() {
  if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return sizeof(T) == 1 ? "i8" : sizeof(T) == 2 ? "i16" : sizeof(T) == 4 ? "i32" : "i64";
  else if constexpr (std::is_integral_v<T>)
    return sizeof(T) == 1 ? "u8" : sizeof(T) == 2 ? "u16" : sizeof(T) == 4 ? "u32" : "u64";
  else if constexpr (std::is_same_v<T, float>) return "f32";
  else return "f64";
}
template <class U>
constexpr GgufType type_of() {
  if constexpr (std::is_same_v<U, uint8_t>) return GgufType::UINT8;
  else if constexpr (std::is_same_v<U, int8_t>) return GgufType::INT8;
  else if constexpr (std::is_same_v<U, uint16_t>) return GgufType::UINT16;
  else if constexpr (std::is_same_v<U, int16_t>) return GgufType::INT16;
  else if constexpr (std::is_same_v<U, uint32_t>) return GgufType::UINT32;
  else if constexpr (std::is_same_v<U, int32_t>) return GgufType::INT32;
  else if constexpr (std::is_same_v<U, float>) return GgufType::FLOAT32;
  else if constexpr (std::is_same_v<U, bool>) return GgufType::BOOL;
  else if constexpr (std::is_same_v<U, std::string>) return GgufType::STRING;
  else if constexpr (std::is_same_v<U, GgufArray>) return GgufType::ARRAY;
  else if constexpr (std::is_same_v<U, uint64_t>) return GgufType::UINT64;
  else if constexpr (std::is_same_v<U, int64_t>) return GgufType::INT64;
  else if constexpr (std::is_same_v<U, double>) return GgufType::FLOAT64;
  else static_assert(sizeof(U) == 0, "not a GGUF value type");
}
// Converts one scalar to T: integers to any integer type that holds the value; integers and
// floats to float/double; bool only to bool; string only to std::string.
template <class T, class U>
T convert(const U& u) {
  if constexpr (std::is_same_v<T, U>) {
    return u;
  } else if constexpr (std::is_same_v<T, bool> || std::is_same_v<U, bool> || std::is_same_v<T, std::string> ||
                       std::is_same_v<U, std::string> || std::is_same_v<U, GgufArray>) {
    conversion_error(type_of<U>(), target_name<T>());
  } else if constexpr (std::is_integral_v<T>) {
    if constexpr (std::is_floating_point_v<U>) {
      conversion_error(type_of<U>(), target_name<T>());
    } else {
      if (!std::in_range<T>(u)) range_error(std::to_string(u), target_name<T>());
      return T(u);
    }
  } else {
    static_assert(std::is_floating_point_v<T>, "GgufValue converts to integers, float, double, bool, std::string");
    return T(u);
  }
}
}  // namespace gguf_detail

// One metadata value: a scalar, a string or an array. The variant's index is the GgufType.
class GgufValue {
 public:
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               GgufArray, uint64_t, int64_t, double>;

  GgufValue() = default;  // u8 0
  // Exactly the stored types: GgufValue(uint32_t(5)) is a u32, GgufValue(5) an i32 (int32_t is int),
  // GgufValue(5.0f) an f32, GgufValue(true) a bool.
  template <class T>
    requires gguf_detail::is_alternative<std::decay_t<T>, Storage>::value
  GgufValue(T&& v) : v_(std::forward<T>(v)) {}
  GgufValue(const char* s) : v_(std::string(s)) {}
  GgufValue(std::string_view s) : v_(std::string(s)) {}
  // Arrays: GgufValue(std::vector<float>{...}), GgufValue(std::vector<std::string>{...}), and
  // nested arrays as std::vector<GgufArray>.
  template <class T>
    requires std::is_constructible_v<GgufArrayItems, std::vector<T>>
  GgufValue(std::vector<T> items) : v_(GgufArray{GgufArrayItems(std::move(items))}) {}

  GgufType type() const { return GgufType(v_.index()); }
  bool is_array() const { return type() == GgufType::ARRAY; }
  const Storage& storage() const { return v_; }
  // The array; throws g3n::Error when this is not one.
  const GgufArray& array() const;

  // The scalar converted to T (the rules of gguf_detail::convert: any integer type to an integer
  // type that holds the value, any number to float/double, bool and string only to themselves).
  // Throws g3n::Error saying what the value is and what was asked for.
  template <class T>
  T as() const {
    return std::visit([](const auto& u) -> T { return gguf_detail::convert<T>(u); }, v_);
  }
  // An array's elements, each converted to T as as<T>() converts a scalar. Throws g3n::Error when
  // this is not an array or an element does not convert (naming its index).
  template <class T>
  std::vector<T> as_array() const;

  // A short human-readable form: `u32 42`, `string "gemma3n"`, `array of 262144 string`.
  std::string describe() const;

  bool operator==(const GgufValue&) const = default;

 private:
  Storage v_;
};

// ---------------------------------------------------------------------------------------------
// Tensors

struct GgufTensorInfo {
  std::string name;
  int type = 0;               // ggml type id (quant/ggml_types.h), known to ggml::type_info
  std::vector<int64_t> dims;  // ne0 first, as in the file (ne0 is the contiguous dimension); may be empty
  uint64_t offset = 0;        // relative to the data section; a multiple of the alignment
  uint64_t nbytes = 0;        // numel / block_size * type_size
  const uint8_t* data = nullptr;

  int64_t numel() const;
  // Row-major shape (dims reversed: the last entry is ne0), as TensorView uses it.
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }
};

// The byte size of a tensor of `ggml_type` with dimensions `dims` (ne0 first): validates the type
// (known to ggml::type_info), the number of dimensions (<= kGgufMaxDims), every dimension (in
// [1, kGgufMaxDim)), the element count (fits int64) and ne0 against the block size. Throws
// g3n::Error describing the problem (without a file or tensor name: callers add those).
uint64_t gguf_tensor_nbytes(int64_t ggml_type, const std::vector<int64_t>& dims);

// ---------------------------------------------------------------------------------------------

class GgufFile {
 public:
  // Maps and validates the whole header. Throws g3n::Error naming the file and the problem (and
  // the key or tensor where there is one).
  static GgufFile open(const std::string& path);

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  // The data section: file offset, start and size. data() is nullptr when the section is empty.
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* data() const { return data_size_ ? file_.data() + data_offset_ : nullptr; }
  uint64_t data_size() const { return data_size_; }

  // ---- metadata
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<std::string>& metadata_keys() const { return keys_; }  // file order
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  // Throws g3n::Error naming the file and the key when absent.
  const GgufValue& at(const std::string& key) const;

  // The value converted as GgufValue::as<T>(). Without a default, a missing key throws; with one,
  // a missing key gives the default. A present value that does not convert always throws (naming
  // the file, the key, its type and the type asked for).
  template <class T>
  T get(const std::string& key) const {
    return convert_or_fail(key, [&](const GgufValue& v) { return v.as<T>(); });
  }
  template <class T>
  T get(const std::string& key, T def) const {
    return has(key) ? get<T>(key) : def;
  }
  uint32_t get_u32(const std::string& key) const { return get<uint32_t>(key); }
  uint32_t get_u32(const std::string& key, uint32_t def) const { return get<uint32_t>(key, def); }
  int32_t get_i32(const std::string& key) const { return get<int32_t>(key); }
  int32_t get_i32(const std::string& key, int32_t def) const { return get<int32_t>(key, def); }
  uint64_t get_u64(const std::string& key) const { return get<uint64_t>(key); }
  uint64_t get_u64(const std::string& key, uint64_t def) const { return get<uint64_t>(key, def); }
  int64_t get_i64(const std::string& key) const { return get<int64_t>(key); }
  int64_t get_i64(const std::string& key, int64_t def) const { return get<int64_t>(key, def); }
  float get_f32(const std::string& key) const { return get<float>(key); }
  float get_f32(const std::string& key, float def) const { return get<float>(key, def); }
  double get_f64(const std::string& key) const { return get<double>(key); }
  double get_f64(const std::string& key, double def) const { return get<double>(key, def); }
  bool get_bool(const std::string& key) const { return get<bool>(key); }
  bool get_bool(const std::string& key, bool def) const { return get<bool>(key, def); }
  std::string get_string(const std::string& key) const { return get<std::string>(key); }
  std::string get_string(const std::string& key, const std::string& def) const { return get<std::string>(key, def); }
  // An array's elements converted to T (see GgufValue::as_array). Missing key: throws / default.
  template <class T>
  std::vector<T> get_array(const std::string& key) const {
    return convert_or_fail(key, [&](const GgufValue& v) { return v.as_array<T>(); });
  }
  template <class T>
  std::vector<T> get_array(const std::string& key, std::vector<T> def) const {
    return has(key) ? get_array<T>(key) : def;
  }

  // ---- tensors
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // file order
  const GgufTensorInfo* find_tensor(const std::string& name) const;      // nullptr when absent
  // A view for the engine's kernels: F32/F16/BF16/Q8_0/Q4_0 tensors only (shape row-major, see
  // GgufTensorInfo::shape). Throws g3n::Error naming the file and tensor when absent or of another
  // type.
  TensorView view(const std::string& name) const;

 private:
  GgufFile() = default;
  template <class F>
  auto convert_or_fail(const std::string& key, F&& f) const -> decltype(f(std::declval<const GgufValue&>())) {
    const GgufValue& v = at(key);
    try {
      return f(v);
    } catch (const Error& e) {
      key_error(key, e.what());
    }
  }
  [[noreturn]] void key_error(const std::string& key, const std::string& problem) const;

  MappedFile file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t data_size_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> keys_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  // Copies of tensors whose data in the file is not aligned to their element size (only possible
  // with general.alignment < 4).
  std::vector<std::unique_ptr<uint8_t[]>> owned_;

  friend class GgufParser;
};

// ---------------------------------------------------------------------------------------------

template <class T>
std::vector<T> GgufValue::as_array() const {
  const GgufArray& a = array();
  return std::visit(
      [](const auto& items) -> std::vector<T> {
        std::vector<T> out;
        out.reserve(items.size());
        for (size_t i = 0; i < items.size(); ++i) {
          try {
            if constexpr (std::is_same_v<std::decay_t<decltype(items)>, std::vector<bool>>)
              out.push_back(gguf_detail::convert<T>(bool(items[i])));
            else
              out.push_back(gguf_detail::convert<T>(items[i]));
          } catch (const Error& e) {
            fail("array element ", i, ": ", e.what());
          }
        }
        return out;
      },
      a.items);
}

}  // namespace g3n
