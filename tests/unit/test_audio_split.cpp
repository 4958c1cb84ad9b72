// Long-audio windows (media/audio_split.h): cuts land in the quiet stretches, windows tile the clip,
// none is longer than the limit, short clips stay whole.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/error.h"
#include "media/audio_split.h"

namespace g3n::media {
namespace {

constexpr int64_t kRate = 16000;

// Loud noise with quiet gaps [a, b) seconds.
std::vector<float> noise_with_gaps(double seconds, const std::vector<std::pair<double, double>>& gaps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.2f);
  std::vector<float> x(size_t(seconds * kRate));
  for (auto& v : x) v = n(rng);
  for (auto [a, b] : gaps)
    for (auto i = int64_t(a * kRate); i < int64_t(b * kRate) && i < int64_t(x.size()); ++i) x[size_t(i)] *= 1e-3f;
  return x;
}

void expect_tiling(const std::vector<AudioWindow>& w, int64_t n, double max_seconds) {
  ASSERT_FALSE(w.empty());
  EXPECT_EQ(w.front().begin, 0);
  EXPECT_EQ(w.back().end, n);
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_LT(w[i].begin, w[i].end);
    EXPECT_LE(w[i].end - w[i].begin, int64_t(max_seconds * kRate)) << "window " << i;
    if (i) {
      EXPECT_EQ(w[i].begin, w[i - 1].end);
    }
  }
}

TEST(AudioSplit, ShortClipIsOneWindow) {
  const auto x = noise_with_gaps(29.5, {}, 1);
  const auto w = split_long_audio(x.data(), int64_t(x.size()), kRate);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].begin, 0);
  EXPECT_EQ(w[0].end, int64_t(x.size()));
  EXPECT_TRUE(split_long_audio(x.data(), 0, kRate).empty());
}

TEST(AudioSplit, CutsFallInTheQuietGaps) {
  const std::vector<std::pair<double, double>> gaps = {{24.0, 24.5}, {51.2, 51.6}, {75.0, 75.4}};
  const auto x = noise_with_gaps(95.0, gaps, 2);
  const auto w = split_long_audio(x.data(), int64_t(x.size()), kRate);
  expect_tiling(w, int64_t(x.size()), 30.0);
  ASSERT_EQ(w.size(), 4u);
  for (size_t i = 0; i + 1 < w.size(); ++i) {
    const double cut = double(w[i].end) / kRate;
    EXPECT_GE(cut, gaps[i].first) << "cut " << i;
    EXPECT_LE(cut, gaps[i].second) << "cut " << i;
  }
}

TEST(AudioSplit, NoQuietPointStillBoundsTheWindows) {
  const auto x = noise_with_gaps(200.0, {}, 3);
  const auto w = split_long_audio(x.data(), int64_t(x.size()), kRate);
  expect_tiling(w, int64_t(x.size()), 30.0);
  EXPECT_GE(w.size(), 7u);
  for (size_t i = 0; i + 1 < w.size(); ++i) EXPECT_GE(w[i].end - w[i].begin, 20 * kRate);
}

TEST(AudioSplit, OtherLimitsAndBadOptions) {
  const auto x = noise_with_gaps(40.0, {{12.0, 12.3}}, 4);
  AudioSplitOptions o;
  o.max_window_seconds = 15;
  o.min_window_seconds = 10;
  const auto w = split_long_audio(x.data(), int64_t(x.size()), kRate, o);
  expect_tiling(w, int64_t(x.size()), 15.0);
  EXPECT_GE(double(w[0].end) / kRate, 12.0);
  EXPECT_LE(double(w[0].end) / kRate, 12.3);
  o.min_window_seconds = 20;  // >= max
  EXPECT_THROW(split_long_audio(x.data(), int64_t(x.size()), kRate, o), Error);
  EXPECT_THROW(split_long_audio(x.data(), int64_t(x.size()), 0), Error);
}

}  // namespace
}  // namespace g3n::media
