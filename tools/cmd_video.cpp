// `g3n video-frames`: the frames g3n samples from a video (media/video.h), written as PNG files with a
// frames.json index, so the video tests can compare them with PyAV's and a user can see what the model
// will see.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "commands.h"
#include "media/video.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace g3n::tools {

Action register_video_frames(CLI::App& app) {
  struct Args {
    std::string video, out;
    double fps = 1.0;
    int max_frames = 32;
    int64_t max_pixels = media::VideoLimits{}.max_pixels;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "video-frames", "Write the frames sampled from a video as DIR/frame_000.png ... and DIR/frames.json");
  cmd->add_option("--video", a->video, "Video file (MP4/MOV, WebM/MKV, AVI, ...)")->required();
  cmd->add_option("--fps", a->fps, "Frames per second to sample (default 1)")->check(CLI::Range(1e-6, 1000.0));
  cmd->add_option("--max-frames", a->max_frames, "At most this many frames, spread over the video if longer (default 32)")
      ->check(CLI::Range(1, media::VideoLimits{}.max_frames));
  cmd->add_option("--max-pixels", a->max_pixels, "Refuse frames with more pixels than this")
      ->check(CLI::Range(int64_t(1), media::VideoLimits{}.max_pixels));
  cmd->add_option("-o,--out", a->out, "Output directory (created)")->required();
  return [a] {
    media::VideoLimits limits;
    limits.max_pixels = a->max_pixels;
    const media::VideoFrames v = media::load_video_frames(a->video, a->fps, a->max_frames, limits);
    stbi_write_png_compression_level = 2;  // fast; the PNGs are for reading back, not for keeping
    std::error_code ec;
    std::filesystem::create_directories(a->out, ec);
    if (ec) fail("cannot create directory ", a->out, ": ", ec.message());
    nlohmann::json index = {{"video", a->video}, {"format", v.format}, {"duration", v.duration},
                            {"fps", a->fps}, {"max_frames", a->max_frames}, {"frames", nlohmann::json::array()}};
    for (size_t i = 0; i < v.frames.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "frame_%03zu.png", i);
      const media::RgbImage& f = v.frames[i];
      const std::string file = (std::filesystem::path(a->out) / name).string();
      if (!stbi_write_png(file.c_str(), int(f.width), int(f.height), 3, f.rgb.data(), int(f.width * 3)))
        fail("cannot write ", file);
      index["frames"].push_back({{"file", name}, {"timestamp", v.timestamps[i]}, {"width", f.width}, {"height", f.height}});
    }
    const std::string json_path = (std::filesystem::path(a->out) / "frames.json").string();
    std::ofstream js(json_path);
    js << index.dump(1) << "\n";
    if (!js) fail("cannot write ", json_path);
    std::printf("%zu frames (%s, %.3f s) -> %s\n", v.frames.size(), v.format.c_str(), v.duration, a->out.c_str());
    return 0;
  };
}

}  // namespace g3n::tools
