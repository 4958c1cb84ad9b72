// The server's guards on untrusted request bodies (header-only: src/server/json_guard.h, api_error.h):
// nesting depth found without recursion, bodies parsed or refused with a 400, base64 decoded strictly.
#include <gtest/gtest.h>

#include <string>

#include "server/api_error.h"
#include "server/json_guard.h"

namespace g3n::server {
namespace {

int status_of(const std::string& body) {
  try {
    parse_request_body(body);
  } catch (const ApiError& e) {
    return e.status();
  }
  return 200;
}

TEST(ServerJson, NestingDepth) {
  EXPECT_EQ(json_nesting_depth("{}", 64), 1u);
  EXPECT_EQ(json_nesting_depth(R"({"a": [1, {"b": []}]})", 64), 4u);
  EXPECT_EQ(json_nesting_depth(R"({"a": "[[[[[[{{{{"})", 64), 1u);    // brackets inside strings do not count
  EXPECT_EQ(json_nesting_depth(R"({"a": "\"[[[[", "b": 1})", 64), 1u);  // nor after an escaped quote
  EXPECT_EQ(json_nesting_depth("]]]}}}[", 64), 1u);                      // stray closers do not underflow
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_GT(json_nesting_depth(deep, 64), 64u);  // stops early, no recursion
}

TEST(ServerJson, ParseRequestBody) {
  EXPECT_EQ(status_of(R"({"messages": []})"), 200);
  EXPECT_EQ(status_of(""), 400);
  EXPECT_EQ(status_of("{"), 400);
  EXPECT_EQ(status_of("[]"), 400);  // not an object
  EXPECT_EQ(status_of("{\"a\": \"\xff\"}"), 400);
  EXPECT_EQ(status_of(R"({"a": "\ud800"})"), 400);  // lone surrogate escape
  EXPECT_EQ(status_of(std::string(10000, '[') + std::string(10000, ']')), 400);
  std::string nested;
  for (int i = 0; i < 10000; ++i) nested += "{\"a\":";
  nested += '1';
  nested.append(10000, '}');  // (appending avoids a GCC 12 -Wrestrict false positive on "1" + string)
  EXPECT_EQ(status_of(nested), 400);
  std::string ok = "{\"a\":";
  ok.append(60, '[');
  ok.append(60, ']');
  ok += '}';
  EXPECT_EQ(status_of(ok), 200);
}

TEST(ServerJson, ErrorBodyIsOpenAIShaped) {
  const ApiError e(400, "temperature must be in [0, 100], got -1", "temperature", "invalid_value");
  const auto j = e.body();
  ASSERT_TRUE(j.contains("error"));
  EXPECT_EQ(j["error"]["message"], "temperature must be in [0, 100], got -1");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
  const auto k = ApiError(503, "busy").body();
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

TEST(ServerJson, Base64) {
  EXPECT_EQ(base64_decode("").value(), "");
  EXPECT_EQ(base64_decode("TWFu").value(), "Man");
  EXPECT_EQ(base64_decode("TWE=").value(), "Ma");
  EXPECT_EQ(base64_decode("TQ==").value(), "M");
  EXPECT_EQ(base64_decode("TQ").value(), "M");  // padding may be left out
  EXPECT_EQ(base64_decode("TW\nFu").value(), "Man");
  EXPECT_EQ(base64_decode("-_8=").value(), std::string("\xfb\xff"));  // URL-safe alphabet
  EXPECT_FALSE(base64_decode("T"));
  EXPECT_FALSE(base64_decode("TWFu!"));
  EXPECT_FALSE(base64_decode("TQ=a"));
  EXPECT_FALSE(base64_decode("TWE=="));  // wrong amount of padding
  EXPECT_FALSE(base64_decode("TR=="));   // non-zero leftover bits
  EXPECT_FALSE(base64_decode("QUJD="));
}

}  // namespace
}  // namespace g3n::server
