#include "media/audio.h"

#include <fcntl.h>
#include <sndfile.h>
#include <soxr.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>

#include "base/checked.h"
#include "base/error.h"

namespace g3n::media {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

// Bytes in memory seen through libsndfile's virtual I/O.
struct MemoryStream {
  const uint8_t* data;
  sf_count_t size;
  sf_count_t pos = 0;
};

sf_count_t mem_get_filelen(void* user) { return static_cast<MemoryStream*>(user)->size; }
sf_count_t mem_seek(sf_count_t offset, int whence, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  sf_count_t base = whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->size : 0;
  sf_count_t target;
  if (__builtin_add_overflow(base, offset, &target) || target < 0) return -1;
  m->pos = std::min(target, m->size);
  return m->pos;
}
sf_count_t mem_read(void* ptr, sf_count_t count, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  if (count <= 0) return 0;
  const sf_count_t n = std::min(count, m->size - m->pos);
  std::memcpy(ptr, m->data + m->pos, size_t(n));
  m->pos += n;
  return n;
}
sf_count_t mem_write(const void*, sf_count_t, void*) { return 0; }
sf_count_t mem_tell(void* user) { return static_cast<MemoryStream*>(user)->pos; }

std::string format_name(int format) {
  SF_FORMAT_INFO major{}, sub{};
  major.format = format & SF_FORMAT_TYPEMASK;
  sub.format = format & SF_FORMAT_SUBMASK;
  std::string s = sf_command(nullptr, SFC_GET_FORMAT_INFO, &major, sizeof major) == 0 && major.name
                      ? major.name
                      : "unknown container";
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &sub, sizeof sub) == 0 && sub.name) s += std::string(", ") + sub.name;
  return s;
}

// libsndfile reads a WAV/AIFF whose header promises more sample data than the file holds without
// complaint (it shortens the stream) and says so only in its log, as "data : 838440 (should be
// 83844)". A file like that is truncated or its header lies: refuse it. Streaming writers leave
// the length as 0 or 0xFFFFFFFF ("unknown"); those are accepted.
void check_header_log(SNDFILE* f, const std::string& what) {
  std::string log(16384, '\0');
  sf_command(f, SFC_GET_LOG_INFO, log.data(), int(log.size()));
  log.resize(std::strlen(log.c_str()));
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    const auto first = line.find_first_not_of(' ');
    if (first == std::string::npos) continue;
    const std::string chunk = line.substr(first, 4);
    if (chunk != "data" && chunk != "SSND") continue;
    const auto colon = line.find(':'), should = line.find("(should be ");
    if (colon == std::string::npos || should == std::string::npos) continue;
    const unsigned long long claimed = std::strtoull(line.c_str() + colon + 1, nullptr, 10);
    const unsigned long long actual = std::strtoull(line.c_str() + should + 11, nullptr, 10);
    if (claimed == 0 || claimed == 0xFFFFFFFFull || claimed <= actual) continue;
    fail(what, ": the file is truncated or its header is wrong: the '", chunk, "' chunk claims ", claimed,
         " bytes of samples, the file holds ", actual);
  }
}

DecodedAudio read_all(SNDFILE* f, const SF_INFO& info, const AudioLimits& limits, const std::string& what) {
  G3N_CHECK(info.channels >= 1 && info.channels <= limits.max_channels, what, ": ", info.channels,
            " channels (supported: 1 to ", limits.max_channels, ")");
  G3N_CHECK(info.samplerate >= limits.min_sample_rate && info.samplerate <= limits.max_sample_rate, what,
            ": sample rate ", info.samplerate, " Hz is outside the supported ", limits.min_sample_rate, " to ",
            limits.max_sample_rate, " Hz");
  G3N_CHECK(limits.max_seconds > 0 && limits.max_seconds <= 86400, "audio limits: max_seconds ", limits.max_seconds,
            " is outside (0, 86400]");
  check_header_log(f, what);

  DecodedAudio out;
  out.sample_rate = out.source_sample_rate = info.samplerate;
  out.source_channels = info.channels;
  out.format = format_name(info.format);
  const bool is_mpeg = (info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG;

  // Integer PCM comes out in [-1, 1) (libsndfile's default normalisation); float data as stored.
  const int64_t max_frames = int64_t(std::floor(limits.max_seconds * double(info.samplerate)));
  const int64_t ch = info.channels;
  constexpr int64_t kChunk = 4096;
  std::vector<float> buf(static_cast<size_t>(kChunk * ch));
  int64_t frames = 0;
  while (frames < max_frames) {
    const int64_t want = std::min(kChunk, max_frames - frames);
    const sf_count_t got = sf_readf_float(f, buf.data(), want);
    if (got <= 0) break;
    for (int64_t i = 0; i < int64_t(got); ++i) {
      float s = 0.0f;
      for (int64_t c = 0; c < ch; ++c) {
        const float v = buf[size_t(i * ch + c)];
        if (!std::isfinite(v))
          fail(what, ": sample ", frames + i, " (channel ", c, ") is not a finite number (", v, ")");
        s += v;
      }
      out.samples.push_back(ch == 1 ? s : s / float(ch));  // librosa.to_mono: mean over channels
    }
    frames += got;
  }
  if (sf_error(f) != SF_ERR_NO_ERROR) fail(what, ": cannot decode: ", sf_strerror(f));
  out.source_frames = frames;
  if (frames >= max_frames) {
    out.truncated = sf_readf_float(f, buf.data(), 1) > 0 || info.frames > frames;
  } else if (!is_mpeg && info.frames > frames) {
    // The MP3 length is an estimate for files without a Xing/LAME header; other formats know theirs.
    fail(what, ": the file is truncated: its header promises ", info.frames, " frames, only ", frames,
         " could be decoded");
  }
  G3N_CHECK(frames > 0, what, ": the file contains no audio samples");
  return out;
}

SNDFILE* open_or_fail(SNDFILE* f, const std::string& what) {
  if (!f) fail(what, ": not a readable audio file (", sf_strerror(nullptr), ")");
  return f;
}

}  // namespace

DecodedAudio decode_audio_file(const std::string& path, const AudioLimits& limits) {
  const std::string what = "audio file " + path;
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };
  // O_NONBLOCK: a FIFO must not hang the open; only regular files are read.
  const Fd fd{::open(path.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)};
  if (fd.fd < 0) fail(what, ": cannot open: ", std::strerror(errno));
  struct stat st{};
  if (::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode)) fail(what, ": not a regular file");
  if (st.st_size == 0) fail(what, ": the file is empty");
  if (uint64_t(st.st_size) > limits.max_file_bytes)
    fail(what, ": ", st.st_size, " bytes is larger than the ", limits.max_file_bytes, "-byte limit");
  ::fcntl(fd.fd, F_SETFL, ::fcntl(fd.fd, F_GETFL) & ~O_NONBLOCK);
  SF_INFO info{};
  // The descriptor stays ours (closed by Fd after sf_close), whether or not the open succeeds.
  SndfilePtr f(open_or_fail(sf_open_fd(fd.fd, SFM_READ, &info, /*close_desc=*/SF_FALSE), what));
  return read_all(f.get(), info, limits, what);
}

DecodedAudio decode_audio_memory(const void* data, size_t size, const AudioLimits& limits, const std::string& what) {
  G3N_CHECK(size > 0, what, ": no bytes");
  G3N_CHECK(uint64_t(size) <= limits.max_file_bytes, what, ": ", size, " bytes is larger than the ",
            limits.max_file_bytes, "-byte limit");
  MemoryStream m{static_cast<const uint8_t*>(data), sf_count_t(size)};
  SF_VIRTUAL_IO io{mem_get_filelen, mem_seek, mem_read, mem_write, mem_tell};
  SF_INFO info{};
  SndfilePtr f(open_or_fail(sf_open_virtual(&io, SFM_READ, &info, &m), what));
  return read_all(f.get(), info, limits, what);
}

std::vector<float> resample(const float* x, int64_t n, int64_t from_rate, int64_t to_rate) {
  G3N_CHECK(from_rate > 0 && to_rate > 0 && n >= 0, "resample: bad arguments (", n, " samples, ", from_rate,
            " Hz -> ", to_rate, " Hz)");
  if (from_rate == to_rate) return std::vector<float>(x, x + n);
  // ceil(n * to / from) in exact integer arithmetic.
  const uint64_t num = checked_mul(uint64_t(n), uint64_t(to_rate), "resampled length");
  const size_t out_len = size_t((num + uint64_t(from_rate) - 1) / uint64_t(from_rate));
  std::vector<float> y(out_len, 0.0f);
  if (n == 0) return y;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);  // threads come from the caller, not soxr
  size_t done = 0;
  const soxr_error_t err = soxr_oneshot(double(from_rate), double(to_rate), 1, x, size_t(n), nullptr, y.data(),
                                        out_len, &done, &io, &quality, &runtime);
  if (err) fail("resampling ", from_rate, " Hz -> ", to_rate, " Hz failed: ", err);
  return y;  // samples past `done` stay 0
}

namespace {
DecodedAudio to_rate(DecodedAudio a, int64_t rate) {
  if (a.sample_rate != rate) {
    a.samples = resample(a.samples.data(), int64_t(a.samples.size()), a.sample_rate, rate);
    a.sample_rate = rate;
  }
  return a;
}
}  // namespace

DecodedAudio load_audio(const std::string& path, int64_t rate, const AudioLimits& limits) {
  return to_rate(decode_audio_file(path, limits), rate);
}

DecodedAudio load_audio_memory(const void* data, size_t size, int64_t rate, const AudioLimits& limits,
                               const std::string& what) {
  return to_rate(decode_audio_memory(data, size, limits, what), rate);
}

}  // namespace g3n::media
