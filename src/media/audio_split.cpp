#include "media/audio_split.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace g3n::media {

std::vector<AudioWindow> split_long_audio(const float* samples, int64_t n, int64_t sample_rate,
                                          const AudioSplitOptions& o) {
  G3N_CHECK(sample_rate > 0, "split_long_audio: sample rate must be positive");
  G3N_CHECK(o.max_window_seconds >= 1.0 && o.min_window_seconds > 0 && o.min_window_seconds < o.max_window_seconds &&
                o.quiet_seconds > 0 && o.quiet_seconds < o.min_window_seconds,
            "split_long_audio: need 0 < quiet_seconds < min_window_seconds < max_window_seconds (>= 1 s)");
  std::vector<AudioWindow> out;
  if (n <= 0) return out;
  const auto max_len = int64_t(o.max_window_seconds * double(sample_rate));
  const auto min_len = int64_t(o.min_window_seconds * double(sample_rate));
  if (n <= max_len) return {{0, n}};

  // Energy of 25 ms frames every 10 ms, then a running mean over quiet_seconds.
  const int64_t hop = std::max<int64_t>(1, sample_rate / 100);
  const int64_t frame = std::max<int64_t>(hop, sample_rate / 40);
  const int64_t frames = (n + hop - 1) / hop;
  std::vector<double> energy(size_t(frames), 0.0);
  for (int64_t f = 0; f < frames; ++f) {
    const int64_t b = f * hop, e = std::min(n, b + frame);
    double s = 0;
    for (int64_t i = b; i < e; ++i) s += double(samples[i]) * double(samples[i]);
    energy[size_t(f)] = e > b ? s / double(e - b) : 0.0;
  }
  const int64_t w = std::max<int64_t>(1, int64_t(o.quiet_seconds * 100.0));
  std::vector<double> prefix(size_t(frames) + 1, 0.0);
  for (int64_t f = 0; f < frames; ++f) prefix[size_t(f) + 1] = prefix[size_t(f)] + energy[size_t(f)];
  auto smoothed = [&](int64_t centre) {  // mean energy of the w frames centred on `centre`
    const int64_t b = std::clamp<int64_t>(centre - w / 2, 0, frames), e = std::clamp<int64_t>(b + w, 0, frames);
    return e > b ? (prefix[size_t(e)] - prefix[size_t(b)]) / double(e - b) : 0.0;
  };

  int64_t start = 0;
  while (n - start > max_len) {
    const int64_t lo = (start + min_len) / hop, hi = (start + max_len) / hop;
    int64_t best = hi;
    double best_e = INFINITY;
    for (int64_t f = hi; f >= lo; --f) {
      const double e = smoothed(f);
      if (e < best_e) best_e = e, best = f;
    }
    const int64_t cut = std::clamp<int64_t>(best * hop, start + 1, start + max_len);
    out.push_back({start, cut});
    start = cut;
  }
  const int64_t tail = n - start;
  if (tail < sample_rate / 2 && !out.empty() && n - out.back().begin <= max_len) out.back().end = n;
  else out.push_back({start, n});
  return out;
}

}  // namespace g3n::media
