// Untrusted request bodies: UTF-8 check, nesting-depth limit before parsing (nlohmann's parser is
// recursive, so 10,000 nested brackets would overflow the stack), parse errors as ApiError 400; and
// the base64 decoding of data URIs. Header-only (unit-tested without the server library).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "server/api_error.h"
#include "tokenizer/tokenizer.h"

namespace g3n::server {

// Deepest nesting of arrays / objects in `text`, counting brackets outside strings; stops scanning
// (and returns a value > limit) as soon as the depth passes `limit`. Malformed text is fine here:
// the parser reports it afterwards.
inline size_t json_nesting_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character (\" does not end the string)
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return deepest;
}

constexpr size_t kMaxJsonDepth = 64;

// The body of a JSON API request: a UTF-8 JSON object no deeper than `max_depth`. Throws ApiError 400.
inline nlohmann::json parse_request_body(std::string_view body, size_t max_depth = kMaxJsonDepth) {
  if (body.empty()) throw ApiError(400, "the request body is empty: expected a JSON object", "", "invalid_json");
  if (!g3n::is_valid_utf8(body)) throw ApiError(400, "the request body is not valid UTF-8", "", "invalid_encoding");
  if (json_nesting_depth(body, max_depth) > max_depth)
    throw ApiError(400, "the request body nests arrays/objects deeper than " + std::to_string(max_depth) + " levels",
                   "", "invalid_json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::exception& e) {  // parse_error, out_of_range (number overflow), ...
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what(), "", "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
  return j;
}

// Standard base64 (RFC 4648 alphabet, '=' padding; also accepts the URL-safe alphabet and missing
// padding; ASCII whitespace is skipped). nullopt when the text is not base64.
inline std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0, count = 0, pad = 0;
  for (char c : in) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return std::nullopt;  // data after padding
    const int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    ++count;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xff));
    }
  }
  if (count % 4 == 1) return std::nullopt;                        // 6 bits cannot end a byte
  if (pad && (count + pad) % 4 != 0) return std::nullopt;         // wrong amount of padding
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;  // non-zero leftover bits
  return out;
}

}  // namespace g3n::server
