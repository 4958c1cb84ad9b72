// Untrusted audio in: decoding (WAV 8/16/24/32-bit PCM and float, FLAC, OGG/Vorbis and Opus, MP3,
// AIFF, ... through libsndfile), downmixing to mono and resampling (libsoxr, HQ) to the 16 kHz the
// Gemma 3n feature extractor expects.
//
// Everything read from the file is checked: channel count, sample rate, length, non-finite float
// samples, and headers that promise more data than the file holds (a truncated or lying WAV/AIFF)
// are refused with a g3n::Error naming the file and the problem. Decoding stops after
// AudioLimits::max_seconds (the model reads 30 s), so a long or hostile file costs bounded memory.
//
// Downmix and resampling follow what transformers' users get from librosa.load(sr=16000): the mean
// of the channels, then soxr "HQ", output length ceil(n * 16000 / rate).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace g3n::media {

struct AudioLimits {
  int max_channels = 8;
  int64_t min_sample_rate = 4000;
  int64_t max_sample_rate = 768000;
  // Seconds of audio decoded; the rest of the file is not read. 30 s are used by the model, the
  // extra second keeps the resampler's look-ahead identical to resampling the whole file.
  double max_seconds = 31.0;
  uint64_t max_file_bytes = uint64_t(2) << 30;  // 2 GiB
};

struct DecodedAudio {
  std::vector<float> samples;   // mono, at sample_rate, nominally in [-1, 1]
  int64_t sample_rate = 0;
  int source_channels = 0;
  int64_t source_sample_rate = 0;
  int64_t source_frames = 0;    // frames decoded from the file (before resampling)
  bool truncated = false;       // the file holds more than max_seconds; the rest was not read
  std::string format;           // e.g. "WAV (Microsoft), Signed 16 bit PCM"
};

// Decodes a whole file (up to limits.max_seconds) to mono at its own rate.
DecodedAudio decode_audio_file(const std::string& path, const AudioLimits& limits = {});
// The same from bytes in memory (a request body); `what` names the input in errors.
DecodedAudio decode_audio_memory(const void* data, size_t size, const AudioLimits& limits = {},
                                 const std::string& what = "audio input");

// Resamples mono audio with libsoxr (HQ); returns ceil(n * to_rate / from_rate) samples (zero-padded
// at the end if the resampler delivers fewer, as librosa's fix_length does).
std::vector<float> resample(const float* x, int64_t n, int64_t from_rate, int64_t to_rate);

// decode_audio_file + resample to `rate` (16 kHz for Gemma 3n). Refuses files with no samples.
DecodedAudio load_audio(const std::string& path, int64_t rate = 16000, const AudioLimits& limits = {});
DecodedAudio load_audio_memory(const void* data, size_t size, int64_t rate = 16000, const AudioLimits& limits = {},
                               const std::string& what = "audio input");

}  // namespace g3n::media
