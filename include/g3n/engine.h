// g3n public C++ API: load a Gemma 3n checkpoint, run sessions on it.
//
//   auto model = g3n::Model::load("gemma-3n-E2B-it/");
//   g3n::Session session(*model);
//   std::vector<float> logits = session.feed({2, 105, 2364}, /*all_logits=*/false);  // [1, vocab]
//   int next = g3n::argmax(logits.data(), model->vocab_size());
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace g3n {

class TextDecoder;
class ThreadPool;
class Tokenizer;
struct ModelConfig;

struct LoadOptions {
  int threads = 0;  // 0: one per hardware thread
  // Called with (bytes done, bytes total) while tensors are validated / touched.
  std::function<void(uint64_t, uint64_t)> progress;
};

// Where a model's memory goes. Resident figures come from mincore() on the mappings.
struct MemoryReport {
  uint64_t core_weight_bytes = 0;       // tensors every token reads (mapped)
  uint64_t core_weight_resident = 0;    //   of which in RAM now
  uint64_t ple_table_bytes = 0;         // the per-layer embedding table (mapped, read row by row)
  uint64_t ple_table_resident = 0;      //   of which in RAM now (the pages of rows read so far)
  uint64_t kv_cache_bytes = 0;          // of the session asked about
  uint64_t scratch_bytes = 0;           // activations of the session asked about
};

class Session;

class Model {
 public:
  // path: a Hugging Face checkpoint directory (config.json + safetensors). Throws g3n::Error.
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const ModelConfig& config() const;
  int64_t vocab_size() const;
  const TextDecoder& decoder() const;
  ThreadPool& pool() const;
  // The tokenizer the checkpoint carries (tokenizer.model beside config.json, or a GGUF's
  // vocabulary); nullptr when it has none.
  const Tokenizer* tokenizer() const;
  // Like tokenizer(), but throws g3n::Error saying what is missing.
  const Tokenizer& require_tokenizer() const;
  MemoryReport memory(const Session* session = nullptr) const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Embeddings that replace the token embeddings at some prompt positions: the soft tokens of images
// and audio clips, placed at their placeholder ids.
struct PromptEmbeddings {
  std::vector<int64_t> positions;  // indices into the ids given to sync()/feed(), increasing
  std::vector<float> rows;         // [positions.size(), hidden]
  std::vector<uint64_t> keys;      // per position: identifies the media, so a cached prefix is reused only
                                   // when the same media sits at the same place
  bool empty() const { return positions.empty(); }
};

struct SessionOptions {
  int64_t max_chunk = 256;  // prompt tokens per prefill pass (bounds scratch and sliding-cache memory)
  std::string profile;      // MatFormer profile (see set_profile); empty = the whole model
  bool fast_paths = true;   // exact shortcuts (skipping KV-shared layers in prefill, sparse FFN); off = plain path
};

// One sequence: its KV cache and position. Not thread-safe; use one per conversation.
class Session {
 public:
  explicit Session(const Model& model, const SessionOptions& options = {});
  ~Session();

  // Appends `ids` to the sequence (prefilled in chunks). Returns logits [ids.size(), vocab] when
  // all_logits, else [1, vocab] for the last token. The buffer is the session's own, valid until the
  // next call (no allocation per decoded token).
  const std::vector<float>& feed(std::span<const int32_t> ids, bool all_logits = false,
                                 const PromptEmbeddings* media = nullptr);
  const std::vector<float>& feed(std::initializer_list<int32_t> ids) { return feed(std::span<const int32_t>(ids.begin(), ids.size())); }
  // Makes the sequence equal `ids`, reusing the cached prefix they share with it (a conversation
  // one turn longer prefills only the new turn) and returns the last token's logits [vocab].
  // Exact: a rewind the sliding-window cache cannot serve falls back to a fresh prefill.
  const std::vector<float>& sync(const std::vector<int32_t>& ids, const PromptEmbeddings* media = nullptr);

  int64_t position() const;                   // tokens in the sequence so far
  int64_t context_length() const;             // the model's max_position_embeddings
  const Model& model() const;
  const std::vector<int32_t>& tokens() const;  // the sequence itself
  int64_t reused_tokens() const;              // prefix tokens the last sync() did not recompute

  // MatFormer: run a sub-model of the loaded weights (a published name such as "Config for official
  // E2B Model" / "E2B" / "E4B", a JSON file, or "skip=20-24;ffn=8192"). Switching keeps the KV cache
  // when the two profiles agree on every layer below the first KV-shared layer (the layers that write
  // the cache); otherwise the next sync() prefills the sequence again. Exact either way.
  void set_profile(const std::string& spec);
  const std::string& profile_name() const;
  bool cache_kept_on_last_switch() const;
  void reset();
  uint64_t kv_cache_bytes() const;
  uint64_t scratch_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

int32_t argmax(const float* logits, int64_t n);

}  // namespace g3n
