#include "media/mel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace g3n::media {
namespace {

// FFTW's planner is not thread-safe; executing a finished plan on new arrays is.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

struct FftwBuffers {
  double* in;
  fftw_complex* out;
  FftwBuffers(int64_t n, int64_t n_freqs)
      : in(static_cast<double*>(fftw_malloc(sizeof(double) * size_t(n)))),
        out(static_cast<fftw_complex*>(fftw_malloc(sizeof(fftw_complex) * size_t(n_freqs)))) {
    if (!in || !out) {
      fftw_free(in);
      fftw_free(out);
      throw std::bad_alloc();
    }
  }
  ~FftwBuffers() {
    fftw_free(in);
    fftw_free(out);
  }
  FftwBuffers(const FftwBuffers&) = delete;
  FftwBuffers& operator=(const FftwBuffers&) = delete;
};

double hz_to_mel(double f) { return 2595.0 * std::log10(1.0 + f / 700.0); }

}  // namespace

MelConfig MelConfig::from_json(const std::string& json_text) {
  using json = nlohmann::json;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("preprocessor config is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail("preprocessor config: expected a JSON object");
  MelConfig c;
  auto num = [&](const char* key, auto& field) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_number()) fail("preprocessor config: '", key, "' must be a number");
    field = it->template get<std::remove_reference_t<decltype(field)>>();
  };
  auto flag = [&](const char* key, bool& field) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_boolean()) fail("preprocessor config: '", key, "' must be true or false");
    field = it->get<bool>();
  };
  auto list = [&](const char* key, std::vector<double>& field) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_array()) fail("preprocessor config: '", key, "' must be a list of numbers");
    for (const auto& v : *it) {
      if (!v.is_number()) fail("preprocessor config: '", key, "' must be a list of numbers");
      field.push_back(v.get<double>());
    }
  };
  num("sampling_rate", c.sampling_rate);
  num("feature_size", c.feature_size);
  num("frame_length_ms", c.frame_length_ms);
  num("hop_length_ms", c.hop_length_ms);
  num("min_frequency", c.min_frequency);
  num("max_frequency", c.max_frequency);
  num("preemphasis", c.preemphasis);
  flag("preemphasis_htk_flavor", c.preemphasis_htk_flavor);
  flag("fft_overdrive", c.fft_overdrive);
  num("input_scale_factor", c.input_scale_factor);
  num("mel_floor", c.mel_floor);
  list("per_bin_mean", c.per_bin_mean);
  list("per_bin_stddev", c.per_bin_stddev);
  double dither = 0.0, padding_value = 0.0;
  num("dither", dither);
  num("padding_value", padding_value);
  if (dither != 0.0) fail("preprocessor config: dither = ", dither, " is not supported (it adds random noise)");
  if (padding_value != 0.0) fail("preprocessor config: padding_value = ", padding_value, " is not supported (only 0)");
  c.validate();
  return c;
}

void MelConfig::validate() const {
  G3N_CHECK(sampling_rate >= 1000 && sampling_rate <= 384000, "mel config: sampling_rate ", sampling_rate,
            " is outside [1000, 384000]");
  G3N_CHECK(feature_size >= 1 && feature_size <= 1024, "mel config: feature_size ", feature_size,
            " is outside [1, 1024]");
  G3N_CHECK(std::isfinite(frame_length_ms) && std::isfinite(hop_length_ms) && frame_length_ms > 0 &&
                hop_length_ms > 0,
            "mel config: frame_length_ms and hop_length_ms must be positive");
  const double fl = double(sampling_rate) * frame_length_ms / 1000.0;
  const double hl = double(sampling_rate) * hop_length_ms / 1000.0;
  G3N_CHECK(fl >= 2 && fl <= 65536 && hl >= 1 && hl <= 65536, "mel config: frame of ", fl, " samples / hop of ", hl,
            " samples is out of range");
  G3N_CHECK(std::isfinite(min_frequency) && std::isfinite(max_frequency) && min_frequency >= 0 &&
                min_frequency < max_frequency && max_frequency <= double(sampling_rate),
            "mel config: need 0 <= min_frequency < max_frequency <= sampling_rate, got ", min_frequency, " and ",
            max_frequency);
  G3N_CHECK(std::isfinite(preemphasis) && preemphasis >= 0 && preemphasis < 1, "mel config: preemphasis ",
            preemphasis, " is outside [0, 1)");
  G3N_CHECK(std::isfinite(input_scale_factor), "mel config: input_scale_factor must be finite");
  G3N_CHECK(std::isfinite(mel_floor) && mel_floor > 0, "mel config: mel_floor must be positive");
  G3N_CHECK(per_bin_mean.empty() || int64_t(per_bin_mean.size()) == feature_size, "mel config: per_bin_mean has ",
            per_bin_mean.size(), " values, expected feature_size = ", feature_size);
  G3N_CHECK(per_bin_stddev.empty() || int64_t(per_bin_stddev.size()) == feature_size,
            "mel config: per_bin_stddev has ", per_bin_stddev.size(), " values, expected feature_size = ",
            feature_size);
  G3N_CHECK(max_length >= 1 && pad_to_multiple_of >= 1, "mel config: max_length and pad_to_multiple_of must be >= 1");
}

MelExtractor::MelExtractor(MelConfig config) : c_(std::move(config)) {
  c_.validate();
  // int(round(sr * ms / 1000)); Python's round is half-to-even, as nearbyint in the default mode.
  frame_length_ = int64_t(std::nearbyint(double(c_.sampling_rate) * c_.frame_length_ms / 1000.0));
  hop_length_ = int64_t(std::nearbyint(double(c_.sampling_rate) * c_.hop_length_ms / 1000.0));
  fft_length_ = int64_t(1) << int(std::ceil(std::log2(double(frame_length_))));
  if (c_.fft_overdrive) fft_length_ *= 2;
  n_freqs_ = fft_length_ / 2 + 1;

  // Periodic Hann in float32: 0.5 * (1 - cos(2*pi*n / N)) with every operation in float32 (NumPy
  // turns the Python scalars 2*pi and 0.5 into float32 before operating on the float32 arange).
  // The float32 cosine is the correctly rounded one (via double). NumPy's own float32 cos is a SIMD
  // approximation whose last bit depends on the NumPy version and the CPU; near the log floor a
  // 1-ulp change of one window value moves the features by up to ~5e-4 (tests/parity/test_audio.py).
  window_.resize(size_t(frame_length_));
  const float two_pi = float(2.0 * std::numbers::pi);
  for (int64_t n = 0; n < frame_length_; ++n) {
    const float arg = two_pi * float(n) / float(frame_length_);
    const float c = float(std::cos(double(arg)));
    window_[size_t(n)] = 0.5f * (1.0f - c);
  }

  // Reference: create_fb_matrix(n_freqs, f_min, f_max, n_mels, sample_rate, fft_length, norm=None).
  const int64_t B = c_.feature_size;
  const double m_min = hz_to_mel(c_.min_frequency), m_max = hz_to_mel(c_.max_frequency);
  std::vector<double> f_pts(static_cast<size_t>(B + 2));
  const double step = (m_max - m_min) / double(B + 1);  // np.linspace: i * step + start, last = stop
  for (int64_t i = 0; i < B + 2; ++i) {
    const double m = i == B + 1 ? m_max : double(i) * step + m_min;
    f_pts[size_t(i)] = 700.0 * (std::pow(10.0, m / 2595.0) - 1.0);
  }
  filterbank_.assign(size_t(n_freqs_ * B), 0.0);
  band_lo_.assign(size_t(B), n_freqs_);
  band_hi_.assign(size_t(B), 0);
  const float bin_hz = float(double(c_.sampling_rate) / double(fft_length_));
  for (int64_t k = 0; k < n_freqs_; ++k) {
    const double fk = double(float(k) * bin_hz);  // float32 bin frequencies, as the reference
    for (int64_t b = 0; b < B; ++b) {
      const double down = (-1.0 * (f_pts[size_t(b)] - fk)) / (f_pts[size_t(b + 1)] - f_pts[size_t(b)]);
      const double up = (f_pts[size_t(b + 2)] - fk) / (f_pts[size_t(b + 2)] - f_pts[size_t(b + 1)]);
      const double w = std::max(0.0, std::min(down, up));
      filterbank_[size_t(k * B + b)] = w;
      if (w != 0.0) {
        band_lo_[size_t(b)] = std::min(band_lo_[size_t(b)], k);
        band_hi_[size_t(b)] = std::max(band_hi_[size_t(b)], k + 1);
      }
    }
  }

  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  FftwBuffers buf(fft_length_, n_freqs_);
  plan_ = fftw_plan_dft_r2c_1d(int(fft_length_), buf.in, buf.out, FFTW_ESTIMATE);
  if (!plan_) fail("FFTW could not plan a real FFT of length ", fft_length_);
}

MelExtractor::~MelExtractor() {
  if (plan_) {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    fftw_destroy_plan(static_cast<fftw_plan>(plan_));
  }
}

int64_t MelExtractor::num_frames(int64_t n_samples) const {
  const int64_t n = std::clamp<int64_t>(n_samples, 0, c_.max_length);
  const int64_t m = c_.pad_to_multiple_of;
  const int64_t padded = (n + m - 1) / m * m;
  const int64_t window = frame_length_ + 1;  // the reference unfolds frame_length + 1 samples
  return padded < window ? 0 : (padded - window) / hop_length_ + 1;
}

MelFeatures MelExtractor::compute(const float* samples, int64_t n_samples) const {
  G3N_CHECK(n_samples >= 0, "audio: negative sample count");
  for (int64_t i = 0; i < n_samples; ++i)
    if (!std::isfinite(samples[i])) fail("audio: sample ", i, " is not a finite number (", samples[i], ")");

  // Truncate to max_length, then right-pad with zeros to a multiple of pad_to_multiple_of
  // (reference: SequenceFeatureExtractor.pad with truncation=True, padding="longest").
  const int64_t n = std::min(n_samples, c_.max_length);
  const int64_t m = c_.pad_to_multiple_of;
  const int64_t padded = (n + m - 1) / m * m;
  std::vector<float> x(size_t(padded), 0.0f);
  const float scale = float(c_.input_scale_factor);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = c_.input_scale_factor != 1.0 ? samples[i] * scale : samples[i];

  MelFeatures out;
  out.frames = num_frames(n_samples);
  out.bins = c_.feature_size;
  out.values.resize(size_t(out.frames * out.bins));
  out.valid.resize(size_t(out.frames));

  const int64_t FL = frame_length_, B = c_.feature_size;
  const float p = float(c_.preemphasis), first_scale = float(1.0 - c_.preemphasis);
  FftwBuffers buf(fft_length_, n_freqs_);
  std::fill(buf.in, buf.in + fft_length_, 0.0);
  std::vector<float> frame(static_cast<size_t>(FL));
  std::vector<double> mag(static_cast<size_t>(n_freqs_));
  for (int64_t t = 0; t < out.frames; ++t) {
    const float* raw = x.data() + t * hop_length_;  // FL + 1 samples
    // Pre-emphasis within the frame (float32, as the reference's NumPy arithmetic).
    if (c_.preemphasis > 0.0) {
      if (c_.preemphasis_htk_flavor) {
        frame[0] = raw[0] * first_scale;
        for (int64_t j = 1; j < FL; ++j) frame[size_t(j)] = raw[j] - p * raw[j - 1];
      } else {
        for (int64_t j = 0; j < FL; ++j) frame[size_t(j)] = raw[j + 1] - p * raw[j];
      }
    } else {
      for (int64_t j = 0; j < FL; ++j) frame[size_t(j)] = raw[j];
    }
    for (int64_t j = 0; j < FL; ++j) buf.in[j] = double(frame[size_t(j)] * window_[size_t(j)]);

    // |rfft(frame, n = fft_length)| in double; the tail of buf.in stays zero.
    fftw_execute_dft_r2c(static_cast<fftw_plan>(plan_), buf.in, buf.out);
    for (int64_t k = 0; k < n_freqs_; ++k) mag[size_t(k)] = std::hypot(buf.out[k][0], buf.out[k][1]);

    float* row = out.values.data() + t * B;
    for (int64_t b = 0; b < B; ++b) {
      double s = 0.0;
      for (int64_t k = band_lo_[size_t(b)]; k < band_hi_[size_t(b)]; ++k)
        s += mag[size_t(k)] * filterbank_[size_t(k * B + b)];
      double v = std::log(std::max(s, c_.mel_floor));
      if (!c_.per_bin_mean.empty()) v -= c_.per_bin_mean[size_t(b)];
      if (!c_.per_bin_stddev.empty()) v /= c_.per_bin_stddev[size_t(b)];
      row[b] = float(v);
    }
    // Reference: attention_mask[::hop][:frames] -- valid when the frame starts inside the audio.
    out.valid[size_t(t)] = t * hop_length_ < n ? 1 : 0;
  }
  return out;
}

}  // namespace g3n::media
