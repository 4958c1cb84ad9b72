#include "media/video.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>

#include "base/checked.h"
#include "base/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}
#pragma GCC diagnostic pop

namespace g3n::media {
namespace {

// ---- FFmpeg's messages ---------------------------------------------------------------------------
// FFmpeg reports details (e.g. "moov atom not found") through its log. They are not printed: the last
// error-level line of this thread is kept and quoted in the g3n::Error instead. Demuxers say that a
// file was cut short only as a warning ("File ended prematurely", "partial file"): that is kept too.
thread_local std::string t_last_log;
thread_local std::string t_truncation;

void log_callback(void* avcl, int level, const char* fmt, va_list vl) {
  if (level > AV_LOG_WARNING) return;
  char line[512];
  int print_prefix = 0;
  av_log_format_line2(avcl, level, fmt, vl, line, int(sizeof line), &print_prefix);
  std::string s = line;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty()) return;
  if (s.find("ended prematurely") != std::string::npos || s.find("partial file") != std::string::npos ||
      s.find("runcated") != std::string::npos)
    t_truncation = s;
  if (level <= AV_LOG_ERROR) t_last_log = s;
}

void install_log_callback() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_callback(log_callback); });
}

std::string av_error(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, buf, sizeof buf);
  std::string s = buf;
  if (!t_last_log.empty()) s += "; FFmpeg: " + t_last_log;
  return s;
}

// ---- The file, through our own I/O callbacks -----------------------------------------------------
// FFmpeg never sees a path: it cannot open another file, a device or a URL on the file's behalf.
struct FileSource {
  int fd = -1;
  int64_t size = 0, pos = 0;
  ~FileSource() {
    if (fd >= 0) ::close(fd);
  }
};

int read_cb(void* opaque, uint8_t* buf, int n) {
  auto* f = static_cast<FileSource*>(opaque);
  if (n <= 0) return 0;
  if (f->pos >= f->size) return AVERROR_EOF;
  const int64_t want = std::min<int64_t>(n, f->size - f->pos);
  ssize_t got;
  do got = ::pread(f->fd, buf, size_t(want), off_t(f->pos));
  while (got < 0 && errno == EINTR);
  if (got < 0) return AVERROR(EIO);
  if (got == 0) return AVERROR_EOF;  // the file shrank under us
  f->pos += got;
  return int(got);
}

int64_t seek_cb(void* opaque, int64_t offset, int whence) {
  auto* f = static_cast<FileSource*>(opaque);
  if (whence & AVSEEK_SIZE) return f->size;
  whence &= ~AVSEEK_FORCE;
  int64_t base = whence == SEEK_CUR ? f->pos : whence == SEEK_END ? f->size : whence == SEEK_SET ? 0 : -1;
  int64_t target;
  if (base < 0 || __builtin_add_overflow(base, offset, &target) || target < 0) return AVERROR(EINVAL);
  // Past the end: the container points at data the file does not have (truncated).
  if (target > f->size) return AVERROR(EINVAL);
  f->pos = target;
  return target;
}

int deny_io_open(AVFormatContext*, AVIOContext**, const char* url, int, AVDictionary**) {
  t_last_log = std::string("refused to open \"") + (url ? url : "") + "\" referenced by the file";
  return AVERROR(EPERM);
}

// Demuxers g3n lets FFmpeg use: video containers and raw video streams. Not: playlists (hls, concat),
// image sequences (image2), subtitles, audio-only formats, the tty text "demuxer", devices.
constexpr const char* kVideoFormats[] = {"mov", "mp4", "matroska", "webm", "avi", "mpeg", "mpegts",
                                         "mpegvideo", "flv", "ogg", "asf", "nut", "ivf", "gif",
                                         "h264", "hevc", "m4v", "mjpeg", "yuv4mpegpipe", "dv", "obu"};

bool is_video_format(const AVInputFormat* f) {
  // f->name is a comma-separated list ("mov,mp4,m4a,3gp,3g2,mj2"): one accepted name is enough.
  const std::string names = f->name ? f->name : "";
  size_t at = 0;
  while (at <= names.size()) {
    const size_t comma = std::min(names.find(',', at), names.size());
    const std::string one = names.substr(at, comma - at);
    for (const char* ok : kVideoFormats)
      if (one == ok) return true;
    at = comma + 1;
  }
  return false;
}

std::string first_name(const char* names) {
  std::string s = names ? names : "?";
  return s.substr(0, s.find(','));
}

struct Input {
  FileSource file;
  AVIOContext* io = nullptr;
  AVFormatContext* fmt = nullptr;
  AVCodecContext* dec = nullptr;
  int stream = -1;

  Input() = default;
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  ~Input() {
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);  // with AVFMT_FLAG_CUSTOM_IO, leaves `io` to us
    if (io) av_freep(&io->buffer);
    avio_context_free(&io);
  }
};

struct FrameDeleter {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
struct SwsDeleter {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

std::string printable_start(const uint8_t* d, size_t n) {
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
    const char c = char(d[i]);
    if (c >= 32 && c < 127) {
      s += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(d[i]));
      s += buf;
    }
  }
  return s;
}

// Opens the file, recognises the container (only video containers), reads the stream headers and opens
// the decoder of the best video stream.
void open_input(Input& in, const std::string& path, const VideoLimits& limits) {
  in.file.fd = ::open(path.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);  // a FIFO must not hang
  if (in.file.fd < 0) fail("cannot open video file ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(in.file.fd, &st) != 0 || !S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  in.file.size = int64_t(st.st_size);
  G3N_CHECK(in.file.size > 0, path, ": empty file (0 bytes), not a video");
  G3N_CHECK(uint64_t(in.file.size) <= limits.max_file_bytes, path, ": ", in.file.size,
            " bytes, above the video file limit of ", limits.max_file_bytes);

  constexpr int kIoBuffer = 1 << 16;
  auto* buf = static_cast<uint8_t*>(av_malloc(kIoBuffer));
  if (!buf) fail(path, ": out of memory");
  in.io = avio_alloc_context(buf, kIoBuffer, 0, &in.file, read_cb, nullptr, seek_cb);
  if (!in.io) {
    av_free(buf);
    fail(path, ": out of memory");
  }

  const AVInputFormat* ifmt = nullptr;
  t_last_log.clear();
  t_truncation.clear();
  int r = av_probe_input_buffer2(in.io, &ifmt, "", nullptr, 0, 0);
  if (r < 0 || !ifmt) {
    uint8_t head[8] = {};
    const ssize_t got = ::pread(in.file.fd, head, sizeof head, 0);
    fail(path, ": not a video file FFmpeg recognises (the file starts with \"",
         printable_start(head, got > 0 ? size_t(got) : 0), "\")");
  }
  if (!is_video_format(ifmt))
    fail(path, ": a ", ifmt->long_name ? ifmt->long_name : ifmt->name, " file (FFmpeg format \"", ifmt->name,
         "\"), not a video container (MP4/MOV, Matroska/WebM, AVI, MPEG, FLV, Ogg, ...)");

  in.fmt = avformat_alloc_context();
  if (!in.fmt) fail(path, ": out of memory");
  in.fmt->pb = in.io;
  in.fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
  in.fmt->io_open = deny_io_open;
  AVDictionary* opts = nullptr;
  av_dict_set(&opts, "protocol_whitelist", "none", 0);
  r = avformat_open_input(&in.fmt, "", ifmt, &opts);  // frees in.fmt on failure
  av_dict_free(&opts);
  const std::string container = first_name(ifmt->name);
  if (r < 0) fail(path, ": truncated or corrupt ", container, " file (", av_error(r), ")");
  // Reading the stream parameters may decode a few frames: with the same pixel cap as our decoder.
  std::vector<AVDictionary*> stream_opts(in.fmt->nb_streams, nullptr);
  for (AVDictionary*& d : stream_opts) av_dict_set_int(&d, "max_pixels", limits.max_pixels, 0);
  r = avformat_find_stream_info(in.fmt, stream_opts.empty() ? nullptr : stream_opts.data());
  for (AVDictionary*& d : stream_opts) av_dict_free(&d);
  if (r < 0) fail(path, ": truncated or corrupt ", container, " file (", av_error(r), ")");

  // The best video stream that is a moving picture (not an MP3's or M4A's attached cover picture).
  const AVCodec* codec = nullptr;
  r = av_find_best_stream(in.fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  if (r == AVERROR_STREAM_NOT_FOUND || (r >= 0 && (in.fmt->streams[r]->disposition & AV_DISPOSITION_ATTACHED_PIC)))
    fail(path, ": no video stream in this ", container, " file (audio only, or only a cover picture)");
  if (r == AVERROR_DECODER_NOT_FOUND || (r >= 0 && !codec)) {
    int any = -1;
    for (unsigned i = 0; i < in.fmt->nb_streams; ++i)
      if (in.fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) any = int(i);
    const char* name = any >= 0 ? avcodec_get_name(in.fmt->streams[any]->codecpar->codec_id) : "?";
    fail(path, ": the video is coded as ", name, ", which this FFmpeg build cannot decode");
  }
  if (r < 0) fail(path, ": cannot select a video stream (", av_error(r), ")");
  in.stream = r;
  AVStream* vs = in.fmt->streams[in.stream];
  for (unsigned i = 0; i < in.fmt->nb_streams; ++i)
    if (int(i) != in.stream) in.fmt->streams[i]->discard = AVDISCARD_ALL;  // demux only what we decode

  const int64_t w = vs->codecpar->width, h = vs->codecpar->height;
  G3N_CHECK(w <= limits.max_side && h <= limits.max_side && w >= 0 && h >= 0 &&
                checked_mul(uint64_t(w), uint64_t(h), "frame size") <= uint64_t(limits.max_pixels),
            path, ": video frames of ", w, "x", h, " pixels are above the limit (", limits.max_side,
            " pixels per side, ", limits.max_pixels, " pixels in all)");
  G3N_CHECK(vs->time_base.num > 0 && vs->time_base.den > 0, path, ": video stream without a valid time base");

  in.dec = avcodec_alloc_context3(codec);
  if (!in.dec) fail(path, ": out of memory");
  r = avcodec_parameters_to_context(in.dec, vs->codecpar);
  if (r < 0) fail(path, ": bad ", codec->name, " stream parameters (", av_error(r), ")");
  in.dec->pkt_timebase = vs->time_base;
  in.dec->max_pixels = limits.max_pixels;  // the decoder refuses larger frames before allocating them
  in.dec->thread_count = 0;                // FFmpeg picks (frame and slice threads)
  r = avcodec_open2(in.dec, codec, nullptr);
  if (r < 0) fail(path, ": cannot open the ", codec->name, " decoder (", av_error(r), ")");
}

// ---- Display matrix ------------------------------------------------------------------------------
// How pixel (x, y) of the output reads the decoded frame, FFmpeg's `transpose` / `hflip` / `vflip`.
enum class Turn { none, hflip, vflip, rot180, clock, cclock, clock_flip, cclock_flip };

const int32_t* display_matrix(const AVStream* st) {
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 31, 102)
  const AVPacketSideData* sd = av_packet_side_data_get(st->codecpar->coded_side_data,
                                                       st->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
  return sd && sd->size >= 9 * sizeof(int32_t) ? reinterpret_cast<const int32_t*>(sd->data) : nullptr;
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  size_t size = 0;
  const uint8_t* p = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
#pragma GCC diagnostic pop
  return p && size >= 9 * sizeof(int32_t) ? reinterpret_cast<const int32_t*>(p) : nullptr;
#endif
}

// fftools: get_rotation() and the filters ffmpeg inserts for it (configure_input_video_filter).
Turn turn_of(const int32_t* m) {
  if (!m) return Turn::none;
  const double r = av_display_rotation_get(m);
  if (!std::isfinite(r)) return Turn::none;
  double theta = -std::round(r);
  theta -= 360 * std::floor(theta / 360 + 0.9 / 360);
  if (std::fabs(theta - 90) < 1.0) return m[3] > 0 ? Turn::cclock_flip : Turn::clock;
  if (std::fabs(theta - 180) < 1.0) {
    const bool h = m[0] < 0, v = m[4] < 0;
    return h && v ? Turn::rot180 : h ? Turn::hflip : v ? Turn::vflip : Turn::none;
  }
  if (std::fabs(theta - 270) < 1.0) return m[3] < 0 ? Turn::clock_flip : Turn::cclock;
  if (std::fabs(theta) < 1.0) return m[4] < 0 ? Turn::vflip : Turn::none;
  return Turn::none;  // not a multiple of 90 degrees: left as decoded
}

RgbImage apply_turn(RgbImage img, Turn t) {
  if (t == Turn::none) return img;
  const int64_t W = img.width, H = img.height;
  const bool swap = t == Turn::clock || t == Turn::cclock || t == Turn::clock_flip || t == Turn::cclock_flip;
  RgbImage out = img;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x) {
      int64_t sx = x, sy = y;  // the decoded pixel (sx, sy) that lands on (x, y)
      switch (t) {
        case Turn::none: break;
        case Turn::hflip: sx = W - 1 - x; break;
        case Turn::vflip: sy = H - 1 - y; break;
        case Turn::rot180: sx = W - 1 - x, sy = H - 1 - y; break;
        case Turn::clock: sx = y, sy = H - 1 - x; break;
        case Turn::cclock: sx = W - 1 - y, sy = x; break;
        case Turn::clock_flip: sx = W - 1 - y, sy = H - 1 - x; break;
        case Turn::cclock_flip: sx = y, sy = x; break;
      }
      std::memcpy(&out.rgb[size_t((y * out.width + x) * 3)], &img.rgb[size_t((sy * W + sx) * 3)], 3);
    }
  return out;
}

// ---- Pixels --------------------------------------------------------------------------------------
bool full_range(const AVFrame* f) {
  if (f->color_range == AVCOL_RANGE_JPEG) return true;
  switch (f->format) {
    case AV_PIX_FMT_YUVJ420P:
    case AV_PIX_FMT_YUVJ422P:
    case AV_PIX_FMT_YUVJ444P:
    case AV_PIX_FMT_YUVJ440P:
    case AV_PIX_FMT_YUVJ411P:
      return true;
    default:
      return false;
  }
}

// ---- Decoding ------------------------------------------------------------------------------------
// Seek when the next target is further ahead than this: decoding in order is cheaper for shorter gaps.
constexpr double kSeekAheadSeconds = 5.0;

class Sampler {
 public:
  Sampler(Input& in, const std::string& path, std::vector<double> targets, const VideoLimits& limits)
      : in_(in), path_(path), targets_(std::move(targets)), limits_(limits) {
    AVStream* vs = in_.fmt->streams[in_.stream];
    tb_ = av_q2d(vs->time_base);
    start_ = vs->start_time != AV_NOPTS_VALUE ? vs->start_time : 0;
    const AVRational rate = av_guess_frame_rate(in_.fmt, vs, nullptr);
    frame_step_ = rate.num > 0 && rate.den > 0 ? av_q2d(av_inv_q(rate)) : 1.0 / 25;
    turn_ = turn_of(display_matrix(vs));
    prev_.reset(av_frame_alloc());
    if (!prev_) fail(path_, ": out of memory");
  }

  void run(VideoFrames& out) {
    out_ = &out;
    PacketPtr pkt(av_packet_alloc());
    FramePtr frame(av_frame_alloc());
    if (!pkt || !frame) fail(path_, ": out of memory");
    // Takes every frame the decoder has ready; true when feeding it should stop for now (a seek was
    // requested, or every target is settled).
    auto drain = [&]() -> bool {
      int errors = 0;
      while (true) {
        const int r = avcodec_receive_frame(in_.dec, frame.get());
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return false;
        if (r < 0) {  // a frame that failed (frame threads report it here): the next ones may not
          note_error(r);
          if (++errors > 16) return false;
          continue;
        }
        const bool seek = on_frame(frame.get());
        av_frame_unref(frame.get());
        if (seek || next_ >= targets_.size()) return true;
      }
    };
    int64_t packets = 0;
    while (next_ < targets_.size()) {
      t_last_log.clear();
      int r = av_read_frame(in_.fmt, pkt.get());
      if (r == AVERROR_EOF) {
        seek_enabled_ = false;  // every remaining frame is in the decoder now
        // The file ends inside a packet or a container element: cut short (a partial download, a copy
        // interrupted). The frames before the cut would decode, but the targets after it would silently
        // get the last frame, so this is an error, as a truncated image is.
        if (!t_truncation.empty() || last_packet_corrupt_)
          fail(path_, ": truncated video file: it ends before the data its headers announce (FFmpeg: ",
               t_truncation.empty() ? "last packet cut short" : t_truncation, ")");
        if (avcodec_send_packet(in_.dec, nullptr) >= 0) drain();
        break;
      }
      if (r < 0)
        fail(path_, ": truncated or corrupt video file (reading packet ", packets + 1, ": ", av_error(r), ")");
      G3N_CHECK(++packets <= limits_.max_packets, path_, ": more than ", limits_.max_packets,
                " packets: above the demux work limit");
      if (pkt->stream_index != in_.stream) {
        av_packet_unref(pkt.get());
        continue;
      }
      last_packet_corrupt_ = (pkt->flags & AV_PKT_FLAG_CORRUPT) != 0;
      r = avcodec_send_packet(in_.dec, pkt.get());
      bool stop = false;
      if (r == AVERROR(EAGAIN)) {  // output left from a failed frame: take it, then the packet
        stop = drain();
        r = stop ? 0 : avcodec_send_packet(in_.dec, pkt.get());
      }
      av_packet_unref(pkt.get());
      if (r < 0) note_error(r);  // a damaged packet: skipped, as FFmpeg's own tools do
      else if (!stop) drain();
      if (seek_pending_) start_seek();
    }
    // Targets after the last frame take the last frame.
    if (next_ < targets_.size() && have_prev_) emit(prev_.get(), prev_ts_);
    if (out.frames.empty()) {
      if (bad_packets_ > 0)
        fail(path_, ": no frame of the video could be decoded (", bad_packets_, " damaged packets; first: ",
             first_error_, ")");
      fail(path_, ": the video stream has no frames (zero-length video)");
    }
  }

 private:
  void note_error(int err) {
    ++bad_packets_;
    if (first_error_.empty()) first_error_ = av_error(err);
  }

  double time_of(const AVFrame* f) {
    const int64_t pts = f->best_effort_timestamp;
    int64_t rel;
    if (pts == AV_NOPTS_VALUE || __builtin_sub_overflow(pts, start_, &rel)) {
      seek_enabled_ = false;  // times counted from frame to frame cannot survive a seek
      return have_prev_ ? prev_ts_ + frame_step_ : 0.0;  // no timestamp: the next frame slot
    }
    return double(rel) * tb_;
  }

  // Decides, for one decoded frame, which targets are settled; returns true to request a seek.
  bool on_frame(AVFrame* f) {
    ++decoded_;
    decoded_pixels_ += int64_t(f->width) * int64_t(f->height);
    G3N_CHECK(decoded_ <= limits_.max_decoded_frames && decoded_pixels_ <= limits_.max_decoded_pixels, path_,
              ": above the decode work limit (", decoded_, " frames, ", decoded_pixels_,
              " pixels decoded; limits ", limits_.max_decoded_frames, " frames, ", limits_.max_decoded_pixels,
              " pixels)");
    const double ts = time_of(f);
    if (after_seek_) {
      after_seek_ = false;
      if (ts > targets_[next_] && !(have_prev_ && ts <= prev_ts_)) {
        // Landed past the target (an index that lies): frames between were skipped. Go back to where we
        // were and decode in order from there on.
        seek_enabled_ = false;
        seek_to(prev_ts_);
        return true;
      }
      if (have_prev_ && ts <= prev_ts_) seek_enabled_ = false;  // landed behind us: seeking does not help here
    }
    while (next_ < targets_.size() && ts >= targets_[next_]) {
      const double t = targets_[next_];
      if (have_prev_ && t - prev_ts_ <= ts - t) emit(prev_.get(), prev_ts_);
      else emit(f, ts);
      ++next_;
    }
    av_frame_unref(prev_.get());
    av_frame_move_ref(prev_.get(), f);
    prev_ts_ = ts;
    have_prev_ = true;
    if (next_ < targets_.size() && seek_enabled_ && targets_[next_] - ts > kSeekAheadSeconds) {
      seek_pending_ = true;
      return true;
    }
    return false;
  }

  void start_seek() {
    seek_pending_ = false;
    if (seek_to(targets_[next_])) after_seek_ = true;
    else seek_enabled_ = false;
  }

  // To the keyframe at or before `t`; the decoder is flushed. False if the container cannot seek.
  bool seek_to(double t) {
    const double units = t / tb_;
    if (!(units >= 0 && units < 9.0e18)) return false;
    int64_t ts;
    if (__builtin_add_overflow(start_, int64_t(units), &ts)) return false;
    t_last_log.clear();
    if (av_seek_frame(in_.fmt, in_.stream, ts, AVSEEK_FLAG_BACKWARD) < 0) {
      if (!seek_enabled_) fail(path_, ": cannot seek back in the video (", t_last_log, ")");
      return false;
    }
    avcodec_flush_buffers(in_.dec);
    return true;
  }

  void emit(AVFrame* f, double ts) {
    if (!out_->timestamps.empty() && ts <= out_->timestamps.back()) return;  // the same frame again
    const int64_t w = f->width, h = f->height;
    G3N_CHECK(w > 0 && h > 0 && w <= limits_.max_side && h <= limits_.max_side &&
                  w * h <= limits_.max_pixels,
              path_, ": decoded frame of ", w, "x", h, " pixels is empty or above the limit");
    output_bytes_ = checked_add(output_bytes_, uint64_t(w * h * 3), "video frames");
    G3N_CHECK(output_bytes_ <= limits_.max_output_bytes, path_, ": the sampled frames need more than ",
              limits_.max_output_bytes, " bytes (", out_->frames.size() + 1, " frames of ", w, "x", h,
              "); ask for fewer frames");
    const auto fmt = AVPixelFormat(f->format);
    G3N_CHECK(sws_isSupportedInput(fmt), path_, ": cannot convert the pixel format ",
              av_get_pix_fmt_name(fmt) ? av_get_pix_fmt_name(fmt) : "?", " to RGB");
    sws_.reset(sws_getCachedContext(sws_.release(), int(w), int(h), fmt, int(w), int(h), AV_PIX_FMT_RGB24,
                                    SWS_BILINEAR, nullptr, nullptr, nullptr));
    if (!sws_) fail(path_, ": cannot convert ", av_get_pix_fmt_name(fmt), " frames to RGB");
    const int space = f->colorspace >= 0 && f->colorspace <= 10 ? int(f->colorspace) : SWS_CS_DEFAULT;
    sws_setColorspaceDetails(sws_.get(), sws_getCoefficients(space), full_range(f) ? 1 : 0,
                             sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
    RgbImage img;
    img.width = w, img.height = h;
    img.format = "video";
    img.source_channels = 3;
    img.rgb.resize(size_t(w * h * 3));
    // libswscale's SIMD converters write whole blocks: an aligned, padded row buffer, then copied out.
    const int64_t stride = (w * 3 + 63) / 64 * 64 + 64;
    rows_.resize(size_t(stride * h));
    uint8_t* dst[4] = {rows_.data(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {int(stride), 0, 0, 0};
    const int rows = sws_scale(sws_.get(), f->data, f->linesize, 0, int(h), dst, dst_stride);
    G3N_CHECK(rows == int(h), path_, ": converting a ", av_get_pix_fmt_name(fmt), " frame to RGB failed");
    for (int64_t y = 0; y < h; ++y)
      std::memcpy(&img.rgb[size_t(y * w * 3)], &rows_[size_t(y * stride)], size_t(w * 3));
    out_->frames.push_back(apply_turn(std::move(img), turn_));
    out_->timestamps.push_back(ts);
  }

  Input& in_;
  const std::string& path_;
  std::vector<double> targets_;
  const VideoLimits& limits_;
  VideoFrames* out_ = nullptr;
  double tb_ = 0, frame_step_ = 0;
  int64_t start_ = 0;
  Turn turn_ = Turn::none;
  size_t next_ = 0;
  FramePtr prev_;
  double prev_ts_ = 0;
  bool have_prev_ = false;
  bool seek_enabled_ = true, seek_pending_ = false, after_seek_ = false, last_packet_corrupt_ = false;
  int64_t decoded_ = 0, decoded_pixels_ = 0, bad_packets_ = 0;
  uint64_t output_bytes_ = 0;
  std::string first_error_;
  std::unique_ptr<SwsContext, SwsDeleter> sws_;
  std::vector<uint8_t> rows_;
};

// Seconds of the video stream: the stream's duration, else the container's, else -1. A duration
// FFmpeg guessed from the bit rate (raw streams, MPEG program streams) is not trusted: -1.
double header_duration(const Input& in) {
  if (in.fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE) return -1;
  const AVStream* vs = in.fmt->streams[in.stream];
  if (vs->duration != AV_NOPTS_VALUE && vs->duration > 0) return double(vs->duration) * av_q2d(vs->time_base);
  if (in.fmt->duration != AV_NOPTS_VALUE && in.fmt->duration > 0) return double(in.fmt->duration) / AV_TIME_BASE;
  return -1;
}

// No duration in the headers: the end of the last video packet, found by reading every packet
// (demuxing only, no decoding); a stream without any timestamps: its packets times the frame rate.
double scanned_duration(Input& in, const std::string& path, const VideoLimits& limits) {
  const AVStream* vs = in.fmt->streams[in.stream];
  const int64_t start = vs->start_time != AV_NOPTS_VALUE ? vs->start_time : 0;
  PacketPtr pkt(av_packet_alloc());
  if (!pkt) fail(path, ": out of memory");
  int64_t end = std::numeric_limits<int64_t>::min(), packets = 0, video_packets = 0;
  while (true) {
    t_last_log.clear();
    const int r = av_read_frame(in.fmt, pkt.get());
    if (r == AVERROR_EOF) {
      if (!t_truncation.empty())
        fail(path, ": truncated video file: it ends before the data its headers announce (FFmpeg: ", t_truncation, ")");
      break;
    }
    if (r < 0) fail(path, ": truncated or corrupt video file (", av_error(r), ")");
    G3N_CHECK(++packets <= limits.max_packets, path, ": more than ", limits.max_packets,
              " packets: above the demux work limit");
    if (pkt->stream_index == in.stream) {
      ++video_packets;
      const int64_t t = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
      int64_t e;
      if (t != AV_NOPTS_VALUE && !__builtin_add_overflow(t, std::max<int64_t>(pkt->duration, 0), &e))
        end = std::max(end, e);
    }
    av_packet_unref(pkt.get());
  }
  if (end == std::numeric_limits<int64_t>::min()) {
    const AVRational rate = av_guess_frame_rate(in.fmt, in.fmt->streams[in.stream], nullptr);
    return double(video_packets) * (rate.num > 0 && rate.den > 0 ? av_q2d(av_inv_q(rate)) : 1.0 / 25);
  }
  int64_t rel;
  if (__builtin_sub_overflow(end, start, &rel) || rel <= 0) return 0;
  return double(rel) * av_q2d(vs->time_base);
}

}  // namespace

VideoFrames load_video_frames(const std::string& path, double fps, int max_frames, const VideoLimits& limits) {
  G3N_CHECK(std::isfinite(fps) && fps > 0 && fps <= 1000, "video sampling rate ", fps,
            " frames per second: must be in (0, 1000]");
  G3N_CHECK(max_frames >= 1 && max_frames <= limits.max_frames, "at most ", max_frames,
            " video frames: must be in 1..", limits.max_frames);
  install_log_callback();

  VideoFrames out;
  auto in = std::make_unique<Input>();
  open_input(*in, path, limits);
  out.format = first_name(in->fmt->iformat->name) + "/" +
               avcodec_get_name(in->fmt->streams[in->stream]->codecpar->codec_id);
  double duration = header_duration(*in);
  if (duration < 0) {
    duration = scanned_duration(*in, path, limits);
    in = std::make_unique<Input>();  // read again from the start: reopening is simpler than trusting a seek
    open_input(*in, path, limits);
  }
  out.duration = duration;

  // Targets: k / fps while < duration; more than max_frames of them: max_frames spread over the video.
  std::vector<double> targets;
  const double wanted = duration > 0 ? std::ceil(duration * fps) : 1;  // k = 0 .. wanted-1 have k/fps < duration
  if (wanted <= double(max_frames)) {
    for (int64_t k = 0; k < std::max<int64_t>(1, int64_t(wanted)); ++k) {
      const double t = double(k) / fps;
      if (k > 0 && t >= duration) break;
      targets.push_back(t);
    }
  } else {
    for (int k = 0; k < max_frames; ++k) targets.push_back(double(k) * duration / double(max_frames));
  }

  Sampler sampler(*in, path, std::move(targets), limits);
  sampler.run(out);
  return out;
}

}  // namespace g3n::media
