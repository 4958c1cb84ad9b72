// Gemma 3n configuration: one plain struct read from the checkpoint's config.json, validated once.
// Reference: transformers Gemma3nTextConfig / Gemma3nConfig (configuration_gemma3n.py).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g3n {

enum class AttentionType : uint8_t { Sliding, Full };

// Gemma 3n, or Gemma 3 (the same family without AltUp, LAuReL, per-layer embeddings and KV sharing;
// (1 + w) norms folded into the weights at load, query pre-attention scaling, no v_norm).
enum class Architecture : uint8_t { Gemma3n, Gemma3 };

struct TextConfig {
  Architecture arch = Architecture::Gemma3n;
  int64_t vocab_size = 262400;                  // rows of embed_tokens = number of logits
  int64_t vocab_size_per_layer_input = 262144;  // rows of the PLE table
  int64_t hidden_size = 2048;
  int64_t hidden_size_per_layer_input = 256;
  int num_hidden_layers = 35;
  int num_attention_heads = 8;
  int num_key_value_heads = 2;
  int head_dim = 256;
  std::vector<int64_t> intermediate_size;   // per layer
  std::vector<AttentionType> layer_types;   // per layer
  std::vector<float> activation_sparsity;   // per layer, target sparsity (0 = dense)
  int sliding_window = 512;
  double rope_theta_full = 1e6;
  double rope_theta_sliding = 1e4;
  int64_t max_position_embeddings = 32768;
  int num_kv_shared_layers = 15;
  int altup_num_inputs = 4;
  int altup_active_idx = 0;
  float altup_coef_clip = 120.0f;  // <= 0: no clipping
  bool altup_correct_scale = true;
  int laurel_rank = 64;
  float final_logit_softcapping = 30.0f;  // <= 0: none
  float rms_norm_eps = 1e-6f;
  float query_scale = 1.0f;          // multiplies q·k (Gemma 3n: 1; Gemma 3: query_pre_attn_scalar^-0.5)
  bool v_norm = true;                // Gemma 3n normalises values (no weight); Gemma 3 does not
  bool norm_weight_plus_one = false; // checkpoint stores w with the norm computing (1 + w) (HF Gemma 3)
  float rope_scaling_full = 1.0f;    // linear RoPE scaling of the full-attention layers (Gemma 3 4B+: 8)
  int pad_token_id = 0, eos_token_id = 1, bos_token_id = 2;

  // Derived once by validate().
  int first_kv_shared_layer = 0;      // layers at or above this reuse another layer's K/V
  std::vector<int> kv_source_layer;   // per layer: the layer whose cache it reads (itself when it owns one)

  bool is_gemma3n() const { return arch == Architecture::Gemma3n; }
  bool owns_kv(int layer) const { return kv_source_layer[size_t(layer)] == layer; }
  bool is_sliding(int layer) const { return layer_types[size_t(layer)] == AttentionType::Sliding; }
  void validate();  // fills the derived fields; throws g3n::Error naming the offending field
};

// An embedder of the multimodal wrapper (embed_vision / embed_audio): ids in
// [vocab_offset, vocab_offset + vocab_size) are embedded through it.
struct MultimodalEmbedderConfig {
  int64_t vocab_offset = 0;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  float rms_norm_eps = 1e-6f;
};

struct ModelConfig {
  std::string model_type;  // "gemma3n" or "gemma3n_text"
  TextConfig text;
  bool multimodal = false;
  MultimodalEmbedderConfig vision, audio;  // set when multimodal
  int64_t image_token_id = 262145, audio_token_id = 262273;
  int64_t boi_token_id = 255999, eoi_token_id = 262144, boa_token_id = 256000, eoa_token_id = 262272;
};

// Parses config.json text (multimodal Gemma3nConfig or text-only Gemma3nTextConfig), applies the reference's
// defaults, accepts old and new RoPE keys, scalar or per-layer intermediate_size, and ignores unknown keys.
ModelConfig parse_config(const std::string& json_text);
ModelConfig load_config(const std::string& path);

}  // namespace g3n
