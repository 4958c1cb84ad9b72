// Gemma 3n's audio tower (USM-style Conformer) and its embedder into the language model, as
// transformers computes them (modeling_gemma3n.py): Gemma3nAudioEncoder, then
// Gemma3nMultimodalEmbedder's soft path (Gemma3nModel.get_audio_features), and the padding to
// audio_soft_tokens_per_image rows that Gemma3nModel.forward applies before scattering the rows
// into the <audio_soft_token> positions of the prompt.
//
//   mel [frames, 128] --SSCP (2 x conv 3x3 stride 2 + cumulative group norm + ReLU, linear)-->
//   [T_sub = ceil(ceil(frames/2)/2), 1536] --12 Conformer blocks--> keep every 4th row -->
//   [n = ceil(T_sub/4), 1536] --embed_audio soft path--> soft tokens [n, text hidden]
// One token per 16 mel frames = 160 ms; 30 s (the extractor's cap) give 188 tokens.
//
// Activations are float32; weights stay in their checkpoint dtype (small ones are converted to
// float32 at load).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/tensor.h"
#include "base/thread_pool.h"
#include "model/weight_source.h"

namespace g3n {

// Gemma3nAudioConfig (configuration_gemma3n.py) plus the three values of the enclosing
// Gemma3nConfig the audio path needs. Defaults are the reference's (= E2B and E4B).
struct AudioEncoderConfig {
  int64_t input_feat_size = 128;
  int64_t hidden_size = 1536;
  float rms_norm_eps = 1e-6f;
  double gradient_clipping = 1e10;
  int64_t conf_attention_chunk_size = 12;
  int64_t conf_attention_context_left = 13;
  int64_t conf_attention_context_right = 0;
  float conf_attention_logit_cap = 50.0f;
  int64_t conf_num_attention_heads = 8;
  int64_t conf_num_hidden_layers = 12;
  int64_t conf_conv_kernel_size = 5;
  int64_t conf_reduction_factor = 4;
  float conf_residual_weight = 0.5f;
  std::array<int64_t, 2> sscp_conv_channel_size = {128, 32};
  float sscp_conv_group_norm_eps = 1e-3f;
  std::array<std::array<int64_t, 2>, 2> sscp_conv_kernel_size = {{{3, 3}, {3, 3}}};  // (time, freq)
  std::array<std::array<int64_t, 2>, 2> sscp_conv_stride_size = {{{2, 2}, {2, 2}}};
  int64_t vocab_size = 128;       // embed_audio hard-token table
  int64_t vocab_offset = 262272;  // first id it embeds
  // From Gemma3nConfig / its text_config:
  int64_t text_hidden_size = 2048;
  int64_t text_vocab_size = 262400;             // the padding row is embed_audio(text_vocab_size - 1)
  int64_t audio_soft_tokens_per_image = 188;    // rows per clip in the prompt

  int64_t head_dim() const { return hidden_size / conf_num_attention_heads; }
  // Derived sizes of the SSCP frequency axis: F after conv 0 and conv 1 (padding 1 + 1).
  int64_t sscp_freq_out(int block) const;

  // From config.json text of a multimodal Gemma3nConfig (audio_config, text_config.hidden_size /
  // vocab_size, audio_soft_tokens_per_image). Throws g3n::Error naming a missing or bad field.
  static AudioEncoderConfig from_json(const std::string& config_json_text);
  static AudioEncoderConfig load(const std::string& config_json_path);
  void validate() const;

  // Output sizes for a clip of `mel_frames` frames.
  int64_t subsampled_frames(int64_t mel_frames) const;
  int64_t tokens(int64_t mel_frames) const;
};

struct AudioConformerBlockWeights {
  struct FeedForward {  // Gemma3nAudioConformerFeedForward
    std::vector<float> pre_layer_norm, post_layer_norm;  // [D]
    TensorView ffw_layer_1, ffw_layer_2;                 // [4D, D], [D, 4D]
  } ffw_layer_start, ffw_layer_end;
  // Gemma3nAudioConformerAttention / Gemma3nAudioAttention
  std::vector<float> pre_attn_norm, post_norm;  // [D]
  std::vector<float> per_dim_scale;             // [Dh]
  TensorView q_proj, k_proj, v_proj;            // [D, D] (heads major: n * Dh + h)
  TensorView pos_proj;                          // [D, D] relative_position_embedding.pos_proj
  TensorView post;                              // [D, D]
  // Gemma3nAudioConformerLightConv1d
  std::vector<float> lconv_pre_layer_norm, conv_norm;  // [D]
  TensorView linear_start, linear_end;                 // [2D, D], [D, D]
  std::vector<float> depthwise_conv1d;                 // [D, K]
  std::vector<float> norm;                             // [D] block output norm
};

struct AudioEncoderWeights {
  // subsample_conv_projection: conv_{0,1}.conv [C_out, C_in, kt, kf] and norm scales [C_out]
  std::array<TensorView, 2> conv;
  std::array<std::vector<float>, 2> conv_norm;
  TensorView input_proj_linear;         // [D, C1 * F1]
  std::vector<AudioConformerBlockWeights> conformer;
  // embed_audio (Gemma3nMultimodalEmbedder)
  TensorView embedding;                               // [vocab, D]
  std::vector<float> hard_embedding_norm, soft_embedding_norm;  // [D]
  TensorView embedding_projection;                    // [text D, D]
};

// Called with named intermediates when set (for layer-by-layer comparison with the reference):
// name, layer (-1 outside the conformer), data, rows, cols.
using AudioTrace = std::function<void(const std::string&, int, const float*, int64_t, int64_t)>;

// One clip's output of Gemma3nModel.get_audio_features.
struct AudioSoftTokens {
  int64_t n = 0;        // tokens = ceil(T_sub / reduction)
  int64_t width = 0;    // text hidden size
  std::vector<float> embeddings;  // [n, width]; rows of invalid tokens are 0 (as the reference's)
  std::vector<uint8_t> valid;     // [n]; ~audio_mel_mask
};

class AudioEncoder {
 public:
  // Loads and checks every model.audio_tower.* and model.embed_audio.* tensor against the config;
  // throws g3n::Error listing each missing or mis-shaped tensor with both shapes.
  AudioEncoder(AudioEncoderConfig config, const WeightSource& source);

  const AudioEncoderConfig& config() const { return c_; }
  const AudioEncoderWeights& weights() const { return w_; }

  // mel: [frames, input_feat_size] log-mel features; valid: [frames] (input_features_mask, true =
  // real audio) or null for all valid. Returns the soft tokens, as get_audio_features computes them
  // for a batch of one. Throws g3n::Error for 0 frames or a width that is not input_feat_size.
  AudioSoftTokens encode(const float* mel, int64_t frames, int64_t bins, const uint8_t* valid, ThreadPool& pool,
                         const AudioTrace* trace = nullptr) const;

  // embed_audio's hard path for the id Gemma3nModel.forward pads with (text vocab_size - 1): [width].
  std::vector<float> padding_embedding(ThreadPool& pool) const;

  // The rows Gemma3nModel.forward scatters into the audio_soft_tokens_per_image (188)
  // <audio_soft_token> positions for this clip: the soft tokens, with invalid ones replaced by the
  // padding embedding, followed by copies of the padding embedding. [188, width].
  std::vector<float> prompt_embeddings(const AudioSoftTokens& tokens, ThreadPool& pool) const;

 private:
  void sscp(const float* mel, int64_t frames, std::vector<float>& out, ThreadPool& pool, const AudioTrace* trace) const;
  void conformer_block(int layer, std::vector<float>& x, int64_t T, const std::vector<uint8_t>& valid,
                       ThreadPool& pool, const AudioTrace* trace) const;
  void feed_forward(const AudioConformerBlockWeights::FeedForward& w, std::vector<float>& x, int64_t T,
                    ThreadPool& pool) const;
  void attention(const AudioConformerBlockWeights& w, const float* x, int64_t T, const std::vector<uint8_t>& valid,
                 float* out, ThreadPool& pool) const;
  void light_conv(const AudioConformerBlockWeights& w, std::vector<float>& x, int64_t T, ThreadPool& pool) const;
  void embed_soft(const float* x, int64_t n, float* out, ThreadPool& pool) const;

  AudioEncoderConfig c_;
  AudioEncoderWeights w_;
  std::vector<float> inv_timescales_;  // [D / 2] of the relative position signal
  float q_scale_ = 0;                  // head_dim^-0.5 / softplus(0)
  float clip_ = 0;                     // gradient_clipping as float32
};

}  // namespace g3n
