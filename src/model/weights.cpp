#include "model/weights.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "formats/safetensors.h"

namespace g3n {
namespace {

// Walks the declarations, collecting every problem before reporting.
class Registry {
 public:
  Registry(const WeightSource& store, std::string prefix) : store_(store), prefix_(std::move(prefix)) {}

  TensorView matrix(const std::string& name, std::vector<int64_t> shape, bool required = true) {
    const std::string full = prefix_ + name;
    const TensorView* t = nullptr;
    try {
      t = store_.find_as(full, shape);
    } catch (const Error& e) {
      problems_.push_back(e.what());
      return {};
    }
    if (!t) {
      if (required) problems_.push_back("missing tensor " + full + " (expected shape " + shape_str(shape) + ")");
      return {};
    }
    if (t->shape != shape) {
      problems_.push_back("tensor " + full + " has shape " + shape_str(t->shape) + ", expected " + shape_str(shape));
      return {};
    }
    return *t;
  }

  // Small tensors are converted to float32 once.
  std::vector<float> vector(const std::string& name, std::vector<int64_t> shape) {
    TensorView t = matrix(name, shape);
    if (!t.valid()) return std::vector<float>(size_t(std::max<int64_t>(0, numel(shape))), 0.0f);
    std::vector<float> v(size_t(t.numel()));
    to_f32(t, 0, t.numel(), v.data());
    return v;
  }

  void check() const {
    if (problems_.empty()) return;
    std::string msg = "the checkpoint does not match its config.json:";
    const size_t shown = std::min<size_t>(problems_.size(), 20);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems_[i];
    if (problems_.size() > shown) msg += "\n  ... and " + std::to_string(problems_.size() - shown) + " more";
    throw Error(msg);
  }

 private:
  static int64_t numel(const std::vector<int64_t>& s) {
    int64_t n = 1;
    for (auto d : s) n *= d;
    return n;
  }
  const WeightSource& store_;
  std::string prefix_;
  std::vector<std::string> problems_;
};

// Released multimodal checkpoints use "model.language_model.", Gemma3nForCausalLM uses "model.".
std::string find_text_prefix(const WeightSource& store) {
  for (const char* p : {"model.language_model.", "model.", "language_model.model.", ""})
    if (store.find(std::string(p) + "embed_tokens.weight")) return p;
  fail("no Gemma 3n text decoder in the checkpoint: tensor model.language_model.embed_tokens.weight "
       "(or model.embed_tokens.weight) not found");
}

class SafetensorsSource final : public WeightSource {
 public:
  explicit SafetensorsSource(const TensorStore& s) : store_(s) {}
  const TensorView* find(const std::string& name) const override { return store_.find(name); }

 private:
  const TensorStore& store_;
};

}  // namespace

std::unique_ptr<WeightSource> safetensors_source(const TensorStore& store) {
  return std::make_unique<SafetensorsSource>(store);
}

TextWeights load_text_weights(const ModelConfig& config, const WeightSource& store) {
  const TextConfig& c = config.text;
  const std::string prefix = find_text_prefix(store);
  Registry reg(store, prefix);
  const int64_t D = c.hidden_size, P = c.hidden_size_per_layer_input, L = c.num_hidden_layers;
  const int64_t K = c.altup_num_inputs, Dh = c.head_dim;
  const int64_t q_dim = int64_t(c.num_attention_heads) * Dh, kv_dim = int64_t(c.num_key_value_heads) * Dh;

  const bool g3n = c.is_gemma3n();
  TextWeights w;
  w.embed_tokens = reg.matrix("embed_tokens.weight", {c.vocab_size, D});
  w.norm = reg.vector("norm.weight", {D});
  if (g3n) {
    w.embed_tokens_per_layer = reg.matrix("embed_tokens_per_layer.weight", {c.vocab_size_per_layer_input, L * P});
    w.per_layer_model_projection = reg.matrix("per_layer_model_projection.weight", {L * P, D});
    w.per_layer_projection_norm = reg.vector("per_layer_projection_norm.weight", {P});
    for (int64_t k = 1; k < K; ++k) {
      w.altup_projections.push_back(reg.matrix("altup_projections." + std::to_string(k - 1) + ".weight", {D, D}));
      w.altup_unembed_projections.push_back(
          reg.matrix("altup_unembed_projections." + std::to_string(k - 1) + ".weight", {D, D}));
    }
  }

  for (int l = 0; l < L; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const int64_t F = c.intermediate_size[size_t(l)];
    TextLayerWeights lw;
    lw.q_proj = reg.matrix(p + "self_attn.q_proj.weight", {q_dim, D});
    lw.o_proj = reg.matrix(p + "self_attn.o_proj.weight", {D, q_dim});
    lw.q_norm = reg.vector(p + "self_attn.q_norm.weight", {Dh});
    // KV-shared layers never compute K/V; real checkpoints still carry (unused) weights for them.
    if (c.owns_kv(l)) {
      lw.k_proj = reg.matrix(p + "self_attn.k_proj.weight", {kv_dim, D});
      lw.v_proj = reg.matrix(p + "self_attn.v_proj.weight", {kv_dim, D});
      lw.k_norm = reg.vector(p + "self_attn.k_norm.weight", {Dh});
    }
    lw.input_layernorm = reg.vector(p + "input_layernorm.weight", {D});
    lw.post_attention_layernorm = reg.vector(p + "post_attention_layernorm.weight", {D});
    lw.pre_feedforward_layernorm = reg.vector(p + "pre_feedforward_layernorm.weight", {D});
    lw.post_feedforward_layernorm = reg.vector(p + "post_feedforward_layernorm.weight", {D});
    lw.gate_proj = reg.matrix(p + "mlp.gate_proj.weight", {F, D});
    lw.up_proj = reg.matrix(p + "mlp.up_proj.weight", {F, D});
    lw.down_proj = reg.matrix(p + "mlp.down_proj.weight", {D, F});
    if (c.norm_weight_plus_one) {
      // Gemma 3 norms compute x * (1 + w): fold the 1 into the weights once.
      for (auto* v : {&lw.q_norm, &lw.k_norm, &lw.input_layernorm, &lw.post_attention_layernorm,
                      &lw.pre_feedforward_layernorm, &lw.post_feedforward_layernorm})
        for (float& x : *v) x += 1.0f;
    }
    if (g3n) {
      lw.altup_correct_output_scale = reg.vector(p + "altup.correct_output_scale", {D});
      lw.altup_correction_coefs = reg.vector(p + "altup.correction_coefs.weight", {K, K});
      lw.altup_prediction_coefs = reg.vector(p + "altup.prediction_coefs.weight", {K * K, K});
      lw.altup_modality_router = reg.vector(p + "altup.modality_router.weight", {K, D});
      lw.altup_router_norm = reg.vector(p + "altup.router_norm.weight", {D});
      if (c.altup_coef_clip > 0) {
        // Released checkpoints are already clipped; the reference clips in training only. Both no-ops
        // on real weights, kept so a checkpoint outside the range behaves as the trained model did.
        for (auto* v : {&lw.altup_correction_coefs, &lw.altup_prediction_coefs})
          for (float& x : *v) x = std::clamp(x, -c.altup_coef_clip, c.altup_coef_clip);
      }
      lw.laurel_left = reg.matrix(p + "laurel.linear_left.weight", {c.laurel_rank, D});
      lw.laurel_right = reg.matrix(p + "laurel.linear_right.weight", {D, c.laurel_rank});
      lw.post_laurel_norm = reg.vector(p + "laurel.post_laurel_norm.weight", {D});
      lw.per_layer_input_gate = reg.matrix(p + "per_layer_input_gate.weight", {P, D});
      lw.per_layer_projection = reg.matrix(p + "per_layer_projection.weight", {D, P});
      lw.post_per_layer_input_norm = reg.vector(p + "post_per_layer_input_norm.weight", {D});
    }
    w.layers.push_back(std::move(lw));
  }
  if (c.norm_weight_plus_one)
    for (float& x : w.norm) x += 1.0f;

  reg.check();
  if (config.multimodal) {
    // The embedders sit beside the language model: "model.embed_vision." next to "model.language_model.".
    std::string mm_prefix = prefix;
    if (const auto pos = prefix.find("language_model."); pos != std::string::npos) mm_prefix = prefix.substr(0, pos);
    Registry mm(store, mm_prefix);
    auto load_embedder = [&](const char* name, const MultimodalEmbedderConfig& e) {
      EmbedderWeights ew;
      const std::string p = std::string(name) + ".";
      ew.embedding = mm.matrix(p + "embedding.weight", {e.vocab_size, e.hidden_size});
      ew.hard_embedding_norm = mm.vector(p + "hard_embedding_norm.weight", {e.hidden_size});
      ew.embedding_projection = mm.matrix(p + "embedding_projection.weight", {D, e.hidden_size});
      return ew;
    };
    w.embed_vision = load_embedder("embed_vision", config.vision);
    w.embed_audio = load_embedder("embed_audio", config.audio);
    mm.check();
  }
  return w;
}

std::vector<const TensorView*> TextWeights::core_tensors() const {
  std::vector<const TensorView*> t = {&embed_tokens};
  if (per_layer_model_projection.valid()) t.push_back(&per_layer_model_projection);
  for (const auto& p : altup_projections) t.push_back(&p);
  for (const auto& p : altup_unembed_projections) t.push_back(&p);
  for (const auto& l : layers)
    for (const TensorView* v : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj,
                                &l.laurel_left, &l.laurel_right, &l.per_layer_input_gate, &l.per_layer_projection})
      if (v->valid()) t.push_back(v);
  return t;
}

}  // namespace g3n
