#include "server/metrics.h"

#include <cstdio>

namespace g3n::server {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + (i < bounds_.size() ? number(bounds_[i]) : std::string("+Inf")) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : time_to_first_token({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      time_per_output_token({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

std::string Metrics::render() const {
  std::string out;
  header(out, "g3n_http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : requests_)
      out += "g3n_http_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
  }
  header(out, "g3n_prompt_tokens_total", "counter", "Prompt tokens of the completions requests run.");
  out += "g3n_prompt_tokens_total " + std::to_string(prompt_tokens.load()) + "\n";
  header(out, "g3n_prompt_tokens_reused_total", "counter",
         "Prompt tokens served from a slot's cached prefix instead of being computed.");
  out += "g3n_prompt_tokens_reused_total " + std::to_string(reused_prompt_tokens.load()) + "\n";
  header(out, "g3n_generated_tokens_total", "counter", "Tokens generated.");
  out += "g3n_generated_tokens_total " + std::to_string(generated_tokens.load()) + "\n";
  header(out, "g3n_requests_cancelled_total", "counter",
         "Generations stopped early because the client went away or the server is stopping.");
  out += "g3n_requests_cancelled_total " + std::to_string(cancelled.load()) + "\n";
  header(out, "g3n_time_to_first_token_seconds", "histogram",
         "From the request's arrival (queue wait included) to its first generated token.");
  time_to_first_token.render("g3n_time_to_first_token_seconds", out);
  header(out, "g3n_time_per_output_token_seconds", "histogram", "Time between consecutive generated tokens.");
  time_per_output_token.render("g3n_time_per_output_token_seconds", out);
  header(out, "g3n_requests_active", "gauge", "Requests generating on a slot now.");
  out += "g3n_requests_active " + std::to_string(active.load()) + "\n";
  header(out, "g3n_requests_queued", "gauge", "Requests waiting for a free slot.");
  out += "g3n_requests_queued " + std::to_string(queued.load()) + "\n";
  header(out, "g3n_slots", "gauge", "Sessions (--parallel).");
  out += "g3n_slots " + std::to_string(slots) + "\n";
  return out;
}

}  // namespace g3n::server
