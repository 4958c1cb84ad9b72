#include "model/vision_encoder.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/activation_buffers.h"
#include "base/error.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/rows.h"

namespace g3n {

using json = nlohmann::json;
using Type = VisionBlockArgs::Type;

// ------------------------------------------------------------------------------------------------
// Architecture: timm's block args
// ------------------------------------------------------------------------------------------------

namespace {

// timm.layers.make_divisible (divisor 8, round_limit 0.9).
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, int64_t(v + double(divisor) / 2) / divisor * divisor);
  if (double(nv) < 0.9 * v) nv += divisor;
  return nv;
}

// timm _efficientnet_builder.round_channels.
int64_t round_channels(int64_t c, double multiplier) {
  if (multiplier == 0) return c;
  return make_divisible(double(c) * multiplier);
}

// timm _efficientnet_blocks.num_groups: no group size = one group, group size 1 = depthwise.
int64_t num_groups(int64_t group_size, int64_t channels) {
  if (group_size <= 0) return 1;
  G3N_CHECK(channels % group_size == 0, "vision block: group_size ", group_size, " does not divide ", channels,
            " channels");
  return channels / group_size;
}

int64_t parse_int(const std::string& s, const std::string& what) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || v < 0 || v > (1 << 20)) fail("vision arch string ", what, ": '", s, "' is not a size");
  return v;
}

double parse_float(const std::string& s, const std::string& what) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || !(v > 0) || v > 1e4) fail("vision arch string ", what, ": '", s, "' is not a ratio");
  return v;
}

}  // namespace

// Reference: timm _efficientnet_builder._decode_block_str for the er / uir / mqa block types.
std::vector<std::vector<VisionBlockArgs>> decode_vision_arch_strings(const std::vector<std::vector<std::string>>& stages) {
  std::vector<std::vector<VisionBlockArgs>> out;
  for (const auto& stage : stages) {
    std::vector<VisionBlockArgs> blocks;
    for (const std::string& str : stage) {
      std::vector<std::string> ops;
      size_t start = 0;
      while (start <= str.size()) {
        const size_t end = str.find('_', start);
        ops.push_back(str.substr(start, end == std::string::npos ? std::string::npos : end - start));
        if (end == std::string::npos) break;
        start = end + 1;
      }
      VisionBlockArgs b;
      const std::string& t = ops[0];
      if (t == "er") b.type = Type::EdgeResidual;
      else if (t == "uir") b.type = Type::UniversalInvertedResidual;
      else if (t == "mqa") b.type = Type::MobileMqa;
      else fail("vision arch string '", str, "': block type '", t, "' is not supported (er, uir, mqa)");
      int64_t repeat = 1;
      bool has_c = false;
      for (size_t i = 1; i < ops.size(); ++i) {
        const std::string& op = ops[i];
        if (op == "noskip") { b.noskip = true; continue; }
        if (op == "skip") { b.noskip = false; continue; }
        size_t k = 0;
        while (k < op.size() && std::isalpha(static_cast<unsigned char>(op[k]))) ++k;
        const std::string key = op.substr(0, k), val = op.substr(k);
        const std::string what = "'" + str + "' option " + key;
        if (key == "r") repeat = parse_int(val, what);
        else if (key == "s") b.stride = parse_int(val, what);
        else if (key == "c") { b.out_chs = parse_int(val, what); has_c = true; }
        else if (key == "e") b.exp_ratio = parse_float(val, what);
        else if (key == "gs") b.group_size = parse_int(val, what);
        else if (key == "k" && b.type == Type::EdgeResidual) b.exp_kernel_size = parse_int(val, what);
        else if (key == "p" && b.type == Type::EdgeResidual) b.pw_kernel_size = parse_int(val, what);
        else if (key == "f" && b.type == Type::EdgeResidual) b.force_in_chs = parse_int(val, what);
        else if (key == "a" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_start = parse_int(val, what);
        else if (key == "k" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_mid = parse_int(val, what);
        else if (key == "p" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_end = parse_int(val, what);
        else if (key == "k" && b.type == Type::MobileMqa) b.dw_kernel_size = parse_int(val, what);
        else if (key == "h" && b.type == Type::MobileMqa) b.num_heads = parse_int(val, what);
        else if (key == "d" && b.type == Type::MobileMqa) b.key_dim = b.value_dim = parse_int(val, what);
        else if (key == "v" && b.type == Type::MobileMqa) b.kv_stride = parse_int(val, what);
        else fail("vision arch string '", str, "': option '", op, "' is not supported");
      }
      G3N_CHECK(has_c, "vision arch string '", str, "' has no channel count (c)");
      G3N_CHECK(repeat >= 1, "vision arch string '", str, "': repeat must be at least 1");
      for (int64_t r = 0; r < repeat; ++r) {
        VisionBlockArgs rb = b;
        if (r > 0) rb.stride = 1;
        blocks.push_back(rb);
      }
    }
    out.push_back(std::move(blocks));
  }
  return out;
}

// Reference: timm mobilenetv5.py _gen_mobilenet_v5('mobilenetv5_300m_enc').
VisionArch mobilenetv5_300m_enc_arch() {
  std::vector<std::vector<std::string>> s(4);
  s[0] = {"er_r1_k3_s2_e4_c128", "er_r1_k3_s1_e4_c128", "er_r1_k3_s1_e4_c128"};
  s[1] = {"uir_r1_a3_k5_s2_e6_c256", "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256",
          "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256"};
  s[2] = {"uir_r1_a5_k5_s2_e6_c640"};
  for (int i = 0; i < 7; ++i) s[2].push_back("uir_r1_a5_k0_s1_e4_c640");
  s[2].push_back("uir_r1_a0_k0_s1_e1_c640");
  for (int i = 0; i < 14; ++i) {
    s[2].push_back("mqa_r1_k3_h12_v2_s1_d64_c640");
    s[2].push_back("uir_r1_a0_k0_s1_e2_c640");
  }
  s[3] = {"uir_r1_a5_k5_s2_e6_c1280"};
  for (int i = 0; i < 19; ++i) {
    s[3].push_back("mqa_r1_k3_h16_s1_d96_c1280");
    s[3].push_back("uir_r1_a0_k0_s1_e2_c1280");
  }
  VisionArch a;
  a.stages = decode_vision_arch_strings(s);
  return a;
}

namespace {

int64_t json_int(const json& j, const std::string& what) {
  if (!j.is_number_integer() && !(j.is_number_float() && std::floor(j.get<double>()) == j.get<double>()))
    fail(what, " must be an integer, got ", j.dump());
  const int64_t v = j.is_number_integer() ? j.get<int64_t>() : int64_t(j.get<double>());
  G3N_CHECK(v >= 0 && v <= (1 << 20), what, " = ", v, " is out of range");
  return v;
}

// One block from Gemma3nVisionConfig.model_args["block_args"] (timm's decoded block dict).
VisionBlockArgs block_from_json(const json& d, const std::string& where) {
  G3N_CHECK(d.is_object(), where, " must be a block dict or an arch string");
  VisionBlockArgs b;
  const std::string t = d.value("block_type", std::string());
  if (t == "er") b.type = Type::EdgeResidual;
  else if (t == "uir") b.type = Type::UniversalInvertedResidual;
  else if (t == "mqa") b.type = Type::MobileMqa;
  else fail(where, ".block_type '", t, "' is not supported (er, uir, mqa)");
  bool has_c = false;
  for (const auto& [key, v] : d.items()) {
    const std::string what = where + "." + key;
    if (key == "block_type") continue;
    if (key == "out_chs") { b.out_chs = json_int(v, what); has_c = true; }
    else if (key == "stride") b.stride = json_int(v, what);
    else if (key == "exp_ratio") {
      G3N_CHECK(v.is_number() && v.get<double>() > 0, what, " must be a positive number");
      b.exp_ratio = v.get<double>();
    } else if (key == "noskip") {
      G3N_CHECK(v.is_boolean(), what, " must be true or false");
      b.noskip = v.get<bool>();
    } else if (key == "group_size") b.group_size = v.is_null() ? 0 : json_int(v, what);
    else if (key == "act_layer") G3N_CHECK(v.is_null(), what, " is not supported (the encoder uses GELU-tanh)");
    else if (key == "se_ratio" || key == "se_layer")
      G3N_CHECK(v.is_null() || (v.is_number() && v.get<double>() == 0), what, ": squeeze-excite is not supported");
    else if (key == "dilation") G3N_CHECK(v.is_number() && v.get<double>() == 1, what, ": dilation is not supported");
    else if (key == "exp_kernel_size" && b.type == Type::EdgeResidual) b.exp_kernel_size = json_int(v, what);
    else if (key == "pw_kernel_size" && b.type == Type::EdgeResidual) b.pw_kernel_size = json_int(v, what);
    else if (key == "force_in_chs" && b.type == Type::EdgeResidual) b.force_in_chs = json_int(v, what);
    else if (key == "dw_kernel_size_start" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_start = json_int(v, what);
    else if (key == "dw_kernel_size_mid" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_mid = json_int(v, what);
    else if (key == "dw_kernel_size_end" && b.type == Type::UniversalInvertedResidual) b.dw_kernel_size_end = json_int(v, what);
    else if (key == "dw_kernel_size" && b.type == Type::MobileMqa) b.dw_kernel_size = json_int(v, what);
    else if (key == "num_heads" && b.type == Type::MobileMqa) b.num_heads = json_int(v, what);
    else if (key == "key_dim" && b.type == Type::MobileMqa) b.key_dim = json_int(v, what);
    else if (key == "value_dim" && b.type == Type::MobileMqa) b.value_dim = json_int(v, what);
    else if (key == "kv_stride" && b.type == Type::MobileMqa) b.kv_stride = json_int(v, what);
    else if (key == "query_strides" && b.type == Type::MobileMqa)
      G3N_CHECK(v.is_null() || (v.is_number() && v.get<double>() == 1), what, ": query striding is not supported");
    else fail(what, " is not supported");
  }
  G3N_CHECK(has_c, where, " has no out_chs");
  return b;
}

}  // namespace

VisionArch parse_vision_arch(const std::string& config_json_text) {
  json j;
  try {
    j = json::parse(config_json_text);
  } catch (const json::exception& e) {
    fail("config.json is not valid JSON: ", e.what());
  }
  G3N_CHECK(j.is_object(), "config.json is not a JSON object");
  G3N_CHECK(j.contains("vision_config") && j["vision_config"].is_object(),
            "config.json has no vision_config (not a multimodal Gemma 3n checkpoint)");
  const json& vc = j["vision_config"];
  const std::string arch_name = vc.value("architecture", std::string("mobilenetv5_300m_enc"));
  G3N_CHECK(arch_name == "mobilenetv5_300m_enc", "vision_config.architecture '", arch_name,
            "' is not supported (mobilenetv5_300m_enc)");
  VisionArch a = mobilenetv5_300m_enc_arch();
  // vision_config.rms_norm_eps is the embedder's (ModelConfig); the tower's RmsNorm2d keep timm's 1e-6.
  if (!vc.contains("model_args") || vc["model_args"].is_null()) return a;
  const json& ma = vc["model_args"];
  G3N_CHECK(ma.is_object(), "vision_config.model_args must be an object");
  for (const auto& [key, v] : ma.items()) {
    const std::string what = "vision_config.model_args." + key;
    if (key == "block_args") {
      G3N_CHECK(v.is_array() && !v.empty(), what, " must be a non-empty list of stages");
      a.stages.clear();
      for (size_t s = 0; s < v.size(); ++s) {
        G3N_CHECK(v[s].is_array() && !v[s].empty(), what, "[", s, "] must be a non-empty list of blocks");
        std::vector<VisionBlockArgs> blocks;
        for (size_t i = 0; i < v[s].size(); ++i) {
          const std::string where = what + "[" + std::to_string(s) + "][" + std::to_string(i) + "]";
          if (v[s][i].is_string()) {
            const auto decoded = decode_vision_arch_strings({{v[s][i].get<std::string>()}});
            blocks.insert(blocks.end(), decoded[0].begin(), decoded[0].end());
          } else {
            blocks.push_back(block_from_json(v[s][i], where));
          }
        }
        a.stages.push_back(std::move(blocks));
      }
    } else if (key == "stem_size") a.stem_size = json_int(v, what);
    else if (key == "fix_stem") {
      G3N_CHECK(v.is_boolean(), what, " must be true or false");
      a.fix_stem = v.get<bool>();
    } else if (key == "channel_multiplier") {
      G3N_CHECK(v.is_number() && v.get<double>() > 0, what, " must be a positive number");
      a.channel_multiplier = v.get<double>();
      if (!ma.contains("fix_stem")) a.fix_stem = a.channel_multiplier < 1.0;
    } else if (key == "layer_scale_init_value") a.layer_scale = !v.is_null();
    else if (key == "msfa_output_resolution") a.msfa_output_resolution = json_int(v, what);
    else if (key == "msfa_indices") {
      a.msfa_indices.clear();
      if (v.is_number_integer()) {
        a.msfa_last_n = json_int(v, what);  // an int means "the last n feature points"
      } else {
        G3N_CHECK(v.is_array() && !v.empty(), what, " must be a list of indices");
        for (const auto& x : v) {
          G3N_CHECK(x.is_number_integer(), what, " must be a list of integers");
          a.msfa_indices.push_back(x.get<int64_t>());
        }
      }
    } else if (key == "pad_type") G3N_CHECK(v.is_string() && v.get<std::string>() == "same", what, " must be 'same'");
    else if (key == "drop_rate" || key == "drop_path_rate") continue;  // training only
    else fail(what, " is not supported");
  }
  G3N_CHECK(a.stem_size > 0 && a.msfa_output_resolution > 0, "vision_config.model_args: empty stem or MSFA output");
  return a;
}

// ------------------------------------------------------------------------------------------------
// Weights
// ------------------------------------------------------------------------------------------------

namespace {

// A convolution followed by RmsNorm2d (and GELU when `act`): timm ConvNormAct with pad_type 'same'.
struct ConvNorm {
  TensorView conv;          // [out, in / groups, k, k]
  std::vector<float> bias;  // [out] or empty
  std::vector<float> norm;  // [out]
  int64_t in_c = 0, out_c = 0, kernel = 1, stride = 1, groups = 1;
  bool act = false;
};

struct Block {
  Type type = Type::UniversalInvertedResidual;
  int64_t in_c = 0, out_c = 0, stride = 1;
  bool skip = false;
  // er: exp (k x k, stride) + NormAct, pwl + Norm. uir: [dw_start] + pw_exp + [dw_mid] + pw_proj + [dw_end].
  std::vector<ConvNorm> convs;
  std::vector<float> layer_scale;  // [out] (uir, mqa) or empty
  // mqa
  std::vector<float> norm;  // [in]
  int64_t heads = 0, key_dim = 0, value_dim = 0, kv_stride = 1;
  TensorView q_proj, k_proj, v_proj, o_proj;  // [h*dk, C], [dk, C], [dv, C], [out, h*dv] (1x1 convs)
  ConvNorm k_down, v_down;                     // when kv_stride > 1: depthwise k x k + Norm
};

struct FeaturePoint {
  int64_t channels = 0;
};

// Collects every problem before reporting (the text decoder's registry style).
class Registry {
 public:
  Registry(const WeightSource& src, std::string prefix) : src_(src), prefix_(std::move(prefix)) {}

  TensorView tensor(const std::string& name, const std::vector<int64_t>& shape, bool required = true) {
    const std::string full = prefix_ + name;
    const TensorView* t = nullptr;
    try {
      t = src_.find_as(full, shape);
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
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16) {
      problems_.push_back("tensor " + full + " has type " + dtype_name(t->dtype) + " (the vision tower reads F32, F16, BF16)");
      return {};
    }
    return *t;
  }

  std::vector<float> vector(const std::string& name, int64_t n, bool required = true) {
    TensorView t = tensor(name, {n}, required);
    if (!t.valid()) return required ? std::vector<float>(size_t(n), 0.0f) : std::vector<float>();
    std::vector<float> v(static_cast<size_t>(n));
    to_f32(t, 0, n, v.data());
    return v;
  }

  ConvNorm conv_norm(const std::string& conv_name, const std::string& norm_name, int64_t in_c, int64_t out_c,
                     int64_t kernel, int64_t stride, int64_t groups, bool act) {
    ConvNorm c;
    c.in_c = in_c, c.out_c = out_c, c.kernel = kernel, c.stride = stride, c.groups = groups, c.act = act;
    c.conv = tensor(conv_name, {out_c, in_c / groups, kernel, kernel});
    c.norm = vector(norm_name, out_c);
    return c;
  }

  void check(const char* what) const {
    if (problems_.empty()) return;
    std::string msg = std::string("the checkpoint's ") + what + " does not match its config.json:";
    const size_t shown = std::min<size_t>(problems_.size(), 20);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems_[i];
    if (problems_.size() > shown) msg += "\n  ... and " + std::to_string(problems_.size() - shown) + " more";
    throw Error(msg);
  }

 private:
  const WeightSource& src_;
  std::string prefix_;
  std::vector<std::string> problems_;
};

std::string find_prefix(const WeightSource& src, const std::vector<std::string>& candidates, const std::string& probe,
                        const char* what) {
  for (const auto& p : candidates)
    if (src.find(p + probe)) return p;
  fail("no ", what, " in the checkpoint: tensor ", candidates[0], probe, " not found");
}

}  // namespace

struct VisionEncoder::Weights {
  ConvNorm stem;
  std::vector<std::vector<Block>> stages;
  std::vector<int64_t> msfa_stage_taps;  // forward_features' feat_idx values that feed the MSFA (0 = stem)
  int64_t msfa_in_c = 0, msfa_mid_c = 0;
  ConvNorm msfa_exp, msfa_proj;
  std::vector<float> msfa_norm;
  // embedder (soft path)
  std::vector<float> soft_embedding_norm;  // [feature_dim]
  TensorView embedding_projection;         // [text hidden, feature_dim]
};

VisionEncoder::~VisionEncoder() = default;
VisionEncoder::VisionEncoder(VisionEncoder&&) noexcept = default;
VisionEncoder& VisionEncoder::operator=(VisionEncoder&&) noexcept = default;

// Shapes follow timm's EfficientNetBuilder (channel rounding, first-block-only strides, feature
// points) and the block constructors (_efficientnet_blocks.py, attention2d.py, mobilenetv5.py).
VisionEncoder::VisionEncoder(const ModelConfig& config, VisionArch arch, const WeightSource& source)
    : config_(config), arch_(std::move(arch)), w_(std::make_unique<Weights>()) {
  G3N_CHECK(config_.multimodal, "the checkpoint's config.json has no vision_config (not a multimodal Gemma 3n)");
  G3N_CHECK(!arch_.stages.empty(), "vision architecture has no stages");
  G3N_CHECK(config_.vision.hidden_size == arch_.num_features, "vision_config.hidden_size is ",
            config_.vision.hidden_size, " but MobileNet-V5's fusion adapter outputs ", arch_.num_features, " channels");
  const std::string tp = find_prefix(source, {"model.vision_tower.timm_model.", "vision_tower.timm_model.", ""},
                                     "conv_stem.conv.weight", "MobileNet-V5 vision tower");
  Registry reg(source, tp);
  Weights& w = *w_;

  const double mult = arch_.channel_multiplier;
  const int64_t stem_c = arch_.fix_stem ? arch_.stem_size : round_channels(arch_.stem_size, mult);
  w.stem = reg.conv_norm("conv_stem.conv.weight", "conv_stem.bn.weight", 3, stem_c, 3, 2, 1, true);
  w.stem.bias = reg.vector("conv_stem.conv.bias", stem_c, /*required=*/false);  // stem_bias (zeros when converted)

  // Feature points (EfficientNetBuilder.features): the stem when the first block strides, and the end of
  // every stage followed by a strided stage, plus the last stage.
  std::vector<FeaturePoint> features;
  if (arch_.stages[0][0].stride > 1) features.push_back({stem_c});
  int64_t in_c = stem_c, reduction = 2;
  for (size_t s = 0; s < arch_.stages.size(); ++s) {
    G3N_CHECK(!arch_.stages[s].empty(), "vision architecture: stage ", s, " has no blocks");
    std::vector<Block> blocks;
    for (size_t i = 0; i < arch_.stages[s].size(); ++i) {
      VisionBlockArgs ba = arch_.stages[s][i];
      const std::string p = "blocks." + std::to_string(s) + "." + std::to_string(i) + ".";
      G3N_CHECK(ba.stride == 1 || ba.stride == 2, "vision block ", s, ".", i, ": stride ", ba.stride, " (1 or 2)");
      if (i > 0) ba.stride = 1;  // only the first block of a stage strides
      reduction *= ba.stride;
      G3N_CHECK(reduction <= 32, "vision block ", s, ".", i, ": output stride above 32 (timm turns it into dilation, not supported)");
      Block b;
      b.type = ba.type, b.in_c = in_c, b.out_c = round_channels(ba.out_chs, mult), b.stride = ba.stride;
      b.skip = b.in_c == b.out_c && b.stride == 1 && !ba.noskip;
      if (ba.type == Type::EdgeResidual) {
        // EdgeResidual: conv_exp (k x k, stride, groups from mid) + bn1 (NormAct), conv_pwl + bn2 (Norm).
        const int64_t mid = make_divisible(double(ba.force_in_chs > 0 ? ba.force_in_chs : in_c) * ba.exp_ratio);
        const int64_t groups = num_groups(ba.group_size < 0 ? 0 : ba.group_size, mid);
        b.convs.push_back(reg.conv_norm(p + "conv_exp.weight", p + "bn1.weight", in_c, mid, ba.exp_kernel_size,
                                        ba.stride, groups, true));
        b.convs.push_back(reg.conv_norm(p + "conv_pwl.weight", p + "bn2.weight", mid, b.out_c, ba.pw_kernel_size, 1, 1,
                                        false));
      } else if (ba.type == Type::UniversalInvertedResidual) {
        G3N_CHECK(ba.stride == 1 || ba.dw_kernel_size_start || ba.dw_kernel_size_mid || ba.dw_kernel_size_end,
                  "vision block ", s, ".", i, ": a strided uir block needs a depthwise conv");
        const int64_t gs = ba.group_size < 0 ? 1 : ba.group_size;
        const int64_t mid = make_divisible(double(in_c) * ba.exp_ratio);
        if (ba.dw_kernel_size_start)
          b.convs.push_back(reg.conv_norm(p + "dw_start.conv.weight", p + "dw_start.bn.weight", in_c, in_c,
                                          ba.dw_kernel_size_start, ba.dw_kernel_size_mid ? 1 : ba.stride,
                                          num_groups(gs, in_c), false));
        b.convs.push_back(reg.conv_norm(p + "pw_exp.conv.weight", p + "pw_exp.bn.weight", in_c, mid, 1, 1, 1, true));
        if (ba.dw_kernel_size_mid)
          b.convs.push_back(reg.conv_norm(p + "dw_mid.conv.weight", p + "dw_mid.bn.weight", mid, mid,
                                          ba.dw_kernel_size_mid, ba.stride, num_groups(gs, mid), true));
        b.convs.push_back(reg.conv_norm(p + "pw_proj.conv.weight", p + "pw_proj.bn.weight", mid, b.out_c, 1, 1, 1, false));
        if (ba.dw_kernel_size_end)
          b.convs.push_back(reg.conv_norm(p + "dw_end.conv.weight", p + "dw_end.bn.weight", b.out_c, b.out_c,
                                          ba.dw_kernel_size_end,
                                          ba.dw_kernel_size_start || ba.dw_kernel_size_mid ? 1 : ba.stride,
                                          num_groups(gs, b.out_c), false));
        if (arch_.layer_scale) b.layer_scale = reg.vector(p + "layer_scale.gamma", b.out_c);
      } else {
        // MobileAttention with MultiQueryAttention2d: one shared K/V head.
        G3N_CHECK(ba.stride == 1, "vision block ", s, ".", i, ": strided attention blocks are not supported");
        G3N_CHECK(ba.num_heads > 0 && ba.key_dim > 0 && ba.value_dim > 0, "vision block ", s, ".", i,
                  ": attention needs heads and key/value sizes");
        const int64_t C = in_c;
        b.heads = ba.num_heads, b.key_dim = ba.key_dim, b.value_dim = ba.value_dim, b.kv_stride = ba.kv_stride;
        b.norm = reg.vector(p + "norm.weight", C);
        b.q_proj = reg.tensor(p + "attn.query.proj.weight", {b.heads * b.key_dim, C, 1, 1});
        if (b.kv_stride > 1) {
          b.k_down = reg.conv_norm(p + "attn.key.down_conv.weight", p + "attn.key.norm.weight", C, C,
                                   ba.dw_kernel_size, b.kv_stride, C, false);
          b.v_down = reg.conv_norm(p + "attn.value.down_conv.weight", p + "attn.value.norm.weight", C, C,
                                   ba.dw_kernel_size, b.kv_stride, C, false);
        }
        b.k_proj = reg.tensor(p + "attn.key.proj.weight", {b.key_dim, C, 1, 1});
        b.v_proj = reg.tensor(p + "attn.value.proj.weight", {b.value_dim, C, 1, 1});
        b.o_proj = reg.tensor(p + "attn.output.proj.weight", {b.out_c, b.heads * b.value_dim, 1, 1});
        if (arch_.layer_scale) b.layer_scale = reg.vector(p + "layer_scale.gamma", b.out_c);
      }
      in_c = b.out_c;
      blocks.push_back(std::move(b));
    }
    w.stages.push_back(std::move(blocks));
    const bool last = s + 1 == arch_.stages.size();
    if (last || arch_.stages[s + 1][0].stride > 1) features.push_back({in_c});
  }

  // MSFA inputs: timm resolves msfa_indices against the feature points (feature_take_indices) but
  // forward_features counts stages (stem = 0, stage s = s + 1); we do exactly the same.
  const int64_t nf = int64_t(features.size());
  std::vector<int64_t> take;
  if (arch_.msfa_last_n > 0) {
    const int64_t n = arch_.msfa_last_n;
    G3N_CHECK(n > 0 && n <= nf, "vision msfa_indices: last ", n, " of ", nf, " feature points");
    for (int64_t i = 0; i < n; ++i) take.push_back(nf - n + i);
  } else {
    for (int64_t i : arch_.msfa_indices) {
      const int64_t k = i < 0 ? nf + i : i;
      G3N_CHECK(k >= 0 && k < nf, "vision msfa_indices: ", i, " is outside the ", nf, " feature points");
      take.push_back(k);
    }
  }
  w.msfa_in_c = 0;
  for (int64_t k : take) {
    w.msfa_in_c += features[size_t(k)].channels;
    G3N_CHECK(k <= int64_t(arch_.stages.size()), "vision msfa_indices: feature ", k, " has no stage to tap");
    w.msfa_stage_taps.push_back(k);
  }
  // MSFA ffn: UniversalInvertedResidual(in, 2048, dw_mid=0, exp_ratio=2, noskip, no layer scale), then norm.
  w.msfa_mid_c = make_divisible(double(w.msfa_in_c) * 2.0);
  w.msfa_exp = reg.conv_norm("msfa.ffn.pw_exp.conv.weight", "msfa.ffn.pw_exp.bn.weight", w.msfa_in_c, w.msfa_mid_c, 1,
                             1, 1, true);
  w.msfa_proj = reg.conv_norm("msfa.ffn.pw_proj.conv.weight", "msfa.ffn.pw_proj.bn.weight", w.msfa_mid_c,
                              arch_.num_features, 1, 1, 1, false);
  w.msfa_norm = reg.vector("msfa.norm.weight", arch_.num_features);
  reg.check("vision tower");

  const std::string ep = find_prefix(source, {"model.embed_vision.", "embed_vision."}, "embedding_projection.weight",
                                     "vision embedder (embed_vision)");
  Registry emb(source, ep);
  w.soft_embedding_norm = emb.vector("soft_embedding_norm.weight", arch_.num_features);
  w.embedding_projection = emb.tensor("embedding_projection.weight", {config_.text.hidden_size, arch_.num_features});
  emb.check("vision embedder");
}

int64_t VisionEncoder::tokens_per_image() const { return arch_.msfa_output_resolution * arch_.msfa_output_resolution; }
int64_t VisionEncoder::embedding_dim() const { return config_.text.hidden_size; }
int64_t VisionEncoder::feature_dim() const { return arch_.num_features; }

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------

namespace {

// A channels-last image [h, w, c].
struct Image {
  ActivationVector<float> data;  // uninitialised when resized; blocks reused within features()
  int64_t h = 0, w = 0, c = 0;
  int64_t pixels() const { return h * w; }
};

// timm RmsNorm2d / RmsNormAct2d over channels at every pixel (GELU-tanh after it when `act`).
void norm_act(Image& x, const std::vector<float>& weight, float eps, bool act, ThreadPool& pool) {
  kernels::RowNormOptions o;
  o.weight = weight.data();
  o.eps = eps;
  o.activation = act ? kernels::RowActivation::kGeluTanh : kernels::RowActivation::kNone;
  kernels::rms_norm_rows(x.data.data(), x.pixels(), x.c, o, x.data.data(), pool);
}

// ConvNormAct(pad_type='same'): timm Conv2dSame / static 'same' padding, then the norm.
Image conv_norm(const ConvNorm& cn, const Image& x, float eps, ThreadPool& pool) {
  G3N_CHECK(x.c == cn.in_c, "internal: vision conv expects ", cn.in_c, " channels, got ", x.c);
  kernels::Conv2dShape s;
  s.in_h = x.h, s.in_w = x.w, s.in_c = x.c, s.out_c = cn.out_c;
  s.kernel_h = s.kernel_w = cn.kernel;
  s.stride_h = s.stride_w = cn.stride;
  const kernels::Padding ph = kernels::same_padding(x.h, cn.kernel, cn.stride);
  const kernels::Padding pw = kernels::same_padding(x.w, cn.kernel, cn.stride);
  s.pad_top = ph.before, s.pad_bottom = ph.after, s.pad_left = pw.before, s.pad_right = pw.after;
  s.groups = cn.groups;
  Image y;
  y.h = s.out_h(), y.w = s.out_w(), y.c = cn.out_c;
  y.data.resize(size_t(y.h * y.w * y.c));
  kernels::conv2d(cn.conv, cn.bias.empty() ? nullptr : cn.bias.data(), x.data.data(), s, y.data.data(), pool);
  norm_act(y, cn.norm, eps, cn.act, pool);
  return y;
}

// A 1x1 convolution without norm (attention projections).
Image pointwise(const TensorView& w4, const Image& x, ThreadPool& pool) {
  TensorView w = w4;
  w.shape = {w4.dim(0), w4.dim(1)};
  Image y;
  y.h = x.h, y.w = x.w, y.c = w.dim(0);
  y.data.resize(size_t(y.pixels() * y.c));
  kernels::linear(w, x.data.data(), x.pixels(), y.data.data(), pool);
  return y;
}

// LayerScale2d (x * gamma per channel), then the residual when the block has one.
void scale_and_add(Image& y, const std::vector<float>& gamma, const Image* shortcut, ThreadPool& pool) {
  kernels::scale_add_rows(y.data.data(), gamma.empty() ? nullptr : gamma.data(),
                          shortcut ? shortcut->data.data() : nullptr, y.pixels(), y.c, pool);
}

// MobileAttention(use_multi_query=True): x + gamma * MultiQueryAttention2d(RmsNorm2d(x)).
// Reference: timm attention2d.MultiQueryAttention2d.forward (softmax(q k^T * key_dim^-0.5) v per
// query head, one K/V head, outputs concatenated head-major).
Image mqa_block(const Block& b, const Image& x, float eps, ThreadPool& pool) {
  Image xn;
  xn.h = x.h, xn.w = x.w, xn.c = x.c;
  xn.data.resize(x.data.size());
  kernels::RowNormOptions no;
  no.weight = b.norm.data();
  no.eps = eps;
  kernels::rms_norm_rows(x.data.data(), x.pixels(), x.c, no, xn.data.data(), pool);
  const Image q = pointwise(b.q_proj, xn, pool);  // [HW, h*dk]
  Image k, v;
  if (b.kv_stride > 1) {
    k = pointwise(b.k_proj, conv_norm(b.k_down, xn, eps, pool), pool);
    v = pointwise(b.v_proj, conv_norm(b.v_down, xn, eps, pool), pool);
  } else {
    k = pointwise(b.k_proj, xn, pool);
    v = pointwise(b.v_proj, xn, pool);
  }
  const int64_t N = xn.pixels(), M = k.pixels(), H = b.heads, dk = b.key_dim, dv = b.value_dim;
  // One K/V head for all query heads: q [N, H*dk] is the matrix [N*H, dk] of (pixel, head) rows and
  // o [N, H*dv] is [N*H, dv] likewise, so every head is one fused softmax(q K^T / sqrt(dk)) V.
  Image o;
  o.h = xn.h, o.w = xn.w, o.c = H * dv;
  o.data.resize(size_t(N * H * dv));
  kernels::attention_shared_kv(q.data.data(), N * H, dk, k.data.data(), v.data.data(), M, dk, dv,
                               1.0f / std::sqrt(float(dk)), o.data.data(), dv, pool);
  Image y = pointwise(b.o_proj, o, pool);
  scale_and_add(y, b.layer_scale, b.skip ? &x : nullptr, pool);
  return y;
}

Image run_block(const Block& b, const Image& x, float eps, ThreadPool& pool) {
  if (b.type == Type::MobileMqa) return mqa_block(b, x, eps, pool);
  // EdgeResidual / UniversalInvertedResidual: the ConvNormAct chain, layer scale (uir), skip.
  Image y = conv_norm(b.convs[0], x, eps, pool);
  for (size_t i = 1; i < b.convs.size(); ++i) y = conv_norm(b.convs[i], y, eps, pool);
  scale_and_add(y, b.layer_scale, b.skip ? &x : nullptr, pool);
  return y;
}

// F.interpolate(mode='nearest') to (oh, ow): src = min(floor(dst * (in / out)), in - 1), in float32.
Image resize_nearest(const Image& x, int64_t oh, int64_t ow) {
  Image y;
  y.h = oh, y.w = ow, y.c = x.c;
  y.data.resize(size_t(oh * ow * x.c));
  const float sh = float(x.h) / float(oh), sw = float(x.w) / float(ow);
  for (int64_t yy = 0; yy < oh; ++yy) {
    const int64_t iy = std::min<int64_t>(int64_t(std::floor(float(yy) * sh)), x.h - 1);
    for (int64_t xx = 0; xx < ow; ++xx) {
      const int64_t ix = std::min<int64_t>(int64_t(std::floor(float(xx) * sw)), x.w - 1);
      std::copy_n(x.data.data() + (iy * x.w + ix) * x.c, x.c, y.data.data() + (yy * ow + xx) * x.c);
    }
  }
  return y;
}

// F.interpolate(mode='bilinear', align_corners=False), no antialiasing; source coordinates in float32.
Image resize_bilinear(const Image& x, int64_t oh, int64_t ow) {
  Image y;
  y.h = oh, y.w = ow, y.c = x.c;
  y.data.assign(size_t(oh * ow * x.c), 0.0f);
  auto coord = [](int64_t dst, int64_t in, int64_t out, int64_t& i0, int64_t& i1, float& l1) {
    const float scale = float(in) / float(out);
    float src = scale * (float(dst) + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    i0 = std::min<int64_t>(int64_t(src), in - 1);
    i1 = i0 + (i0 < in - 1 ? 1 : 0);
    l1 = std::min(src - float(i0), 1.0f);
  };
  for (int64_t yy = 0; yy < oh; ++yy) {
    int64_t y0, y1;
    float ly;
    coord(yy, x.h, oh, y0, y1, ly);
    for (int64_t xx = 0; xx < ow; ++xx) {
      int64_t x0, x1;
      float lx;
      coord(xx, x.w, ow, x0, x1, lx);
      const float* a = x.data.data() + (y0 * x.w + x0) * x.c;
      const float* bb = x.data.data() + (y0 * x.w + x1) * x.c;
      const float* c = x.data.data() + (y1 * x.w + x0) * x.c;
      const float* d = x.data.data() + (y1 * x.w + x1) * x.c;
      float* out = y.data.data() + (yy * ow + xx) * x.c;
      for (int64_t ch = 0; ch < x.c; ++ch)
        out[ch] = (1 - ly) * ((1 - lx) * a[ch] + lx * bb[ch]) + ly * ((1 - lx) * c[ch] + lx * d[ch]);
    }
  }
  return y;
}

// F.avg_pool2d(kernel = stride = (kh, kw)), no padding.
Image avg_pool(const Image& x, int64_t kh, int64_t kw) {
  Image y;
  y.h = x.h / kh, y.w = x.w / kw, y.c = x.c;
  y.data.assign(size_t(y.h * y.w * y.c), 0.0f);
  const float inv = 1.0f / float(kh * kw);
  for (int64_t yy = 0; yy < y.h; ++yy)
    for (int64_t xx = 0; xx < y.w; ++xx) {
      float* out = y.data.data() + (yy * y.w + xx) * y.c;
      for (int64_t dy = 0; dy < kh; ++dy)
        for (int64_t dx = 0; dx < kw; ++dx) {
          const float* in = x.data.data() + ((yy * kh + dy) * x.w + xx * kw + dx) * x.c;
          for (int64_t c = 0; c < x.c; ++c) out[c] += in[c];
        }
      for (int64_t c = 0; c < y.c; ++c) out[c] *= inv;
    }
  return y;
}

}  // namespace

// Reference: timm MobileNetV5Encoder.forward_features (stem, stages, MobileNetV5MultiScaleFusionAdapter).
std::vector<float> VisionEncoder::features(const float* pixels, int64_t height, int64_t width, ThreadPool& pool) const {
  G3N_CHECK(height > 0 && width > 0 && height <= 8192 && width <= 8192, "image of ", height, "x", width,
            " pixels: the vision encoder takes 1..8192 pixels per side");
  const Weights& w = *w_;
  const float eps = arch_.norm_eps;
  const ActivationBufferScope buffers;  // layers of the same shape reuse each other's memory
  Image x;
  x.h = height, x.w = width, x.c = 3;
  x.data.resize(size_t(3 * height * width));
  kernels::chw_to_hwc(pixels, 3, height, width, x.data.data());

  std::vector<Image> taps;  // MSFA inputs, in forward order (as timm appends them)
  auto tap = [&](int64_t feat_idx, const Image& img) {
    if (std::find(w.msfa_stage_taps.begin(), w.msfa_stage_taps.end(), feat_idx) != w.msfa_stage_taps.end())
      taps.push_back(img);
  };
  x = conv_norm(w.stem, x, eps, pool);
  tap(0, x);
  for (size_t s = 0; s < w.stages.size(); ++s) {
    for (const Block& b : w.stages[s]) x = run_block(b, x, eps, pool);
    tap(int64_t(s) + 1, x);
  }

  // MSFA: nearest-upsample smaller inputs to the first one's size, concatenate channels, FFN, then
  // average-pool (or bilinear-resize when not divisible) to the output resolution, then the norm.
  const int64_t H = taps[0].h, W = taps[0].w;
  Image cat;
  cat.h = H, cat.w = W, cat.c = 0;
  for (auto& t : taps) {
    if (t.h < H || t.w < W) t = resize_nearest(t, H, W);
    G3N_CHECK(t.h == H && t.w == W, "vision fusion adapter: feature map of ", t.h, "x", t.w, " larger than the first (",
              H, "x", W, ")");
    cat.c += t.c;
  }
  G3N_CHECK(cat.c == w.msfa_in_c, "vision fusion adapter: ", cat.c, " input channels, the weights expect ", w.msfa_in_c);
  cat.data.resize(size_t(H * W * cat.c));
  for (int64_t p = 0; p < H * W; ++p) {
    float* out = cat.data.data() + p * cat.c;
    for (const auto& t : taps) out = std::copy_n(t.data.data() + p * t.c, t.c, out);
  }
  taps.clear();
  Image z = conv_norm(w.msfa_proj, conv_norm(w.msfa_exp, cat, eps, pool), eps, pool);
  const int64_t R = arch_.msfa_output_resolution;
  if (H != R || W != R) {
    if (H % R != 0 || W % R != 0) z = resize_bilinear(z, R, R);
    else z = avg_pool(z, H / R, W / R);
  }
  norm_act(z, w.msfa_norm, eps, false, pool);
  return std::vector<float>(z.data.begin(), z.data.end());  // [R*R, 2048], raster order
}

// Reference: Gemma3nMultimodalEmbedder.forward(inputs_embeds=...) after get_image_features' scaling:
// RMSNorm(x * sqrt(vision hidden), soft_embedding_norm) -> embedding_projection -> RMSNorm (no scale).
std::vector<float> VisionEncoder::embed_features(const float* feats, int64_t n, ThreadPool& pool) const {
  const int64_t F = arch_.num_features, D = config_.text.hidden_size;
  const float eps = config_.vision.rms_norm_eps;
  const float scale = float(std::sqrt(double(config_.vision.hidden_size)));  // hidden_size**0.5, applied in float32
  std::vector<float> normed(size_t(n * F)), out(size_t(n * D));
  pool.parallel_for(n, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* row = normed.data() + t * F;
      for (int64_t i = 0; i < F; ++i) row[i] = feats[t * F + i] * scale;
      kernels::rms_norm(row, w_->soft_embedding_norm.data(), F, eps, row);
    }
  });
  kernels::linear(w_->embedding_projection, normed.data(), n, out.data(), pool);
  pool.parallel_for(n, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) kernels::rms_norm(out.data() + t * D, nullptr, D, eps, out.data() + t * D);
  });
  return out;
}

std::vector<float> VisionEncoder::encode(const float* pixels, int64_t height, int64_t width, ThreadPool& pool) const {
  const std::vector<float> f = features(pixels, height, width, pool);
  return embed_features(f.data(), tokens_per_image(), pool);
}

}  // namespace g3n
