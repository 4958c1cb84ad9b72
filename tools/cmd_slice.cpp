// `g3n slice`: export a MatFormer profile of a Gemma 3n checkpoint as a checkpoint of that size, in
// the Hugging Face layout (loadable by transformers and by g3n), as the MatFormer Lab does: kept
// layers renamed in order, gate/up keep their first F rows and down its first F columns, the PLE
// table's column blocks and the PLE projection's row blocks of the kept layers, and a config with
// num_hidden_layers, per-layer intermediate_size, num_kv_shared_layers, layer_types and the sparsity
// pattern filtered by the kept layers. Everything else (embeddings, AltUp, vision and audio towers) is
// copied unchanged. The source may be a checkpoint directory or a GGUF file (then written as bf16).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "commands.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/matformer.h"

namespace g3n::tools {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// One output tensor: where its bytes come from.
struct Out {
  TensorInfo info;
  const TensorView* src = nullptr;
  int64_t rows = 0, cols = 0;    // the part of src copied: rows [0, rows) (or the listed blocks) x cols [0, cols)
  int64_t block = 0;             // PLE slicing: blocks of `block` columns / rows, taken from `blocks`
  std::vector<int> blocks;
  bool by_rows = false;          // blocks index rows (projection) rather than columns (table)
};

// Row r of the selection, as the output dtype's bytes.
void emit_row(const Out& o, int64_t r, std::vector<float>& f32, std::vector<uint8_t>& bytes) {
  const TensorView& t = *o.src;
  const int64_t full_cols = t.shape.back();
  const int64_t out_cols = o.info.shape.back();
  f32.resize(size_t(out_cols));
  if (o.block && !o.by_rows) {
    for (size_t b = 0; b < o.blocks.size(); ++b)
      to_f32(t, r * full_cols + int64_t(o.blocks[b]) * o.block, o.block, f32.data() + int64_t(b) * o.block);
  } else {
    int64_t src_row = r;
    if (o.block && o.by_rows) src_row = int64_t(o.blocks[size_t(r / o.block)]) * o.block + r % o.block;
    to_f32(t, src_row * full_cols, out_cols, f32.data());
  }
  const size_t esz = dtype_size(o.info.dtype);
  bytes.resize(size_t(out_cols) * esz);
  for (int64_t i = 0; i < out_cols; ++i) {
    if (o.info.dtype == DType::F32) std::memcpy(bytes.data() + i * 4, &f32[size_t(i)], 4);
    else if (o.info.dtype == DType::BF16) {
      const uint16_t h = f32_to_bf16(f32[size_t(i)]);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    } else {
      const uint16_t h = f32_to_f16(f32[size_t(i)]);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    }
  }
}

}  // namespace

Action register_slice(CLI::App& app) {
  struct Args {
    std::string model, profile, out;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("slice", "Export a MatFormer profile as a checkpoint of that size (Hugging Face layout)");
  cmd->add_option("-m,--model", a->model, "E4B checkpoint directory or GGUF file")->required();
  cmd->add_option("--profile", a->profile, "A published name, E2B, a JSON file or skip=..;ffn=..")->required();
  cmd->add_option("-o,--out", a->out, "Output directory")->required();
  return [a] {
    // ---- source
    std::unique_ptr<TensorStore> store;
    std::unique_ptr<GgufFile> gguf;
    std::unique_ptr<WeightSource> gguf_source;
    ModelConfig config;
    json config_json;
    std::vector<std::pair<std::string, const TensorView*>> tensors;  // source name -> view
    std::string prefix = "model.";
    if (fs::is_directory(a->model)) {
      std::ifstream in(fs::path(a->model) / "config.json");
      if (!in) fail("no config.json in ", a->model);
      std::stringstream ss;
      ss << in.rdbuf();
      config = parse_config(ss.str());
      config_json = json::parse(ss.str());
      store = std::make_unique<TensorStore>(TensorStore::open_dir(a->model));
      if (store->find("model.language_model.embed_tokens.weight")) prefix = "model.language_model.";
      for (const auto& n : store->names()) tensors.emplace_back(n, store->find(n));
    } else {
      gguf = std::make_unique<GgufFile>(GgufFile::open(a->model));
      GgufModel g = load_gguf_model(*gguf);
      config = g.config;
      gguf_source = std::move(g.weights);
      config_json = {{"model_type", "gemma3n_text"}, {"architectures", {"Gemma3nForCausalLM"}}};
      const TextConfig& c = config.text;
      config_json.update({{"vocab_size", c.vocab_size}, {"vocab_size_per_layer_input", c.vocab_size_per_layer_input},
                          {"hidden_size", c.hidden_size}, {"hidden_size_per_layer_input", c.hidden_size_per_layer_input},
                          {"num_attention_heads", c.num_attention_heads}, {"num_key_value_heads", c.num_key_value_heads},
                          {"head_dim", c.head_dim}, {"sliding_window", c.sliding_window}, {"laurel_rank", c.laurel_rank},
                          {"max_position_embeddings", c.max_position_embeddings}, {"rms_norm_eps", c.rms_norm_eps},
                          {"altup_num_inputs", c.altup_num_inputs}, {"final_logit_softcapping", c.final_logit_softcapping},
                          {"rope_parameters", {{"full_attention", {{"rope_type", "default"}, {"rope_theta", c.rope_theta_full}}},
                                               {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", c.rope_theta_sliding}}}}},
                          {"tie_word_embeddings", true}});
      // The GGUF source answers by HF name: walk the names the registry knows.
      for (const auto& t : gguf->tensors()) {
        const std::string hf = gemma3n_hf_name(t.name);
        if (!hf.empty()) tensors.emplace_back(hf, gguf_source->find(hf));
      }
      for (int k = 0; k + 1 < c.altup_num_inputs; ++k)
        for (const char* n : {"altup_projections.", "altup_unembed_projections."}) {
          const std::string hf = std::string("model.") + n + std::to_string(k) + ".weight";
          tensors.emplace_back(hf, gguf_source->find(hf));
        }
    }
    const TextConfig& c = config.text;
    const MatformerProfile p = resolve_profile(a->profile, c);
    validate_profile(p, c, false);
    const TextConfig sliced = sliced_config(c, p);

    // ---- config
    json& tc = config_json.contains("text_config") ? config_json["text_config"] : config_json;
    tc["num_hidden_layers"] = sliced.num_hidden_layers;
    tc["intermediate_size"] = sliced.intermediate_size;
    tc["num_kv_shared_layers"] = sliced.num_kv_shared_layers;
    json types = json::array(), sparsity = json::array();
    for (size_t i = 0; i < sliced.layer_types.size(); ++i) {
      types.push_back(sliced.layer_types[i] == AttentionType::Full ? "full_attention" : "sliding_attention");
      sparsity.push_back(sliced.activation_sparsity[i]);
    }
    tc["layer_types"] = types;
    tc["activation_sparsity_pattern"] = sparsity;
    fs::create_directories(a->out);
    {
      std::ofstream f(fs::path(a->out) / "config.json");
      f << config_json.dump(2) << "\n";
    }
    if (fs::is_directory(a->model))
      for (const char* extra : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                "special_tokens_map.json", "preprocessor_config.json", "processor_config.json"})
        if (fs::exists(fs::path(a->model) / extra))
          fs::copy_file(fs::path(a->model) / extra, fs::path(a->out) / extra, fs::copy_options::overwrite_existing);

    // ---- plan the tensors
    std::map<int, int> new_index;
    for (size_t i = 0; i < p.layers.size(); ++i) new_index[p.layers[i]] = int(i);
    const int64_t P = c.hidden_size_per_layer_input;
    std::vector<Out> outs;
    for (const auto& [name, view] : tensors) {
      if (!view) continue;
      Out o;
      o.src = view;
      o.info.name = name;
      o.info.dtype = dtype_is_quantized(view->dtype) ? DType::BF16 : view->dtype;
      o.info.shape = view->shape;
      const std::string layers_prefix = prefix + "layers.";
      if (name.rfind(layers_prefix, 0) == 0) {
        const size_t dot = name.find('.', layers_prefix.size());
        const int l = std::stoi(name.substr(layers_prefix.size(), dot - layers_prefix.size()));
        auto it = new_index.find(l);
        if (it == new_index.end()) continue;  // a skipped layer
        const std::string rest = name.substr(dot + 1);
        o.info.name = layers_prefix + std::to_string(it->second) + "." + rest;
        const int64_t F = p.ffn_widths[size_t(it->second)];
        if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight") o.info.shape[0] = F;
        if (rest == "mlp.down_proj.weight") o.info.shape[1] = F;
      } else if (name == prefix + "embed_tokens_per_layer.weight") {
        o.block = P;
        o.blocks = p.layers;
        o.info.shape[1] = int64_t(p.layers.size()) * P;
      } else if (name == prefix + "per_layer_model_projection.weight") {
        o.block = P;
        o.blocks = p.layers;
        o.by_rows = true;
        o.info.shape[0] = int64_t(p.layers.size()) * P;
      }
      o.rows = o.info.shape.size() >= 2 ? o.info.shape[0] : 1;
      for (size_t d = 1; d + 1 < o.info.shape.size(); ++d) o.rows *= o.info.shape[d];
      outs.push_back(std::move(o));
    }
    std::vector<TensorInfo> infos;
    for (const auto& o : outs) infos.push_back(o.info);
    SafetensorsWriter w((fs::path(a->out) / "model.safetensors").string(), infos);
    std::vector<float> f32;
    std::vector<uint8_t> bytes;
    for (const auto& o : outs)
      for (int64_t r = 0; r < o.rows; ++r) {
        emit_row(o, r, f32, bytes);
        w.write(bytes.data(), bytes.size());
      }
    w.finish();
    std::fprintf(stderr, "g3n slice: wrote %s (%d layers, profile %s)\n", a->out.c_str(), sliced.num_hidden_layers,
                 p.name.c_str());
    return 0;
  };
}

}  // namespace g3n::tools
