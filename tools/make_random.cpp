#include "make_random.h"

#include "commands.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "formats/safetensors_writer.h"
#include "model/audio_encoder.h"
#include "model/config.h"
#include "model/vision_encoder.h"
#include "model/weight_source.h"
#include "tokenizer/synthetic_vocab.h"

namespace g3n::tools {
namespace {

using json = nlohmann::json;

// The text config of each preset, in Gemma3nTextConfig's own keys.
json preset_config(const std::string& preset) {
  json c;
  c["model_type"] = "gemma3n_text";
  c["architectures"] = {"Gemma3nForCausalLM"};
  c["vocab_size"] = 262400;
  c["vocab_size_per_layer_input"] = 262144;
  c["hidden_size_per_layer_input"] = 256;
  c["num_attention_heads"] = 8;
  c["num_key_value_heads"] = 2;
  c["head_dim"] = 256;
  c["hidden_size"] = 2048;
  c["sliding_window"] = 512;
  c["laurel_rank"] = 64;
  c["max_position_embeddings"] = 32768;
  if (preset == "e2b") {
    c["num_hidden_layers"] = 30;
    c["intermediate_size"] = 8192;
    c["num_kv_shared_layers"] = 10;
  } else if (preset == "e4b") {
    c["num_hidden_layers"] = 35;
    c["intermediate_size"] = 16384;
    c["num_kv_shared_layers"] = 15;
  } else if (preset == "tiny") {
    // Small enough to build in a second, with every mechanism present: the real vocabulary, both
    // attention types, a sliding window shorter than a paragraph, KV sharing and activation sparsity.
    c["num_hidden_layers"] = 6;
    c["hidden_size"] = 128;
    c["hidden_size_per_layer_input"] = 16;
    c["num_attention_heads"] = 4;
    c["num_key_value_heads"] = 2;
    c["head_dim"] = 32;
    c["intermediate_size"] = 256;
    c["laurel_rank"] = 8;
    c["sliding_window"] = 32;
    c["num_kv_shared_layers"] = 2;
  } else {
    fail("unknown preset '", preset, "' (expected tiny, e2b or e4b)");
  }
  const int L = c["num_hidden_layers"];
  json types = json::array(), sparsity = json::array();
  const int sparse = preset == "tiny" ? 2 : 10;
  for (int i = 0; i < L; ++i) {
    const bool full = preset == "tiny" ? (i % 3 == 2) : ((i + 1) % 5 == 0);
    types.push_back(full ? "full_attention" : "sliding_attention");
    sparsity.push_back(i < sparse ? 0.95 : 0.0);
  }
  c["layer_types"] = types;
  c["activation_sparsity_pattern"] = sparsity;
  c["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 1000000.0}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  c["final_logit_softcapping"] = 30.0;
  c["rms_norm_eps"] = 1e-6;
  c["hidden_activation"] = "gelu_pytorch_tanh";
  c["altup_num_inputs"] = 4;
  c["altup_active_idx"] = 0;
  c["altup_coef_clip"] = 120.0;
  c["altup_correct_scale"] = true;
  c["tie_word_embeddings"] = true;
  c["pad_token_id"] = 0;
  c["eos_token_id"] = 1;
  c["bos_token_id"] = 2;
  return c;
}

// How a tensor is filled: centre + uniform noise of the given standard deviation.
struct Fill {
  float centre, stddev;
};

struct Planned {
  TensorInfo info;
  Fill fill;
};

std::vector<Planned> plan_tensors(const TextConfig& c, DType dtype, const std::string& m) {
  std::vector<Planned> t;
  const int64_t D = c.hidden_size, P = c.hidden_size_per_layer_input, L = c.num_hidden_layers;
  const int64_t K = c.altup_num_inputs, Dh = c.head_dim;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    t.push_back({{name, dtype, {out, in}}, {0.0f, 1.0f / std::sqrt(float(in))}});
  };
  auto norm = [&](const std::string& name, int64_t n) { t.push_back({{name, dtype, {n}}, {1.0f, 0.1f}}); };
  t.push_back({{m + "embed_tokens.weight", dtype, {c.vocab_size, D}}, {0.0f, 1.0f / std::sqrt(float(D))}});
  t.push_back({{m + "embed_tokens_per_layer.weight", dtype, {c.vocab_size_per_layer_input, L * P}}, {0.0f, 0.1f}});
  linear(m + "per_layer_model_projection.weight", L * P, D);
  norm(m + "per_layer_projection_norm.weight", P);
  for (int k = 0; k + 1 < K; ++k) linear(m + "altup_projections." + std::to_string(k) + ".weight", D, D);
  for (int k = 0; k + 1 < K; ++k) linear(m + "altup_unembed_projections." + std::to_string(k) + ".weight", D, D);
  norm(m + "norm.weight", D);
  for (int l = 0; l < L; ++l) {
    const std::string p = m + "layers." + std::to_string(l) + ".";
    const int64_t F = c.intermediate_size[size_t(l)];
    linear(p + "self_attn.q_proj.weight", c.num_attention_heads * Dh, D);
    if (c.owns_kv(l)) {
      linear(p + "self_attn.k_proj.weight", c.num_key_value_heads * Dh, D);
      linear(p + "self_attn.v_proj.weight", c.num_key_value_heads * Dh, D);
      norm(p + "self_attn.k_norm.weight", Dh);
    }
    linear(p + "self_attn.o_proj.weight", D, c.num_attention_heads * Dh);
    norm(p + "self_attn.q_norm.weight", Dh);
    norm(p + "input_layernorm.weight", D);
    norm(p + "post_attention_layernorm.weight", D);
    norm(p + "pre_feedforward_layernorm.weight", D);
    norm(p + "post_feedforward_layernorm.weight", D);
    linear(p + "mlp.gate_proj.weight", F, D);
    linear(p + "mlp.up_proj.weight", F, D);
    linear(p + "mlp.down_proj.weight", D, F);
    norm(p + "altup.correct_output_scale", D);
    t.push_back({{p + "altup.correction_coefs.weight", dtype, {K, K}}, {0.0f, 0.1f}});
    t.push_back({{p + "altup.prediction_coefs.weight", dtype, {K * K, K}}, {0.0f, 0.1f}});
    linear(p + "altup.modality_router.weight", K, D);
    norm(p + "altup.router_norm.weight", D);
    linear(p + "laurel.linear_left.weight", c.laurel_rank, D);
    linear(p + "laurel.linear_right.weight", D, c.laurel_rank);
    norm(p + "laurel.post_laurel_norm.weight", D);
    linear(p + "per_layer_input_gate.weight", P, D);
    linear(p + "per_layer_projection.weight", D, P);
    norm(p + "post_per_layer_input_norm.weight", D);
  }
  return t;
}

// A weight source that answers every tensor the loaders ask for with a zero tensor of the shape they
// expect, and remembers the requests: running the vision and audio encoders' own loaders over it yields
// the exact list of tower tensors (names and shapes) a checkpoint must hold, with no second copy of
// that knowledge here. Memory comes from calloc (untouched pages cost nothing).
class PlanningSource : public WeightSource {
 public:
  const TensorView* find(const std::string& name) const override {
    if (auto it = made_.find(name); it != made_.end()) return &it->second.view;
    // Existence probes (which naming layout is this?): say yes to the released layout only.
    static const TensorView probe{DType::F32, {1}, &probe_value_};
    return name.rfind("model.", 0) == 0 ? &probe : nullptr;
  }
  const TensorView* find_as(const std::string& name, const std::vector<int64_t>& shape) const override {
    if (auto it = made_.find(name); it != made_.end()) return &it->second.view;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    Made m;
    m.buffer.reset(static_cast<float*>(std::calloc(size_t(std::max<int64_t>(n, 1)), sizeof(float))));
    if (!m.buffer) fail("out of memory planning tensor ", name);
    m.view = TensorView{DType::F32, shape, m.buffer.get()};
    order_.push_back(name);
    return &made_.emplace(name, std::move(m)).first->second.view;
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> requested() const {
    std::vector<std::pair<std::string, std::vector<int64_t>>> out;
    for (const auto& n : order_) out.emplace_back(n, made_.at(n).view.shape);
    return out;
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct Made {
    std::unique_ptr<float, Free> buffer;
    TensorView view;
  };
  mutable std::map<std::string, Made> made_;
  mutable std::vector<std::string> order_;
  static inline const float probe_value_ = 0.0f;
};

// The towers' configs: reduced for the tiny preset (a 4-stage MobileNet-V5 with 8 channels and every block
// kind, each stage opening with a stride-2 block as in the released tower, the structure llama.cpp's
// mmproj graph assumes; a 2-block, 64-wide Conformer), the released ones otherwise.
void add_tower_configs(json& c, bool tiny) {
  json vision = {{"model_type", "gemma3n_vision"}, {"architecture", "mobilenetv5_300m_enc"}, {"hidden_size", 2048},
                 {"vocab_size", 128}, {"vocab_offset", 262144}, {"rms_norm_eps", 1e-6}, {"do_pooling", false}};
  json audio = {{"model_type", "gemma3n_audio"}, {"vocab_size", 128}, {"vocab_offset", 262272}};
  if (tiny) {
    auto er = [](int stride) {
      return json{{"block_type", "er"}, {"out_chs", 8}, {"stride", stride}, {"act_layer", nullptr},
                  {"exp_kernel_size", 3}, {"pw_kernel_size", 1}, {"exp_ratio", 1.0}, {"force_in_chs", 0},
                  {"se_ratio", 0.0}, {"noskip", false}};
    };
    auto uir = [](int stride, int start, int mid) {
      return json{{"block_type", "uir"}, {"out_chs", 8}, {"stride", stride}, {"act_layer", nullptr},
                  {"dw_kernel_size_start", start}, {"dw_kernel_size_mid", mid}, {"dw_kernel_size_end", 0},
                  {"exp_ratio", 1.0}, {"se_ratio", 0.0}, {"noskip", false}};
    };
    const json mqa = {{"block_type", "mqa"}, {"out_chs", 8}, {"stride", 1}, {"act_layer", nullptr},
                      {"dw_kernel_size", 3}, {"num_heads", 1}, {"key_dim", 8}, {"value_dim", 8}, {"kv_stride", 1},
                      {"noskip", false}};
    vision["model_args"] = {{"block_args", json::array({json::array({er(2)}), json::array({uir(2, 3, 5)}),
                                                         json::array({uir(2, 3, 5), mqa, uir(1, 0, 0)}),
                                                         json::array({uir(2, 3, 5)})})},
                            {"stem_size", 8}};
    audio.update({{"hidden_size", 64}, {"conf_num_attention_heads", 4}, {"conf_num_hidden_layers", 2},
                  {"sscp_conv_channel_size", {16, 8}}});
  }
  json text = c;
  text.erase("architectures");
  c = json{{"model_type", "gemma3n"}, {"architectures", {"Gemma3nForConditionalGeneration"}},
           {"text_config", text}, {"vision_config", vision}, {"audio_config", audio},
           {"audio_soft_tokens_per_image", 188}, {"vision_soft_tokens_per_image", 256},
           {"boi_token_id", 255999}, {"eoi_token_id", 262144}, {"image_token_id", 262145},
           {"boa_token_id", 256000}, {"eoa_token_id", 262272}, {"audio_token_id", 262273},
           {"initializer_range", 0.02}, {"tie_word_embeddings", true}};
}

// How a tower tensor is filled, from its name and shape (what the parity tests' randomisers do): norms
// around 1, layer-scale gammas in [0.3, 1.2], biases and per-dim scales small, weights N(0, 1/fan_in).
Fill tower_fill(const std::string& name, const std::vector<int64_t>& shape) {
  auto ends = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  if (ends("gamma")) return {0.75f, 0.26f};
  if (ends("per_dim_scale")) return {0.0f, 0.5f};
  if (shape.size() == 1)
    return (name.find("norm") != std::string::npos || name.find(".bn.") != std::string::npos) ? Fill{1.0f, 0.2f}
                                                                                              : Fill{0.0f, 0.1f};
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  return {0.0f, 1.0f / std::sqrt(float(std::max<int64_t>(fan_in, 1)))};
}

std::vector<Planned> plan_towers(const std::string& config_text, DType dtype) {
  const ModelConfig config = parse_config(config_text);
  PlanningSource planner;
  const VisionEncoder vision(config, parse_vision_arch(config_text), planner);
  const AudioEncoder audio(AudioEncoderConfig::from_json(config_text), planner);
  // The hard-token halves of the embedders (read by the text decoder's loader).
  for (const auto& [name, e] : {std::pair<std::string, const MultimodalEmbedderConfig*>{"embed_vision", &config.vision},
                                {"embed_audio", &config.audio}}) {
    planner.find_as("model." + name + ".embedding.weight", {e->vocab_size, e->hidden_size});
    planner.find_as("model." + name + ".hard_embedding_norm.weight", {e->hidden_size});
  }
  std::vector<Planned> out;
  for (const auto& [name, shape] : planner.requested()) out.push_back({{name, dtype, shape}, tower_fill(name, shape)});
  return out;
}

// splitmix64: a counter-based generator, so every chunk of every tensor can be filled independently
// (in parallel) and the result does not depend on the thread count.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

void make_random(const MakeRandomOptions& o) {
  namespace fs = std::filesystem;
  if (o.out.empty()) fail("make-random needs --out DIR");
  DType dtype;
  if (o.dtype == "bf16") dtype = DType::BF16;
  else if (o.dtype == "f32") dtype = DType::F32;
  else fail("unknown --dtype '", o.dtype, "' (expected bf16 or f32)");

  json config = preset_config(o.preset);
  config["dtype"] = dtype == DType::BF16 ? "bfloat16" : "float32";
  const bool towers = o.modalities == "all" || (o.modalities.empty() && o.preset == "tiny");
  if (!o.modalities.empty() && o.modalities != "all" && o.modalities != "text")
    fail("unknown --modalities '", o.modalities, "' (expected text or all)");
  ModelConfig parsed = parse_config(config.dump());
  std::vector<Planned> plan = plan_tensors(parsed.text, dtype, towers ? "model.language_model." : "model.");
  if (towers) {
    if (!o.towers.empty() && o.towers != "tiny" && o.towers != "real")
      fail("unknown --towers '", o.towers, "' (expected tiny or real)");
    add_tower_configs(config, o.towers.empty() ? o.preset == "tiny" : o.towers == "tiny");
    config["dtype"] = dtype == DType::BF16 ? "bfloat16" : "float32";
    for (auto& p : plan_towers(config.dump(), dtype)) plan.push_back(std::move(p));
  }

  fs::create_directories(o.out);
  {
    std::ofstream f(fs::path(o.out) / "config.json");
    f << config.dump(2) << "\n";
    if (!f) fail("cannot write ", (fs::path(o.out) / "config.json").string());
  }
  {
    json gen = {{"bos_token_id", 2}, {"eos_token_id", {1, 106}}, {"pad_token_id", 0}, {"do_sample", true},
                {"temperature", 1.0}, {"top_k", 64}, {"top_p", 0.95}};
    std::ofstream f(fs::path(o.out) / "generation_config.json");
    f << gen.dump(2) << "\n";
  }

  {
    // A synthetic SentencePiece vocabulary laid out like Gemma's (the special ids in their places,
    // byte fallback), so the random checkpoint runs from text with no download.
    const std::string proto = make_synthetic_sentencepiece_model();
    std::ofstream f(fs::path(o.out) / "tokenizer.model", std::ios::binary);
    f.write(proto.data(), std::streamsize(proto.size()));
    if (!f) fail("cannot write ", (fs::path(o.out) / "tokenizer.model").string());
  }

  std::vector<TensorInfo> infos;
  uint64_t total = 0;
  for (const auto& p : plan) {
    infos.push_back(p.info);
    uint64_t n = 1;
    for (auto d : p.info.shape) n *= uint64_t(d);
    total += n * dtype_size(dtype);
  }
  SafetensorsWriter writer((fs::path(o.out) / "model.safetensors").string(), infos);
  ThreadPool pool(o.threads);
  constexpr int64_t kChunk = 1 << 20;  // elements per generated block
  std::vector<uint8_t> buf(size_t(kChunk) * dtype_size(dtype));
  uint64_t written = 0, last_report = 0;
  const bool show = total > (uint64_t(1) << 30);
  for (size_t ti = 0; ti < plan.size(); ++ti) {
    const auto& p = plan[ti];
    int64_t n = 1;
    for (auto d : p.info.shape) n *= d;
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      const int64_t len = std::min(kChunk, n - begin);
      // Uniform in [-sqrt(3), sqrt(3)] has unit variance.
      const float a = p.fill.stddev * std::sqrt(3.0f);
      const uint64_t stream = splitmix64(o.seed ^ splitmix64(ti * 0x100000001b3ull));
      pool.parallel_for(len, 16384, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const uint64_t r = splitmix64(stream + uint64_t(begin + i));
          const float u = float(r >> 40) * (1.0f / float(1 << 24)) * 2.0f - 1.0f;
          const float v = p.fill.centre + a * u;
          if (dtype == DType::BF16) reinterpret_cast<uint16_t*>(buf.data())[i] = f32_to_bf16(v);
          else reinterpret_cast<float*>(buf.data())[i] = v;
        }
      });
      writer.write(buf.data(), size_t(len) * dtype_size(dtype));
      written += uint64_t(len) * dtype_size(dtype);
      if (show && written - last_report > (uint64_t(256) << 20)) {
        std::fprintf(stderr, "\rwriting %s: %5.1f%% of %.2f GB", o.out.c_str(), 100.0 * double(written) / double(total),
                     double(total) / 1e9);
        last_report = written;
      }
    }
  }
  writer.finish();
  if (show) std::fprintf(stderr, "\n");
}

Action register_make_random(CLI::App& app) {
  auto o = std::make_shared<MakeRandomOptions>();
  auto* cmd = app.add_subcommand("make-random", "Write a random checkpoint with real Gemma 3n shapes");
  cmd->add_option("--preset", o->preset, "tiny | e2b | e4b")->check(CLI::IsMember({"tiny", "e2b", "e4b"}));
  cmd->add_option("-o,--out", o->out, "Output directory")->required();
  cmd->add_option("--seed", o->seed, "Random seed");
  cmd->add_option("--dtype", o->dtype, "bf16 | f32")->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("-t,--threads", o->threads, "Worker threads (0: all cores)");
  cmd->add_option("--modalities", o->modalities,
                  "text: the language model only; all: also the vision and audio towers (reduced ones for tiny). "
                  "Default: all for tiny, text for e2b / e4b")
      ->check(CLI::IsMember({"text", "all"}));
  cmd->add_option("--towers", o->towers,
                  "With the towers: tiny (reduced, fast) or real (MobileNet-V5-300M, the 1536-wide 12-block Conformer). "
                  "Default: tiny for the tiny preset, real otherwise")
      ->check(CLI::IsMember({"tiny", "real"}));
  return [o] {
    make_random(*o);
    return 0;
  };
}

}  // namespace g3n::tools
