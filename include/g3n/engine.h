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

// How the text decoder does its arithmetic.
enum class Numerics {
  // g3n's own: weights as stored times float32 activations (int8 activations with a float32 scale
  // for decode of quantised weights), float32 KV cache; the closest to the reference model.
  kExact,
  // llama.cpp's CPU arithmetic, to give the numbers llama.cpp gives for the same GGUF file: activations
  // quantised to each weight type's ggml format (Q8_0 / Q8_1 / Q8_K) in every product, the file's
  // k-quants multiplied as stored, float16 keys, values, queries and attention probabilities, GELU from
  // a float16 table, ggml's RoPE angles (see src/kernels/ggml_cpu.h). Gemma 3 text models.
  kGgml,
};

// "exact" / "ggml" (throws g3n::Error for another name).
Numerics parse_numerics(const std::string& name);

struct LoadOptions {
  int threads = 0;  // 0: one per hardware thread
  Numerics numerics = Numerics::kExact;
  // Called with (bytes done, bytes total) while tensors are validated / touched.
  std::function<void(uint64_t, uint64_t)> progress;
  // A llama.cpp multimodal projector GGUF ("mmproj") with Gemma 3n's vision (and audio) tower, for a
  // GGUF text model (or any model whose own files lack the towers).
  std::string mmproj;
};

// Where a model's memory goes. Resident figures are the pages this process has mapped (/proc/self/pagemap).
struct MemoryReport {
  uint64_t core_weight_bytes = 0;       // tensors every token reads (mapped; with the sparse layers' W_down
                                        // as their transposed copies in RAM)
  uint64_t core_weight_resident = 0;    //   of which in RAM now
  uint64_t ple_table_bytes = 0;         // the per-layer embedding table (mapped, read row by row)
  uint64_t ple_table_resident = 0;      //   of which in RAM now (the pages of rows read so far)
  uint64_t kv_cache_bytes = 0;          // of the session asked about
  uint64_t scratch_bytes = 0;           // activations of the session asked about
};

class Session;

// The soft tokens of one image or audio clip, ready to be placed in a prompt (place_media) and reused
// across turns: encode once, keep it, place it again in every later prompt of the conversation.
struct MediaEmbedding {
  enum class Kind { Image, Audio };
  Kind kind = Kind::Image;
  int64_t tokens = 0;        // rows: 256 per image; audio_soft_tokens_per_image (188) per clip
  int64_t valid_tokens = 0;  // audio: rows that carry sound (the rest is the reference's padding)
  std::vector<float> rows;   // [tokens, hidden]: what the decoder reads at the placeholder positions
  uint64_t key = 0;          // content hash (media + options): a cached prefix is reused only for the same media
  std::string source;        // a file name, or what the caller called it
  std::string description;   // e.g. "JPEG 640x480 -> 768x768" or "WAV 16 kHz, 2 ch, 4.20 s"
  double duration = 0;       // audio: seconds of sound encoded
  double offset = 0;         // audio: where the clip starts in the recording it was cut from (seconds)
  double encode_seconds = 0; // decoding + preprocessing + encoder time
};

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

  // Multimodal input (a Gemma 3n checkpoint with its vision / audio towers, or a GGUF with --mmproj).
  bool supports_images() const;
  bool supports_audio() const;
  // An image file (JPEG, PNG, BMP, GIF, WebP) or its bytes -> 256 soft tokens, preprocessed at
  // size x size (256, 512 or 768). Throws g3n::Error naming the file and the problem.
  MediaEmbedding encode_image_file(const std::string& path, int64_t size = 768) const;
  MediaEmbedding encode_image(const void* data, size_t size, const std::string& name, int64_t image_size = 768) const;
  // 8-bit RGB pixels, row-major [height, width, 3] (a decoded image or video frame, a NumPy array).
  MediaEmbedding encode_rgb(const uint8_t* rgb, int64_t width, int64_t height, const std::string& name,
                            int64_t image_size = 768) const;
  // Planar RGB float pixels [3, height, width] in [0, 1], as the image processor makes them.
  MediaEmbedding encode_pixels(const float* pixels, int64_t height, int64_t width, const std::string& name) const;
  // An audio file (WAV, FLAC, OGG, MP3, ...) or its bytes -> the clip's soft tokens. The model hears at
  // most 30 s per clip: longer input is refused here (split it with encode_audio_file_windows).
  MediaEmbedding encode_audio_file(const std::string& path) const;
  MediaEmbedding encode_audio(const void* data, size_t size, const std::string& name) const;
  // Mono float samples at 16 kHz (at most 30 s).
  MediaEmbedding encode_audio_samples(std::span<const float> samples, const std::string& name) const;
  // A recording of any length (up to max_seconds): cut into windows of at most 30 s at quiet points
  // (media/audio_split.h), one embedding per window, in order.
  std::vector<MediaEmbedding> encode_audio_file_windows(const std::string& path, double max_seconds = 600) const;
  std::vector<MediaEmbedding> encode_audio_windows(const void* data, size_t size, const std::string& name,
                                                   double max_seconds = 600) const;

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
  // Prompt tokens per prefill pass (bounds scratch and sliding-cache memory). 0: 256, or 512 with
  // Numerics::kGgml (llama.cpp's default n_ubatch: it picks its kernels by batch size, so the same
  // batches give its exact numbers).
  int64_t max_chunk = 0;
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

  // One decoded token in each of several sessions at once: a single pass over the weights serves them
  // all (continuous batching). Sessions must be distinct, of the same model and MatFormer profile, and
  // each gets its token appended; its logits are then last_logits(). Each row sees only its own
  // sequence; the result equals feeding the tokens one session at a time up to float summation order.
  static void decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens);
  // The logits the last feed / sync / decode_batch produced for this session's last token [vocab].
  const std::vector<float>& last_logits() const;

  int64_t position() const;                   // tokens in the sequence so far
  int64_t prefill_chunk() const;              // prompt tokens per prefill pass (SessionOptions::max_chunk resolved)
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

// Puts the media's rows at the placeholder positions of `ids`: the image_token_id positions take the
// images' rows in order, the audio_token_id positions the clips' rows, as the reference scatters them.
// The number of placeholder positions must equal the rows given, kind by kind (g3n::Error otherwise).
PromptEmbeddings place_media(const Model& model, std::span<const int32_t> ids,
                             const std::vector<const MediaEmbedding*>& media);

int32_t argmax(const float* logits, int64_t n);

}  // namespace g3n
