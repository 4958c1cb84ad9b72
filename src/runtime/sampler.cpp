#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "base/error.h"

namespace g3n {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f && temperature <= 100.0f)) fail("temperature must be in [0, 100], got ", temperature);
  if (top_k < 0) fail("top_k must not be negative, got ", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p must be in (0, 1], got ", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("min_p must be in [0, 1], got ", min_p);
  if (!(repetition_penalty > 0.0f && repetition_penalty <= 10.0f))
    fail("repetition_penalty must be in (0, 10], got ", repetition_penalty);
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) fail("presence_penalty must be in [-2, 2], got ", presence_penalty);
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    fail("frequency_penalty must be in [-2, 2], got ", frequency_penalty);
}

SamplingParams load_generation_defaults(const std::string& dir) {
  SamplingParams p;
  const auto path = std::filesystem::path(dir) / "generation_config.json";
  std::ifstream in(path);
  if (!in) return p;
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), " is not valid JSON: ", e.what());
  }
  if (!j.is_object()) return p;
  const bool do_sample = j.value("do_sample", true);
  p.temperature = do_sample ? j.value("temperature", p.temperature) : 0.0f;
  p.top_k = j.value("top_k", p.top_k);
  p.top_p = j.value("top_p", p.top_p);
  if (j.contains("min_p") && j["min_p"].is_number()) p.min_p = j["min_p"].get<float>();
  if (j.contains("repetition_penalty") && j["repetition_penalty"].is_number())
    p.repetition_penalty = j["repetition_penalty"].get<float>();
  return p;
}

Sampler::Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) { p_.validate(); }

std::vector<std::pair<int32_t, float>> Sampler::distribution(const float* logits, int64_t n,
                                                             const std::vector<int32_t>& history) const {
  const int64_t limit = std::min<int64_t>(n, p_.vocab_limit > 0 ? p_.vocab_limit : n);
  std::vector<float> x(logits, logits + limit);

  // Penalties.
  if (p_.repetition_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> count;
    for (int32_t t : history)
      if (t >= 0 && t < limit) ++count[t];
    for (auto [t, c] : count) {
      float& v = x[size_t(t)];
      if (p_.repetition_penalty != 1.0f) v = v > 0 ? v / p_.repetition_penalty : v * p_.repetition_penalty;
      v -= p_.presence_penalty + p_.frequency_penalty * float(c);
    }
  }

  std::vector<int32_t> order(static_cast<size_t>(limit));
  for (int64_t i = 0; i < limit; ++i) order[size_t(i)] = int32_t(i);
  auto by_logit = [&](int32_t a, int32_t b) { return x[size_t(a)] > x[size_t(b)] || (x[size_t(a)] == x[size_t(b)] && a < b); };

  if (p_.temperature == 0.0f) {
    const int32_t best = *std::min_element(order.begin(), order.end(), by_logit);
    return {{best, 1.0f}};
  }

  // Top-k first bounds the work of sorting.
  size_t keep = order.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < keep) keep = size_t(p_.top_k);
  std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(keep), order.end(), by_logit);
  order.resize(keep);

  // Softmax with temperature over the kept set.
  std::vector<double> prob(keep);
  const double mx = x[size_t(order[0])] / p_.temperature;
  double z = 0;
  for (size_t i = 0; i < keep; ++i) z += prob[i] = std::exp(x[size_t(order[i])] / p_.temperature - mx);
  for (auto& v : prob) v /= z;

  // Top-p: the smallest prefix whose mass reaches top_p (at least one token).
  if (p_.top_p < 1.0f) {
    double mass = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += prob[i];
      if (mass >= double(p_.top_p)) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  // Min-p: drop tokens below min_p times the most likely one.
  if (p_.min_p > 0.0f) {
    const double floor = double(p_.min_p) * prob[0];
    size_t cut = 1;
    while (cut < keep && prob[cut] >= floor) ++cut;
    keep = cut;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i];
  std::vector<std::pair<int32_t, float>> out;
  for (size_t i = 0; i < keep; ++i) out.emplace_back(order[i], float(prob[i] / total));
  return out;
}

int32_t Sampler::sample(const float* logits, int64_t n, const std::vector<int32_t>& history) {
  const auto dist = distribution(logits, n, history);
  if (dist.size() == 1) return dist[0].first;
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double acc = 0;
  for (const auto& [id, p] : dist) {
    acc += p;
    if (u < acc) return id;
  }
  return dist.back().first;
}

}  // namespace g3n
