// The Gemma 3n vision path: MobileNet-V5 (timm `mobilenetv5_300m_enc`, or a variant built from timm
// block args) and the soft-token half of the vision embedder, from pixels to language-model embeddings.
//
// Reference: transformers Gemma3nModel.get_image_features (TimmWrapperModel -> timm
// MobileNetV5Encoder.forward_features -> reshape to [256, 2048] -> * sqrt(vision hidden_size) ->
// Gemma3nMultimodalEmbedder.forward(inputs_embeds=...)). The architecture is a list of stages of
// blocks, as timm's block args describe it; every tensor's shape is derived from it and checked
// before anything is computed.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/tensor.h"
#include "base/thread_pool.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace g3n {

// One block of the trunk, as timm's decoded block args describe it (arch-string notation in brackets).
struct VisionBlockArgs {
  enum class Type : uint8_t { EdgeResidual /* er */, UniversalInvertedResidual /* uir */, MobileMqa /* mqa */ };
  Type type = Type::UniversalInvertedResidual;
  int64_t out_chs = 0;      // [c], before channel rounding
  int64_t stride = 1;       // [s]; only the first block of a stage keeps a stride > 1
  double exp_ratio = 1.0;   // [e] er, uir
  bool noskip = false;
  int64_t group_size = -1;  // [gs]; -1: the block type's default (er: full conv, uir: depthwise)
  // er
  int64_t exp_kernel_size = 3;   // [k]
  int64_t pw_kernel_size = 1;    // [p]
  int64_t force_in_chs = 0;      // [f]
  // uir: depthwise kernels (0 = none)
  int64_t dw_kernel_size_start = 0;  // [a]
  int64_t dw_kernel_size_mid = 0;    // [k]
  int64_t dw_kernel_size_end = 0;    // [p]
  // mqa (multi-query: one shared K/V head)
  int64_t num_heads = 1;       // [h]
  int64_t key_dim = 64;        // [d]
  int64_t value_dim = 64;      // [d]
  int64_t kv_stride = 1;       // [v]: K/V from a strided depthwise conv + norm
  int64_t dw_kernel_size = 3;  // [k]: kernel of that conv
};

// The structure of the tower: timm's MobileNetV5Encoder arguments.
struct VisionArch {
  std::vector<std::vector<VisionBlockArgs>> stages;
  int64_t stem_size = 64;
  bool fix_stem = false;            // stem width not rounded
  double channel_multiplier = 1.0;  // round_channels multiplier of every block width
  bool layer_scale = true;          // layer_scale_init_value not None: UIR / MQA blocks carry a gamma
  std::vector<int64_t> msfa_indices = {-2, -1};  // over the feature points (stem + stage ends)
  int64_t msfa_last_n = 0;                       // > 0: msfa_indices was an int n, "the last n points"
  int64_t msfa_output_resolution = 16;
  int64_t num_features = 2048;      // MSFA output channels (fixed by timm)
  float norm_eps = 1e-6f;           // timm RmsNorm2d default
};

// timm's mobilenetv5_300m_enc (the Gemma 3n encoder).
VisionArch mobilenetv5_300m_enc_arch();

// Decodes timm arch strings ("er_r1_k3_s2_e4_c128", "uir_r1_a3_k5_s2_e6_c256",
// "mqa_r1_k3_h12_v2_s1_d64_c640", ...), one list per stage, repeats expanded.
std::vector<std::vector<VisionBlockArgs>> decode_vision_arch_strings(const std::vector<std::vector<std::string>>& stages);

// The architecture a checkpoint's config.json describes: vision_config.architecture must be
// "mobilenetv5_300m_enc"; vision_config.model_args (optional) overrides timm's defaults as
// timm.create_model(**model_args) would: block_args (stages of decoded block dicts, as
// Gemma3nVisionConfig stores them, or of arch strings), stem_size, fix_stem, channel_multiplier,
// layer_scale_init_value, msfa_indices, msfa_output_resolution. Unknown or unsupported keys are
// errors naming the key. Throws g3n::Error.
VisionArch parse_vision_arch(const std::string& config_json_text);

class VisionEncoder {
 public:
  // Loads every tensor of the tower (model.vision_tower.timm_model.*) and of the soft-token
  // embedder (model.embed_vision.soft_embedding_norm / embedding_projection) from `source`, checking
  // each against the shapes `arch` and `config` imply. Throws g3n::Error listing every missing or
  // mis-shaped tensor. `source` must outlive the encoder (weights are used in place).
  VisionEncoder(const ModelConfig& config, VisionArch arch, const WeightSource& source);
  ~VisionEncoder();
  VisionEncoder(VisionEncoder&&) noexcept;
  VisionEncoder& operator=(VisionEncoder&&) noexcept;

  // Soft tokens per image (msfa_output_resolution^2 = 256) and their width (the text hidden size).
  int64_t tokens_per_image() const;
  int64_t embedding_dim() const;
  int64_t feature_dim() const;  // tower output channels (2048)

  // Tower output: pixels [3, height, width] float32 (planar RGB in [0, 1], as the image processor
  // makes them) -> [tokens_per_image, feature_dim] float32, token t = y * res + x (raster order).
  std::vector<float> features(const float* pixels, int64_t height, int64_t width, ThreadPool& pool) const;

  // The soft tokens the language model receives: embed_vision(inputs_embeds = features * sqrt(feature_dim))
  // -> [tokens_per_image, embedding_dim] float32.
  std::vector<float> encode(const float* pixels, int64_t height, int64_t width, ThreadPool& pool) const;

  // Soft-token embedder alone: features [n, feature_dim] -> [n, embedding_dim].
  std::vector<float> embed_features(const float* features, int64_t n, ThreadPool& pool) const;

  struct Weights;

 private:
  ModelConfig config_;
  VisionArch arch_;
  std::unique_ptr<Weights> w_;
};

}  // namespace g3n
