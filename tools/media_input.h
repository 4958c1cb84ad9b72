// --image / --audio / --image-size / --max-audio-seconds, shared by run, chat, score, generate and
// transcribe: files are encoded once, in the order given, into soft tokens the prompt's placeholders take.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "tokenizer/chat_template.h"

namespace g3n::tools {

struct MediaArgs {
  std::vector<std::string> images, audios, videos;
  std::string mmproj;  // llama.cpp mmproj GGUF with the towers, for a GGUF text model
  int64_t image_size = 768;
  double max_audio_seconds = 600;
  double fps = 1.0;
  int max_frames = 32;

  void add_to(CLI::App* cmd);
  bool empty() const { return images.empty() && audios.empty() && videos.empty(); }
};

// The encoded media of one request or conversation, in prompt order (images, video frames, audio clips).
struct MediaSet {
  std::vector<MediaEmbedding> items;

  // Encodes every file of `args` (a long recording becomes several clips of at most 30 s). With
  // `verbose`, prints what each became and how long it took.
  void add(const Model& model, const MediaArgs& args, bool verbose);
  void add_image(const Model& model, const std::string& path, int64_t size, bool verbose);
  void add_audio(const Model& model, const std::string& path, double max_seconds, bool verbose);
  // A video as frames sampled at `fps` (at most max_frames, spread over the clip), each sent as an image.
  void add_video(const Model& model, const std::string& path, double fps, int max_frames, int64_t size, bool verbose);
  // One chat item per image / audio clip, in order (placeholders for render_chat).
  std::vector<ChatItem> chat_items(size_t from = 0) const;
  std::vector<const MediaEmbedding*> pointers() const;
  // expand_media_placeholders with this model's counts (256 per image, 188 per clip).
  std::string expand(const std::string& prompt) const;
  PromptEmbeddings place(const Model& model, std::span<const int32_t> ids) const;
};

}  // namespace g3n::tools
