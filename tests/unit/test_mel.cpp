// Log-mel features vs values recorded from transformers' Gemma3nAudioFeatureExtractor (spec
// audio.md §1.11: golden set A with the real E2B preprocessor config, B from transformers' own test)
// and vs the extractor's formulas (filterbank shape, frame counts, validity mask).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "base/error.h"
#include "media/mel.h"

namespace g3n::media {
namespace {

constexpr double kPi = std::numbers::pi;

struct Stats {
  double mean = 0, std = 0, min = 0, max = 0;
};

Stats stats_of(const std::vector<float>& v) {
  Stats s;
  s.min = s.max = v.at(0);
  for (float x : v) {
    s.mean += x;
    s.min = std::min(s.min, double(x));
    s.max = std::max(s.max, double(x));
  }
  s.mean /= double(v.size());
  for (float x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / double(v.size()));
  return s;
}

TEST(Mel, DerivedSizesFollowTheReference) {
  MelExtractor m;
  EXPECT_EQ(m.frame_length(), 512);
  EXPECT_EQ(m.hop_length(), 160);
  EXPECT_EQ(m.fft_length(), 1024);
  // L = ceil(min(N, 480000) / 128) * 128; frames = floor((L - 513) / 160) + 1, none below 513.
  EXPECT_EQ(m.num_frames(0), 0);
  EXPECT_EQ(m.num_frames(512), 0);
  EXPECT_EQ(m.num_frames(513), 1);
  EXPECT_EQ(m.num_frames(16000), 97);
  EXPECT_EQ(m.num_frames(20837), 128);
  EXPECT_EQ(m.num_frames(80000), 497);
  EXPECT_EQ(m.num_frames(160000), 997);
  EXPECT_EQ(m.num_frames(480000), 2997);
  EXPECT_EQ(m.num_frames(656000), 2997);  // 41 s: truncated to 30 s
}

TEST(Mel, FilterbankMatchesCreateFbMatrix) {
  MelExtractor m;
  const auto& w = m.filterbank();
  ASSERT_EQ(w.size(), size_t(513 * 128));
  double sum = 0, max = 0;
  int nonzero = 0;
  for (double v : w) {
    sum += v;
    max = std::max(max, v);
    nonzero += v != 0.0;
  }
  EXPECT_NEAR(sum, 473.2006, 1e-4);
  EXPECT_EQ(nonzero, 946);
  EXPECT_NEAR(max, 0.99892, 1e-5);
  auto support = [&](int band) {
    std::vector<int> bins;
    for (int k = 0; k < 513; ++k)
      if (w[size_t(k * 128 + band)] != 0.0) bins.push_back(k);
    return std::make_pair(bins.front(), bins.back());
  };
  EXPECT_EQ(support(0), std::make_pair(9, 9));
  EXPECT_EQ(support(1), std::make_pair(9, 10));
  EXPECT_EQ(support(64), std::make_pair(122, 127));
  EXPECT_EQ(support(127), std::make_pair(468, 486));
}

TEST(Mel, PeriodicHannWindow) {
  MelExtractor m;
  const auto& w = m.window();
  ASSERT_EQ(w.size(), 512u);
  EXPECT_EQ(w[0], 0.0f);
  EXPECT_NEAR(w[256], 1.0f, 1e-7);  // periodic: the peak is at N/2, denominator N (not N - 1)
  EXPECT_NEAR(w[128], 0.5f, 1e-6);
  EXPECT_NEAR(w[511], 0.5 * (1 - std::cos(2 * kPi * 511 / 512)), 1e-7);
}

// Golden set A: recorded with transformers 5.17.0 and google/gemma-3n-E2B-it's preprocessor config.
TEST(Mel, GoldenChirpMatchesReference) {
  const int n = 20837;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) {
    const double t = double(i) / 16000.0;
    x[size_t(i)] = float(0.4 * std::sin(2 * kPi * 220 * t) + 0.2 * std::sin(2 * kPi * (300 + 900 * t) * t) +
                         0.05 * std::sin(2 * kPi * 3100 * t));
  }
  MelExtractor m;
  const MelFeatures f = m.compute(x.data(), n);
  ASSERT_EQ(f.frames, 128);
  ASSERT_EQ(f.bins, 128);
  EXPECT_EQ(std::count(f.valid.begin(), f.valid.end(), 1), 128);
  const Stats s = stats_of(f.values);
  EXPECT_NEAR(s.mean, -6.13652, 2e-4);
  EXPECT_NEAR(s.std, 3.74858, 2e-4);
  EXPECT_NEAR(s.min, -11.51293, 2e-4);
  EXPECT_NEAR(s.max, 4.18331, 2e-4);
  EXPECT_NEAR(f.values[0], -2.2887, 1e-4);
  EXPECT_NEAR(f.values[777], -2.72516, 1e-5);
  EXPECT_NEAR(f.values[4321], -8.1284, 1e-4);  // near the floor: wrong by ~4e-4 with a float32 FFT
}

// Golden set B: transformers' test_modeling_gemma3n.py with feature_size 32.
TEST(Mel, GoldenSineWith32Bins) {
  MelConfig c;
  c.feature_size = 32;
  MelExtractor m(c);
  const int n = 8000;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[size_t(i)] = float(std::sin(2 * kPi * 440 * (double(i) / (n - 1))));
  const MelFeatures f = m.compute(x.data(), n);
  ASSERT_EQ(f.frames, 48);
  ASSERT_EQ(f.bins, 32);
  const float expected[5] = {-5.733152f, -5.337127f, -4.916284f, -4.378989f, -3.7622747f};
  for (int b = 0; b < 5; ++b) EXPECT_NEAR(f.values[size_t(b)], expected[b], 1e-5 + 1e-5 * std::fabs(expected[b]));
}

TEST(Mel, SilenceIsTheLogFloor) {
  MelExtractor m;
  std::vector<float> x(16000, 0.0f);
  const MelFeatures f = m.compute(x.data(), int64_t(x.size()));
  ASSERT_EQ(f.frames, 97);
  for (float v : f.values) EXPECT_FLOAT_EQ(v, float(std::log(1e-5)));
}

TEST(Mel, KilohertzToneStats) {
  MelExtractor m;
  std::vector<float> x(16000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(0.5 * std::sin(2 * kPi * 1000 * double(i) / 16000.0));
  const MelFeatures f = m.compute(x.data(), int64_t(x.size()));
  ASSERT_EQ(f.frames, 97);
  const Stats s = stats_of(f.values);
  EXPECT_NEAR(s.mean, -7.81452, 2e-4);
  EXPECT_NEAR(s.std, 3.37184, 2e-4);
  EXPECT_NEAR(s.max, 3.680955, 2e-4);
  const float* row = f.values.data() + 50 * 128;
  EXPECT_EQ(std::max_element(row, row + 128) - row, 39);
}

TEST(Mel, ShortClipsGiveNoFramesAndLongOnesAreTruncated) {
  MelExtractor m;
  std::vector<float> x(656000, 0.25f);
  EXPECT_EQ(m.compute(x.data(), 512).frames, 0);
  EXPECT_EQ(m.compute(x.data(), 0).frames, 0);
  const MelFeatures one = m.compute(x.data(), 513);
  EXPECT_EQ(one.frames, 1);
  EXPECT_EQ(one.valid, std::vector<uint8_t>{1});
  const MelFeatures longest = m.compute(x.data(), int64_t(x.size()));
  EXPECT_EQ(longest.frames, 2997);
  // Truncation happens before padding: the 41 s clip gives exactly the 30 s clip's features.
  const MelFeatures thirty = m.compute(x.data(), 480000);
  EXPECT_EQ(longest.values, thirty.values);
}

TEST(Mel, FramesStartingInTheAudioAreValid) {
  // One clip alone: every frame starts inside the audio (160 * (frames - 1) < N always holds).
  MelExtractor m;
  for (int64_t n : {513, 640, 2263, 16001, 20837}) {
    std::vector<float> x(size_t(n), 0.1f);
    const MelFeatures f = m.compute(x.data(), n);
    for (int64_t t = 0; t < f.frames; ++t) EXPECT_EQ(f.valid[size_t(t)], (160 * t < n) ? 1 : 0) << n << " " << t;
  }
}

TEST(Mel, NonFiniteSamplesAreRefused) {
  MelExtractor m;
  std::vector<float> x(1000, 0.0f);
  x[321] = std::nanf("");
  try {
    m.compute(x.data(), 1000);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 321"), std::string::npos) << e.what();
  }
}

TEST(Mel, PreprocessorConfigJson) {
  const MelConfig c = MelConfig::from_json(
      R"({"feature_extractor_type": "Gemma3nAudioFeatureExtractor", "feature_size": 128, "sampling_rate": 16000,
          "frame_length_ms": 32.0, "hop_length_ms": 10.0, "min_frequency": 125.0, "max_frequency": 7600.0,
          "preemphasis": 0.97, "preemphasis_htk_flavor": true, "fft_overdrive": true, "dither": 0.0,
          "input_scale_factor": 1.0, "mel_floor": 1e-05, "per_bin_mean": null, "per_bin_stddev": null,
          "padding_value": 0.0, "return_attention_mask": true, "processor_class": "Gemma3nProcessor"})");
  EXPECT_EQ(c.feature_size, 128);
  EXPECT_TRUE(c.per_bin_mean.empty());
  EXPECT_THROW(MelConfig::from_json(R"({"dither": 1e-4})"), Error);
  EXPECT_THROW(MelConfig::from_json(R"({"feature_size": "many"})"), Error);
  EXPECT_THROW(MelConfig::from_json(R"({"per_bin_mean": [1, 2]})"), Error);
  EXPECT_THROW(MelConfig::from_json(R"({"min_frequency": 9000})"), Error);
  EXPECT_THROW(MelConfig::from_json("[1, 2"), Error);
}

TEST(Mel, PerBinNormalisation) {
  MelConfig c;
  c.per_bin_mean.assign(128, 1.0);
  c.per_bin_stddev.assign(128, 2.0);
  MelExtractor plain, normed(c);
  std::vector<float> x(4000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(double(i) * 0.3));
  const MelFeatures a = plain.compute(x.data(), 4000), b = normed.compute(x.data(), 4000);
  for (size_t i = 0; i < a.values.size(); ++i) EXPECT_NEAR(b.values[i], (a.values[i] - 1.0) / 2.0, 1e-6);
}

}  // namespace
}  // namespace g3n::media
