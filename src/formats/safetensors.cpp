#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>

#include "base/error.h"

namespace g3n {
namespace {

using json = nlohmann::json;

// The reference implementation (safetensors' MAX_HEADER_SIZE) refuses larger headers.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Every dtype of the safetensors spec, with its size in bits (F4 and F6 are packed sub-byte
// types). Only the three with a DType are loaded; the others are listed as unsupported.
struct DTypeSpec {
  std::string_view name;
  uint32_t bits;
  std::optional<DType> dtype;
};
constexpr DTypeSpec kDTypes[] = {
    {"BOOL", 8, {}},         {"F4", 4, {}},           {"F6_E2M3", 6, {}},
    {"F6_E3M2", 6, {}},      {"U8", 8, {}},           {"I8", 8, {}},
    {"F8_E5M2", 8, {}},      {"F8_E4M3", 8, {}},      {"F8_E8M0", 8, {}},
    {"F8_E4M3FNUZ", 8, {}},  {"F8_E5M2FNUZ", 8, {}},  {"I16", 16, {}},
    {"U16", 16, {}},         {"F16", 16, DType::F16}, {"BF16", 16, DType::BF16},
    {"I32", 32, {}},         {"U32", 32, {}},         {"F32", 32, DType::F32},
    {"C64", 64, {}},         {"F64", 64, {}},         {"I64", 64, {}},
    {"U64", 64, {}},
};

const DTypeSpec* find_dtype(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return &d;
  return nullptr;
}

// Strings from the file as they appear in error messages: quoted, and cut short, since a header
// of up to 100 MB can hold arbitrarily long names.
constexpr size_t kMaxShown = 200;
std::string quote_name(std::string_view s) {
  // Appended piece by piece: `"\"" + std::string(...)` trips a false -Wrestrict in GCC 12 at -O3.
  std::string out = "\"";
  out.append(s.substr(0, kMaxShown));
  out += '"';
  if (s.size() > kMaxShown) out.append("... (").append(std::to_string(s.size())).append(" bytes)");
  return out;
}
// A JSON value as it appears in error messages.
std::string describe_json(const json& v) {
  if (v.is_string()) return quote_name(v.get<std::string>());
  const std::string d = v.dump();
  return d.size() <= kMaxShown ? d : d.substr(0, kMaxShown) + "...";
}

// Well-formed UTF-8: no overlong forms, surrogates or code points above U+10FFFF. On failure
// *bad is the offset of the first offending sequence.
bool is_valid_utf8(std::string_view text, size_t* bad) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint32_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0, min_cp = 0;
    if ((c & 0xe0u) == 0xc0u) {
      len = 2, cp = c & 0x1fu, min_cp = 0x80;
    } else if ((c & 0xf0u) == 0xe0u) {
      len = 3, cp = c & 0x0fu, min_cp = 0x800;
    } else if ((c & 0xf8u) == 0xf0u) {
      len = 4, cp = c & 0x07u, min_cp = 0x10000;
    }
    bool ok = len != 0 && len <= n - i;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((s[i + k] & 0xc0u) != 0x80u) ok = false;
      cp = (cp << 6) | (s[i + k] & 0x3fu);
    }
    if (!ok || cp < min_cp || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      *bad = i;
      return false;
    }
    i += len;
  }
  return true;
}

// Parses JSON from an untrusted file. Throws g3n::Error (without naming the file; callers add
// that) for ill-formed UTF-8, invalid JSON, or an object that repeats a key: nlohmann would
// silently keep the last value, so two readers could disagree about what the file contains.
json parse_json_strict(std::string_view text, const char* what) {
  // nlohmann checks UTF-8 inside strings as well; checking the whole text first gives one clear
  // message wherever the bad byte is.
  size_t bad = 0;
  if (!is_valid_utf8(text, &bad)) fail(what, " is not valid UTF-8 (ill-formed byte at offset ", bad, ")");

  // The parser callback sees each key before nlohmann merges it into its object, the only point
  // where a duplicate is still visible. One key set per currently open object.
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!duplicate && !open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second)
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;  // keep everything
  };

  json j;
  try {
    j = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    fail(what, " is not valid JSON: ", e.what());
  }
  if (duplicate) fail("duplicate key ", quote_name(*duplicate), " in ", what);
  return j;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer (as parsed by nlohmann: number_unsigned), else nullopt.
std::optional<uint64_t> as_unsigned(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

struct Range {
  uint64_t begin, end;
  std::string name;
};

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = MappedFile(path);  // names the path in its own errors
  const uint8_t* base = f.file_.data();
  const uint64_t file_size = f.file_.size();

  // Everything below throws without naming the file; the catch adds it.
  try {
    if (file_size < 8) fail("file is ", file_size, " bytes, shorter than the 8-byte header length");
    const uint64_t header_len = read_u64_le(base);
    if (header_len == 0) fail("header length is 0");
    if (header_len > kMaxHeaderBytes)
      fail("header length ", header_len, " is larger than the limit of ", kMaxHeaderBytes, " bytes");
    if (header_len > file_size - 8)
      fail("header length ", header_len, " is larger than the file (", file_size, " bytes)");

    const std::string_view text(reinterpret_cast<const char*>(base + 8), size_t(header_len));
    const json header = parse_json_strict(text, "header");
    if (!header.is_object()) fail("header is not a JSON object");

    const uint8_t* data = base + 8 + header_len;
    const uint64_t data_size = file_size - 8 - header_len;
    std::vector<Range> ranges;

    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (entry.is_null()) continue;  // accepted by the reference implementation
        if (!entry.is_object()) fail("\"__metadata__\" is not an object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) fail("\"__metadata__\" value of ", quote_name(key), " is not a string");
          f.metadata_.emplace(key, value.get<std::string>());
        }
        continue;
      }

      const std::string where = "tensor " + quote_name(name) + ": ";
      if (!entry.is_object()) fail(where, "entry is not a JSON object");

      const auto dtype_it = entry.find("dtype");
      if (dtype_it == entry.end()) fail(where, "missing \"dtype\"");
      if (!dtype_it->is_string()) fail(where, "\"dtype\" is not a string");
      const std::string dtype_str = dtype_it->get<std::string>();
      const DTypeSpec* spec = find_dtype(dtype_str);
      if (!spec) fail(where, "unknown dtype ", quote_name(dtype_str));

      const auto shape_it = entry.find("shape");
      if (shape_it == entry.end()) fail(where, "missing \"shape\"");
      if (!shape_it->is_array()) fail(where, "\"shape\" is not an array");
      std::vector<int64_t> shape;
      for (const json& d : *shape_it) {
        if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
          fail(where, "shape dimension ", d.get<int64_t>(), " is negative");
        const auto dim = as_unsigned(d);
        if (!dim || *dim > uint64_t(std::numeric_limits<int64_t>::max()))
          fail(where, "shape entry ", describe_json(d), " is not a non-negative integer that fits int64");
        shape.push_back(int64_t(*dim));
      }
      // TensorView::numel() is int64, so the element count must fit there too.
      uint64_t numel = 1;
      for (int64_t d : shape)
        if (__builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > uint64_t(std::numeric_limits<int64_t>::max()))
          fail(where, "element count of shape ", shape_str(shape), " overflows int64");

      const auto offsets_it = entry.find("data_offsets");
      if (offsets_it == entry.end()) fail(where, "missing \"data_offsets\"");
      if (!offsets_it->is_array() || offsets_it->size() != 2)
        fail(where, "\"data_offsets\" is not an array of two integers");
      const auto begin = as_unsigned((*offsets_it)[0]);
      const auto end = as_unsigned((*offsets_it)[1]);
      if (!begin || !end) fail(where, "\"data_offsets\" ", describe_json(*offsets_it), " are not non-negative integers");
      if (*begin > *end) fail(where, "data_offsets begin ", *begin, " is after end ", *end);
      if (*end > data_size)
        fail(where, "data_offsets [", *begin, ", ", *end, "] extend past the end of the data section (",
             data_size, " bytes)");

      uint64_t bits = 0;
      if (__builtin_mul_overflow(numel, uint64_t(spec->bits), &bits))
        fail(where, "byte size of shape ", shape_str(shape), " x ", dtype_str, " overflows");
      if (bits % 8 != 0)
        fail(where, "shape ", shape_str(shape), " of ", dtype_str, " does not fill a whole number of bytes");
      const uint64_t nbytes = bits / 8;
      if (*end - *begin != nbytes)
        fail(where, "data_offsets [", *begin, ", ", *end, "] span ", *end - *begin, " bytes, which does not match ",
             nbytes, " bytes for shape ", shape_str(shape), " of ", dtype_str);
      if (nbytes > 0) ranges.push_back({*begin, *end, name});

      if (!spec->dtype) {
        f.unsupported_.emplace(name, dtype_str);
        continue;
      }
      TensorView view;
      view.dtype = *spec->dtype;
      view.shape = std::move(shape);
      view.data = data + *begin;
      f.tensors_.emplace(name, std::move(view));
    }

    // Two tensors sharing bytes would alias each other's data. Empty tensors cover no bytes.
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
    for (size_t i = 1; i < ranges.size(); ++i) {
      const Range &a = ranges[i - 1], &b = ranges[i];
      if (b.begin < a.end)
        fail("tensors ", quote_name(a.name), " [", a.begin, ", ", a.end, ") and ", quote_name(b.name), " [", b.begin, ", ",
             b.end, ") overlap");
    }

    // Kernels read elements through typed pointers, which must be aligned. Writers pad the
    // header to 8 bytes so this is rare; when it happens, copy the tensor out of the mapping.
    // Done last, so that nothing is copied out of a file that turns out to be invalid.
    for (auto& [name, view] : f.tensors_) {
      if (reinterpret_cast<uintptr_t>(view.data) % dtype_size(view.dtype) == 0) continue;
      const size_t nbytes = size_t(view.numel()) * dtype_size(view.dtype);  // validated above
      auto copy = std::make_unique_for_overwrite<uint8_t[]>(nbytes);
      if (nbytes) std::memcpy(copy.get(), view.data, nbytes);
      view.data = copy.get();
      f.owned_.push_back(std::move(copy));
    }
  } catch (const Error& e) {
    fail(path, ": invalid safetensors file: ", e.what());
  }
  return f;
}

// ---------------------------------------------------------------------------------------------

bool TensorStore::add(const std::string& name, const SafetensorsFile& file) {
  Entry e;
  e.file = &file;
  if (auto it = file.tensors().find(name); it != file.tensors().end()) {
    e.view = &it->second;
  } else if (auto u = file.unsupported().find(name); u != file.unsupported().end()) {
    e.dtype = &u->second;
  } else {
    return false;
  }
  entries_[name] = e;
  return true;
}

TensorStore TensorStore::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  std::error_code ec;
  TensorStore store;

  if (!fs::exists(index_path, ec)) {
    if (!fs::exists(single_path, ec))
      fail("no checkpoint in directory ", dir, ": expected model.safetensors or model.safetensors.index.json");
    store.files_.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(single_path)));
    const SafetensorsFile& file = *store.files_.back();
    for (const auto& [name, view] : file.tensors()) store.add(name, file);
    for (const auto& [name, dtype] : file.unsupported()) store.add(name, file);
    return store;
  }

  // Sharded checkpoint: the index maps every tensor name to the file that holds it.
  const MappedFile index_file(index_path);
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  try {
    const json index = parse_json_strict(
        std::string_view(reinterpret_cast<const char*>(index_file.data()), index_file.size()), "index");
    if (!index.is_object()) fail("index is not a JSON object");
    const auto wm = index.find("weight_map");
    if (wm == index.end()) fail("missing \"weight_map\"");
    if (!wm->is_object()) fail("\"weight_map\" is not an object");
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string()) fail("\"weight_map\" entry for tensor ", quote_name(name), " is not a string");
      const std::string s = shard.get<std::string>();
      // Shard names come from an untrusted file: keep them inside the directory.
      if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos ||
          s.find("..") != std::string::npos || s.find('\0') != std::string::npos)
        fail("shard file name ", quote_name(s), " for tensor ", quote_name(name), " is not a plain file name");
      weight_map.emplace(name, s);
    }
  } catch (const Error& e) {
    fail(index_path, ": invalid index: ", e.what());
  }

  std::map<std::string, const SafetensorsFile*> shards;
  for (const auto& [name, shard] : weight_map) shards.emplace(shard, nullptr);
  for (auto& [shard, file] : shards) {
    const std::string shard_path = (fs::path(dir) / shard).string();
    try {
      store.files_.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(shard_path)));
    } catch (const Error& e) {
      fail("shard ", quote_name(shard), " listed in ", index_path, " failed to open: ", e.what());
    }
    file = store.files_.back().get();
  }
  for (const auto& [name, shard] : weight_map) {
    if (!store.add(name, *shards.at(shard)))
      fail(index_path, ": tensor ", quote_name(name), " is mapped to shard ", quote_name(shard), ", which does not contain it");
  }
  return store;
}

const TensorView* TensorStore::find(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  const Entry& e = it->second;
  if (!e.view)
    fail("tensor ", quote_name(name), " in ", e.file->path(), " has dtype ", *e.dtype,
         ", which is not supported (only F32, F16 and BF16 are)");
  return e.view;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;  // std::map keeps them sorted
}

}  // namespace g3n
