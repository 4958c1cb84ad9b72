// Long audio: Gemma 3n's audio encoder reads at most 30 s per clip (the feature extractor truncates).
// A longer recording is cut into windows of at most `max_window_seconds`, each cut placed at the
// quietest point of the last part of the window (so no word is cut in half, as far as loudness tells),
// and the windows are transcribed or embedded one after the other.
//
// Policy (split_long_audio):
//  - A clip of at most max_window_seconds is one window.
//  - Otherwise, from the start of the current window s, the cut is searched in
//    [s + min_window_seconds, s + max_window_seconds]: the 10 ms-hop energy (RMS of 25 ms frames) is
//    smoothed over `quiet_seconds` (200 ms) and the centre of the quietest stretch is the cut. The next
//    window starts at the cut. Ties go to the latest candidate (longer windows, fewer of them).
//  - The last window takes whatever remains; a remainder shorter than 0.5 s is merged into the window
//    before it when that stays within max_window_seconds, else kept.
#pragma once
#include <cstdint>
#include <vector>

namespace g3n::media {

struct AudioSplitOptions {
  double max_window_seconds = 30.0;
  double min_window_seconds = 20.0;  // cuts are looked for only after this much of a window
  double quiet_seconds = 0.2;        // length of the quiet stretch a cut is centred in
};

struct AudioWindow {
  int64_t begin = 0, end = 0;  // samples [begin, end)
};

// Windows covering [0, n) in order, each at most max_window_seconds long. Throws g3n::Error for bad options.
std::vector<AudioWindow> split_long_audio(const float* samples, int64_t n, int64_t sample_rate,
                                          const AudioSplitOptions& options = {});

}  // namespace g3n::media
