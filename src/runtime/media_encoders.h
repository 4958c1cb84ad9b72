// The vision and audio towers of a loaded model, built on first use (a text-only conversation never
// pays for them), and the placing of their soft tokens into a prompt.
//
// Where the soft tokens go follows Gemma3nModel.forward: every position holding image_token_id
// (<image_soft_token>) receives the next row of the images' features, in prompt order (masked_scatter),
// and every audio_token_id position the next row of the audio clips'. The counts must match exactly,
// as the reference requires.
#pragma once
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "media/mel.h"
#include "model/audio_encoder.h"
#include "model/config.h"
#include "model/vision_encoder.h"
#include "model/weight_source.h"

namespace g3n {

class MediaEncoders {
 public:
  // config_json: the text of the checkpoint's config.json (multimodal Gemma3nConfig), or "" when there is
  // none (a text GGUF). preprocessor_json: preprocessor_config.json's text or "" for the reference's
  // defaults. `source` holds the towers' tensors under their Hugging Face names; it must outlive this.
  MediaEncoders(const ModelConfig& config, std::string config_json, const WeightSource& source,
                std::string preprocessor_json, std::string origin);
  ~MediaEncoders();

  bool has_vision() const { return has_vision_; }
  bool has_audio() const { return has_audio_; }
  // Built on first use (thread-safe); throw g3n::Error saying why when the model has no such tower.
  const VisionEncoder& vision() const;
  const AudioEncoder& audio() const;
  const media::MelExtractor& mel() const;

 private:
  ModelConfig config_;
  std::string config_json_, preprocessor_json_, origin_;
  const WeightSource& source_;
  bool has_vision_ = false, has_audio_ = false;
  mutable std::mutex mu_;
  mutable std::unique_ptr<VisionEncoder> vision_;
  mutable std::unique_ptr<AudioEncoder> audio_;
  mutable std::unique_ptr<media::MelExtractor> mel_;
};

// 64-bit FNV-1a over bytes, mixed with `seed` (media keys for prefix reuse).
uint64_t content_hash(const void* data, size_t n, uint64_t seed = 0);

}  // namespace g3n
