#include "model/gguf_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "base/error.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"

namespace g3n {
namespace {

// llama.cpp's per-block names (gguf-py constants.py, MODEL_ARCH.GEMMA3N) and the HF names they come from.
const std::pair<const char*, const char*> kBlockNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"post_attention_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
    {"inp_gate.weight", "per_layer_input_gate.weight"},
    {"proj.weight", "per_layer_projection.weight"},
    {"post_norm.weight", "post_per_layer_input_norm.weight"},
    {"altup_correct_coef.weight", "altup.correction_coefs.weight"},
    {"altup_correct_scale.weight", "altup.correct_output_scale"},  // HF has no ".weight" here
    {"altup_predict_coef.weight", "altup.prediction_coefs.weight"},
    {"altup_router.weight", "altup.modality_router.weight"},
    {"altup_router_norm.weight", "altup.router_norm.weight"},
    {"laurel_l.weight", "laurel.linear_left.weight"},
    {"laurel_r.weight", "laurel.linear_right.weight"},
    {"laurel_post_norm.weight", "laurel.post_laurel_norm.weight"},
};

const std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd.weight", "embed_tokens.weight"},
    {"per_layer_token_embd.weight", "embed_tokens_per_layer.weight"},
    {"per_layer_model_proj.weight", "per_layer_model_projection.weight"},
    {"per_layer_proj_norm.weight", "per_layer_projection_norm.weight"},
    {"output_norm.weight", "norm.weight"},
};

const char kPrefix[] = "model.";

}  // namespace

TensorView as_engine_tensor(const GgufTensorInfo& t, GgufSource& src, const std::string& file, bool float_only) {
  TensorView v;
  v.shape = t.shape();
  v.data = t.data;
  v.ggml_type = int(t.type);
  v.ggml_data = t.data;
  const int64_t cols = t.dims.empty() ? 1 : t.dims[0];
  const int64_t rows = t.numel() / std::max<int64_t>(1, cols);
  if (t.type == ggml::Q5_0 && !float_only && t.dims.size() >= 2) {
    // Q5_0 -> Q8_0 exactly: the same scale d, and q - 16 in [-16, 15] as the int8 value.
    v.dtype = DType::Q8_0;
    const int64_t blocks = rows * (cols / kQuantBlock);
    const size_t in_block = size_t(ggml::type_info(ggml::Q5_0)->type_size);
    uint8_t* dst = src.allocate(size_t(blocks) * kBlockBytesQ8_0);
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* in = t.data + size_t(b) * in_block;
      uint8_t* out = dst + size_t(b) * kBlockBytesQ8_0;
      std::memcpy(out, in, 2);  // d
      ggml::q5_0_quants(in, reinterpret_cast<int8_t*>(out + 2));
    }
    v.data = dst;
    return v;
  }
  switch (t.type) {
    case ggml::F32: v.dtype = DType::F32; return v;
    case ggml::F16: v.dtype = DType::F16; return v;
    case ggml::BF16: v.dtype = DType::BF16; return v;
    case ggml::Q8_0: if (float_only) break; v.dtype = DType::Q8_0; return v;
    case ggml::Q4_0: if (float_only) break; v.dtype = DType::Q4_0; return v;
    default: break;
  }
  if (!ggml::can_dequantize(t.type))
    fail(file, ": tensor ", t.name, " has type ", ggml::type_name(t.type), ", which g3n cannot read");
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t in_row = ggml::row_bytes(t.type, cols);
  if (!float_only && t.dims.size() >= 2 && cols % kQuantBlock == 0) {
    // Matrices: repacked to Q8_0 (error <= half a Q8 step on top of the file's own quantisation).
    v.dtype = DType::Q8_0;
    const size_t out_row = dtype_bytes(DType::Q8_0, cols);
    uint8_t* dst = src.allocate(out_row * size_t(rows));
    for (int64_t r = 0; r < rows; ++r) {
      ggml::dequantize_row(t.type, t.data + size_t(r) * in_row, row.data(), cols);
      quant::quantize_row_q8_0(row.data(), cols, dst + size_t(r) * out_row);
    }
    v.data = dst;
  } else {
    v.dtype = DType::F32;
    auto* dst = reinterpret_cast<float*>(src.allocate(sizeof(float) * size_t(t.numel())));
    for (int64_t r = 0; r < rows; ++r) ggml::dequantize_row(t.type, t.data + size_t(r) * in_row, dst + r * cols, cols);
    v.data = dst;
  }
  return v;
}

namespace {

// Splits a stacked [n, out, in] tensor (GGUF ne = {in, out, n}) into n matrices.
std::vector<TensorView> unstack(const TensorView& t) {
  std::vector<TensorView> out;
  if (t.shape.size() != 3) return out;
  const size_t matrix_bytes = dtype_bytes(t.dtype, t.shape[1] * t.shape[2]);
  for (int64_t i = 0; i < t.shape[0]; ++i) {
    TensorView m;
    m.dtype = t.dtype;
    m.shape = {t.shape[1], t.shape[2]};
    m.data = static_cast<const uint8_t*>(t.data) + size_t(i) * matrix_bytes;
    if (t.ggml_data == t.data) {  // not repacked: the file's encoding is this one
      m.ggml_type = t.ggml_type;
      m.ggml_data = m.data;
    }
    out.push_back(m);
  }
  return out;
}

std::string arch_key(const std::string& arch, const char* key) { return arch + "." + key; }

}  // namespace

std::string gemma3n_hf_name(const std::string& g) {
  for (const auto& [gguf, hf] : kGlobalNames)
    if (g == gguf) return std::string(kPrefix) + hf;
  if (g.rfind("blk.", 0) == 0) {
    const size_t dot = g.find('.', 4);
    if (dot == std::string::npos) return {};
    const std::string layer = g.substr(4, dot - 4), rest = g.substr(dot + 1);
    for (const auto& [gguf, hf] : kBlockNames)
      if (rest == gguf) return std::string(kPrefix) + "layers." + layer + "." + hf;
  }
  return {};
}

std::string gemma3n_gguf_name(const std::string& h) {
  std::string name = h;
  for (const char* p : {"model.language_model.", "model."})
    if (name.rfind(p, 0) == 0) {
      name = name.substr(std::strlen(p));
      break;
    }
  for (const auto& [gguf, hf] : kGlobalNames)
    if (name == hf) return gguf;
  if (name.rfind("layers.", 0) == 0) {
    const size_t dot = name.find('.', 7);
    if (dot == std::string::npos) return {};
    const std::string layer = name.substr(7, dot - 7), rest = name.substr(dot + 1);
    for (const auto& [gguf, hf] : kBlockNames)
      if (rest == hf) return "blk." + layer + "." + gguf;
  }
  return {};
}

GgufModel load_gguf_model(const GgufFile& f) {
  const std::string file = f.path();
  const std::string arch = f.get_string("general.architecture", "");
  if (arch != "gemma3n" && arch != "gemma3")
    fail(file, ": general.architecture is '", arch, "'; g3n reads 'gemma3n' and 'gemma3' files");
  const bool is_3n = arch == "gemma3n";

  auto source = std::make_unique<GgufSource>();
  std::map<std::string, const GgufTensorInfo*> by_name;
  for (const auto& t : f.tensors()) by_name[t.name] = &t;
  auto tensor = [&](const std::string& name) -> const GgufTensorInfo& {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail(file, ": missing tensor ", name);
    return *it->second;
  };

  // ---- config from the metadata (HF names in comments)
  TextConfig c;
  if (!is_3n) {
    // llama.cpp's Gemma 3: norms stored with the +1 already added (its converter folds it in), query
    // scaled by 1/sqrt(key_length), every 6th layer global, no AltUp / LAuReL / PLE / KV sharing.
    c.arch = Architecture::Gemma3;
    c.v_norm = false;
    c.altup_num_inputs = 1;
    c.num_kv_shared_layers = 0;
  }
  auto u32 = [&](const char* key) { return f.get_u32(arch_key(arch, key)); };
  c.num_hidden_layers = int(u32("block_count"));
  c.hidden_size = u32("embedding_length");
  c.max_position_embeddings = u32("context_length");
  c.num_attention_heads = int(u32("attention.head_count"));
  c.num_key_value_heads = int(u32("attention.head_count_kv"));
  c.head_dim = int(f.get_u32(arch_key(arch, "attention.key_length"), uint32_t(c.hidden_size / c.num_attention_heads)));
  c.rms_norm_eps = f.get_f32(arch_key(arch, "attention.layer_norm_rms_epsilon"), 1e-6f);
  c.sliding_window = int(f.get_u32(arch_key(arch, "attention.sliding_window"), 512));
  c.rope_theta_full = f.get_f32(arch_key(arch, "rope.freq_base"), 1e6f);
  c.rope_theta_sliding = f.get_f32(arch_key(arch, "rope.freq_base_swa"), 1e4f);
  if (is_3n) {
    c.hidden_size_per_layer_input = f.get_u32(arch_key(arch, "embedding_length_per_layer_input"), 256);
    c.altup_num_inputs = int(f.get_u32(arch_key(arch, "altup.num_inputs"), 4));
    c.altup_active_idx = int(f.get_u32(arch_key(arch, "altup.active_idx"), 0));
    c.num_kv_shared_layers = int(f.get_u32(arch_key(arch, "attention.shared_kv_layers"), 0));
  } else {
    c.query_scale = 1.0f / std::sqrt(float(c.head_dim));
    const std::string scaling = f.get_string(arch_key(arch, "rope.scaling.type"), "none");
    if (scaling == "linear") c.rope_scaling_full = f.get_f32(arch_key(arch, "rope.scaling.factor"), 1.0f);
    else if (scaling != "none") fail(file, ": ", arch, ".rope.scaling.type '", scaling, "' is not supported");
  }
  c.final_logit_softcapping = f.get_f32(arch_key(arch, "final_logit_softcapping"), is_3n ? 30.0f : 0.0f);
  const int L = c.num_hidden_layers;
  if (L <= 0 || L > 1024) fail(file, ": ", arch, ".block_count is ", L);

  const std::string ffn_key = arch_key(arch, "feed_forward_length");
  if (f.has(ffn_key) && f.at(ffn_key).is_array()) {
    for (auto v : f.get_array<int64_t>(ffn_key)) c.intermediate_size.push_back(v);
    if (int(c.intermediate_size.size()) != L) fail(file, ": ", ffn_key, " has ", c.intermediate_size.size(), " entries for ", L, " layers");
  } else {
    c.intermediate_size.assign(size_t(L), int64_t(f.get_u64(ffn_key)));
  }
  const std::string pattern_key = arch_key(arch, "attention.sliding_window_pattern");
  if (f.has(pattern_key) && f.at(pattern_key).is_array()) {
    const auto pattern = f.get_array<bool>(pattern_key);
    if (int(pattern.size()) != L) fail(file, ": ", pattern_key, " has ", pattern.size(), " entries for ", L, " layers");
    for (bool sliding : pattern) c.layer_types.push_back(sliding ? AttentionType::Sliding : AttentionType::Full);
  } else {
    const int every = is_3n ? 5 : 6;  // llama.cpp's hard-coded patterns when the file has none
    for (int i = 0; i < L; ++i) c.layer_types.push_back((i + 1) % every == 0 ? AttentionType::Full : AttentionType::Sliding);
  }
  // activation_sparsity_scale holds Φ⁻¹(target) per layer (−∞ for dense layers): decide "sparse"
  // from the sign, and recover the target as Φ(scale).
  const std::string sparsity_key = arch_key(arch, "activation_sparsity_scale");
  if (!is_3n) {
    c.activation_sparsity.assign(size_t(L), 0.0f);
  } else if (f.has(sparsity_key)) {
    const auto scales = f.get_array<float>(sparsity_key);
    if (int(scales.size()) != L) fail(file, ": ", sparsity_key, " has ", scales.size(), " entries for ", L, " layers");
    for (float s : scales)
      c.activation_sparsity.push_back(std::isfinite(s) && s > 0 ? float(0.5 * std::erfc(-double(s) / std::sqrt(2.0))) : 0.0f);
  } else {
    for (int i = 0; i < L; ++i) c.activation_sparsity.push_back(i < 10 && L > 10 ? 0.95f : 0.0f);
  }
  c.vocab_size = tensor("token_embd.weight").shape().at(0);
  if (is_3n) {
    c.vocab_size_per_layer_input = tensor("per_layer_token_embd.weight").shape().at(0);
    c.laurel_rank = int(tensor("blk.0.laurel_l.weight").shape().at(0));
  }
  c.bos_token_id = int(f.get_u32("tokenizer.ggml.bos_token_id", 2));
  c.eos_token_id = int(f.get_u32("tokenizer.ggml.eos_token_id", 1));
  c.pad_token_id = int(f.get_u32("tokenizer.ggml.padding_token_id", 0));
  c.validate();

  // ---- tensors
  for (const auto& t : f.tensors()) {
    if (t.name == "altup_proj.weight" || t.name == "altup_unembd_proj.weight") {
      const auto parts = unstack(as_engine_tensor(t, *source, file));
      if (int(parts.size()) != c.altup_num_inputs - 1)
        fail(file, ": tensor ", t.name, " has shape ", shape_str(t.shape()), ", expected ", c.altup_num_inputs - 1,
             " stacked matrices");
      const char* hf = t.name == "altup_proj.weight" ? "altup_projections." : "altup_unembed_projections.";
      for (size_t k = 0; k < parts.size(); ++k) source->add(std::string(kPrefix) + hf + std::to_string(k) + ".weight", parts[k]);
      continue;
    }
    const std::string hf = gemma3n_hf_name(t.name);
    if (hf.empty()) continue;  // not part of the text decoder (or llama.cpp's own extras)
    TensorView v = as_engine_tensor(t, *source, file);
    // GGUF stores [16, 4] / [4, 4] AltUp coefficient matrices and [D] vectors exactly as HF does
    // (ne reversed), so the shape check in the registry applies unchanged.
    source->add(hf, std::move(v));
  }

  GgufModel m;
  m.config.model_type = is_3n ? "gemma3n_text" : "gemma3_text";
  m.config.text = std::move(c);
  m.weights = std::move(source);
  return m;
}

}  // namespace g3n
