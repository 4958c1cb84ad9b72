#include "model/audio_encoder.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/activation_buffers.h"
#include "base/error.h"
#include "kernels/conv.h"
#include "kernels/conv1d.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/rows.h"

namespace g3n {

// Linear layers over the frames: kernels::gemm for many rows, kernels::matmul for a few.
using kernels::linear;
using kernels::rms_norm;

namespace {

// Gemma3nRMSNorm's default eps: the conformer's FFW, attention and block norms are built without
// the config's rms_norm_eps (only the light conv's norms and the embedder pass it).
constexpr float kDefaultNormEps = 1e-6f;

// ---- config.json ----

using json = nlohmann::json;

int64_t get_int(const json& o, const char* key, int64_t fallback, const char* where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) fail("config.json: ", where, ".", key, " must be an integer");
  return it->get<int64_t>();
}

double get_num(const json& o, const char* key, double fallback, const char* where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail("config.json: ", where, ".", key, " must be a number");
  return it->get<double>();
}

std::array<int64_t, 2> get_pair(const json& v, const std::string& what) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer())
    fail("config.json: ", what, " must be a list of two integers");
  return {v[0].get<int64_t>(), v[1].get<int64_t>()};
}

// ---- tensors ----

// Walks the declarations, collecting every problem before reporting (as weights.cpp's registry).
class Registry {
 public:
  explicit Registry(const WeightSource& source) : source_(source) {}

  TensorView matrix(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorView* t = nullptr;
    try {
      t = source_.find_as(name, shape);
    } catch (const Error& e) {
      problems_.push_back(e.what());
      return {};
    }
    if (!t) {
      problems_.push_back("missing tensor " + name + " (expected shape " + shape_str(shape) + ")");
      return {};
    }
    if (t->shape != shape) {
      problems_.push_back("tensor " + name + " has shape " + shape_str(t->shape) + ", expected " + shape_str(shape));
      return {};
    }
    if (dtype_is_quantized(t->dtype) && shape.size() != 2) {
      problems_.push_back("tensor " + name + " is " + dtype_name(t->dtype) + "; only F32/F16/BF16 are supported here");
      return {};
    }
    return *t;
  }

  // Small tensors are converted to float32 once.
  std::vector<float> floats(const std::string& name, const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0f);
    const TensorView t = matrix(name, shape);
    if (t.valid()) to_f32(t, 0, n, v.data());
    return v;
  }

  void check() const {
    if (problems_.empty()) return;
    std::string msg = "the checkpoint's audio tower does not match its config.json:";
    const size_t shown = std::min<size_t>(problems_.size(), 20);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems_[i];
    if (problems_.size() > shown) msg += "\n  ... and " + std::to_string(problems_.size() - shown) + " more";
    throw Error(msg);
  }

 private:
  const WeightSource& source_;
  std::vector<std::string> problems_;
};

void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t d, float eps, float* out) {
  for (int64_t t = 0; t < rows; ++t) rms_norm(x + t * d, w, d, eps, out + t * d);
}

// Gemma3nRMSNorm(weight, eps) of every row, after torch.clamp(x, -clip, clip) when clip > 0 and
// with the activation after it: kernels::rms_norm_rows over the pool.
kernels::RowNormOptions norm_options(const std::vector<float>& weight, float eps, float clip = 0.0f,
                                     kernels::RowActivation act = kernels::RowActivation::kNone) {
  kernels::RowNormOptions o;
  o.weight = weight.data();
  o.eps = eps;
  o.clip = clip;
  o.activation = act;
  return o;
}

float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }  // torch: beta 1, threshold 20

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

AudioEncoderConfig AudioEncoderConfig::from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("config.json is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail("config.json: expected a JSON object");
  auto ac = j.find("audio_config");
  if (ac == j.end() || !ac->is_object())
    fail("config.json has no audio_config: this checkpoint has no audio tower (a multimodal Gemma 3n is needed)");
  const json& a = *ac;
  AudioEncoderConfig c;
  const char* w = "audio_config";
  c.input_feat_size = get_int(a, "input_feat_size", c.input_feat_size, w);
  c.hidden_size = get_int(a, "hidden_size", c.hidden_size, w);
  c.rms_norm_eps = float(get_num(a, "rms_norm_eps", c.rms_norm_eps, w));
  c.gradient_clipping = get_num(a, "gradient_clipping", c.gradient_clipping, w);
  c.conf_attention_chunk_size = get_int(a, "conf_attention_chunk_size", c.conf_attention_chunk_size, w);
  c.conf_attention_context_left = get_int(a, "conf_attention_context_left", c.conf_attention_context_left, w);
  c.conf_attention_context_right = get_int(a, "conf_attention_context_right", c.conf_attention_context_right, w);
  c.conf_attention_logit_cap = float(get_num(a, "conf_attention_logit_cap", c.conf_attention_logit_cap, w));
  c.conf_num_attention_heads = get_int(a, "conf_num_attention_heads", c.conf_num_attention_heads, w);
  c.conf_num_hidden_layers = get_int(a, "conf_num_hidden_layers", c.conf_num_hidden_layers, w);
  c.conf_conv_kernel_size = get_int(a, "conf_conv_kernel_size", c.conf_conv_kernel_size, w);
  c.conf_reduction_factor = get_int(a, "conf_reduction_factor", c.conf_reduction_factor, w);
  c.conf_residual_weight = float(get_num(a, "conf_residual_weight", c.conf_residual_weight, w));
  c.sscp_conv_group_norm_eps = float(get_num(a, "sscp_conv_group_norm_eps", c.sscp_conv_group_norm_eps, w));
  c.vocab_size = get_int(a, "vocab_size", c.vocab_size, w);
  c.vocab_offset = get_int(a, "vocab_offset", c.vocab_offset, w);
  if (auto it = a.find("sscp_conv_channel_size"); it != a.end() && !it->is_null())
    c.sscp_conv_channel_size = get_pair(*it, "audio_config.sscp_conv_channel_size");
  for (const char* key : {"sscp_conv_kernel_size", "sscp_conv_stride_size"}) {
    auto it = a.find(key);
    if (it == a.end() || it->is_null()) continue;
    if (!it->is_array() || it->size() != 2) fail("config.json: audio_config.", key, " must be two [time, freq] pairs");
    auto& field = std::string(key) == "sscp_conv_kernel_size" ? c.sscp_conv_kernel_size : c.sscp_conv_stride_size;
    for (int b = 0; b < 2; ++b) field[size_t(b)] = get_pair((*it)[size_t(b)], std::string("audio_config.") + key);
  }
  if (auto tc = j.find("text_config"); tc != j.end() && tc->is_object()) {
    c.text_hidden_size = get_int(*tc, "hidden_size", c.text_hidden_size, "text_config");
    c.text_vocab_size = get_int(*tc, "vocab_size", c.text_vocab_size, "text_config");
  }
  c.audio_soft_tokens_per_image = get_int(j, "audio_soft_tokens_per_image", c.audio_soft_tokens_per_image, "config");
  c.validate();
  return c;
}

AudioEncoderConfig AudioEncoderConfig::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str());
}

int64_t AudioEncoderConfig::sscp_freq_out(int block) const {
  int64_t f = input_feat_size;
  for (int b = 0; b <= block; ++b)
    f = (f + 2 - sscp_conv_kernel_size[size_t(b)][1]) / sscp_conv_stride_size[size_t(b)][1] + 1;
  return f;
}

int64_t AudioEncoderConfig::subsampled_frames(int64_t mel_frames) const {
  int64_t t = mel_frames;
  // Time is padded by kernel - 1 at the end: T_out = (T - 1) / stride + 1 = ceil(T / stride).
  for (int b = 0; b < 2; ++b) t = t <= 0 ? 0 : (t - 1) / sscp_conv_stride_size[size_t(b)][0] + 1;
  return t;
}

int64_t AudioEncoderConfig::tokens(int64_t mel_frames) const {
  const int64_t t = subsampled_frames(mel_frames);
  return (t + conf_reduction_factor - 1) / conf_reduction_factor;
}

void AudioEncoderConfig::validate() const {
  auto in = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  G3N_CHECK(in(input_feat_size, 1, 4096), "audio_config.input_feat_size ", input_feat_size, " is outside [1, 4096]");
  G3N_CHECK(in(hidden_size, 2, 1 << 16) && hidden_size % 2 == 0, "audio_config.hidden_size ", hidden_size,
            " must be even and in [2, 65536]");
  G3N_CHECK(in(conf_num_attention_heads, 1, hidden_size) && hidden_size % conf_num_attention_heads == 0,
            "audio_config.conf_num_attention_heads ", conf_num_attention_heads, " must divide hidden_size ",
            hidden_size);
  G3N_CHECK(in(conf_num_hidden_layers, 0, 1024), "audio_config.conf_num_hidden_layers ", conf_num_hidden_layers,
            " is outside [0, 1024]");
  G3N_CHECK(in(conf_attention_chunk_size, 1, 1 << 16), "audio_config.conf_attention_chunk_size must be >= 1");
  G3N_CHECK(in(conf_attention_context_left, 0, 1 << 16) && in(conf_attention_context_right, 0, 1 << 16),
            "audio_config.conf_attention_context_left/right must be >= 0");
  G3N_CHECK(std::isfinite(conf_attention_logit_cap) && conf_attention_logit_cap > 0,
            "audio_config.conf_attention_logit_cap must be positive");
  G3N_CHECK(in(conf_conv_kernel_size, 1, 1 << 12), "audio_config.conf_conv_kernel_size must be >= 1");
  G3N_CHECK(in(conf_reduction_factor, 1, 1 << 12), "audio_config.conf_reduction_factor must be >= 1");
  G3N_CHECK(std::isfinite(conf_residual_weight), "audio_config.conf_residual_weight must be finite");
  G3N_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps >= 0, "audio_config.rms_norm_eps must be >= 0");
  G3N_CHECK(std::isfinite(sscp_conv_group_norm_eps) && sscp_conv_group_norm_eps >= 0,
            "audio_config.sscp_conv_group_norm_eps must be >= 0");
  G3N_CHECK(!std::isnan(gradient_clipping) && gradient_clipping > 0, "audio_config.gradient_clipping must be > 0");
  for (int b = 0; b < 2; ++b) {
    G3N_CHECK(in(sscp_conv_channel_size[size_t(b)], 1, 1 << 14), "audio_config.sscp_conv_channel_size[", b,
              "] must be in [1, 16384]");
    for (int d = 0; d < 2; ++d) {
      G3N_CHECK(in(sscp_conv_kernel_size[size_t(b)][size_t(d)], 1, 64), "audio_config.sscp_conv_kernel_size[", b,
                "] must be in [1, 64]");
      G3N_CHECK(in(sscp_conv_stride_size[size_t(b)][size_t(d)], 1, 64), "audio_config.sscp_conv_stride_size[", b,
                "] must be in [1, 64]");
    }
  }
  G3N_CHECK(input_feat_size + 2 >= sscp_conv_kernel_size[0][1] && sscp_freq_out(0) + 2 >= sscp_conv_kernel_size[1][1],
            "audio_config: the SSCP frequency kernels are wider than the (padded) feature axis");
  G3N_CHECK(in(vocab_size, 1, 1 << 20) && in(vocab_offset, 0, int64_t(1) << 31), "audio_config.vocab_size ",
            vocab_size, " / vocab_offset ", vocab_offset, " out of range");
  G3N_CHECK(in(text_hidden_size, 1, 1 << 16), "text_config.hidden_size ", text_hidden_size, " is out of range");
  G3N_CHECK(in(text_vocab_size, 1, int64_t(1) << 31), "text_config.vocab_size ", text_vocab_size, " is out of range");
  G3N_CHECK(in(audio_soft_tokens_per_image, 1, 1 << 20), "audio_soft_tokens_per_image ", audio_soft_tokens_per_image,
            " is out of range");
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

AudioEncoder::AudioEncoder(AudioEncoderConfig config, const WeightSource& source) : c_(std::move(config)) {
  c_.validate();
  const int64_t D = c_.hidden_size, Dh = c_.head_dim(), K = c_.conf_conv_kernel_size;
  // Released checkpoints (Gemma3nForConditionalGeneration.save_pretrained): "model.audio_tower." and
  // "model.embed_audio."; a bare Gemma3nModel saves without the leading "model.".
  std::string root = "model.";
  if (!source.find(root + "audio_tower.subsample_conv_projection.input_proj_linear.weight") &&
      source.find("audio_tower.subsample_conv_projection.input_proj_linear.weight"))
    root = "";
  Registry reg(source);
  const std::string tower = root + "audio_tower.";

  const std::string sscp = tower + "subsample_conv_projection.";
  int64_t c_in = 1;
  for (int b = 0; b < 2; ++b) {
    const int64_t c_out = c_.sscp_conv_channel_size[size_t(b)];
    const int64_t kt = c_.sscp_conv_kernel_size[size_t(b)][0], kf = c_.sscp_conv_kernel_size[size_t(b)][1];
    const std::string p = sscp + "conv_" + std::to_string(b) + ".";
    w_.conv[size_t(b)] = reg.matrix(p + "conv.weight", {c_out, c_in, kt, kf});
    w_.conv_norm[size_t(b)] = reg.floats(p + "norm.weight", {c_out});
    c_in = c_out;
  }
  w_.input_proj_linear = reg.matrix(sscp + "input_proj_linear.weight", {D, c_in * c_.sscp_freq_out(1)});

  for (int64_t l = 0; l < c_.conf_num_hidden_layers; ++l) {
    const std::string p = tower + "conformer." + std::to_string(l) + ".";
    AudioConformerBlockWeights bw;
    for (auto [name, ffw] : {std::pair{"ffw_layer_start.", &bw.ffw_layer_start}, {"ffw_layer_end.", &bw.ffw_layer_end}}) {
      ffw->pre_layer_norm = reg.floats(p + name + "pre_layer_norm.weight", {D});
      ffw->ffw_layer_1 = reg.matrix(p + name + "ffw_layer_1.weight", {4 * D, D});
      ffw->ffw_layer_2 = reg.matrix(p + name + "ffw_layer_2.weight", {D, 4 * D});
      ffw->post_layer_norm = reg.floats(p + name + "post_layer_norm.weight", {D});
    }
    bw.pre_attn_norm = reg.floats(p + "attention.pre_attn_norm.weight", {D});
    bw.per_dim_scale = reg.floats(p + "attention.attn.per_dim_scale", {Dh});
    bw.pos_proj = reg.matrix(p + "attention.attn.relative_position_embedding.pos_proj.weight", {D, D});
    bw.q_proj = reg.matrix(p + "attention.attn.q_proj.weight", {D, D});
    bw.k_proj = reg.matrix(p + "attention.attn.k_proj.weight", {D, D});
    bw.v_proj = reg.matrix(p + "attention.attn.v_proj.weight", {D, D});
    bw.post = reg.matrix(p + "attention.post.weight", {D, D});
    bw.post_norm = reg.floats(p + "attention.post_norm.weight", {D});
    bw.lconv_pre_layer_norm = reg.floats(p + "lconv1d.pre_layer_norm.weight", {D});
    bw.linear_start = reg.matrix(p + "lconv1d.linear_start.weight", {2 * D, D});
    bw.depthwise_conv1d = reg.floats(p + "lconv1d.depthwise_conv1d.weight", {D, 1, K});
    bw.conv_norm = reg.floats(p + "lconv1d.conv_norm.weight", {D});
    bw.linear_end = reg.matrix(p + "lconv1d.linear_end.weight", {D, D});
    bw.norm = reg.floats(p + "norm.weight", {D});
    w_.conformer.push_back(std::move(bw));
  }

  const std::string e = root + "embed_audio.";
  w_.embedding = reg.matrix(e + "embedding.weight", {c_.vocab_size, D});
  w_.hard_embedding_norm = reg.floats(e + "hard_embedding_norm.weight", {D});
  w_.soft_embedding_norm = reg.floats(e + "soft_embedding_norm.weight", {D});
  w_.embedding_projection = reg.matrix(e + "embedding_projection.weight", {c_.text_hidden_size, D});
  reg.check();

  // Non-persistent buffers of the reference, in float32 as an fp32 run has them.
  // Gemma3nAudioRelativePositionEmbedding.inv_timescales = exp(arange(D/2) * -ln(1e4)/max(D/2 - 1, 1)).
  const int64_t n_ts = D / 2;
  const float log_inc = float(std::log(1.0e4) / double(std::max<int64_t>(n_ts - 1, 1)));
  inv_timescales_.resize(size_t(n_ts));
  for (int64_t i = 0; i < n_ts; ++i) inv_timescales_[size_t(i)] = std::exp(float(i) * -log_inc);
  // Gemma3nAudioAttention.q_scale = head_dim^-0.5 / softplus(0).
  q_scale_ = float(std::pow(double(Dh), -0.5)) * (1.0f / softplus(0.0f));
  clip_ = float(std::min(c_.gradient_clipping, double(std::numeric_limits<float>::max())));
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

// Reference: Gemma3nAudioSubSampleConvProjection.forward. Two Gemma3nAudioSSCPConvBlocks, each a
// conv2d over (time, freq) with zero padding time (0, kt - 1) and freq (1, 1), then the cumulative
// group norm and ReLU; then the [time, freq, channel] result is flattened freq-major and projected.
void AudioEncoder::sscp(const float* mel, int64_t frames, std::vector<float>& out, ThreadPool& pool,
                        const AudioTrace* trace) const {
  std::vector<float> a(mel, mel + frames * c_.input_feat_size), y;
  int64_t T = frames, F = c_.input_feat_size, C = 1;  // a: [T, F, C]
  for (int b = 0; b < 2; ++b) {
    const int64_t kt = c_.sscp_conv_kernel_size[size_t(b)][0], kf = c_.sscp_conv_kernel_size[size_t(b)][1];
    const int64_t st = c_.sscp_conv_stride_size[size_t(b)][0], sf = c_.sscp_conv_stride_size[size_t(b)][1];
    const int64_t Co = c_.sscp_conv_channel_size[size_t(b)];
    const int64_t To = (T - 1) / st + 1, Fo = (F + 2 - kf) / sf + 1;
    y.assign(size_t(To * Fo * Co), 0.0f);  // [To, Fo, Co]
    kernels::Conv2dShape shape;
    shape.in_h = T;
    shape.in_w = F;
    shape.in_c = C;
    shape.out_c = Co;
    shape.kernel_h = kt;
    shape.kernel_w = kf;
    shape.stride_h = st;
    shape.stride_w = sf;
    shape.pad_bottom = kt - 1;  // "reverse causal" in time: each output sees its frame and the next kt - 1
    shape.pad_left = shape.pad_right = 1;  // hard-coded (1, 1) in the reference
    kernels::conv2d(w_.conv[size_t(b)], nullptr, a.data(), shape, y.data(), pool);

    // Reference: Gemma3nAudioCumulativeGroupNorm (no mask): statistics over all (freq, channel) of
    // the frames up to t; the variance sums squared deviations from the running mean *of each step*.
    const int64_t S = Fo * Co;
    const std::vector<float>& gamma = w_.conv_norm[size_t(b)];
    const float eps = c_.sscp_conv_group_norm_eps;
    double cum_sum = 0, cum_sq = 0;
    for (int64_t t = 0; t < To; ++t) {
      float* v = y.data() + t * S;
      double s = 0;
      for (int64_t i = 0; i < S; ++i) s += v[i];
      cum_sum += s;
      const double count = double(t + 1) * double(S);
      const float mean = float(cum_sum / count);
      double sq = 0;
      for (int64_t i = 0; i < S; ++i) {
        const float d = v[i] - mean;
        sq += double(d) * d;
      }
      cum_sq += sq;
      const float var = float(cum_sq / count);
      const float inv_std = 1.0f / std::sqrt(var + eps);
      for (int64_t f = 0; f < Fo; ++f)
        for (int64_t c = 0; c < Co; ++c) {
          const float z = (v[f * Co + c] - mean) * inv_std * gamma[size_t(c)];
          v[f * Co + c] = z > 0.0f ? z : 0.0f;  // ReLU
        }
    }
    if (trace && *trace) (*trace)("sscp.conv_" + std::to_string(b), -1, y.data(), To, S);
    a.swap(y);
    T = To;
    F = Fo;
    C = Co;
  }
  // a: [T, F * C], index f * C + c (the reference's permute(0, 2, 3, 1).view(b, t, f * c)).
  out.assign(size_t(T * c_.hidden_size), 0.0f);
  linear(w_.input_proj_linear, a.data(), T, out.data(), pool);
}

// Reference: Gemma3nAudioConformerFeedForward: x + 0.5 * post_norm(clip(W2 silu(W1 pre_norm(clip(x))))).
void AudioEncoder::feed_forward(const AudioConformerBlockWeights::FeedForward& w, std::vector<float>& x, int64_t T,
                                ThreadPool& pool) const {
  const int64_t D = c_.hidden_size;
  ActivationVector<float> h(size_t(T * D)), up(size_t(T * 4 * D)), down(size_t(T * D));  // uninitialised
  kernels::rms_norm_rows(x.data(), T, D, norm_options(w.pre_layer_norm, kDefaultNormEps, clip_), h.data(), pool);
  linear(w.ffw_layer_1, h.data(), T, up.data(), pool);  // [T, 4D]
  kernels::activate(up.data(), T * 4 * D, kernels::RowActivation::kSilu, pool);
  linear(w.ffw_layer_2, up.data(), T, down.data(), pool);  // [T, D]
  kernels::rms_norm_rows(down.data(), T, D, norm_options(w.post_layer_norm, kDefaultNormEps, clip_), down.data(), pool);
  kernels::add_scaled(x.data(), down.data(), c_.conf_residual_weight, T * D, pool);
}

// Reference: Gemma3nAudioAttention.forward + Gemma3nAudioRelativePositionEmbedding. The reference
// cuts time into blocks of W = chunk_size queries, each seeing a context of W + P + R keys
// (P = context_left - 1 past, R = context_right future) under a fixed mask; worked out, query t
// sees exactly the keys j with t - P <= j <= t + R inside [0, T) that are valid, and the
// relative-position bias of (t, j) is q_t · pos_proj(sinusoid(t - j)). A query that sees no valid
// key gets the reference's uniform softmax over its block's whole context (zero rows included).
// xn: [T, D] (normed input), out: [T, N * Dh] head-major.
void AudioEncoder::attention(const AudioConformerBlockWeights& w, const float* xn, int64_t T,
                             const std::vector<uint8_t>& valid, float* out, ThreadPool& pool) const {
  const int64_t D = c_.hidden_size, N = c_.conf_num_attention_heads, Dh = c_.head_dim();
  const int64_t W = c_.conf_attention_chunk_size, P = std::max<int64_t>(0, c_.conf_attention_context_left - 1);
  const int64_t R = c_.conf_attention_context_right, span = P + R + 1, context = W + P + R;
  ActivationVector<float> q(size_t(T * D)), k(size_t(T * D)), v(size_t(T * D));
  linear(w.q_proj, xn, T, q.data(), pool);
  linear(w.k_proj, xn, T, k.data(), pool);
  linear(w.v_proj, xn, T, v.data(), pool);
  // q * q_scale * softplus(per_dim_scale), per head dimension.
  std::vector<float> pds(static_cast<size_t>(Dh));
  for (int64_t h = 0; h < Dh; ++h) pds[size_t(h)] = softplus(w.per_dim_scale[size_t(h)]);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < Dh; ++h) {
        float& x = q[size_t(t * D + n * Dh + h)];
        x = x * q_scale_ * pds[size_t(h)];
      }

  // Relative position embeddings rel[f] = pos_proj(timing_signal(P - f)) for f in [0, span):
  // sin block then cos block, computed in float32 (reference: _get_timing_signal_1d_pos).
  const int64_t n_ts = D / 2;
  std::vector<float> signal(size_t(span * D), 0.0f), rel(size_t(span * D));
  for (int64_t f = 0; f < span; ++f) {
    const float pos = float(P - f);
    for (int64_t i = 0; i < n_ts; ++i) {
      const float a = pos * inv_timescales_[size_t(i)];
      signal[size_t(f * D + i)] = std::sin(a);
      signal[size_t(f * D + n_ts + i)] = std::cos(a);
    }
  }
  linear(w.pos_proj, signal.data(), span, rel.data(), pool);

  const float cap = c_.conf_attention_logit_cap;
  pool.parallel_for(T * N, 1, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> logits;
    thread_local std::vector<int64_t> keys;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / N, n = i % N;
      const float* qt = q.data() + t * D + n * Dh;
      float* o = out + t * D + n * Dh;
      logits.clear();
      keys.clear();
      for (int64_t j = std::max<int64_t>(0, t - P); j <= std::min(T - 1, t + R); ++j) {
        if (!valid[size_t(j)]) continue;
        const float ac = kernels::dot(qt, k.data() + j * D + n * Dh, Dh);
        const float bd = kernels::dot(qt, rel.data() + (P - (t - j)) * D + n * Dh, Dh);
        logits.push_back(std::tanh((ac + bd) / cap) * cap);  // soft-cap, before masking
        keys.push_back(j);
      }
      std::fill(o, o + Dh, 0.0f);
      if (keys.empty()) {
        // Every context column masked: softmax of equal minima is uniform over the whole context.
        const int64_t start = (t / W) * W - P;
        const float p = 1.0f / float(context);
        for (int64_t c = 0; c < context; ++c) {
          const int64_t j = start + c;
          if (j < 0 || j >= T) continue;
          const float* vj = v.data() + j * D + n * Dh;
          for (int64_t h = 0; h < Dh; ++h) o[h] += p * vj[h];
        }
        continue;
      }
      kernels::softmax(logits.data(), int64_t(logits.size()));
      for (size_t m = 0; m < keys.size(); ++m) {
        const float* vj = v.data() + keys[m] * D + n * Dh;
        const float p = logits[m];
        for (int64_t h = 0; h < Dh; ++h) o[h] += p * vj[h];
      }
    }
  });
}

// Reference: Gemma3nAudioConformerLightConv1d: x + W_end silu(conv_norm(clip(dwconv(GLU(W_start pre_norm(x)))))).
void AudioEncoder::light_conv(const AudioConformerBlockWeights& w, std::vector<float>& x, int64_t T,
                              ThreadPool& pool) const {
  const int64_t D = c_.hidden_size;
  ActivationVector<float> h(size_t(T * D)), z(size_t(T * 2 * D)), conv(size_t(T * D)), y(size_t(T * D));
  kernels::rms_norm_rows(x.data(), T, D, norm_options(w.lconv_pre_layer_norm, c_.rms_norm_eps), h.data(),
                         pool);  // (no clip here)
  linear(w.linear_start, h.data(), T, z.data(), pool);  // [T, 2D]
  kernels::glu(z.data(), T, D, h.data(), pool);         // first half * sigmoid(second half)
  kernels::depthwise_conv1d_causal(h.data(), T, D, w.depthwise_conv1d.data(), c_.conf_conv_kernel_size, conv.data());
  kernels::rms_norm_rows(conv.data(), T, D,
                         norm_options(w.conv_norm, c_.rms_norm_eps, clip_, kernels::RowActivation::kSilu), conv.data(),
                         pool);
  linear(w.linear_end, conv.data(), T, y.data(), pool);
  kernels::add_scaled(x.data(), y.data(), 1.0f, T * D, pool);
}

// Reference: Gemma3nAudioConformerBlock.forward.
void AudioEncoder::conformer_block(int layer, std::vector<float>& x, int64_t T, const std::vector<uint8_t>& valid,
                                   ThreadPool& pool, const AudioTrace* trace) const {
  const AudioConformerBlockWeights& w = w_.conformer[size_t(layer)];
  const int64_t D = c_.hidden_size;
  auto dump = [&](const char* name) {
    if (trace && *trace) (*trace)(name, layer, x.data(), T, D);
  };

  feed_forward(w.ffw_layer_start, x, T, pool);
  dump("ffw_layer_start");

  // Gemma3nAudioConformerAttention: x + post_norm(clip(post(attn(pre_attn_norm(clip(x)))))).
  ActivationVector<float> h(size_t(T * D)), att(size_t(T * D)), y(size_t(T * D));
  kernels::rms_norm_rows(x.data(), T, D, norm_options(w.pre_attn_norm, kDefaultNormEps, clip_), h.data(), pool);
  attention(w, h.data(), T, valid, att.data(), pool);
  linear(w.post, att.data(), T, y.data(), pool);
  kernels::rms_norm_rows(y.data(), T, D, norm_options(w.post_norm, kDefaultNormEps, clip_), y.data(), pool);
  kernels::add_scaled(x.data(), y.data(), 1.0f, T * D, pool);
  dump("attention");

  // Padded frames are zeroed before the light conv (multiplied, as the reference).
  for (int64_t t = 0; t < T; ++t) {
    const float m = valid[size_t(t)] ? 1.0f : 0.0f;
    for (int64_t d = 0; d < D; ++d) x[size_t(t * D + d)] *= m;
  }
  light_conv(w, x, T, pool);
  dump("lconv1d");

  feed_forward(w.ffw_layer_end, x, T, pool);
  kernels::rms_norm_rows(x.data(), T, D, norm_options(w.norm, kDefaultNormEps, clip_), x.data(), pool);
  dump("block");
}

// Reference: Gemma3nMultimodalEmbedder.forward(inputs_embeds=...): RMSNorm(soft) -> projection -> RMSNorm (no scale).
void AudioEncoder::embed_soft(const float* x, int64_t n, float* out, ThreadPool& pool) const {
  const int64_t D = c_.hidden_size, Dt = c_.text_hidden_size;
  std::vector<float> h(static_cast<size_t>(n * D));
  rms_norm_rows(x, w_.soft_embedding_norm.data(), n, D, c_.rms_norm_eps, h.data());
  linear(w_.embedding_projection, h.data(), n, out, pool);
  rms_norm_rows(out, nullptr, n, Dt, c_.rms_norm_eps, out);
}

// Reference: Gemma3nModel.get_audio_features -> Gemma3nAudioEncoder.forward, then embed_audio.
AudioSoftTokens AudioEncoder::encode(const float* mel, int64_t frames, int64_t bins, const uint8_t* valid,
                                     ThreadPool& pool, const AudioTrace* trace) const {
  G3N_CHECK(bins == c_.input_feat_size, "audio encoder: features have ", bins, " mel bins, the model expects ",
            c_.input_feat_size);
  G3N_CHECK(frames >= 1, "audio encoder: the clip has no feature frames (audio shorter than one 32 ms frame)");
  const int64_t D = c_.hidden_size;
  const ActivationBufferScope buffers;  // the blocks' same-shaped intermediates reuse each other's memory

  std::vector<float> x;  // [T, D]
  sscp(mel, frames, x, pool, trace);
  const int64_t T = int64_t(x.size()) / D;
  if (trace && *trace) (*trace)("sscp", -1, x.data(), T, D);

  // Sub-frame j takes the mask of mel frame min(j * time_stride_product, frames - 1).
  const int64_t stride = c_.sscp_conv_stride_size[0][0] * c_.sscp_conv_stride_size[1][0];
  std::vector<uint8_t> sub_valid(static_cast<size_t>(T));
  for (int64_t j = 0; j < T; ++j) sub_valid[size_t(j)] = valid ? valid[std::min(j * stride, frames - 1)] != 0 : 1;

  for (int l = 0; l < int(c_.conf_num_hidden_layers); ++l) conformer_block(l, x, T, sub_valid, pool, trace);

  // Keep every reduction-th frame; padded ones become 0 (masked_fill).
  const int64_t Rf = c_.conf_reduction_factor, n = (T + Rf - 1) / Rf;
  std::vector<float> enc(size_t(n * D), 0.0f);
  AudioSoftTokens out;
  out.n = n;
  out.width = c_.text_hidden_size;
  out.valid.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    out.valid[size_t(i)] = sub_valid[size_t(i * Rf)];
    if (out.valid[size_t(i)]) std::copy_n(x.data() + i * Rf * D, D, enc.data() + i * D);
  }
  if (trace && *trace) (*trace)("encoder", -1, enc.data(), n, D);

  out.embeddings.resize(size_t(n * out.width));
  embed_soft(enc.data(), n, out.embeddings.data(), pool);
  if (trace && *trace) (*trace)("soft_tokens", -1, out.embeddings.data(), n, out.width);
  return out;
}

std::vector<float> AudioEncoder::padding_embedding(ThreadPool& pool) const {
  // Reference: Gemma3nModel.forward pads with embed_audio(input_ids=[[vocab_size - 1]]) (text vocab).
  const int64_t id = c_.text_vocab_size - 1, row = id - c_.vocab_offset, D = c_.hidden_size;
  G3N_CHECK(row >= 0 && row < c_.vocab_size, "the audio padding token id ", id,
            " (text vocab_size - 1) is outside embed_audio's range [", c_.vocab_offset, ", ",
            c_.vocab_offset + c_.vocab_size, ")");
  std::vector<float> hard(static_cast<size_t>(D)), out(static_cast<size_t>(c_.text_hidden_size));
  to_f32(w_.embedding, row * D, D, hard.data());
  rms_norm(hard.data(), w_.hard_embedding_norm.data(), D, c_.rms_norm_eps, hard.data());
  linear(w_.embedding_projection, hard.data(), 1, out.data(), pool);
  rms_norm(out.data(), nullptr, c_.text_hidden_size, c_.rms_norm_eps, out.data());
  return out;
}

std::vector<float> AudioEncoder::prompt_embeddings(const AudioSoftTokens& tokens, ThreadPool& pool) const {
  const int64_t rows = c_.audio_soft_tokens_per_image, Dt = c_.text_hidden_size;
  G3N_CHECK(tokens.width == Dt, "audio soft tokens are ", tokens.width, " wide, the text model is ", Dt);
  G3N_CHECK(tokens.n <= rows, "the clip gives ", tokens.n, " audio tokens, more than the prompt's ", rows,
            " <audio_soft_token> positions (audio longer than 30 s must be truncated)");
  const std::vector<float> pad = padding_embedding(pool);
  std::vector<float> out(static_cast<size_t>(rows * Dt));
  for (int64_t i = 0; i < rows; ++i) {
    const float* src = i < tokens.n && tokens.valid[size_t(i)] ? tokens.embeddings.data() + i * Dt : pad.data();
    std::copy_n(src, Dt, out.data() + i * Dt);
  }
  return out;
}

}  // namespace g3n
