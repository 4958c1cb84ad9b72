#include "model/text_decoder.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "base/mapped_file.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/ggml_cpu.h"
#include "kernels/matmul.h"
#include "kernels/rows.h"
#include "quant/ggml_types.h"

namespace g3n {

namespace {

std::vector<float> rope_inv_freq(double theta, int head_dim) {
  // Reference: 1 / theta^(arange(0, dim, 2) / dim), in float32.
  std::vector<float> f(size_t(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    const float exponent = float(2 * i) / float(head_dim);
    f[size_t(i)] = 1.0f / std::pow(float(theta), exponent);
  }
  return f;
}

void grow(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

// Calls fn(first, last) for every run of consecutive kept layers of a profile.
template <class Fn>
void for_each_layer_run(const MatformerProfile& p, const Fn& fn) {
  for (size_t i = 0; i < p.layers.size();) {
    size_t j = i;
    while (j + 1 < p.layers.size() && p.layers[j + 1] == p.layers[j] + 1) ++j;
    fn(p.layers[i], p.layers[j]);
    i = j + 1;
  }
}

// Renormalises y to the RMS `target` (reference: y * target / sqrt(max(mean(y^2), 1e-5))).
void match_magnitude(float* y, int64_t n, float target) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(y[i]) * y[i];
  const float mag = std::sqrt(std::max(float(s / double(n)), 1e-5f));
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * target / mag;
}

}  // namespace

TextDecoder::TextDecoder(ModelConfig config, TextWeights weights) : config_(std::move(config)), w_(std::move(weights)) {
  const TextConfig& c = config_.text;
  inv_freq_full_ = rope_inv_freq(c.rope_theta_full, c.head_dim);
  for (float& f : inv_freq_full_) f /= c.rope_scaling_full;  // linear scaling: positions / factor
  inv_freq_sliding_ = rope_inv_freq(c.rope_theta_sliding, c.head_dim);
  full_ = full_profile(c);
  down_t_.resize(size_t(c.num_hidden_layers));
  for (int l = 0; l < c.num_hidden_layers; ++l)
    if (c.activation_sparsity[size_t(l)] > 0 && w_.layers[size_t(l)].down_proj.valid()) {
      const TensorView& down = w_.layers[size_t(l)].down_proj;
      down_t_[size_t(l)] = quant::transpose_tensor(down, down.dtype);
    }
  if (kernels::vnni_panels_available()) {
    // Repack the Q4_0 / Q8_0 matrices for the VNNI kernels, releasing each original's pages as soon as it is
    // copied (a file mapping: they stay in the page cache), so the resident set never holds both. The token
    // embedding (also the LM head) is then read from its panels too.
    auto pack = [&](const TensorView* t) {
      if (!t->valid() || (t->dtype != DType::Q4_0 && t->dtype != DType::Q8_0) || t->shape.size() != 2 ||
          panels_.count(t->data))
        return;
      // Only tensors read in place from a file: a tensor converted at load (a GGUF k-quant repacked to Q8_0)
      // lives in memory the loader owns, which the panels would double.
      const bool mapped = in_read_only_file_mapping(t->data, dtype_bytes(t->dtype, t->numel()));
      if (!mapped) return;
      panels_.emplace(t->data, kernels::pack_vnni_panels(*t, nullptr, [](const void* p, size_t n) {
                        release_mapped_pages(p, n);
                      }));
      packed_originals_.push_back(t);
    };
    for (size_t l = 0; l < w_.layers.size(); ++l) {
      TextLayerWeights& lw = w_.layers[l];
      for (const TensorView* t : {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.o_proj, &lw.gate_proj, &lw.up_proj,
                                  &lw.down_proj, &lw.laurel_left, &lw.laurel_right, &lw.per_layer_input_gate,
                                  &lw.per_layer_projection})
        if (t != &lw.down_proj || down_t_[l].bytes.empty())  // a sparse layer's W_down: its transposed copy
          pack(t);
    }
    for (const auto& t : w_.altup_projections) pack(&t);
    for (const auto& t : w_.altup_unembed_projections) pack(&t);
    pack(&w_.embed_tokens);
  }
  for (float target : c.activation_sparsity)
    // Reference: Normal(0, 1).icdf(target) evaluated in float32.
    sparsity_std_multiplier_.push_back(target > 0 ? float(kernels::normal_icdf(double(target))) : 0.0f);
}

// x0 = embed_tokens[id] * sqrt(D) for text ids; multimodal ids go through embed_vision / embed_audio.
void TextDecoder::embed(const int32_t* ids, int64_t n, DecoderScratch& s, ThreadPool& pool) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size;
  const float scale = std::sqrt(float(D));
  grow(s.x0, n * D);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = ids[t];
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
    float* x = s.x0.data() + t * D;
    if (config_.multimodal && id >= config_.vision.vocab_offset && id < config_.audio.vocab_offset) {
      embed_multimodal(w_.embed_vision, config_.vision, id, x, pool);
    } else if (config_.multimodal && id >= config_.audio.vocab_offset) {
      embed_multimodal(w_.embed_audio, config_.audio, id, x, pool);
    } else {
      const auto packed = panels_.find(w_.embed_tokens.data);
      if (packed != panels_.end()) kernels::vnni_panel_row(packed->second, id, x);
      else to_f32(w_.embed_tokens, id * D, D, x);
      for (int64_t d = 0; d < D; ++d) x[d] *= scale;
    }
  }
}

// Reference: Gemma3nMultimodalEmbedder.forward(input_ids=...): RMSNorm(hard) -> projection -> RMSNorm (no scale).
void TextDecoder::embed_multimodal(const EmbedderWeights& e, const MultimodalEmbedderConfig& ec, int64_t id, float* out,
                                   ThreadPool& pool) const {
  const int64_t row = id - ec.vocab_offset;
  if (row < 0 || row >= ec.vocab_size)
    fail("token id ", id, " is outside the multimodal embedder's range [", ec.vocab_offset, ", ",
         ec.vocab_offset + ec.vocab_size, ")");
  std::vector<float> hard(size_t(ec.hidden_size));
  to_f32(e.embedding, row * ec.hidden_size, ec.hidden_size, hard.data());
  norm(hard.data(), e.hard_embedding_norm.data(), ec.hidden_size, ec.rms_norm_eps, hard.data());
  project(e.embedding_projection, hard.data(), 1, out, pool);
  norm(out, nullptr, config_.text.hidden_size, ec.rms_norm_eps, out);
}

std::vector<const TensorView*> TextDecoder::unread_weights() const {
  std::vector<const TensorView*> v;
  for (size_t l = 0; l < down_t_.size(); ++l)
    if (!down_t_[l].bytes.empty()) v.push_back(&w_.layers[l].down_proj);
  v.insert(v.end(), packed_originals_.begin(), packed_originals_.end());
  return v;
}

std::vector<const TensorView*> TextDecoder::read_weights() const {
  std::vector<const TensorView*> v = w_.core_tensors();
  const auto unread = unread_weights();
  std::erase_if(v, [&](const TensorView* t) { return std::find(unread.begin(), unread.end(), t) != unread.end(); });
  return v;
}

uint64_t TextDecoder::copied_bytes() const {
  uint64_t b = 0;
  for (const auto& t : down_t_) b += t.bytes.size();
  for (const auto& [data, p] : panels_) b += p.size;
  return b;
}

// A fault maps a whole window around the row read (fault-around or a large folio: up to 2 MiB), so the
// 2 MiB-aligned window that holds the row is unmapped, clamped to the table.
void TextDecoder::release_ple_pages(int64_t ple_id) const {
  const TensorView& t = w_.embed_tokens_per_layer;
  constexpr uintptr_t kWindow = uintptr_t(2) << 20;
  const auto table = reinterpret_cast<uintptr_t>(t.data), table_end = table + dtype_bytes(t.dtype, t.numel());
  const auto row = reinterpret_cast<uintptr_t>(t.row(ple_id));
  const uintptr_t lo = std::max(table, row & ~(kWindow - 1));
  const uintptr_t hi = std::min(table_end, (row + t.row_bytes() + kWindow - 1) & ~(kWindow - 1));
  release_mapped_pages(reinterpret_cast<const void*>(lo), hi - lo);
}

// Per-layer inputs [n, L, P]: (RMSNorm(W_proj x0 / sqrt(D)) + PLE[id] * sqrt(P)) / sqrt(2).
// The PLE table is read one row per token straight from the mapping. Only the kept layers' slices
// are computed (their PLE column blocks and projection row blocks are all that is read); the slices
// of skipped layers are left unset and never read.
void TextDecoder::per_layer_inputs(const int32_t* ids, int64_t n, const MatformerProfile& profile, DecoderScratch& s,
                                   ThreadPool& pool) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size, P = c.hidden_size_per_layer_input, LP = int64_t(c.num_hidden_layers) * P;
  grow(s.pli, n * LP);
  grow(s.pl_gate, LP);
  // Each run of consecutive kept layers is one matmul and one table read. A block-type table whose
  // per-layer slices are not whole blocks is read as whole rows.
  const bool slice_table = !dtype_is_quantized(w_.embed_tokens_per_layer.dtype) || P % kQuantBlock == 0;
  for_each_layer_run(profile, [&](int first, int last) {
    TensorView proj = w_.per_layer_model_projection;  // rows [first * P, (last + 1) * P)
    proj.data = proj.row(int64_t(first) * P);
    proj.shape[0] = int64_t(last - first + 1) * P;
    project(proj, s.x0.data(), n, s.pli.data() + int64_t(first) * P, pool, 0, LP);
  });
  const float proj_scale = 1.0f / std::sqrt(float(D));
  const float ple_scale = std::sqrt(float(P));
  const float input_scale = 1.0f / std::sqrt(2.0f);
  for (int64_t t = 0; t < n; ++t) {
    float* row = s.pli.data() + t * LP;
    const int64_t ple_id = (ids[t] >= 0 && ids[t] < c.vocab_size_per_layer_input) ? ids[t] : 0;
    if (!slice_table) to_f32(w_.embed_tokens_per_layer, ple_id * LP, LP, s.pl_gate.data());
    for_each_layer_run(profile, [&](int first, int last) {
      const int64_t i0 = int64_t(first) * P, i1 = int64_t(last + 1) * P;
      if (slice_table) to_f32(w_.embed_tokens_per_layer, ple_id * LP + i0, i1 - i0, s.pl_gate.data() + i0);
      for (int64_t i = i0; i < i1; ++i) row[i] *= proj_scale;
      for (int l = first; l <= last; ++l)
        norm(row + l * P, w_.per_layer_projection_norm.data(), P, c.rms_norm_eps, row + l * P);
      for (int64_t i = i0; i < i1; ++i) row[i] = (row[i] + s.pl_gate[size_t(i)] * ple_scale) * input_scale;
    });
    if (release_ple_pages_) release_ple_pages(ple_id);
  }
}

void TextDecoder::project(const TensorView& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                          const kernels::MatmulOptions& options) const {
  if (numerics_ != Numerics::kGgml) {
    if (options.quant_activations == kernels::QuantActivations::kInt8 && !panels_.empty()) {
      const auto it = panels_.find(w.data);
      if (it != panels_.end()) return kernels::matmul_vnni_panels(it->second, w.dim(0), x, n, y, pool, options);
    }
    return kernels::linear(w, x, n, y, pool, options);
  }
  namespace gc = kernels::ggml_cpu;
  // The file's own encoding (also when g3n repacked it at load), multiplied in the order llama.cpp's kernels
  // add (ggml_cpu::matmul).
  if (w.ggml_data && gc::has_dot(w.ggml_type) && (options.columns == 0 || options.columns == w.dim(1)))
    return gc::matmul(w.ggml_type, w.ggml_data, w.dim(0), w.dim(1), x, n, y, pool, options.x_stride, options.y_stride);
  kernels::MatmulOptions o = options;
  if (dtype_is_quantized(w.dtype)) {
    o.quant_activations = kernels::QuantActivations::kGgml;
    return kernels::matmul(w, x, n, y, pool, o);
  }
  if (w.dtype == DType::F32) return kernels::matmul(w, x, n, y, pool, o);
  // F16 / BF16 weights: ggml converts the activations to the weights' type first.
  const int64_t in = o.columns ? o.columns : w.dim(1), xs = o.x_stride ? o.x_stride : in;
  thread_local std::vector<float> xr;
  grow(xr, n * in);
  for (int64_t t = 0; t < n; ++t) {
    std::copy(x + t * xs, x + t * xs + in, xr.data() + t * in);
    if (w.dtype == DType::F16) gc::round_to_f16(xr.data() + t * in, in);
    else gc::round_to_bf16(xr.data() + t * in, in);
  }
  o.x_stride = 0;
  kernels::matmul(w, xr.data(), n, y, pool, o);
}

void TextDecoder::norm(const float* x, const float* w, int64_t n, float eps, float* out) const {
  if (numerics_ == Numerics::kGgml) return kernels::ggml_cpu::rms_norm(x, w, n, eps, out);
  kernels::rms_norm(x, w, n, eps, out);
}

void TextDecoder::gelu(float* x, int64_t n, ThreadPool& pool) const {
  if (numerics_ == Numerics::kGgml) return kernels::ggml_cpu::gelu(x, n);
  kernels::activate(x, n, kernels::RowActivation::kGeluTanh, pool);
}

void TextDecoder::rope(float* x, int n_heads, int64_t pos, bool sliding) const {
  const TextConfig& c = config_.text;
  if (numerics_ == Numerics::kGgml)
    return kernels::ggml_cpu::rope_neox(x, n_heads, c.head_dim, pos, float(sliding ? c.rope_theta_sliding : c.rope_theta_full),
                                        sliding ? 1.0f : 1.0f / c.rope_scaling_full);
  kernels::rope_neox(x, n_heads, c.head_dim, pos, sliding ? inv_freq_sliding_.data() : inv_freq_full_.data());
}

// Drops every token but the last from the streams and the per-layer inputs ([.., n, ..] -> [.., 1, ..]).
void TextDecoder::keep_last_row(DecoderScratch& s, int64_t n) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size, LP = int64_t(c.num_hidden_layers) * c.hidden_size_per_layer_input;
  for (int64_t k = 0; k < c.altup_num_inputs; ++k) {
    const float* src = s.streams.data() + (k * n + n - 1) * D;
    std::copy(src, src + D, s.streams.data() + k * D);  // destination always precedes the source
  }
  std::copy(s.pli.data() + (n - 1) * LP, s.pli.data() + n * LP, s.pli.data());
}

// AltUp router: tanh(W_router · (RMSNorm(x) / D)).
void TextDecoder::router(const TextLayerWeights& w, const float* x, float* out) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size;
  thread_local std::vector<float> xn;
  xn.resize(size_t(D));
  norm(x, w.altup_router_norm.data(), D, c.rms_norm_eps, xn.data());
  const float input_scale = 1.0f / float(D);
  for (int64_t d = 0; d < D; ++d) xn[size_t(d)] *= input_scale;
  for (int k = 0; k < c.altup_num_inputs; ++k)
    out[k] = std::tanh(kernels::dot(w.altup_modality_router.data() + k * D, xn.data(), D));
}

void TextDecoder::forward(const int32_t* ids, int64_t n, int64_t start_pos, KvCache& cache, DecoderScratch& s,
                          ThreadPool& pool, float* logits_out, bool all_logits, const ForwardOptions& options) const {
  G3N_CHECK(n > 0 && n <= cache.max_chunk(), "internal: chunk of ", n, " tokens exceeds the cache chunk ",
            cache.max_chunk());
  cache.reserve(start_pos + n);
  RowPlacement rows;
  rows.cache = &cache;
  rows.start_pos = start_pos;
  forward_rows(ids, n, rows, s, pool, logits_out, all_logits, options);
}

void TextDecoder::forward_batch(const int32_t* ids, int64_t n, const std::vector<KvCache*>& caches,
                                const std::vector<int64_t>& positions, DecoderScratch& s, ThreadPool& pool,
                                float* logits_out, const ForwardOptions& options) const {
  G3N_CHECK(n > 0 && int64_t(caches.size()) == n && int64_t(positions.size()) == n,
            "internal: a batch of ", n, " rows needs as many caches and positions");
  for (int64_t t = 0; t < n; ++t) caches[size_t(t)]->reserve(positions[size_t(t)] + 1);
  RowPlacement rows;
  rows.caches = &caches;
  rows.positions = &positions;
  ForwardOptions o = options;
  o.embedding_overrides = nullptr;
  forward_rows(ids, n, rows, s, pool, logits_out, /*all_logits=*/true, o);
}

void TextDecoder::forward_rows(const int32_t* ids, int64_t n, RowPlacement rows, DecoderScratch& s, ThreadPool& pool,
                               float* logits_out, bool all_logits, const ForwardOptions& options) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size, K = c.altup_num_inputs;

  embed(ids, n, s, pool);
  if (options.embedding_overrides) {
    // Soft tokens replace the whole input embedding; the per-layer input still reads the PLE row of
    // the placeholder id (>= the PLE vocabulary, so row 0), as Gemma3nModel.forward does.
    for (int64_t t = 0; t < n; ++t)
      if (const float* row = options.embedding_overrides[t]) std::copy(row, row + D, s.x0.data() + t * D);
  }
  if (!c.is_gemma3n()) {
    // Gemma 3: one residual stream, plain pre/post-norm blocks.
    grow(s.streams, n * D);
    std::copy(s.x0.begin(), s.x0.begin() + n * D, s.streams.begin());
    for (int l = 0; l < c.num_hidden_layers; ++l) layer_gemma3(l, n, rows, s, pool);
    if (logits_out) logits(s.streams.data(), n, all_logits ? 0 : n - 1, all_logits ? n : 1, s, pool, logits_out);
    return;
  }
  const MatformerProfile& profile = options.profile ? *options.profile : full_;
  per_layer_inputs(ids, n, profile, s, pool);

  // Build the AltUp streams: s[0] = x0, s[k] = W_k x0 renormalised to the RMS of x0.
  grow(s.streams, K * n * D);
  std::copy(s.x0.begin(), s.x0.begin() + n * D, s.streams.begin());
  for (int64_t k = 1; k < K; ++k) {
    float* sk = s.streams.data() + k * n * D;
    project(w_.altup_projections[size_t(k - 1)], s.x0.data(), n, sk, pool);
    for (int64_t t = 0; t < n; ++t) match_magnitude(sk + t * D, D, kernels::rms(s.x0.data() + t * D, D));
  }

  bool past_shared = false;
  for (size_t i = 0; i < profile.layers.size(); ++i) {
    const int l = profile.layers[i];
    if (!past_shared && l >= c.first_kv_shared_layer && options.skip_shared_layers) {
      past_shared = true;
      // From here on no layer writes the cache: only rows whose logits are wanted go on.
      if (!logits_out) return;
      if (!all_logits && n > 1) {  // (one sequence only: a batch wants every row's logits)
        keep_last_row(s, n);
        rows.start_pos += n - 1;
        n = 1;
      }
    }
    layer(l, n, rows, profile.ffn_widths[i], s, pool, options.sparse_ffn);
  }

  if (logits_out) {
    if (all_logits) logits(s.streams.data(), n, 0, n, s, pool, logits_out);
    else logits(s.streams.data(), n, n - 1, 1, s, pool, logits_out);
  }
}

void TextDecoder::layer(int l, int64_t n, const RowPlacement& rows, int64_t ffn_width, DecoderScratch& s,
                        ThreadPool& pool, bool sparse_ffn) const {
  const TextConfig& c = config_.text;
  const TextLayerWeights& w = w_.layers[size_t(l)];
  const int64_t D = c.hidden_size, K = c.altup_num_inputs, P = c.hidden_size_per_layer_input;
  const int64_t plane = n * D;  // one stream
  grow(s.pred, K * plane);
  grow(s.router, K * K);
  grow(s.xn, plane);
  grow(s.h1, plane);
  grow(s.act, plane);

  // 1. AltUp predict: pred[i] = s[i] + sum_j c[i*K + j] * s[j], with c = W_pred · router(s[0]).
  float* coefs = s.router.data();
  for (int64_t t = 0; t < n; ++t) {
    float m[16];
    router(w, s.streams.data() + t * D, m);
    for (int64_t o = 0; o < K * K; ++o) {
      float acc = 0;
      for (int64_t p = 0; p < K; ++p) acc += w.altup_prediction_coefs[size_t(o * K + p)] * m[p];
      coefs[o] = acc;
    }
    for (int64_t i = 0; i < K; ++i) {
      float* out = s.pred.data() + i * plane + t * D;
      const float* own = s.streams.data() + i * plane + t * D;
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0;
        for (int64_t j = 0; j < K; ++j) acc += s.streams[size_t(j * plane + t * D + d)] * coefs[i * K + j];
        out[d] = acc + own[d];
      }
    }
  }
  const float* active = s.pred.data();  // pred[0], the active stream

  // 3. Pre-attention norm.
  for (int64_t t = 0; t < n; ++t) norm(active + t * D, w.input_layernorm.data(), D, c.rms_norm_eps, s.xn.data() + t * D);

  // 4. LAuReL: xn + RMSNorm(W_right · W_left · xn).
  grow(s.laurel, n * c.laurel_rank);
  grow(s.lo, plane);
  project(w.laurel_left, s.xn.data(), n, s.laurel.data(), pool);
  project(w.laurel_right, s.laurel.data(), n, s.lo.data(), pool);
  for (int64_t t = 0; t < n; ++t) {
    float* lo = s.lo.data() + t * D;
    norm(lo, w.post_laurel_norm.data(), D, c.rms_norm_eps, lo);
    for (int64_t d = 0; d < D; ++d) lo[d] += s.xn[size_t(t * D + d)];
  }

  // 5-7. Attention, its post-norm, and the residual from the un-normalised active prediction.
  attention(l, n, rows, s, pool);
  const float inv_sqrt2 = float(std::sqrt(2.0));
  for (int64_t t = 0; t < n; ++t) {
    float* att = s.att.data() + t * D;
    norm(att, w.post_attention_layernorm.data(), D, c.rms_norm_eps, att);
    for (int64_t d = 0; d < D; ++d) s.h1[size_t(t * D + d)] = ((active[t * D + d] + att[d]) + s.lo[size_t(t * D + d)]) / inv_sqrt2;
  }

  // 8-10. Feed-forward with its pre/post norms; act = h1 + f.
  feed_forward(l, n, ffn_width, s, pool, sparse_ffn);

  // 11. AltUp correct: corr[i] = pred[i] + (1 + W_corr · router(act))[i] * (act - pred[0]).
  grow(s.corr, K * plane);
  for (int64_t t = 0; t < n; ++t) {
    float m[16], g[16];
    const float* act = s.act.data() + t * D;
    router(w, act, m);
    for (int64_t i = 0; i < K; ++i) {
      float acc = 0;
      for (int64_t p = 0; p < K; ++p) acc += w.altup_correction_coefs[size_t(i * K + p)] * m[p];
      g[i] = acc + 1.0f;
    }
    for (int64_t i = 0; i < K; ++i) {
      float* out = s.corr.data() + i * plane + t * D;
      const float* pi = s.pred.data() + i * plane + t * D;
      for (int64_t d = 0; d < D; ++d) out[d] = (act[d] - active[t * D + d]) * g[i] + pi[d];
    }
  }

  // 12-16. Per-layer input: gelu(W_gate · (corr[0] * correct_output_scale)) * pli_l, projected back.
  grow(s.hn, plane);
  grow(s.pl_gate, n * P);
  grow(s.pl_out, plane);
  for (int64_t t = 0; t < n; ++t) {
    const float* c0 = s.corr.data() + t * D;
    float* g = s.hn.data() + t * D;
    for (int64_t d = 0; d < D; ++d) g[d] = c.altup_correct_scale ? c0[d] * w.altup_correct_output_scale[size_t(d)] : c0[d];
  }
  project(w.per_layer_input_gate, s.hn.data(), n, s.pl_gate.data(), pool);
  const int64_t LP = int64_t(c.num_hidden_layers) * P;
  gelu(s.pl_gate.data(), n * P, pool);
  for (int64_t t = 0; t < n; ++t) {
    float* g = s.pl_gate.data() + t * P;
    const float* pli = s.pli.data() + t * LP + int64_t(l) * P;
    for (int64_t p = 0; p < P; ++p) g[p] *= pli[p];
  }
  project(w.per_layer_projection, s.pl_gate.data(), n, s.pl_out.data(), pool);
  for (int64_t t = 0; t < n; ++t) {
    float* p = s.pl_out.data() + t * D;
    norm(p, w.post_per_layer_input_norm.data(), D, c.rms_norm_eps, p);
    // 17. Streams 1.. receive it; stream 0 does not.
    for (int64_t k = 1; k < K; ++k) {
      float* ck = s.corr.data() + k * plane + t * D;
      for (int64_t d = 0; d < D; ++d) ck[d] += p[d];
    }
  }
  std::copy(s.corr.begin(), s.corr.begin() + K * plane, s.streams.begin());
}

// Gemma 3's layer: x += post_norm(attn(pre_norm(x))); x += post_norm(ffn(pre_norm(x))).
// Reference: transformers Gemma3DecoderLayer.forward.
void TextDecoder::layer_gemma3(int l, int64_t n, const RowPlacement& rows, DecoderScratch& s,
                               ThreadPool& pool) const {
  const TextConfig& c = config_.text;
  const TextLayerWeights& w = w_.layers[size_t(l)];
  const int64_t D = c.hidden_size;
  grow(s.xn, n * D);
  grow(s.h1, n * D);
  grow(s.act, n * D);
  float* x = s.streams.data();
  for (int64_t t = 0; t < n; ++t) norm(x + t * D, w.input_layernorm.data(), D, c.rms_norm_eps, s.xn.data() + t * D);
  attention(l, n, rows, s, pool);
  for (int64_t t = 0; t < n; ++t) {
    float* att = s.att.data() + t * D;
    norm(att, w.post_attention_layernorm.data(), D, c.rms_norm_eps, att);
    for (int64_t d = 0; d < D; ++d) s.h1[size_t(t * D + d)] = x[t * D + d] + att[d];
  }
  feed_forward(l, n, 0, s, pool, false);
  std::copy(s.act.begin(), s.act.begin() + n * D, s.streams.begin());
}

// Self-attention on s.xn -> s.att (o_proj output). Layers that own K/V write the chunk's keys and
// values into the cache first; KV-shared layers read their source layer's cache, which already holds
// this chunk (the source layer ran earlier in this pass).
void TextDecoder::attention(int l, int64_t n, const RowPlacement& rows, DecoderScratch& s, ThreadPool& pool) const {
  const TextConfig& c = config_.text;
  const TextLayerWeights& w = w_.layers[size_t(l)];
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim;
  const int64_t q_dim = int64_t(H) * Dh, kv_dim = int64_t(Hkv) * Dh, D = c.hidden_size;
  const bool sliding = c.is_sliding(l);
  const bool ggml = numerics_ == Numerics::kGgml;

  grow(s.q, n * q_dim);
  grow(s.attn, n * q_dim);
  grow(s.att, n * D);
  project(w.q_proj, s.xn.data(), n, s.q.data(), pool);
  for (int64_t t = 0; t < n; ++t) {
    float* q = s.q.data() + t * q_dim;
    for (int h = 0; h < H; ++h) norm(q + h * Dh, w.q_norm.data(), Dh, c.rms_norm_eps, q + h * Dh);
    rope(q, H, rows.pos(t), sliding);
  }

  if (c.owns_kv(l)) {
    grow(s.k, n * kv_dim);
    grow(s.v, n * kv_dim);
    project(w.k_proj, s.xn.data(), n, s.k.data(), pool);
    project(w.v_proj, s.xn.data(), n, s.v.data(), pool);
    for (int64_t t = 0; t < n; ++t) {
      float* k = s.k.data() + t * kv_dim;
      float* v = s.v.data() + t * kv_dim;
      for (int h = 0; h < Hkv; ++h) {
        norm(k + h * Dh, w.k_norm.data(), Dh, c.rms_norm_eps, k + h * Dh);
        if (c.v_norm) norm(v + h * Dh, nullptr, Dh, c.rms_norm_eps, v + h * Dh);  // v_norm has no weight
      }
      rope(k, Hkv, rows.pos(t), sliding);  // values are never rotated
      if (ggml) {  // llama.cpp's cache holds float16 keys and values
        kernels::ggml_cpu::round_to_f16(k, kv_dim);
        kernels::ggml_cpu::round_to_f16(v, kv_dim);
      }
      std::copy(k, k + kv_dim, rows.cache_of(t).key(l, rows.pos(t)));
      std::copy(v, v + kv_dim, rows.cache_of(t).value(l, rows.pos(t)));
    }
  }

  float query_scale = c.query_scale;
  if (ggml) {
    // llama.cpp scales the query, then its Q K^T product rounds it to float16 (the keys' type).
    for (int64_t i = 0; i < n * q_dim; ++i) s.q[size_t(i)] = kernels::ggml_cpu::round_f16(s.q[size_t(i)] * query_scale);
    query_scale = 1.0f;
  }
  const int src = c.kv_source_layer[size_t(l)];
  const kernels::KvView shared_kv = rows.batch() ? kernels::KvView{} : rows.cache->view(src);
  const int64_t window = c.sliding_window;
  pool.parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> scores;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = rows.pos(t);
      const kernels::KvView kv = rows.batch() ? rows.cache_of(t).view(src) : shared_kv;
      const int64_t first = sliding ? std::max<int64_t>(0, pos - window + 1) : 0;  // token + (window - 1) before it
      if (ggml) {  // sizes its own scratch
        kernels::ggml_cpu::attend(s.q.data() + t * q_dim, H, Hkv, Dh, kv, first, pos, s.attn.data() + t * q_dim, scores,
                                  /*single_token=*/n == 1);
        continue;
      }
      const int64_t need = kernels::attend_scratch(pos - first + 1);
      if (int64_t(scores.size()) < need) scores.resize(size_t(need));
      kernels::attend(s.q.data() + t * q_dim, H, Hkv, Dh, kv, first, pos, query_scale, s.attn.data() + t * q_dim,
                      scores.data());
    }
  });
  project(w.o_proj, s.attn.data(), n, s.att.data(), pool);
}

// Rows up to which the sparse layers' down projection sums each row's surviving activations (~5% of the
// rows of the transposed copy per row) rather than reading all of W_down once for every row.
constexpr int64_t kSparseRows = 16;

// FFN on h1: f = post_norm(W_down · (gelu(sparsify(W_gate · x)) * W_up · x)), x = pre_norm(h1); act = h1 + f.
// A MatFormer width Fp < F uses the first Fp neurons: the first Fp rows of gate/up and the first Fp
// columns of down, read in place as views of the full tensors (reference: the MatFormer Lab slicing).
void TextDecoder::feed_forward(int l, int64_t n, int64_t width, DecoderScratch& s, ThreadPool& pool,
                               bool sparse) const {
  const TextConfig& c = config_.text;
  const TextLayerWeights& w = w_.layers[size_t(l)];
  const int64_t D = c.hidden_size, F = c.intermediate_size[size_t(l)];
  const int64_t Fp = width > 0 ? width : F;
  grow(s.gate, n * F);
  grow(s.up, n * F);
  grow(s.ffn, n * D);
  grow(s.hn, n * D);
  for (int64_t t = 0; t < n; ++t)
    norm(s.h1.data() + t * D, w.pre_feedforward_layernorm.data(), D, c.rms_norm_eps, s.hn.data() + t * D);
  TensorView gate = w.gate_proj, up = w.up_proj;  // prefixes: the first Fp rows
  gate.shape[0] = Fp;
  up.shape[0] = Fp;
  project(gate, s.hn.data(), n, s.gate.data(), pool, 0, F);
  project(up, s.hn.data(), n, s.up.data(), pool, 0, F);
  const float std_mul = sparsity_std_multiplier_[size_t(l)];
  if (c.activation_sparsity[size_t(l)] > 0) {
    for (int64_t t = 0; t < n; ++t) {
      // Gaussian top-k over the active width: keep what exceeds mean + k·std (population std),
      // shifted: relu(z - cutoff).
      float* g = s.gate.data() + t * F;
      double sum = 0;
      for (int64_t i = 0; i < Fp; ++i) sum += g[i];
      const double mean = sum / double(Fp);
      double var = 0;
      for (int64_t i = 0; i < Fp; ++i) var += (g[i] - mean) * (g[i] - mean);
      const float cutoff = float(mean) + float(std::sqrt(var / double(Fp))) * std_mul;
      for (int64_t i = 0; i < Fp; ++i) g[i] = std::max(0.0f, g[i] - cutoff);
    }
  }
  // gelu(gate) * up: SIMD GELU over all rows at once when they are dense.
  if (Fp == F) {
    gelu(s.gate.data(), n * F, pool);
  } else {
    for (int64_t t = 0; t < n; ++t) gelu(s.gate.data() + t * F, Fp, pool);
  }
  for (int64_t t = 0; t < n; ++t) {
    float* g = s.gate.data() + t * F;
    const float* u = s.up.data() + t * F;
    for (int64_t i = 0; i < Fp; ++i) g[i] *= u[i];
  }
  // Columns of W_down to read: Fp. Block types read whole blocks; a width off a block boundary (which
  // Session::set_profile refuses for quantised models) pads the activations with zeros up to the
  // block's end, which adds nothing to the product.
  int64_t down_cols = Fp;
  if (dtype_is_quantized(w.down_proj.dtype) && Fp % kQuantBlock != 0) {
    down_cols = std::min(F, (Fp + kQuantBlock - 1) / kQuantBlock * kQuantBlock);
    for (int64_t t = 0; t < n; ++t) std::fill(s.gate.data() + t * F + Fp, s.gate.data() + t * F + down_cols, 0.0f);
  }
  const quant::OwnedTensor& down_t = down_t_[size_t(l)];
  const bool shortcuts = numerics_ != Numerics::kGgml;  // llama.cpp reads all of W_down
  if (shortcuts && sparse && n <= kSparseRows && !down_t.bytes.empty()) {
    // Decode (one token, or one step of a few sequences decoded together): only the activations that
    // survived the Gaussian top-k (gelu(0) = 0) reach W_down; for each row, sum those rows of the
    // transposed copy (all below Fp) instead of reading all of W_down.
    grow(s.nonzero_values, Fp);
    s.nonzero.resize(size_t(F));
    for (int64_t t = 0; t < n; ++t) {
      const float* g = s.gate.data() + t * F;
      const int64_t nnz = kernels::nonzero_indices(g, Fp, s.nonzero.data());
      for (int64_t k = 0; k < nnz; ++k) s.nonzero_values[size_t(k)] = g[s.nonzero[size_t(k)]];
      kernels::matmul_transposed_rows(down_t.view(), s.nonzero.data(), s.nonzero_values.data(), nnz,
                                      s.ffn.data() + t * D, pool);
    }
  } else if (shortcuts && !down_t.bytes.empty() && kernels::gemm_preferred(down_t.view(), n)) {
    // Prefill of a sparse layer: the transposed copy's first Fp rows as [K, N] weights, so that W_down
    // itself is never read (its pages are released after load: see unread_weights).
    TensorView wt = down_t.view();
    wt.shape[0] = Fp;
    kernels::GemmOptions o;
    o.a_stride = F;
    o.weights_kn = true;
    kernels::gemm(wt, s.gate.data(), n, s.ffn.data(), pool, o);
  } else {
    // [n, Fp] activations (rows F apart) times the first Fp columns of W_down [D, F] (rows F apart).
    kernels::MatmulOptions o;
    o.x_stride = F;
    o.columns = down_cols;
    project(w.down_proj, s.gate.data(), n, s.ffn.data(), pool, o);
  }
  for (int64_t t = 0; t < n; ++t) {
    float* f = s.ffn.data() + t * D;
    norm(f, w.post_feedforward_layernorm.data(), D, c.rms_norm_eps, f);
    for (int64_t d = 0; d < D; ++d) s.act[size_t(t * D + d)] = s.h1[size_t(t * D + d)] + f[d];
  }
}

// Collapse the streams of rows [first_row, first_row + n_rows), final norm, tied LM head, soft-cap.
void TextDecoder::logits(const float* streams, int64_t n_tokens, int64_t first_row, int64_t n_rows, DecoderScratch& s,
                         ThreadPool& pool, float* out) const {
  const TextConfig& c = config_.text;
  const int64_t D = c.hidden_size, K = c.altup_num_inputs;
  const int64_t plane = n_tokens * D;
  grow(s.collapse, 3 * n_rows * D);
  float* h = s.collapse.data();
  float* y = h + n_rows * D;
  float* proj_all = y + n_rows * D;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* s0 = streams + (first_row + r) * D;
    std::copy(s0, s0 + D, h + r * D);
  }
  for (int64_t k = 1; k < K; ++k) {
    // Rows are gathered contiguous for the projection.
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* sk = streams + k * plane + (first_row + r) * D;
      std::copy(sk, sk + D, y + r * D);
    }
    project(w_.altup_unembed_projections[size_t(k - 1)], y, n_rows, proj_all, pool);
    for (int64_t r = 0; r < n_rows; ++r) {
      float* pr = proj_all + r * D;
      match_magnitude(pr, D, kernels::rms(streams + (first_row + r) * D, D));
      for (int64_t d = 0; d < D; ++d) h[r * D + d] += pr[d];
    }
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    float* hr = h + r * D;
    for (int64_t d = 0; d < D; ++d) hr[d] /= float(K);
    norm(hr, w_.norm.data(), D, c.rms_norm_eps, hr);
  }
  project(w_.embed_tokens, h, n_rows, out, pool);
  if (c.final_logit_softcapping > 0) kernels::softcap(out, n_rows * c.vocab_size, c.final_logit_softcapping);
}

}  // namespace g3n
