// Gemma 3n's audio front end: 16 kHz mono samples -> log-mel features [frames, 128], exactly as
// transformers' Gemma3nAudioFeatureExtractor (feature_extraction_gemma3n.py) computes them for one
// clip: truncate to 30 s, right-pad with zeros to a multiple of 128 samples, frames of 512 (+1)
// samples every 160, HTK pre-emphasis inside each frame, periodic Hann window, 1024-point real FFT,
// magnitude, 128 HTK-mel triangles between 125 and 7600 Hz (no area normalisation), ln(max(., 1e-5)).
//
// Precision: the framing, pre-emphasis and window are float32 as in the reference; the FFT, the
// magnitudes, the mel product and the log are double (the reference's float64 path: NumPy 1.x
// computes rfft in float64; a float32 FFT is off by up to ~0.1 in bands near the floor), then the
// result is rounded to float32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g3n::media {

// The extractor's parameters; the defaults are the class defaults, which are what the released
// checkpoints' preprocessor_config.json holds.
struct MelConfig {
  int64_t sampling_rate = 16000;
  int64_t feature_size = 128;      // mel bins
  double frame_length_ms = 32.0;   // -> 512 samples
  double hop_length_ms = 10.0;     // -> 160 samples
  double min_frequency = 125.0;
  double max_frequency = 7600.0;
  double preemphasis = 0.97;
  bool preemphasis_htk_flavor = true;
  bool fft_overdrive = true;       // FFT length = 2 * next power of two of the frame length
  double input_scale_factor = 1.0;
  double mel_floor = 1e-5;
  std::vector<double> per_bin_mean, per_bin_stddev;  // empty = none (the shipped config)
  int64_t max_length = 480000;     // samples kept (30 s); longer clips are truncated
  int64_t pad_to_multiple_of = 128;

  // Reads a preprocessor_config.json text (unknown keys ignored, missing keys keep the defaults).
  // Throws g3n::Error naming a field that is out of range or of the wrong type. Dither is refused:
  // it is random by design, so no output could equal the reference.
  static MelConfig from_json(const std::string& json_text);
  void validate() const;
};

struct MelFeatures {
  int64_t frames = 0;
  int64_t bins = 0;
  std::vector<float> values;  // [frames, bins]
  // input_features_mask: true where the frame's first sample lies in the real (unpadded) audio.
  // For one clip every frame is valid; kept because the encoder takes the reference's mask.
  std::vector<uint8_t> valid;  // [frames]
};

class MelExtractor {
 public:
  explicit MelExtractor(MelConfig config = {});
  ~MelExtractor();
  MelExtractor(const MelExtractor&) = delete;
  MelExtractor& operator=(const MelExtractor&) = delete;

  const MelConfig& config() const { return c_; }
  int64_t frame_length() const { return frame_length_; }  // 512
  int64_t hop_length() const { return hop_length_; }      // 160
  int64_t fft_length() const { return fft_length_; }      // 1024
  // Filterbank W [fft_length/2 + 1, bins] (row-major), as create_fb_matrix builds it, in double.
  const std::vector<double>& filterbank() const { return filterbank_; }
  const std::vector<float>& window() const { return window_; }

  // Frames produced for n samples: the reference pads to a multiple of 128 (after truncation) and
  // frames with a window of frame_length + 1 samples, so clips of <= 512 samples give 0 frames.
  int64_t num_frames(int64_t n_samples) const;

  // Features of one clip of mono samples at sampling_rate (floats, nominally in [-1, 1]).
  // Non-finite samples are refused with a g3n::Error.
  MelFeatures compute(const float* samples, int64_t n) const;

 private:
  MelConfig c_;
  int64_t frame_length_ = 0, hop_length_ = 0, fft_length_ = 0, n_freqs_ = 0;
  std::vector<float> window_;        // [frame_length] periodic Hann, float32 as the reference
  std::vector<double> filterbank_;   // [n_freqs, bins]
  std::vector<int64_t> band_lo_, band_hi_;  // nonzero bin range [lo, hi) of each band
  void* plan_ = nullptr;             // fftw_plan (real -> complex, double)
};

}  // namespace g3n::media
