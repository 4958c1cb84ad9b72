// `g3n quantize`: a Hugging Face checkpoint -> one GGUF file, in llama.cpp's gemma3n layout (its
// tensor names, stacked AltUp projections, metadata keys), quantised by a Gemma 3n-aware recipe:
//
//   q8: every matrix Q8_0; norms, AltUp coefficients / router and other vectors F32.
//   q4: attention and FFN projections Q4_0 (the bulk of the weights); the token embedding (also the
//       LM head), the PLE table and projection, AltUp / LAuReL / per-layer-input matrices Q8_0 (small,
//       or read once per token where 4-bit error would show in every logit); vectors F32.
//   f16: every matrix F16 (a lossless-enough reference for the quantised ones); f32: nothing rounded.
//
// GGUF is the container because it is the format the ecosystem already has (llama.cpp, Ollama,
// LM Studio), it is memory-mappable with aligned tensors, and its Q8_0 / Q4_0 blocks are exactly the
// layouts g3n's kernels read in place. The tokenizer travels in the file (tokenizer.ggml.* and the raw
// SentencePiece model under g3n.tokenizer.model), with the chat template.
#include <chrono>
#include <deque>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "base/error.h"
#include "base/thread_pool.h"
#include "commands.h"
#include "formats/gguf_writer.h"
#include "model/audio_encoder.h"
#include "model/gguf_mmproj.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/weights.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"
#include "tokenizer/gemma_chat_template.h"
#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>
#include <unistd.h>

namespace g3n::tools {
namespace {

enum class Recipe { Q8, Q4, F16, F32 };

struct Planned {
  std::string gguf_name;
  std::vector<const TensorView*> parts;  // one tensor, or the AltUp matrices to stack
  int type = ggml::F32;
  std::vector<int64_t> dims;  // GGUF order (ne0 first)
  int64_t pad_rows = 0;       // extra copies of row 0 appended (the PLE table up to the vocabulary)
};

bool is_big_projection(const std::string& hf) {
  for (const char* k : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
    if (hf.find(k) != std::string::npos) return true;
  return false;
}

int choose_type(Recipe r, const std::string& hf, const std::vector<int64_t>& shape) {
  const bool matrix = shape.size() >= 2 && shape.back() % kQuantBlock == 0 && shape.front() >= 16;
  if (!matrix) return ggml::F32;
  switch (r) {
    case Recipe::F16: return ggml::F16;
    case Recipe::F32: return ggml::F32;
    case Recipe::Q8: return ggml::Q8_0;
    case Recipe::Q4: return is_big_projection(hf) ? ggml::Q4_0 : ggml::Q8_0;
  }
  return ggml::F32;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_metadata(GgufWriter& w, const ModelConfig& m, const std::string& name) {
  const TextConfig& c = m.text;
  const std::string a = "gemma3n";
  w.set("general.architecture", a);
  w.set("general.name", name);
  w.set("general.quantization_version", uint32_t(2));
  w.set(a + ".context_length", uint32_t(c.max_position_embeddings));
  w.set(a + ".embedding_length", uint32_t(c.hidden_size));
  w.set(a + ".block_count", uint32_t(c.num_hidden_layers));
  bool uniform = true;
  for (auto f : c.intermediate_size) uniform = uniform && f == c.intermediate_size[0];
  if (uniform) w.set(a + ".feed_forward_length", uint32_t(c.intermediate_size[0]));
  else {
    std::vector<uint32_t> ffn;
    for (auto f : c.intermediate_size) ffn.push_back(uint32_t(f));
    w.set(a + ".feed_forward_length", ffn);
  }
  w.set(a + ".attention.head_count", uint32_t(c.num_attention_heads));
  w.set(a + ".attention.head_count_kv", uint32_t(c.num_key_value_heads));
  w.set(a + ".attention.key_length", uint32_t(c.head_dim));
  w.set(a + ".attention.value_length", uint32_t(c.head_dim));
  w.set(a + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.set(a + ".rope.freq_base", float(c.rope_theta_full));
  w.set(a + ".rope.freq_base_swa", float(c.rope_theta_sliding));
  w.set(a + ".attention.sliding_window", uint32_t(c.sliding_window));
  std::vector<bool> pattern;
  for (auto t : c.layer_types) pattern.push_back(t == AttentionType::Sliding);
  w.set(a + ".attention.sliding_window_pattern", pattern);
  w.set(a + ".altup.active_idx", uint32_t(c.altup_active_idx));
  w.set(a + ".altup.num_inputs", uint32_t(c.altup_num_inputs));
  w.set(a + ".embedding_length_per_layer_input", uint32_t(c.hidden_size_per_layer_input));
  w.set(a + ".attention.shared_kv_layers", uint32_t(c.num_kv_shared_layers));
  std::vector<float> sparsity;  // Φ⁻¹(target), −∞ for dense layers, as llama.cpp's converter writes it
  for (float s : c.activation_sparsity) {
    double x = -INFINITY;
    if (s > 0) {  // Newton on erfc for the inverse normal CDF
      x = 0;
      for (int i = 0; i < 60; ++i) {
        const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0)), pdf = std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
        x -= (cdf - double(s)) / pdf;
      }
    }
    sparsity.push_back(float(x));
  }
  w.set(a + ".activation_sparsity_scale", sparsity);
  if (c.final_logit_softcapping > 0) w.set(a + ".final_logit_softcapping", c.final_logit_softcapping);
}

void write_tokenizer(GgufWriter& w, const std::filesystem::path& dir, int64_t vocab) {
  const auto model_path = dir / "tokenizer.model";
  if (!std::filesystem::exists(model_path)) {
    std::fprintf(stderr, "g3n quantize: no tokenizer.model in %s; the file will have no tokenizer\n", dir.c_str());
    return;
  }
  const std::string proto = read_file(model_path);
  const Tokenizer tok = Tokenizer::load_dir(dir.string());
  sentencepiece::SentencePieceProcessor sp;  // for the piece scores
  if (!sp.LoadFromSerializedProto(proto).ok()) fail(model_path.string(), " is not a SentencePiece model");
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  // llama.cpp wants one entry per row of the embedding; ids past the SentencePiece model are the
  // added tokens (or unused padding rows).
  for (int64_t id = 0; id < vocab; ++id) {
    std::string p = tok.piece(int32_t(id));
    const auto type = tok.piece_type(int32_t(id));
    if (p.empty()) p = "<unused_row_" + std::to_string(id) + ">";
    tokens.push_back(p);
    scores.push_back(id < sp.GetPieceSize() ? sp.GetScore(int(id)) : 0.0f);
    types.push_back(type ? int32_t(*type) : (tok.is_special(int32_t(id)) ? 3 : 5));
  }
  w.set("tokenizer.ggml.model", std::string("llama"));
  w.set("tokenizer.ggml.pre", std::string("default"));
  w.set("tokenizer.ggml.tokens", tokens);
  w.set("tokenizer.ggml.scores", scores);
  w.set("tokenizer.ggml.token_type", types);
  w.set("tokenizer.ggml.bos_token_id", uint32_t(tok.bos_id()));
  w.set("tokenizer.ggml.eos_token_id", uint32_t(tok.eos_id()));
  w.set("tokenizer.ggml.unknown_token_id", uint32_t(3));
  w.set("tokenizer.ggml.padding_token_id", uint32_t(tok.pad_id()));
  w.set("tokenizer.ggml.add_bos_token", true);
  w.set("tokenizer.ggml.add_eos_token", false);
  w.set("tokenizer.ggml.add_space_prefix", false);
  w.set("tokenizer.chat_template", std::string(gemma3n_chat_template()));
  // The exact SentencePiece model, so g3n rebuilds the very same tokenizer from the file.
  w.set("g3n.tokenizer.model", std::vector<uint8_t>(proto.begin(), proto.end()));
  const auto added = dir / "tokenizer.json";
  if (std::filesystem::exists(added)) w.set("g3n.tokenizer.json", read_file(added));
}

// The towers in llama.cpp's multimodal projector layout (convert_hf_to_gguf.py --mmproj, projector types
// gemma3nv / gemma3na; names from mmproj_gguf_name): conv_stem.conv.bias and layer-scale gammas as
// [1, C, 1, 1]; types as its converter picks them (norms, vectors, the stem and the audio convolutions
// F32; the input projections F16; other vision matrices F16: g3n's vision tower has no quantised
// kernels), except that the audio matrices follow the recipe (Q8_0 for q8 / q4).
std::vector<Planned> plan_towers(const TensorStore& store, Recipe recipe) {
  std::vector<Planned> out;
  auto starts = [](const std::string& s, const char* p) { return s.rfind(p, 0) == 0; };
  for (const std::string& name : store.names()) {
    const bool vision = starts(name, "model.vision_tower.") || starts(name, "model.embed_vision.");
    const bool audio = starts(name, "model.audio_tower.") || starts(name, "model.embed_audio.");
    if (!vision && !audio) continue;
    const std::string g = mmproj_gguf_name(name);
    if (g.empty()) continue;
    const TensorView* t = store.find(name);
    std::vector<int64_t> shape = t->shape;
    if (name.ends_with("conv_stem.conv.bias") || name.ends_with("layer_scale.gamma")) shape = {1, t->numel(), 1, 1};
    int type = ggml::F16;
    const bool norm = g.ends_with("_norm.weight") || name.find("norm") != std::string::npos;
    if (recipe == Recipe::F32 || shape.size() <= 1 || norm || name.find("stem") != std::string::npos ||
        (audio && (name.find(".conv") != std::string::npos || name.find("_conv") != std::string::npos)))
      type = ggml::F32;
    else if (audio && shape.size() == 2 && (recipe == Recipe::Q8 || recipe == Recipe::Q4) &&
             name.find("input_proj") == std::string::npos && shape.back() % kQuantBlock == 0)
      type = ggml::Q8_0;
    out.push_back({g, {t}, type, {shape.rbegin(), shape.rend()}});
  }
  return out;
}

// clip.* metadata of the towers (what llama.cpp's converter writes and load_mmproj reads).
void write_tower_metadata(GgufWriter& w, const ModelConfig& c, const std::string& config_text, bool has_vision,
                          bool has_audio, bool own_file, const std::string& name) {
  if (own_file) {
    w.set("general.architecture", std::string("clip"));
    w.set("general.type", std::string("mmproj"));
    w.set("general.name", name);
  }
  w.set("clip.has_vision_encoder", has_vision);
  w.set("clip.has_audio_encoder", has_audio);
  if (has_vision) {
    w.set("clip.vision.projector_type", std::string("gemma3nv"));
    w.set("clip.vision.projection_dim", uint32_t(c.text.hidden_size));
    w.set("clip.vision.image_size", uint32_t(768));
    w.set("clip.vision.patch_size", uint32_t(3));
    w.set("clip.vision.embedding_length", uint32_t(c.vision.hidden_size));
    w.set("clip.vision.feed_forward_length", uint32_t(4 * c.vision.hidden_size));
    w.set("clip.vision.block_count", uint32_t(128));
    w.set("clip.vision.attention.head_count", uint32_t(8));
    w.set("clip.vision.attention.layer_norm_epsilon", c.vision.rms_norm_eps);
    w.set("clip.vision.image_mean", std::vector<float>{0.0f, 0.0f, 0.0f});
    w.set("clip.vision.image_std", std::vector<float>{1.0f, 1.0f, 1.0f});
  }
  if (has_audio) {
    const AudioEncoderConfig a = AudioEncoderConfig::from_json(config_text);
    w.set("clip.audio.projector_type", std::string("gemma3na"));
    w.set("clip.audio.projection_dim", uint32_t(c.text.hidden_size));
    w.set("clip.audio.embedding_length", uint32_t(a.hidden_size));
    w.set("clip.audio.feed_forward_length", uint32_t(4 * a.hidden_size));
    w.set("clip.audio.block_count", uint32_t(a.conf_num_hidden_layers));
    w.set("clip.audio.attention.head_count", uint32_t(a.conf_num_attention_heads));
    w.set("clip.audio.num_mel_bins", uint32_t(a.input_feat_size));
    w.set("clip.audio.attention.layer_norm_epsilon", 1e-5f);
  }
}

// Writes `plan`'s tensors (quantised row by row in parallel) after the header; a progress bar on a tty.
void write_tensors(GgufWriter& w, const std::vector<Planned>& plan, ThreadPool& pool);

}  // namespace

Action register_quantize(CLI::App& app) {
  struct Args {
    std::string model, out, type = "q4", mmproj_out;
    int threads = 0;
    bool text_only = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("quantize", "Write a checkpoint as one quantised GGUF file (llama.cpp's gemma3n layout)");
  cmd->add_option("-m,--model", a->model, "Checkpoint directory")->required();
  cmd->add_option("--type", a->type, "q8 | q4 | f16 | f32")->check(CLI::IsMember({"q8", "q4", "f16", "f32"}));
  cmd->add_option("-o,--out", a->out, "Output .gguf file")->required();
  cmd->add_option("-t,--threads", a->threads, "Worker threads (0: all cores)");
  cmd->add_option("--mmproj-out", a->mmproj_out,
                  "Write the vision / audio towers to this separate file in llama.cpp's mmproj layout (the pair "
                  "llama.cpp loads) instead of into the main file");
  cmd->add_flag("--text-only", a->text_only, "Leave the vision / audio towers out");
  return [a] {
    namespace fs = std::filesystem;
    const auto t0 = std::chrono::steady_clock::now();
    if (!fs::is_directory(a->model)) fail("--model ", a->model, " is not a checkpoint directory");
    const ModelConfig config = load_config((fs::path(a->model) / "config.json").string());
    if (!config.text.is_gemma3n()) fail("g3n quantize writes Gemma 3n checkpoints; ", a->model, " is Gemma 3");
    const TensorStore store = TensorStore::open_dir(a->model);
    const auto source = safetensors_source(store);
    const TextWeights weights = load_text_weights(config, *source);  // validates every shape first
    const Recipe recipe = a->type == "q8"    ? Recipe::Q8
                          : a->type == "q4"  ? Recipe::Q4
                          : a->type == "f32" ? Recipe::F32
                                             : Recipe::F16;

    // Plan: every registry tensor under its llama.cpp name; the AltUp projections stacked.
    std::string prefix = store.find("model.language_model.embed_tokens.weight") ? "model.language_model." : "model.";
    std::vector<Planned> plan;
    for (const std::string& name : store.names()) {
      if (name.rfind(prefix, 0) != 0 || name.find("altup_projections.") != std::string::npos ||
          name.find("altup_unembed_projections.") != std::string::npos)
        continue;
      const std::string g = gemma3n_gguf_name(name);
      if (g.empty()) continue;
      const TensorView* t = store.find(name);
      Planned p{g, {t}, choose_type(recipe, name, t->shape), {t->shape.rbegin(), t->shape.rend()}};
      plan.push_back(p);
    }
    // What llama.cpp needs beyond the HF tensors: K/V weights in every layer (the KV-shared layers never
    // use them: zeros, and ones for k_norm), and a PLE table with as many rows as the vocabulary (the
    // reference reads row 0 for ids past the PLE vocabulary, so the padding repeats row 0).
    const TextConfig& tc = config.text;
    std::deque<std::vector<float>> synthetic_data;
    std::deque<TensorView> synthetic_views;
    auto synthetic = [&](const std::string& gguf_name, std::vector<int64_t> shape, float value) {
      int64_t n = 1;
      for (auto d : shape) n *= d;
      synthetic_data.emplace_back(static_cast<size_t>(n), value);
      synthetic_views.push_back(TensorView{DType::F32, shape, synthetic_data.back().data()});
      const TensorView* v = &synthetic_views.back();
      plan.push_back({gguf_name, {v}, choose_type(recipe, "self_attn.k_proj", shape), {shape.rbegin(), shape.rend()}});
    };
    for (int l = 0; l < tc.num_hidden_layers; ++l) {
      if (tc.owns_kv(l)) continue;
      const std::string p = prefix + "layers." + std::to_string(l) + ".self_attn.";
      const int64_t kv = int64_t(tc.num_key_value_heads) * tc.head_dim;
      if (!store.find(p + "k_proj.weight")) synthetic("blk." + std::to_string(l) + ".attn_k.weight", {kv, tc.hidden_size}, 0.0f);
      if (!store.find(p + "v_proj.weight")) synthetic("blk." + std::to_string(l) + ".attn_v.weight", {kv, tc.hidden_size}, 0.0f);
      if (!store.find(p + "k_norm.weight")) synthetic("blk." + std::to_string(l) + ".attn_k_norm.weight", {tc.head_dim}, 1.0f);
    }
    for (auto& p : plan)
      if (p.gguf_name == "per_layer_token_embd.weight" && p.dims[1] < tc.vocab_size) {
        p.pad_rows = tc.vocab_size - p.dims[1];
        p.dims[1] = tc.vocab_size;
      }
    for (const auto& [stack, list] : {std::pair{"altup_proj.weight", &weights.altup_projections},
                                      std::pair{"altup_unembd_proj.weight", &weights.altup_unembed_projections}}) {
      if (list->empty()) continue;
      Planned p{stack, {}, ggml::F32, {}};
      for (const auto& t : *list) p.parts.push_back(&t);
      const auto& s = list->front().shape;
      p.type = choose_type(recipe, "altup", s);
      p.dims = {s[1], s[0], int64_t(list->size())};
      plan.push_back(p);
    }

    // The towers: in the same file (one file with every modality; llama.cpp cannot load it: it refuses
    // tensors it does not know) or, with --mmproj-out, in llama.cpp's separate projector file.
    const std::string config_text = read_file(fs::path(a->model) / "config.json");
    const bool has_vision = config.multimodal && store.find("model.vision_tower.timm_model.conv_stem.conv.weight");
    const bool has_audio =
        config.multimodal && store.find("model.audio_tower.subsample_conv_projection.input_proj_linear.weight");
    const bool with_towers = !a->text_only && (has_vision || has_audio);
    if (!a->mmproj_out.empty() && !with_towers)
      fail("--mmproj-out: ", a->model, a->text_only ? " (--text-only)" : "", " has no vision or audio tower to write");
    std::vector<Planned> towers;
    if (with_towers) towers = plan_towers(store, recipe);

    GgufWriter w(a->out);
    write_metadata(w, config, fs::path(a->model).filename().string());
    write_tokenizer(w, a->model, config.text.vocab_size);
    if (with_towers && a->mmproj_out.empty()) {
      write_tower_metadata(w, config, config_text, has_vision, has_audio, false, "");
      plan.insert(plan.end(), towers.begin(), towers.end());
      towers.clear();
    }
    for (const auto& p : plan) w.add_tensor(p.gguf_name, p.type, p.dims);
    ThreadPool pool(a->threads);
    write_tensors(w, plan, pool);
    w.finish();
    std::fprintf(stderr, "g3n quantize: wrote %s (%.2f GB, %zu tensors, %s) in %.1f s\n", a->out.c_str(),
                 double(fs::file_size(a->out)) / 1e9, plan.size(), a->type.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!towers.empty()) {
      GgufWriter mw(a->mmproj_out);
      write_tower_metadata(mw, config, config_text, has_vision, has_audio, true,
                           fs::path(a->model).filename().string() + " mmproj");
      for (const auto& p : towers) mw.add_tensor(p.gguf_name, p.type, p.dims);
      write_tensors(mw, towers, pool);
      mw.finish();
      std::fprintf(stderr, "g3n quantize: wrote %s (%.2f GB, %zu tower tensors: llama.cpp's mmproj layout)\n",
                   a->mmproj_out.c_str(), double(fs::file_size(a->mmproj_out)) / 1e9, towers.size());
    }
    return 0;
  };
}

namespace {

void write_tensors(GgufWriter& w, const std::vector<Planned>& plan, ThreadPool& pool) {
  uint64_t total = 0;
  for (const auto& p : plan) total += ggml::row_bytes(p.type, p.dims[0]) * uint64_t(std::max<int64_t>(1, [&] {
                                        int64_t r = 1;
                                        for (size_t i = 1; i < p.dims.size(); ++i) r *= p.dims[i];
                                        return r;
                                      }()));

  uint64_t done = 0;
  const bool tty = ::isatty(2);
  for (const auto& p : plan) {
    for (size_t part = 0; part < p.parts.size(); ++part) {
      const TensorView* t = p.parts[part];
      const int64_t cols = t->shape.back(), real_rows = t->numel() / cols;
      const int64_t rows = real_rows + (part + 1 == p.parts.size() ? p.pad_rows : 0);
      const size_t out_row = ggml::row_bytes(p.type, cols);
      // Rows in slabs, quantised in parallel, written in order.
      const int64_t slab = std::max<int64_t>(1, (int64_t(8) << 20) / std::max<int64_t>(1, cols * 4));
      std::vector<uint8_t> buf(size_t(slab) * out_row);
      for (int64_t r0 = 0; r0 < rows; r0 += slab) {
        const int64_t n = std::min(slab, rows - r0);
        pool.parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
          thread_local std::vector<float> row;
          row.resize(size_t(cols));
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t r = r0 + i < real_rows ? r0 + i : 0;  // padding rows repeat row 0
            to_f32(*t, r * cols, cols, row.data());
            ggml::quantize_row(p.type, row.data(), buf.data() + size_t(i) * out_row, cols);
          }
        });
        w.write(buf.data(), size_t(n) * out_row);
        done += uint64_t(n) * out_row;
        if (tty && total > 0)
          std::fprintf(stderr, "\rquantizing [%-30.*s] %5.1f%%", int(30.0 * double(done) / double(total)),
                       "##############################", 100.0 * double(done) / double(total));
      }
    }
  }
  if (tty) std::fprintf(stderr, "\n");
}

}  // namespace

}  // namespace g3n::tools
