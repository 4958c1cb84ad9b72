#include "model/gguf_mmproj.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "base/error.h"
#include "model/audio_encoder.h"
#include "model/gguf_model.h"
#include "model/vision_encoder.h"

namespace g3n {
namespace {

using json = nlohmann::json;
using Type = VisionBlockArgs::Type;

// ------------------------------------------------------------------------------------------------
// Names. llama.cpp's converter (convert_hf_to_gguf.py Gemma3nVisionAudioModel, gguf-py
// tensor_mapping.py / constants.py) writes, for a Gemma3nForConditionalGeneration:
//
//   vision (the MobileNet-V5 blocks through the class's own block_tensor_mapping, the rest through
//   MODEL_TENSOR.V_ENC_CONV_STEM* / V_ENC_MSFA* / V_MM_*):
//     v.conv_stem.conv.{weight,bias}, v.conv_stem.bn.weight   model.vision_tower.timm_model.conv_stem.*
//         (conv_stem.conv.bias is written unsqueezed to [1, C, 1, 1]; read back as [C])
//     v.blk.S.I.<suffix>                 model.vision_tower.timm_model.blocks.S.I.<suffix>, for the
//         suffixes of kVisionBlockSuffixes, unchanged (layer_scale.gamma stays [C]: the block branch of
//         modify_tensors returns before the unsqueeze)
//     v.msfa.ffn.pw_{exp,proj}.{conv,bn}.weight, v.msfa.norm.weight   ...timm_model.msfa.*
//     mm.input_projection.weight         model.embed_vision.embedding_projection.weight
//     mm.soft_emb_norm.weight            model.embed_vision.soft_embedding_norm.weight
//     mm.embedding.weight                model.embed_vision.embedding.weight
//     mm.hard_emb_norm.weight            model.embed_vision.hard_embedding_norm.weight
//   audio ("model.audio_tower.conformer." renamed "conformer.layers.", then tensor_mapping.py's
//   MODEL_TENSOR.A_* entries marked gemma3n):
//     a.conv1d.B.weight                  model.audio_tower.subsample_conv_projection.conv_B.conv.weight
//     a.conv1d.B.norm.weight             ...conv_B.norm.weight  (no upstream mapping: its converter has
//         none for the SSCP norm scales; g3n takes A_ENC_CONV1D_NORM's name, which Gemma 4 uses)
//     a.pre_encode.out.weight            ...subsample_conv_projection.input_proj_linear.weight (A_ENC_OUT,
//         which tensor_mapping.py calls a mistake for A_ENC_INP_PROJ; a.input_projection.weight is read too)
//     a.blk.L.<name>                     model.audio_tower.conformer.L.<hf> (kAudioBlockNames)
//     mm.a.{embedding,hard_emb_norm,soft_emb_norm,input_projection}.weight   model.embed_audio.*
// Other layouts are unchanged: GGUF stores ne reversed, so every tensor reads back in its HF shape.
// ------------------------------------------------------------------------------------------------

const std::pair<const char*, const char*> kFixedNames[] = {
    {"v.conv_stem.conv.weight", "model.vision_tower.timm_model.conv_stem.conv.weight"},
    {"v.conv_stem.conv.bias", "model.vision_tower.timm_model.conv_stem.conv.bias"},
    {"v.conv_stem.bn.weight", "model.vision_tower.timm_model.conv_stem.bn.weight"},
    {"v.msfa.ffn.pw_exp.conv.weight", "model.vision_tower.timm_model.msfa.ffn.pw_exp.conv.weight"},
    {"v.msfa.ffn.pw_exp.bn.weight", "model.vision_tower.timm_model.msfa.ffn.pw_exp.bn.weight"},
    {"v.msfa.ffn.pw_proj.conv.weight", "model.vision_tower.timm_model.msfa.ffn.pw_proj.conv.weight"},
    {"v.msfa.ffn.pw_proj.bn.weight", "model.vision_tower.timm_model.msfa.ffn.pw_proj.bn.weight"},
    {"v.msfa.norm.weight", "model.vision_tower.timm_model.msfa.norm.weight"},
    {"mm.input_projection.weight", "model.embed_vision.embedding_projection.weight"},
    {"mm.soft_emb_norm.weight", "model.embed_vision.soft_embedding_norm.weight"},
    {"mm.embedding.weight", "model.embed_vision.embedding.weight"},
    {"mm.hard_emb_norm.weight", "model.embed_vision.hard_embedding_norm.weight"},
    {"a.pre_encode.out.weight", "model.audio_tower.subsample_conv_projection.input_proj_linear.weight"},
    {"a.input_projection.weight", "model.audio_tower.subsample_conv_projection.input_proj_linear.weight"},
    {"mm.a.input_projection.weight", "model.embed_audio.embedding_projection.weight"},
    {"mm.a.soft_emb_norm.weight", "model.embed_audio.soft_embedding_norm.weight"},
    {"mm.a.embedding.weight", "model.embed_audio.embedding.weight"},
    {"mm.a.hard_emb_norm.weight", "model.embed_audio.hard_embedding_norm.weight"},
};

// Gemma3nVisionAudioModel.block_tensor_mapping, plus dw_end (which the converter's table lacks: the
// released tower has no dw_end convs; the name follows the table's pattern).
const char* const kVisionBlockSuffixes[] = {
    "conv_exp.weight",          "bn1.weight",           "conv_pwl.weight",           "bn2.weight",
    "dw_start.conv.weight",     "dw_start.bn.weight",   "dw_mid.conv.weight",        "dw_mid.bn.weight",
    "pw_exp.conv.weight",       "pw_exp.bn.weight",     "pw_proj.conv.weight",       "pw_proj.bn.weight",
    "dw_end.conv.weight",       "dw_end.bn.weight",     "layer_scale.gamma",         "attn.query.proj.weight",
    "attn.key.proj.weight",     "attn.value.proj.weight", "attn.output.proj.weight", "attn.key.down_conv.weight",
    "attn.key.norm.weight",     "attn.value.down_conv.weight", "attn.value.norm.weight", "norm.weight",
};

// llama.cpp name after "a.blk.L." -> HF name after "model.audio_tower.conformer.L." (first entry wins
// for the reverse direction).
const std::pair<const char*, const char*> kAudioBlockNames[] = {
    {"ffn_norm.weight", "ffw_layer_start.pre_layer_norm.weight"},
    {"ffn_up.weight", "ffw_layer_start.ffw_layer_1.weight"},
    {"ffn_down.weight", "ffw_layer_start.ffw_layer_2.weight"},
    {"ffn_post_norm.weight", "ffw_layer_start.post_layer_norm.weight"},
    {"ln1.weight", "attention.pre_attn_norm.weight"},
    {"per_dim_scale", "attention.attn.per_dim_scale"},  // HF has no ".weight" here, nor has the converter's name
    {"per_dim_scale.weight", "attention.attn.per_dim_scale"},
    {"linear_pos.weight", "attention.attn.relative_position_embedding.pos_proj.weight"},
    {"attn_q.weight", "attention.attn.q_proj.weight"},
    {"attn_k.weight", "attention.attn.k_proj.weight"},
    {"attn_v.weight", "attention.attn.v_proj.weight"},
    {"attn_out.weight", "attention.post.weight"},
    {"ln2.weight", "attention.post_norm.weight"},
    {"conv_norm.weight", "lconv1d.pre_layer_norm.weight"},
    {"conv_pw1.weight", "lconv1d.linear_start.weight"},
    {"conv_dw.weight", "lconv1d.depthwise_conv1d.weight"},
    {"norm_conv.weight", "lconv1d.conv_norm.weight"},
    {"conv_pw2.weight", "lconv1d.linear_end.weight"},
    {"ffn_norm_1.weight", "ffw_layer_end.pre_layer_norm.weight"},
    {"ffn_up_1.weight", "ffw_layer_end.ffw_layer_1.weight"},
    {"ffn_down_1.weight", "ffw_layer_end.ffw_layer_2.weight"},
    {"ffn_post_norm_1.weight", "ffw_layer_end.post_layer_norm.weight"},
    {"layer_pre_norm.weight", "norm.weight"},
};

const char kVisionTower[] = "model.vision_tower.timm_model.";
const char kAudioTower[] = "model.audio_tower.";

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// "12.rest" -> (12, "rest"); false unless a run of digits, a dot and something after it.
bool split_index(const std::string& s, size_t from, int64_t& index, std::string& rest) {
  size_t i = from;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == from || i - from > 6 || i >= s.size() || s[i] != '.' || i + 1 >= s.size()) return false;
  index = std::stoll(s.substr(from, i - from));
  rest = s.substr(i + 1);
  return true;
}

// "v.blk.S.I.suffix" -> S, I, suffix.
bool split_vision_block(const std::string& g, int64_t& s, int64_t& i, std::string& suffix) {
  std::string rest;
  if (!starts_with(g, "v.blk.") || !split_index(g, 6, s, rest)) return false;
  return split_index(rest, 0, i, suffix);
}

bool is_vision_block_suffix(const std::string& suffix) {
  return std::any_of(std::begin(kVisionBlockSuffixes), std::end(kVisionBlockSuffixes),
                     [&](const char* x) { return suffix == x; });
}

// ------------------------------------------------------------------------------------------------
// Structure from the tensors
// ------------------------------------------------------------------------------------------------

class TensorIndex {
 public:
  explicit TensorIndex(const GgufFile& f) : f_(f) {}
  const GgufTensorInfo* find(const std::string& name) const { return f_.find_tensor(name); }
  std::vector<int64_t> shape(const std::string& name) const {
    const GgufTensorInfo* t = find(name);
    if (!t) fail(f_.path(), ": missing tensor ", name, " (", mmproj_hf_name(name), ")");
    return t->shape();
  }
  // The shape, checked to have `rank` dimensions.
  std::vector<int64_t> shape(const std::string& name, size_t rank) const {
    std::vector<int64_t> s = shape(name);
    if (s.size() != rank)
      fail(f_.path(), ": tensor ", name, " has shape ", shape_str(s), "; expected ", rank, " dimensions");
    return s;
  }
  const std::string& path() const { return f_.path(); }

 private:
  const GgufFile& f_;
};

using BlockSuffixes = std::map<std::string, const GgufTensorInfo*>;

// The stages of v.blk.S.I.* tensors, checked to be numbered 0..n-1.
std::vector<std::vector<BlockSuffixes>> vision_blocks(const GgufFile& f) {
  std::map<int64_t, std::map<int64_t, BlockSuffixes>> found;
  for (const auto& t : f.tensors()) {
    int64_t s = 0, i = 0;
    std::string suffix;
    if (!starts_with(t.name, "v.blk.")) continue;
    if (!split_vision_block(t.name, s, i, suffix) || !is_vision_block_suffix(suffix))
      fail(f.path(), ": tensor ", t.name, " is not part of any MobileNet-V5 block g3n knows (er, uir, mqa)");
    found[s][i][suffix] = &t;
  }
  std::vector<std::vector<BlockSuffixes>> stages;
  for (const auto& [s, blocks] : found) {
    if (s != int64_t(stages.size())) fail(f.path(), ": the vision blocks skip stage ", stages.size(), " (v.blk.", s, ".*)");
    std::vector<BlockSuffixes> list;
    for (const auto& [i, suffixes] : blocks) {
      if (i != int64_t(list.size()))
        fail(f.path(), ": vision stage ", s, " skips block ", list.size(), " (v.blk.", s, ".", i, ".*)");
      list.push_back(suffixes);
    }
    stages.push_back(std::move(list));
  }
  return stages;
}

// Block args reproducing the shapes of the stage's tensors; `in_c` is the block's input width.
VisionBlockArgs derive_block(const TensorIndex& ix, const BlockSuffixes& b, int64_t s, int64_t i, int64_t in_c) {
  const std::string p = "v.blk." + std::to_string(s) + "." + std::to_string(i) + ".";
  auto has = [&](const char* suffix) { return b.count(suffix) != 0; };
  auto dims = [&](const char* suffix, size_t rank) { return ix.shape(p + suffix, rank); };
  VisionBlockArgs a;
  // clip_graph_mobilenetv5::build: `stride = is_stage_start(i) ? 2 : 1` (attention blocks ignore it).
  a.stride = i == 0 ? 2 : 1;
  if (has("conv_exp.weight")) {
    a.type = Type::EdgeResidual;
    const auto exp = dims("conv_exp.weight", 4), pwl = dims("conv_pwl.weight", 4);  // [mid, in/g, k, k], [out, mid, p, p]
    G3N_CHECK(exp[1] > 0 && in_c % exp[1] == 0, ix.path(), ": tensor ", p, "conv_exp.weight has shape ", shape_str(exp),
              " for a block of ", in_c, " input channels");
    const int64_t groups = in_c / exp[1];
    if (groups > 1) a.group_size = exp[0] / groups;
    a.exp_ratio = double(exp[0]) / double(in_c);
    a.exp_kernel_size = exp[2];
    a.pw_kernel_size = pwl[2];
    a.out_chs = pwl[0];
  } else if (has("attn.query.proj.weight")) {
    a.type = Type::MobileMqa;
    a.stride = 1;
    const auto q = dims("attn.query.proj.weight", 4), k = dims("attn.key.proj.weight", 4);  // [h*dk, C, 1, 1], [dk, C, 1, 1]
    const auto v = dims("attn.value.proj.weight", 4), o = dims("attn.output.proj.weight", 4);
    G3N_CHECK(k[0] > 0 && q[0] % k[0] == 0, ix.path(), ": tensor ", p, "attn.query.proj.weight has shape ", shape_str(q),
              ", not a multiple of the key width ", k[0]);
    a.key_dim = k[0];
    a.value_dim = v[0];
    a.num_heads = q[0] / k[0];
    a.out_chs = o[0];
    if (has("attn.key.down_conv.weight")) {
      a.kv_stride = 2;  // llama.cpp's graph strides the K/V down-convolutions by 2 (mobilenetv5_300m_enc's v2)
      a.dw_kernel_size = dims("attn.key.down_conv.weight", 4)[2];
    }
  } else if (has("pw_exp.conv.weight") || has("dw_start.conv.weight")) {
    a.type = Type::UniversalInvertedResidual;
    const auto exp = dims("pw_exp.conv.weight", 4);    // [mid, in, 1, 1]
    const auto proj = dims("pw_proj.conv.weight", 4);  // [out, mid, 1, 1]
    a.exp_ratio = double(exp[0]) / double(in_c);
    a.out_chs = proj[0];
    for (auto [suffix, field] : {std::pair{"dw_start.conv.weight", &a.dw_kernel_size_start},
                                 {"dw_mid.conv.weight", &a.dw_kernel_size_mid},
                                 {"dw_end.conv.weight", &a.dw_kernel_size_end}}) {
      if (!has(suffix)) continue;
      const auto dw = dims(suffix, 4);  // [C, C / groups, k, k]
      *field = dw[2];
      if (dw[1] != 1) a.group_size = dw[1];
    }
  } else {
    fail(ix.path(), ": vision block ", p, "* has neither conv_exp (er), pw_exp / dw_start (uir) nor attn.query.proj (mqa)");
  }
  G3N_CHECK(i > 0 || a.type != Type::MobileMqa, ix.path(), ": vision stage ", s,
            " starts with an attention block; llama.cpp's MobileNet-V5 strides the first block of every stage");
  return a;
}

bool same_block(const VisionBlockArgs& x, const VisionBlockArgs& y, bool first) {
  auto ratio_eq = [](double a, double b) { return std::fabs(a - b) < 1e-9; };
  if (x.type != y.type || x.out_chs != y.out_chs || x.noskip != y.noskip || (first && x.stride != y.stride)) return false;
  switch (x.type) {
    case Type::EdgeResidual:
      return ratio_eq(x.exp_ratio, y.exp_ratio) &&
             std::max<int64_t>(x.group_size, 0) == std::max<int64_t>(y.group_size, 0) &&
             x.exp_kernel_size == y.exp_kernel_size && x.pw_kernel_size == y.pw_kernel_size &&
             x.force_in_chs == y.force_in_chs;
    case Type::UniversalInvertedResidual:
      return ratio_eq(x.exp_ratio, y.exp_ratio) &&
             (x.group_size < 0 ? 1 : x.group_size) == (y.group_size < 0 ? 1 : y.group_size) &&
             x.dw_kernel_size_start == y.dw_kernel_size_start && x.dw_kernel_size_mid == y.dw_kernel_size_mid &&
             x.dw_kernel_size_end == y.dw_kernel_size_end;
    case Type::MobileMqa:
      return x.num_heads == y.num_heads && x.key_dim == y.key_dim && x.value_dim == y.value_dim &&
             x.kv_stride == y.kv_stride && (x.kv_stride == 1 || x.dw_kernel_size == y.dw_kernel_size);
  }
  return false;
}

json block_json(const VisionBlockArgs& a) {
  json b;
  b["out_chs"] = a.out_chs;
  b["stride"] = a.stride;
  b["noskip"] = a.noskip;
  switch (a.type) {
    case Type::EdgeResidual:
      b["block_type"] = "er";
      b["exp_ratio"] = a.exp_ratio;
      b["exp_kernel_size"] = a.exp_kernel_size;
      b["pw_kernel_size"] = a.pw_kernel_size;
      break;
    case Type::UniversalInvertedResidual:
      b["block_type"] = "uir";
      b["exp_ratio"] = a.exp_ratio;
      b["dw_kernel_size_start"] = a.dw_kernel_size_start;
      b["dw_kernel_size_mid"] = a.dw_kernel_size_mid;
      b["dw_kernel_size_end"] = a.dw_kernel_size_end;
      break;
    case Type::MobileMqa:
      b["block_type"] = "mqa";
      b["num_heads"] = a.num_heads;
      b["key_dim"] = a.key_dim;
      b["value_dim"] = a.value_dim;
      b["kv_stride"] = a.kv_stride;
      b["dw_kernel_size"] = a.dw_kernel_size;
      break;
  }
  if (a.group_size >= 0) b["group_size"] = a.group_size;
  return b;
}

// vision_config: "architecture" and, unless the tensors are mobilenetv5_300m_enc's, "model_args".
json vision_config(const GgufFile& f) {
  const TensorIndex ix(f);
  json vc;
  vc["model_type"] = "gemma3n_vision";
  vc["architecture"] = "mobilenetv5_300m_enc";
  vc["hidden_size"] = f.get_u32("clip.vision.embedding_length", 2048);
  vc["rms_norm_eps"] = f.get_f32("clip.vision.attention.layer_norm_epsilon", 1e-6f);
  vc["vocab_offset"] = 262144;  // not in the file: the released vocabulary's
  if (const GgufTensorInfo* e = f.find_tensor("mm.embedding.weight"); e && e->shape().size() == 2)
    vc["vocab_size"] = e->shape()[0];

  const auto stages = vision_blocks(f);
  G3N_CHECK(!stages.empty(), f.path(), ": no vision blocks (v.blk.*) in a file that declares a vision encoder");
  G3N_CHECK(stages.size() <= 4, f.path(), ": ", stages.size(), " vision stages; llama.cpp's MobileNet-V5 reads 4");
  const int64_t stem_c = ix.shape("v.conv_stem.conv.weight", 4)[0];
  std::vector<std::vector<VisionBlockArgs>> args;
  bool layer_scale = false;
  int64_t in_c = stem_c;
  for (size_t s = 0; s < stages.size(); ++s) {
    std::vector<VisionBlockArgs> list;
    for (size_t i = 0; i < stages[s].size(); ++i) {
      list.push_back(derive_block(ix, stages[s][i], int64_t(s), int64_t(i), in_c));
      in_c = list.back().out_chs;
      layer_scale = layer_scale || stages[s][i].count("layer_scale.gamma");
    }
    args.push_back(std::move(list));
  }
  // Feature points (every stage strides): stem = 0, stage s = s + 1. llama.cpp fuses the ends of stages
  // 2 and 3 (its is_fusion_point), or the last block when there are fewer than 4 stages.
  const std::vector<int64_t> msfa =
      stages.size() >= 4 ? std::vector<int64_t>{3, 4} : std::vector<int64_t>{int64_t(stages.size())};

  const VisionArch def = mobilenetv5_300m_enc_arch();
  bool is_default = stem_c == def.stem_size && layer_scale == def.layer_scale && args.size() == def.stages.size() &&
                    def.msfa_indices == std::vector<int64_t>{-2, -1} && msfa == std::vector<int64_t>{3, 4};
  for (size_t s = 0; is_default && s < args.size(); ++s) {
    is_default = args[s].size() == def.stages[s].size();
    for (size_t i = 0; is_default && i < args[s].size(); ++i) is_default = same_block(args[s][i], def.stages[s][i], i == 0);
  }
  if (!is_default) {
    json stages_json = json::array();
    for (const auto& list : args) {
      json blocks = json::array();
      for (const auto& a : list) blocks.push_back(block_json(a));
      stages_json.push_back(blocks);
    }
    vc["model_args"] = {{"block_args", stages_json},
                        {"stem_size", stem_c},
                        {"fix_stem", true},
                        {"layer_scale_init_value", layer_scale ? json(1e-5) : json(nullptr)},
                        {"msfa_indices", msfa}};
  }
  return vc;
}

// audio_config: what the tensors and metadata say; everything else the released model's defaults.
json audio_config(const GgufFile& f) {
  const TensorIndex ix(f);
  json ac;
  ac["model_type"] = "gemma3n_audio";
  const auto c0 = ix.shape("a.conv1d.0.weight", 4), c1 = ix.shape("a.conv1d.1.weight", 4);  // [C_out, C_in, kt, kf]
  ac["sscp_conv_channel_size"] = {c0[0], c1[0]};
  ac["sscp_conv_kernel_size"] = {{c0[2], c0[3]}, {c1[2], c1[3]}};
  int64_t layers = 0;
  for (const auto& t : f.tensors()) {
    int64_t l = 0;
    std::string rest;
    if (starts_with(t.name, "a.blk.") && split_index(t.name, 6, l, rest)) layers = std::max(layers, l + 1);
  }
  const int64_t declared = f.get_u32("clip.audio.block_count", uint32_t(layers));
  G3N_CHECK(declared == layers, f.path(), ": clip.audio.block_count is ", declared, " but the file has ", layers,
            " audio blocks (a.blk.*)");
  G3N_CHECK(layers > 0, f.path(), ": no audio blocks (a.blk.*) in a file that declares an audio encoder");
  ac["conf_num_hidden_layers"] = layers;
  const auto dw = ix.shape("a.blk.0.conv_dw.weight");  // [D, 1, K] (or [D, K])
  G3N_CHECK(dw.size() == 2 || dw.size() == 3, f.path(), ": tensor a.blk.0.conv_dw.weight has shape ", shape_str(dw));
  const int64_t D = f.get_u32("clip.audio.embedding_length", uint32_t(dw[0]));
  ac["hidden_size"] = D;
  ac["conf_conv_kernel_size"] = dw.back();
  const GgufTensorInfo* pds = f.find_tensor("a.blk.0.per_dim_scale");
  if (!pds) pds = f.find_tensor("a.blk.0.per_dim_scale.weight");
  G3N_CHECK(pds, f.path(),
            ": missing tensor a.blk.0.per_dim_scale (model.audio_tower.conformer.0.attention.attn.per_dim_scale)");
  const int64_t head_dim = pds->numel();
  G3N_CHECK(head_dim > 0 && D % head_dim == 0, f.path(), ": tensor ", pds->name, " has ", head_dim,
            " elements, which do not divide the audio width ", D);
  const int64_t heads = f.get_u32("clip.audio.attention.head_count", uint32_t(D / head_dim));
  G3N_CHECK(heads * head_dim == D, f.path(), ": clip.audio.attention.head_count is ", heads, " but ", pds->name, " has ",
            head_dim, " elements for an audio width of ", D);
  ac["conf_num_attention_heads"] = heads;
  ac["input_feat_size"] = f.get_u32("clip.audio.num_mel_bins", 128);
  ac["vocab_offset"] = 262272;  // not in the file: the released vocabulary's
  if (const GgufTensorInfo* e = f.find_tensor("mm.a.embedding.weight"); e && e->shape().size() == 2)
    ac["vocab_size"] = e->shape()[0];
  return ac;
}

// Encoder errors speak of HF names and config.json; name the llama.cpp tensors and the file too.
[[noreturn]] void rethrow_for_mmproj(const std::string& path, const std::string& what) {
  std::string msg = what;
  for (auto [from, to] : {std::pair<std::string, std::string>{"the checkpoint's ", "the mmproj's "},
                          {" does not match its config.json", " does not match the structure its tensors describe"}})
    for (size_t at = msg.find(from); at != std::string::npos; at = msg.find(from, at + to.size()))
      msg.replace(at, from.size(), to);
  std::string out;
  size_t i = 0;
  while (i < msg.size()) {
    size_t best = std::string::npos;
    for (const char* p : {"model.vision_tower.", "model.embed_vision.", "model.audio_tower.", "model.embed_audio."})
      best = std::min(best, msg.find(p, i));
    if (best == std::string::npos) {
      out += msg.substr(i);
      break;
    }
    size_t end = best;
    while (end < msg.size() && msg[end] != ' ' && msg[end] != ',' && msg[end] != ')' && msg[end] != '\n') ++end;
    const std::string hf = msg.substr(best, end - best), g = mmproj_gguf_name(hf);
    out += msg.substr(i, end - i);
    if (!g.empty()) out += " [" + g + "]";
    i = end;
  }
  fail(path, ": ", out);
}

json parse_json(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("mmproj config is not valid JSON: ", e.what());
  }
}

}  // namespace

std::string mmproj_hf_name(const std::string& g) {
  for (const auto& [gguf, hf] : kFixedNames)
    if (g == gguf) return hf;
  int64_t a = 0, b = 0;
  std::string rest;
  if (split_vision_block(g, a, b, rest))
    return is_vision_block_suffix(rest) ? std::string(kVisionTower) + "blocks." + std::to_string(a) + "." +
                                              std::to_string(b) + "." + rest
                                        : std::string();
  if (starts_with(g, "a.blk.") && split_index(g, 6, a, rest)) {
    for (const auto& [gguf, hf] : kAudioBlockNames)
      if (rest == gguf) return std::string(kAudioTower) + "conformer." + std::to_string(a) + "." + hf;
    return {};
  }
  if (starts_with(g, "a.conv1d.") && split_index(g, 9, a, rest)) {
    const std::string p = std::string(kAudioTower) + "subsample_conv_projection.conv_" + std::to_string(a) + ".";
    if (rest == "weight") return p + "conv.weight";
    if (rest == "norm.weight") return p + "norm.weight";
  }
  return {};
}

std::string mmproj_gguf_name(const std::string& h) {
  for (const auto& [gguf, hf] : kFixedNames)
    if (h == hf) return gguf;
  int64_t a = 0, b = 0;
  std::string rest;
  const std::string blocks = std::string(kVisionTower) + "blocks.";
  if (starts_with(h, blocks) && split_index(h, blocks.size(), a, rest) && split_index(rest, 0, b, rest))
    return is_vision_block_suffix(rest) ? "v.blk." + std::to_string(a) + "." + std::to_string(b) + "." + rest
                                        : std::string();
  const std::string conformer = std::string(kAudioTower) + "conformer.";
  if (starts_with(h, conformer) && split_index(h, conformer.size(), a, rest)) {
    for (const auto& [gguf, hf] : kAudioBlockNames)
      if (rest == hf) return "a.blk." + std::to_string(a) + "." + gguf;
    return {};
  }
  const std::string sscp = std::string(kAudioTower) + "subsample_conv_projection.conv_";
  if (starts_with(h, sscp) && split_index(h, sscp.size(), a, rest)) {
    if (rest == "conv.weight") return "a.conv1d." + std::to_string(a) + ".weight";
    if (rest == "norm.weight") return "a.conv1d." + std::to_string(a) + ".norm.weight";
  }
  return {};
}

bool gguf_has_towers(const GgufFile& f) {
  return f.get_bool("clip.has_vision_encoder", false) || f.get_bool("clip.has_audio_encoder", false);
}

MmprojModel load_mmproj(const std::string& path, bool embedded) {
  MmprojModel m;
  m.file = std::make_unique<GgufFile>(GgufFile::open(path));
  const GgufFile& f = *m.file;

  const std::string arch = f.get_string("general.architecture", "");
  if (embedded) {
    if (arch != "gemma3n") fail(path, ": towers are embedded in gemma3n files only (general.architecture is '", arch, "')");
  } else if (arch != "clip")
    fail(path, ": general.architecture is '", arch, "', not 'clip': not a llama.cpp multimodal projector (mmproj)",
         arch == "gemma3n" || arch == "gemma3" ? "; this is a text model (give it with -m)" : "");
  m.has_vision = f.get_bool("clip.has_vision_encoder", false);
  m.has_audio = f.get_bool("clip.has_audio_encoder", false);
  if (m.has_vision) {
    // Per-modality key since llama.cpp's vision+audio projectors; clip.projector_type before.
    const std::string t = f.get_string("clip.vision.projector_type", f.get_string("clip.projector_type", ""));
    if (t != "gemma3nv") fail(path, ": the vision projector type is '", t, "', not Gemma 3n's 'gemma3nv'");
  }
  if (m.has_audio) {
    const std::string t = f.get_string("clip.audio.projector_type", f.get_string("clip.projector_type", ""));
    if (t != "gemma3na") fail(path, ": the audio projector type is '", t, "', not Gemma 3n's 'gemma3na'");
  }
  if (!m.has_vision && !m.has_audio)
    fail(path, ": the mmproj declares neither a vision nor an audio encoder (clip.has_*_encoder)");

  // The width the towers project to: the text model's hidden size.
  const int64_t pv = m.has_vision ? int64_t(f.get_u32("clip.vision.projection_dim", 0)) : 0;
  const int64_t pa = m.has_audio ? int64_t(f.get_u32("clip.audio.projection_dim", 0)) : 0;
  G3N_CHECK(pv == 0 || pa == 0 || pv == pa, path, ": clip.vision.projection_dim (", pv, ") and clip.audio.projection_dim (",
            pa, ") differ");
  m.projection_dim = pv ? pv : pa;
  if (m.projection_dim == 0) {
    const GgufTensorInfo* p = f.find_tensor(m.has_vision ? "mm.input_projection.weight" : "mm.a.input_projection.weight");
    if (p && p->shape().size() == 2) m.projection_dim = p->shape()[0];
  }
  G3N_CHECK(m.projection_dim > 0 && m.projection_dim <= (1 << 16), path, ": no projection width (clip.*.projection_dim)");

  // ---- tensors under their HF names
  auto source = std::make_unique<GgufSource>();
  for (const auto& t : f.tensors()) {
    const std::string hf = mmproj_hf_name(t.name);
    if (hf.empty()) continue;  // llama.cpp's extras, or a tower the file does not declare
    const bool vision = starts_with(hf, "model.vision_tower.") || starts_with(hf, "model.embed_vision.");
    if (vision ? !m.has_vision : !m.has_audio) continue;
    if (source->find(hf)) fail(path, ": tensors ", mmproj_gguf_name(hf), " and ", t.name, " are both ", hf);
    // The vision tower has no quantised kernels; the audio tower has them for matrices only.
    TensorView v = as_engine_tensor(t, *source, path, vision || t.dims.size() != 2);
    const bool squeeze = hf.ends_with("conv_stem.conv.bias") || hf.ends_with("layer_scale.gamma");
    if (squeeze && std::count_if(v.shape.begin(), v.shape.end(), [](int64_t d) { return d != 1; }) <= 1)
      v.shape = {v.numel()};  // written [1, C, 1, 1] (convert_hf_to_gguf.py unsqueezes conv_stem.conv.bias)
    if (hf.ends_with("lconv1d.depthwise_conv1d.weight") && v.shape.size() == 2) v.shape = {v.shape[0], 1, v.shape[1]};
    source->add(hf, std::move(v));
  }
  m.source = std::move(source);

  // ---- config
  json cfg;
  cfg["model_type"] = "gemma3n";
  cfg["text_config"] = {{"model_type", "gemma3n_text"}, {"hidden_size", m.projection_dim}};
  if (m.has_vision) cfg["vision_config"] = vision_config(f);
  if (m.has_audio) cfg["audio_config"] = audio_config(f);
  m.config_json = cfg.dump();
  std::string& sum = m.summary;
  if (m.has_vision) {
    const json& vc = cfg["vision_config"];
    if (!vc.contains("model_args")) {
      sum = "vision: mobilenetv5_300m_enc";
    } else {
      size_t blocks = 0;
      for (const auto& stage : vc["model_args"]["block_args"]) blocks += stage.size();
      sum = "vision: MobileNet-V5 of " + std::to_string(vc["model_args"]["block_args"].size()) + " stages, " +
            std::to_string(blocks) + " blocks (from the tensors)";
    }
  }
  if (m.has_audio) {
    const json& ac = cfg["audio_config"];
    sum += std::string(sum.empty() ? "" : "; ") + "audio: " + ac["conf_num_hidden_layers"].dump() + " Conformer layers x " +
           ac["hidden_size"].dump();
  }
  sum += "; soft tokens of width " + std::to_string(m.projection_dim);

  // ---- every tensor checked against that structure, by the encoders' own registries (both towers
  // reported before giving up)
  const ModelConfig config = parse_config(m.config_json);
  std::string problems;
  auto check = [&](auto&& construct) {
    try {
      construct();
    } catch (const Error& e) {
      problems += (problems.empty() ? "" : "\n") + std::string(e.what());
    }
  };
  if (m.has_vision)
    check([&] { [[maybe_unused]] const VisionEncoder vision(config, parse_vision_arch(m.config_json), *m.source); });
  if (m.has_audio)
    check([&] { [[maybe_unused]] const AudioEncoder audio(AudioEncoderConfig::from_json(m.config_json), *m.source); });
  if (!problems.empty()) rethrow_for_mmproj(path, problems);
  return m;
}

TextModelSizes read_text_model_sizes(const std::string& path) {
  TextModelSizes s;
  if (std::filesystem::is_directory(path)) {
    const ModelConfig c = load_config((std::filesystem::path(path) / "config.json").string());
    s.hidden_size = c.text.hidden_size;
    s.vocab_size = c.text.vocab_size;
    return s;
  }
  const GgufFile f = GgufFile::open(path);
  const std::string arch = f.get_string("general.architecture", "");
  if (arch == "clip") fail(path, ": this is a multimodal projector (mmproj), not a text model (give it with --mmproj)");
  s.hidden_size = int64_t(f.get_u64(arch + ".embedding_length"));
  const GgufTensorInfo* e = f.find_tensor("token_embd.weight");
  if (!e || e->shape().size() != 2) fail(path, ": no token_embd.weight [vocab, hidden] in a text model");
  s.vocab_size = e->shape()[0];
  return s;
}

void attach_text_model(MmprojModel& mm, const TextModelSizes& text) {
  G3N_CHECK(text.hidden_size == mm.projection_dim, mm.file ? mm.file->path() : std::string("mmproj"),
            ": the mmproj projects to width ", mm.projection_dim, " but the text model's hidden size is ",
            text.hidden_size, " (an mmproj of another model?)");
  json cfg = parse_json(mm.config_json);
  cfg["text_config"]["hidden_size"] = text.hidden_size;
  if (text.vocab_size > 0) cfg["text_config"]["vocab_size"] = text.vocab_size;
  mm.config_json = cfg.dump();
}

void apply_mmproj(ModelConfig& config, const MmprojModel& mm) {
  G3N_CHECK(config.text.hidden_size == mm.projection_dim, mm.file ? mm.file->path() : std::string("mmproj"),
            ": the mmproj projects to width ", mm.projection_dim, " but the text model's hidden size is ",
            config.text.hidden_size, " (an mmproj of another model?)");
  const ModelConfig mc = parse_config(mm.config_json);
  config.multimodal = true;
  if (mm.has_vision) config.vision = mc.vision;
  if (mm.has_audio) config.audio = mc.audio;
}

}  // namespace g3n
