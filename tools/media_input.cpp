#include "media_input.h"

#include <cstdio>

#include "base/error.h"
#include "media/video.h"

namespace g3n::tools {

void MediaArgs::add_to(CLI::App* cmd) {
  // One file per occurrence (a vector option would otherwise swallow the prompt after it).
  cmd->add_option("--image", images, "Image file (JPEG, PNG, BMP, GIF, WebP); repeatable, in order")
      ->allow_extra_args(false);
  cmd->add_option("--audio", audios, "Audio file (WAV, FLAC, OGG, MP3, ...); repeatable, in order. Clips over 30 s "
                                     "are cut at quiet points into clips of at most 30 s")
      ->allow_extra_args(false);
  cmd->add_option("--video", videos, "Video file (MP4, MKV, WebM, AVI, ...): frames sampled at --fps go in as images; "
                                     "repeatable")
      ->allow_extra_args(false);
  cmd->add_option("--mmproj", mmproj, "llama.cpp multimodal projector GGUF with Gemma 3n's vision / audio towers "
                                     "(for a GGUF model)");
  cmd->add_option("--fps", fps, "Video frames per second to sample")->check(CLI::Range(0.01, 60.0));
  cmd->add_option("--max-frames", max_frames, "Most frames per video (longer videos: spread evenly)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--image-size", image_size, "Image resolution the encoder sees: 256, 512 or 768")
      ->check(CLI::IsMember({256, 512, 768}));
  cmd->add_option("--max-audio-seconds", max_audio_seconds, "Longest audio input accepted, in seconds")
      ->check(CLI::Range(1.0, 86400.0));
}

void MediaSet::add_image(const Model& model, const std::string& path, int64_t size, bool verbose) {
  items.push_back(model.encode_image_file(path, size));
  if (verbose)
    std::fprintf(stderr, "[g3n] image %s: %s, %lld soft tokens in %.2f s\n", path.c_str(),
                 items.back().description.c_str(), (long long)items.back().tokens, items.back().encode_seconds);
}

void MediaSet::add_audio(const Model& model, const std::string& path, double max_seconds, bool verbose) {
  std::vector<MediaEmbedding> clips = model.encode_audio_file_windows(path, max_seconds);
  if (clips.size() > 1)
    std::fprintf(stderr, "g3n: %s is longer than 30 s: heard as %zu clips cut at quiet points\n", path.c_str(),
                 clips.size());
  for (auto& c : clips) {
    if (verbose)
      std::fprintf(stderr, "[g3n] audio %s: %s in %.2f s\n", c.source.c_str(), c.description.c_str(), c.encode_seconds);
    items.push_back(std::move(c));
  }
}

void MediaSet::add_video(const Model& model, const std::string& path, double fps, int max_frames, int64_t size,
                         bool verbose) {
  if (!model.supports_images())
    fail(path, ": the model has no vision tower (video frames go in as images; a multimodal Gemma 3n checkpoint "
               "is needed)");
  const media::VideoFrames v = media::load_video_frames(path, fps, max_frames);
  if (v.frames.empty()) fail(path, ": no frames could be sampled");
  for (size_t i = 0; i < v.frames.size(); ++i) {
    const media::RgbImage& f = v.frames[i];
    char name[64];
    std::snprintf(name, sizeof name, " @ %.2f s", v.timestamps[i]);
    items.push_back(model.encode_rgb(f.rgb.data(), f.width, f.height, path + name, size));
  }
  if (verbose)
    std::fprintf(stderr, "[g3n] video %s: %s, %.2f s -> %zu frames at %.2f fps, %lld soft tokens each\n", path.c_str(),
                 v.format.c_str(), v.duration, v.frames.size(), fps, (long long)items.back().tokens);
}

void MediaSet::add(const Model& model, const MediaArgs& args, bool verbose) {
  for (const auto& p : args.images) add_image(model, p, args.image_size, verbose);
  for (const auto& p : args.videos) add_video(model, p, args.fps, args.max_frames, args.image_size, verbose);
  for (const auto& p : args.audios) add_audio(model, p, args.max_audio_seconds, verbose);
}

std::vector<ChatItem> MediaSet::chat_items(size_t from) const {
  std::vector<ChatItem> out;
  for (size_t i = from; i < items.size(); ++i)
    out.push_back({items[i].kind == MediaEmbedding::Kind::Image ? ChatItem::Image : ChatItem::Audio, items[i].source});
  return out;
}

std::vector<const MediaEmbedding*> MediaSet::pointers() const {
  std::vector<const MediaEmbedding*> out;
  for (const auto& m : items) out.push_back(&m);
  return out;
}

std::string MediaSet::expand(const std::string& prompt) const {
  int image_tokens = 256, audio_tokens = 188;
  for (const auto& m : items) (m.kind == MediaEmbedding::Kind::Image ? image_tokens : audio_tokens) = int(m.tokens);
  return expand_media_placeholders(prompt, image_tokens, audio_tokens);
}

PromptEmbeddings MediaSet::place(const Model& model, std::span<const int32_t> ids) const {
  return place_media(model, ids, pointers());
}

}  // namespace g3n::tools
