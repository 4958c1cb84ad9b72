// Untrusted video in, as a few RGB frames for the vision encoder (Gemma 3n sees a video as a sequence
// of images). Demuxing, decoding and pixel conversion are FFmpeg's (Debian's libavformat, libavcodec,
// libswscale); this file decides which frames, bounds the work, and names the problem when a file is bad.
//
// Which frames (the sampling policy):
//  - Time t is measured from the start of the video stream (its first timestamp is 0 s); `duration`
//    is the stream's (the container's if the stream has none, else found by reading every packet).
//  - Targets are t_k = k / fps for k = 0, 1, ... while t_k < duration: one frame per 1/fps seconds,
//    starting with the first frame. If that would be more than max_frames targets (the video is longer
//    than max_frames / fps seconds), max_frames targets are spread evenly over the whole video instead:
//    t_k = k * duration / max_frames, k = 0 .. max_frames-1 (the same as a lower fps).
//  - For each target the decoded frame whose presentation time is nearest is taken (a tie goes to
//    the earlier frame). A frame nearest to several targets (fps above the video's frame rate) is
//    returned once, so timestamps strictly increase and there may be fewer frames than targets.
//  - Frames are decoded in order; when the next target lies several seconds ahead, the file is
//    seeked to the keyframe before it (checked: a seek that lands past the target is undone and
//    decoding goes on in order), so a long video costs about one GOP per frame, not the whole file.
//
// Pixels: each frame is converted to 8-bit RGB by libswscale (bilinear flag, as PyAV's
// frame.to_ndarray(format="rgb24") does), with the frame's colour matrix (BT.601 when unspecified)
// and range (limited, or full for JPEG-range video). Alpha, if the codec carries it, is ignored.
// The display matrix of the stream (MP4 "rotation", phones' portrait video) is applied as FFmpeg's
// own command line does: rotations by 90, 180 and 270 degrees and flips; other angles are ignored.
//
// Safety: the file is read through our own I/O callbacks (no URL, no protocol, no other file is ever
// opened: playlists and references to external media are refused), only video containers are
// accepted (MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, FLV, Ogg, ASF, NUT, IVF, GIF, raw H.264/HEVC/
// MPEG-4), and VideoLimits caps the file size, the pixels per frame (enforced by the decoder too),
// the decode work and the memory of the returned frames. A bad file (empty, text, an image, audio
// only, truncated, corrupt beyond decoding, no frames) is a g3n::Error naming the file and the problem.
// Truncation: an MP4 whose index is missing fails at once; a file whose data is cut short (the
// demuxer reports it, or the last packet is incomplete) fails when decoding reaches the cut, so a
// later target never silently gets an earlier frame. Damaged packets inside a file are skipped, as
// FFmpeg's tools do; only a video in which nothing decodes is an error.
// FFmpeg's log is captured for these messages (av_log_set_callback, process-wide, installed once):
// nothing of it is printed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "media/image.h"

namespace g3n::media {

struct VideoLimits {
  uint64_t max_file_bytes = uint64_t(4) << 30;       // 4 GiB
  int64_t max_side = 16384;                            // pixels per side of a frame
  int64_t max_pixels = int64_t(36) << 20;              // per frame, ~37.7 Mpixels (8K UHD is 33.2)
  int64_t max_decoded_frames = int64_t(1) << 20;       // decode work: frames decoded, all told
  int64_t max_decoded_pixels = int64_t(1) << 36;       // decode work: ~68.7 Gpixels (~18 min of 1080p30 in order)
  int64_t max_packets = int64_t(1) << 24;              // demux work: packets read, every stream
  uint64_t max_output_bytes = uint64_t(2) << 30;       // RGB bytes of the returned frames
  int max_frames = 4096;                               // the largest max_frames a caller may ask for
};

struct VideoFrames {
  std::vector<RgbImage> frames;    // in time order, rotation applied; format "video"
  std::vector<double> timestamps;  // seconds from the start of the video stream, one per frame
  double duration = 0;             // seconds (0 when a single-frame video has no duration)
  std::string format;              // container / codec, e.g. "mov/h264", "matroska/vp9", "avi/mjpeg"
};

// Samples frames of a video file at `fps` frames per second, at most `max_frames` (see above).
// fps must be in (0, 1000], max_frames in 1 .. limits.max_frames.
VideoFrames load_video_frames(const std::string& path, double fps = 1.0, int max_frames = 32,
                              const VideoLimits& limits = {});

}  // namespace g3n::media
