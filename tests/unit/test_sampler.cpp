// Sampler: repeatable with a seed, never leaves its candidate set, greedy at temperature 0.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>

#include "base/error.h"
#include "runtime/sampler.h"

namespace g3n {
namespace {

std::vector<float> fixed_logits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<int32_t> ranked(const std::vector<float>& x) {
  std::vector<int32_t> r(x.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = int32_t(i);
  std::sort(r.begin(), r.end(), [&](int32_t a, int32_t b) { return x[size_t(a)] > x[size_t(b)]; });
  return r;
}

TEST(Sampler, SameSeedSameTokens) {
  const auto logits = fixed_logits(1000, 1);
  SamplingParams p;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> ha, hb;
  for (int i = 0; i < 200; ++i) {
    ha.push_back(a.sample(logits.data(), 1000, ha));
    hb.push_back(b.sample(logits.data(), 1000, hb));
  }
  EXPECT_EQ(ha, hb);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> hc;
  for (int i = 0; i < 200; ++i) hc.push_back(c.sample(logits.data(), 1000, hc));
  EXPECT_NE(ha, hc);
}

TEST(Sampler, TemperatureZeroIsGreedy) {
  const auto logits = fixed_logits(5000, 2);
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p);
  const int32_t best = ranked(logits)[0];
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits.data(), 5000, {}), best);
}

TEST(Sampler, TopKNeverLeavesItsSet) {
  const auto logits = fixed_logits(2000, 3);
  const auto r = ranked(logits);
  SamplingParams p;
  p.top_k = 5;
  p.top_p = 1.0f;
  p.seed = 7;
  Sampler s(p);
  std::set<int32_t> allowed(r.begin(), r.begin() + 5), seen;
  for (int i = 0; i < 3000; ++i) {
    const int32_t t = s.sample(logits.data(), 2000, {});
    ASSERT_TRUE(allowed.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_GE(seen.size(), 2u);  // it does sample, not just argmax
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (temperature 1): top_p 0.75 keeps the first two.
  std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 0.75f;
  Sampler s(p);
  const auto dist = s.distribution(logits.data(), 4, {});
  ASSERT_EQ(dist.size(), 2u);
  EXPECT_EQ(dist[0].first, 1);
  EXPECT_EQ(dist[1].first, 3);
  EXPECT_NEAR(dist[0].second, 0.5f / 0.8f, 1e-6);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.sample(logits.data(), 4, {}));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  std::vector<float> logits = {std::log(0.6f), std::log(0.25f), std::log(0.1f), std::log(0.05f)};
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.2f;  // floor 0.12: keeps 0.6 and 0.25
  Sampler s(p);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.sample(logits.data(), 4, {}));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(Sampler, NeverSamplesBeyondTextVocabulary) {
  std::vector<float> logits(262400, 0.0f);
  logits[262300] = 100.0f;  // an audio id, hugely likely
  logits[17] = 1.0f;
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p);
  EXPECT_EQ(s.sample(logits.data(), 262400, {}), 17);
}

TEST(Sampler, PenaltiesLowerSeenTokens) {
  std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  Sampler s(p);
  EXPECT_EQ(s.sample(logits.data(), 3, {0}), 1);  // 2.0 - 0.5 < 1.9
  SamplingParams r;
  r.temperature = 0.0f;
  r.repetition_penalty = 1.1f;
  Sampler rs(r);
  EXPECT_EQ(rs.sample(logits.data(), 3, {0}), 1);  // 2.0 / 1.1 < 1.9
}

TEST(Sampler, RejectsBadParameters) {
  SamplingParams p;
  p.temperature = -1.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_p = 2.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = -0.5f;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace
}  // namespace g3n
