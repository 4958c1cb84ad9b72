#include "model/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"

namespace g3n {
namespace {

using json = nlohmann::json;

template <class T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail("config field '", key, "' has the wrong type: ", it->dump());
  }
}

double rope_theta(const json& params, const char* layer_type, double fallback) {
  if (!params.is_object()) return fallback;
  auto it = params.find(layer_type);
  if (it == params.end() || !it->is_object()) return fallback;
  const std::string type = get_or<std::string>(*it, "rope_type", "default");
  if (type != "default" && type != "linear")
    fail("config field 'rope_parameters.", layer_type, ".rope_type' is '", type,
         "'; only 'default' and 'linear' RoPE are supported");
  return get_or<double>(*it, "rope_theta", fallback);
}

TextConfig parse_text(const json& j, Architecture arch) {
  TextConfig c;
  c.arch = arch;
  if (arch == Architecture::Gemma3) {
    // Gemma3TextConfig's defaults where they differ from Gemma 3n's.
    c.vocab_size = 262208;
    c.hidden_size = 2304;
    c.num_hidden_layers = 26;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 4;
    c.sliding_window = 4096;
    c.num_kv_shared_layers = 0;
    c.altup_num_inputs = 1;
    c.v_norm = false;
    c.norm_weight_plus_one = true;
    c.query_scale = 1.0f / std::sqrt(get_or<float>(j, "query_pre_attn_scalar", 256.0f));
  }
  c.vocab_size = get_or<int64_t>(j, "vocab_size", c.vocab_size);
  c.vocab_size_per_layer_input = get_or<int64_t>(j, "vocab_size_per_layer_input", c.vocab_size_per_layer_input);
  c.hidden_size = get_or<int64_t>(j, "hidden_size", c.hidden_size);
  c.hidden_size_per_layer_input = get_or<int64_t>(j, "hidden_size_per_layer_input", c.hidden_size_per_layer_input);
  c.num_hidden_layers = get_or<int>(j, "num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = get_or<int>(j, "num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = get_or<int>(j, "num_key_value_heads", c.num_key_value_heads);
  c.head_dim = get_or<int>(j, "head_dim", c.head_dim);
  c.sliding_window = get_or<int>(j, "sliding_window", c.sliding_window);
  c.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", c.max_position_embeddings);
  c.num_kv_shared_layers = get_or<int>(j, "num_kv_shared_layers", c.num_kv_shared_layers);
  c.altup_num_inputs = get_or<int>(j, "altup_num_inputs", c.altup_num_inputs);
  c.altup_active_idx = get_or<int>(j, "altup_active_idx", c.altup_active_idx);
  c.altup_coef_clip = get_or<float>(j, "altup_coef_clip", c.altup_coef_clip);
  c.altup_correct_scale = get_or<bool>(j, "altup_correct_scale", c.altup_correct_scale);
  c.laurel_rank = get_or<int>(j, "laurel_rank", c.laurel_rank);
  c.final_logit_softcapping = get_or<float>(j, "final_logit_softcapping", 0.0f);
  if (!j.contains("final_logit_softcapping") && arch == Architecture::Gemma3n) c.final_logit_softcapping = 30.0f;
  if (arch == Architecture::Gemma3 && get_or<float>(j, "attn_logit_softcapping", 0.0f) > 0)
    fail("config field 'attn_logit_softcapping' is set; attention logit soft-capping is not supported");
  c.rms_norm_eps = get_or<float>(j, "rms_norm_eps", c.rms_norm_eps);
  c.pad_token_id = get_or<int>(j, "pad_token_id", c.pad_token_id);
  c.bos_token_id = get_or<int>(j, "bos_token_id", c.bos_token_id);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer()) c.eos_token_id = j["eos_token_id"].get<int>();

  const std::string act = get_or<std::string>(j, "hidden_activation", "gelu_pytorch_tanh");
  if (act != "gelu_pytorch_tanh") fail("config field 'hidden_activation' is '", act, "'; only gelu_pytorch_tanh is supported");
  if (get_or<bool>(j, "attention_bias", false)) fail("config field 'attention_bias' is true; Gemma 3n has no biases");

  const int L = c.num_hidden_layers;
  if (L <= 0) fail("config field 'num_hidden_layers' must be positive, got ", L);

  // intermediate_size: a scalar for every layer or a per-layer list.
  if (auto it = j.find("intermediate_size"); it != j.end() && it->is_array()) {
    if (int(it->size()) != L)
      fail("config field 'intermediate_size' has ", it->size(), " entries but num_hidden_layers is ", L);
    for (const auto& v : *it) c.intermediate_size.push_back(v.get<int64_t>());
  } else {
    c.intermediate_size.assign(size_t(L), get_or<int64_t>(j, "intermediate_size", 16384));
  }

  // layer_types, default: every 5th layer full attention.
  if (auto it = j.find("layer_types"); it != j.end() && it->is_array()) {
    if (int(it->size()) != L) fail("config field 'layer_types' has ", it->size(), " entries but num_hidden_layers is ", L);
    for (const auto& v : *it) {
      const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
      if (s == "sliding_attention") c.layer_types.push_back(AttentionType::Sliding);
      else if (s == "full_attention") c.layer_types.push_back(AttentionType::Full);
      else fail("config field 'layer_types' has unknown entry ", s);
    }
  } else {
    // Gemma 3n: every 5th layer is global; Gemma 3: every sliding_window_pattern-th (default 6).
    const int every = arch == Architecture::Gemma3 ? get_or<int>(j, "sliding_window_pattern", 6) : 5;
    if (every <= 0) fail("config field 'sliding_window_pattern' must be positive, got ", every);
    for (int i = 0; i < L; ++i) c.layer_types.push_back((i + 1) % every == 0 ? AttentionType::Full : AttentionType::Sliding);
  }

  // activation_sparsity_pattern: list, scalar, or default (0.95 for the first 10 layers when L > 10).
  if (auto it = j.find("activation_sparsity_pattern"); it != j.end() && it->is_array()) {
    if (int(it->size()) != L)
      fail("config field 'activation_sparsity_pattern' has ", it->size(), " entries but num_hidden_layers is ", L);
    for (const auto& v : *it) c.activation_sparsity.push_back(v.get<float>());
  } else if (it != j.end() && it->is_number()) {
    c.activation_sparsity.assign(size_t(L), it->get<float>());
  } else {
    const int sparse = L > 10 && arch == Architecture::Gemma3n ? 10 : 0;
    for (int i = 0; i < L; ++i) c.activation_sparsity.push_back(i < sparse ? 0.95f : 0.0f);
  }

  // RoPE: new format rope_parameters {sliding_attention: {...}, full_attention: {...}}, or the old
  // rope_theta / rope_local_base_freq / rope_scaling keys.
  double theta_full = get_or<double>(j, "rope_theta", 1e6);
  double theta_local = get_or<double>(j, "rope_local_base_freq", 1e4);
  auto scaling_of = [&](const json& params, const char* field) {
    const std::string type = get_or<std::string>(params, "rope_type", get_or<std::string>(params, "type", "default"));
    if (type == "default") return 1.0f;
    if (type == "linear") return get_or<float>(params, "factor", 1.0f);
    fail("config field '", field, "' asks for '", type, "' RoPE; only 'default' and 'linear' are supported");
  };
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) c.rope_scaling_full = scaling_of(*it, "rope_scaling");
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    theta_full = rope_theta(*it, "full_attention", theta_full);
    theta_local = rope_theta(*it, "sliding_attention", theta_local);
    if (auto f = it->find("full_attention"); f != it->end() && f->is_object())
      c.rope_scaling_full = scaling_of(*f, "rope_parameters.full_attention");
    if (auto sl = it->find("sliding_attention"); sl != it->end() && sl->is_object() &&
        scaling_of(*sl, "rope_parameters.sliding_attention") != 1.0f)
      fail("config field 'rope_parameters.sliding_attention' scales RoPE; only the full-attention layers may");
  }
  c.rope_theta_full = theta_full;
  c.rope_theta_sliding = theta_local;
  return c;
}

MultimodalEmbedderConfig parse_embedder(const json& j, int64_t default_offset, int64_t default_hidden) {
  MultimodalEmbedderConfig e;
  e.vocab_offset = get_or<int64_t>(j, "vocab_offset", default_offset);
  e.vocab_size = get_or<int64_t>(j, "vocab_size", 128);
  e.hidden_size = get_or<int64_t>(j, "hidden_size", default_hidden);
  e.rms_norm_eps = get_or<float>(j, "rms_norm_eps", 1e-6f);
  return e;
}

}  // namespace

void TextConfig::validate() {
  const int L = num_hidden_layers;
  auto positive = [](int64_t v, const char* field) {
    if (v <= 0) fail("config field '", field, "' must be positive, got ", v);
  };
  positive(L, "num_hidden_layers");
  positive(vocab_size, "vocab_size");
  positive(vocab_size_per_layer_input, "vocab_size_per_layer_input");
  positive(hidden_size, "hidden_size");
  positive(hidden_size_per_layer_input, "hidden_size_per_layer_input");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(sliding_window, "sliding_window");
  positive(laurel_rank, "laurel_rank");
  positive(max_position_embeddings, "max_position_embeddings");
  if (head_dim % 2 != 0) fail("config field 'head_dim' must be even for RoPE, got ", head_dim);
  if (num_attention_heads % num_key_value_heads != 0)
    fail("config field 'num_attention_heads' (", num_attention_heads, ") is not a multiple of 'num_key_value_heads' (",
         num_key_value_heads, ")");
  if (altup_num_inputs < 1 || altup_num_inputs > 16)
    fail("config field 'altup_num_inputs' must be in [1, 16], got ", altup_num_inputs);
  if (altup_active_idx != 0)
    fail("config field 'altup_active_idx' is ", altup_active_idx, "; only 0 is supported (as in every Gemma 3n)");
  if (rms_norm_eps < 0) fail("config field 'rms_norm_eps' must not be negative");
  if (rope_theta_full <= 0 || rope_theta_sliding <= 0) fail("config field 'rope_theta' must be positive");
  if (int(intermediate_size.size()) != L || int(layer_types.size()) != L || int(activation_sparsity.size()) != L)
    fail("config per-layer lists do not have num_hidden_layers (", L, ") entries");
  for (int i = 0; i < L; ++i) {
    if (intermediate_size[size_t(i)] <= 0) fail("config field 'intermediate_size' of layer ", i, " must be positive");
    const float s = activation_sparsity[size_t(i)];
    if (!(s >= 0.0f && s < 1.0f)) fail("config field 'activation_sparsity_pattern' of layer ", i, " must be in [0, 1), got ", s);
  }
  if (num_kv_shared_layers < 0 || num_kv_shared_layers >= L)
    fail("config field 'num_kv_shared_layers' (", num_kv_shared_layers, ") must be in [0, num_hidden_layers = ", L, ")");

  // KV sharing: a layer at or above first_kv_shared_layer reads the cache of the last earlier layer of
  // its own type (reference: Gemma3nTextConfig.kv_sharing_modes).
  first_kv_shared_layer = L - num_kv_shared_layers;
  kv_source_layer.assign(size_t(L), 0);
  for (int i = 0; i < L; ++i) {
    if (i < first_kv_shared_layer) {
      kv_source_layer[size_t(i)] = i;
      continue;
    }
    int src = -1;
    for (int k = first_kv_shared_layer - 1; k >= 0; --k)
      if (layer_types[size_t(k)] == layer_types[size_t(i)]) {
        src = k;
        break;
      }
    if (src < 0)
      fail("config: layer ", i, " shares K/V (num_kv_shared_layers = ", num_kv_shared_layers,
           ") but no earlier layer of type ", is_sliding(i) ? "sliding_attention" : "full_attention",
           " produces a cache (check 'layer_types')");
    kv_source_layer[size_t(i)] = src;
  }
}

ModelConfig parse_config(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("config.json is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail("config.json is not a JSON object");
  ModelConfig m;
  m.model_type = get_or<std::string>(j, "model_type", "");
  if (auto it = j.find("text_config"); it != j.end()) {
    if (!it->is_object()) fail("config field 'text_config' is not an object");
    m.multimodal = m.model_type != "gemma3";
    m.text = parse_text(*it, m.model_type == "gemma3" ? Architecture::Gemma3 : Architecture::Gemma3n);
    m.vision = parse_embedder(j.value("vision_config", json::object()), 262144, 2048);
    m.audio = parse_embedder(j.value("audio_config", json::object()), 262272, 1536);
    m.image_token_id = get_or<int64_t>(j, "image_token_id", m.image_token_id);
    m.audio_token_id = get_or<int64_t>(j, "audio_token_id", m.audio_token_id);
    m.boi_token_id = get_or<int64_t>(j, "boi_token_id", m.boi_token_id);
    m.eoi_token_id = get_or<int64_t>(j, "eoi_token_id", m.eoi_token_id);
    m.boa_token_id = get_or<int64_t>(j, "boa_token_id", m.boa_token_id);
    m.eoa_token_id = get_or<int64_t>(j, "eoa_token_id", m.eoa_token_id);
  } else {
    if (!m.model_type.empty() && m.model_type != "gemma3n_text" && m.model_type != "gemma3n" &&
        m.model_type != "gemma3_text")
      fail("config.json describes a '", m.model_type, "' model, not Gemma 3n (or Gemma 3)");
    m.text = parse_text(j, m.model_type == "gemma3_text" ? Architecture::Gemma3 : Architecture::Gemma3n);
  }
  m.text.validate();
  return m;
}

ModelConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return parse_config(ss.str());
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

}  // namespace g3n
