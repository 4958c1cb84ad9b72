// The Gemma 3n text decoder, as transformers' Gemma3nTextModel + Gemma3nForCausalLM compute it
// (and Gemma3nModel for multimodal token ids). Activations, norms, softmax and AltUp stream
// arithmetic are float32; weights stay in their checkpoint dtype.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "base/thread_pool.h"
#include "g3n/engine.h"
#include "kernels/gemm_int8.h"
#include "kernels/matmul.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/matformer.h"
#include "quant/quant.h"
#include "model/weights.h"

namespace g3n {

// Scratch activations for one chunk of tokens, reused between calls (no allocation per token once
// the largest chunk has been seen).
struct DecoderScratch {
  std::vector<int32_t> nonzero;
  std::vector<float> nonzero_values;
  std::vector<float> x0, pli, streams, pred, xn, q, k, v, attn, att, lo, laurel, h1, hn, gate, up, ffn, act, corr,
      pl_gate, pl_out, router, scores, collapse;
};

// Where the rows of one forward pass sit: consecutive positions of one sequence (a prompt chunk, or a
// decoded token), or one token from each of several sequences (a batched decode step: the weights are
// read once for all of them, each row attends only to its own cache).
struct RowPlacement {
  KvCache* cache = nullptr;              // one sequence: row t at position start_pos + t of `cache`
  int64_t start_pos = 0;
  const std::vector<KvCache*>* caches = nullptr;  // a batch: row t at positions[t] of caches[t]
  const std::vector<int64_t>* positions = nullptr;

  bool batch() const { return caches != nullptr; }
  KvCache& cache_of(int64_t t) const { return batch() ? *(*caches)[size_t(t)] : *cache; }
  int64_t pos(int64_t t) const { return batch() ? (*positions)[size_t(t)] : start_pos + t; }
};

// Exact shortcuts, on by default; off gives the plain path the tests compare them with.
struct ForwardOptions {
  // KV-shared layers write no cache, so tokens whose logits are not wanted need not pass through them.
  bool skip_shared_layers = true;
  // Per token of the chunk: an embedding [hidden] that replaces the token's own (the soft tokens of
  // an image or audio clip, as the reference's masked_scatter does), or null. Empty: none.
  const float* const* embedding_overrides = nullptr;
  // MatFormer: the layers to run and their FFN widths; null = the whole model.
  const MatformerProfile* profile = nullptr;
  // Decode through the activation sparsity: in layers whose Gaussian top-k leaves ~5% of the FFN
  // activations nonzero, the down projection reads only those rows of a transposed copy (exact).
  bool sparse_ffn = true;
};

class TextDecoder {
 public:
  TextDecoder(ModelConfig config, TextWeights weights);

  const ModelConfig& config() const { return config_; }
  const TextConfig& text() const { return config_.text; }
  int64_t vocab_size() const { return config_.text.vocab_size; }
  const TextWeights& weights() const { return w_; }
  // The PLE table lies in a read-only file mapping: after a token's row is read, its pages are unmapped
  // again (they stay in the page cache), so the table adds next to nothing to the resident set however
  // many distinct tokens pass. (The kernel maps more than the pages read on a fault: 64 KiB of fault-around
  // or a whole large folio, ~0.7 MB per token measured; MADV_RANDOM does not stop that.)
  void set_release_ple_pages(bool on) { release_ple_pages_ = on; }
  // Numerics::kGgml: llama.cpp's arithmetic (kernels/ggml_cpu.h) in every product, the attention, GELU
  // and RoPE. Not while a forward pass runs.
  void set_numerics(Numerics n) { numerics_ = n; }
  Numerics numerics() const { return numerics_; }
  // Weights that neither decode nor prefill reads with the default shortcuts: W_down of the sparse layers,
  // whose transposed copies serve both (decode: the surviving rows; prefill: gemm on [F, D]); only the
  // plain path and steps of 17 to 31 rows read them; and the Q4_0 / Q8_0 matrices repacked for the VNNI
  // kernels. read_weights: the other core tensors. copied_bytes: the copies' size (both kinds).
  std::vector<const TensorView*> unread_weights() const;
  std::vector<const TensorView*> read_weights() const;
  uint64_t copied_bytes() const;

  // Runs tokens ids[0..n) at positions start_pos.. through the decoder, writing their K/V into
  // `cache`. n must not exceed cache.max_chunk(). Writes logits [n, vocab] when all_logits, else
  // [1, vocab] for the last token; logits may be null (prefill of a prompt's head).
  void forward(const int32_t* ids, int64_t n, int64_t start_pos, KvCache& cache, DecoderScratch& s, ThreadPool& pool,
               float* logits, bool all_logits, const ForwardOptions& options = {}) const;
  // A batched decode step: token ids[t] of sequence t at position positions[t] of caches[t] (distinct
  // caches), all through the same layers; writes logits [n, vocab]. The rows are independent: each
  // sees only its own sequence.
  void forward_batch(const int32_t* ids, int64_t n, const std::vector<KvCache*>& caches,
                     const std::vector<int64_t>& positions, DecoderScratch& s, ThreadPool& pool, float* logits,
                     const ForwardOptions& options = {}) const;

 private:
  void embed(const int32_t* ids, int64_t n, DecoderScratch& s, ThreadPool& pool) const;
  void embed_multimodal(const EmbedderWeights& e, const MultimodalEmbedderConfig& ec, int64_t id, float* out,
                        ThreadPool& pool) const;
  void per_layer_inputs(const int32_t* ids, int64_t n, const MatformerProfile& profile, DecoderScratch& s,
                        ThreadPool& pool) const;
  void forward_rows(const int32_t* ids, int64_t n, RowPlacement rows, DecoderScratch& s, ThreadPool& pool,
                    float* logits, bool all_logits, const ForwardOptions& options) const;
  void layer(int l, int64_t n, const RowPlacement& rows, int64_t ffn_width, DecoderScratch& s, ThreadPool& pool,
             bool sparse_ffn) const;
  void layer_gemma3(int l, int64_t n, const RowPlacement& rows, DecoderScratch& s, ThreadPool& pool) const;
  void attention(int l, int64_t n, const RowPlacement& rows, DecoderScratch& s, ThreadPool& pool) const;
  void feed_forward(int l, int64_t n, int64_t width, DecoderScratch& s, ThreadPool& pool, bool sparse) const;
  void keep_last_row(DecoderScratch& s, int64_t n) const;
  // y = W x for n rows: kernels::linear, or with Numerics::kGgml the product llama.cpp computes.
  void project(const TensorView& w, const float* x, int64_t n, float* y, ThreadPool& pool,
               const kernels::MatmulOptions& options = {}) const;
  void project(const TensorView& w, const float* x, int64_t n, float* y, ThreadPool& pool, int64_t x_stride,
               int64_t y_stride) const {
    project(w, x, n, y, pool, kernels::strided(x_stride, y_stride));
  }
  void gelu(float* x, int64_t n, ThreadPool& pool) const;
  void norm(const float* x, const float* w, int64_t n, float eps, float* out) const;
  void rope(float* x, int n_heads, int64_t pos, bool sliding) const;
  void router(const TextLayerWeights& w, const float* x, float* out) const;
  void logits(const float* streams, int64_t n_tokens, int64_t first_row, int64_t n_rows, DecoderScratch& s,
              ThreadPool& pool, float* out) const;

  ModelConfig config_;
  TextWeights w_;
  std::vector<float> inv_freq_full_, inv_freq_sliding_;
  std::vector<float> sparsity_std_multiplier_;  // per layer, 0 when dense
  bool release_ple_pages_ = false;
  Numerics numerics_ = Numerics::kExact;
  void release_ple_pages(int64_t ple_id) const;
  MatformerProfile full_;                        // every layer at full width
  std::vector<quant::OwnedTensor> down_t_;       // per layer: W_down transposed [F, D] for sparse layers, else empty
  // Q4_0 / Q8_0 matrices repacked for the VNNI kernels (AVX-512 VNNI CPUs), by the original's data pointer;
  // the originals are then released and read only by the llama.cpp numerics.
  std::unordered_map<const void*, kernels::VnniPanels> panels_;
  std::vector<const TensorView*> packed_originals_;
};

}  // namespace g3n
