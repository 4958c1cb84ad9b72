// Errors the HTTP API answers with, in OpenAI's shape:
//   {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}
// Header-only so that the unit tests (which link g3n_runtime only) can use it.
#pragma once
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace g3n::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {},
           std::string type = {})
      : std::runtime_error(message), status_(status), param_(std::move(param)), code_(std::move(code)),
        type_(type.empty() ? default_type(status) : std::move(type)) {}

  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  const std::string& type() const { return type_; }

  nlohmann::json body() const { return error_body(what(), type_, param_, code_); }

  static std::string default_type(int status) {
    if (status == 401) return "authentication_error";
    if (status == 404) return "invalid_request_error";
    if (status == 503) return "server_overloaded";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
  }

  // Empty param / code become null, as OpenAI writes them.
  static nlohmann::json error_body(const std::string& message, const std::string& type, const std::string& param,
                                   const std::string& code) {
    nlohmann::json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
    if (!param.empty()) e["param"] = param;
    if (!code.empty()) e["code"] = code;
    return {{"error", e}};
  }

 private:
  int status_;
  std::string param_, code_, type_;
};

}  // namespace g3n::server
