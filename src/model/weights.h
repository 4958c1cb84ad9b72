// Every tensor of the Gemma 3n text decoder, declared once: its checkpoint name, its shape as a
// function of the config, and whether it is required. The loader checks all of them before any
// computation and names every tensor that is missing or has the wrong shape.
#pragma once
#include <string>
#include <vector>

#include "base/tensor.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace g3n {

struct TextLayerWeights {
  // attention
  TensorView q_proj, k_proj, v_proj, o_proj;         // [H*Dh, D], [Hkv*Dh, D] x2, [D, H*Dh]; k/v only when the layer owns its KV
  std::vector<float> q_norm, k_norm;                 // [Dh]
  std::vector<float> input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;
  // feed-forward
  TensorView gate_proj, up_proj, down_proj;          // [F, D], [F, D], [D, F]
  // AltUp (small: kept in float32, coefficients clipped at load)
  std::vector<float> altup_correct_output_scale;     // [D]
  std::vector<float> altup_correction_coefs;         // [K, K]
  std::vector<float> altup_prediction_coefs;         // [K*K, K]
  std::vector<float> altup_modality_router;          // [K, D]
  std::vector<float> altup_router_norm;              // [D]
  // LAuReL
  TensorView laurel_left, laurel_right;              // [r, D], [D, r]
  std::vector<float> post_laurel_norm;               // [D]
  // per-layer input
  TensorView per_layer_input_gate, per_layer_projection;  // [P, D], [D, P]
  std::vector<float> post_per_layer_input_norm;           // [D]
};

struct EmbedderWeights {  // Gemma3nMultimodalEmbedder (hard-token path)
  TensorView embedding;              // [vocab, Dm]
  std::vector<float> hard_embedding_norm;  // [Dm]
  TensorView embedding_projection;   // [D, Dm]
  bool present() const { return embedding.valid(); }
};

struct TextWeights {
  TensorView embed_tokens;            // [V, D], also the tied LM head
  TensorView embed_tokens_per_layer;  // [V_ple, L*P], memory-mapped, read row by row
  TensorView per_layer_model_projection;  // [L*P, D]
  std::vector<float> per_layer_projection_norm;  // [P]
  std::vector<TensorView> altup_projections, altup_unembed_projections;  // K-1 of [D, D]
  std::vector<float> norm;  // [D]
  std::vector<TextLayerWeights> layers;
  EmbedderWeights embed_vision, embed_audio;  // multimodal checkpoints only

  // The tensors every token reads (all but the PLE table, which is read one row per token).
  std::vector<const TensorView*> core_tensors() const;
};

// Loads and validates every text-decoder tensor (and the multimodal hard-token embedders when the
// config is multimodal). Throws g3n::Error listing each missing or mis-shaped tensor.
TextWeights load_text_weights(const ModelConfig& config, const WeightSource& source);

}  // namespace g3n
