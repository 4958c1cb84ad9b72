#include "g3n/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/mman.h>
#include <unistd.h>

#include "base/error.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/gguf_model.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/matformer.h"
#include "model/text_decoder.h"
#include "tokenizer/gguf_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "model/weights.h"
#include "runtime/model_impl.h"

namespace g3n {


namespace {

// Tensors from `first`, else from `second` (a text model beside its mmproj).
class ChainedSource : public WeightSource {
 public:
  ChainedSource(const WeightSource& first, const WeightSource& second) : first_(first), second_(second) {}
  const TensorView* find(const std::string& name) const override {
    if (const TensorView* t = first_.find(name)) return t;
    return second_.find(name);
  }
  const TensorView* find_as(const std::string& name, const std::vector<int64_t>& shape) const override {
    if (const TensorView* t = first_.find_as(name, shape)) return t;
    return second_.find_as(name, shape);
  }

 private:
  const WeightSource& first_;
  const WeightSource& second_;
};

std::string read_file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t tensor_bytes(const TensorView& t) { return dtype_bytes(t.dtype, t.numel()); }

// The PLE table is read one row per token: tell the kernel not to read ahead or map neighbouring
// pages, so only the rows actually used become resident.
void advise_random(const TensorView& t) {
  if (!t.valid()) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(t.data) + uintptr_t(tensor_bytes(t));
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_RANDOM);  // advice only: failure is harmless
}

// Reads one byte per page of the weights the decoder reads so the first token does not pay for page
// faults, and reports progress. The PLE table is left alone: it is read row by row, on demand.
void prefault(const std::vector<const TensorView*>& tensors, const std::function<void(uint64_t, uint64_t)>& progress) {
  uint64_t total = 0, done = 0, last = 0;
  for (const TensorView* t : tensors) total += tensor_bytes(*t);
  progress(0, total);
  volatile uint8_t sink = 0;
  for (const TensorView* t : tensors) {
    const auto* p = static_cast<const uint8_t*>(t->data);
    const uint64_t n = tensor_bytes(*t);
    for (uint64_t off = 0; off < n; off += 4096) sink = sink + p[off];
    done += n;
    if (done - last >= (uint64_t(64) << 20) || done == total) {
      progress(done, total);
      last = done;
    }
  }
  progress(total, total);
}

}  // namespace

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;

namespace {

bool is_gguf_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
  std::fclose(f);
  return ok;
}

}  // namespace

Numerics parse_numerics(const std::string& name) {
  if (name == "exact") return Numerics::kExact;
  if (name == "ggml") return Numerics::kGgml;
  fail("unknown numerics '", name, "': use 'exact' (g3n's own arithmetic) or 'ggml' (llama.cpp's)");
}

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("model path ", path, " does not exist");
  std::unique_ptr<Model> m(new Model());
  auto& impl = *m->impl_;
  impl.path = path;
  ModelConfig config;
  if (fs::is_regular_file(path, ec)) {
    if (!is_gguf_file(path))
      fail("model path ", path, " is a file but not a GGUF file (expected a .gguf or a checkpoint directory)");
    impl.gguf = std::make_unique<GgufFile>(GgufFile::open(path));
    GgufModel g = load_gguf_model(*impl.gguf);
    config = std::move(g.config);
    impl.source = std::move(g.weights);
    if (auto tok = tokenizer_from_gguf(*impl.gguf)) impl.tokenizer = std::make_unique<Tokenizer>(std::move(*tok));
  } else if (fs::is_directory(path, ec)) {
    const fs::path config_path = fs::path(path) / "config.json";
    if (!fs::exists(config_path, ec))
      fail("no config.json in ", path, " (expected a Hugging Face checkpoint directory)");
    config = load_config(config_path.string());
    impl.store = std::make_unique<TensorStore>(TensorStore::open_dir(path));
    impl.source = safetensors_source(*impl.store);
    if (fs::exists(fs::path(path) / "tokenizer.model", ec))
      impl.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load_dir(path));
  } else {
    fail("model path ", path, " is neither a checkpoint directory nor a GGUF file");
  }
  std::string config_json, preprocessor_json;
  if (impl.store) {
    config_json = read_file_text((fs::path(path) / "config.json").string());
    const fs::path pre = fs::path(path) / "preprocessor_config.json";
    if (fs::exists(pre, ec)) preprocessor_json = read_file_text(pre.string());
  }
  const WeightSource* source = impl.source.get();
  std::string origin = path;
  const bool embedded_towers = options.mmproj.empty() && impl.gguf && gguf_has_towers(*impl.gguf);
  if (!options.mmproj.empty() || embedded_towers) {
    // The towers (and the embedders' tables) come from the mmproj; the text model's tensors stay first.
    if (!config.text.is_gemma3n()) fail("--mmproj: ", path, " is not a Gemma 3n model (the mmproj holds Gemma 3n's towers)");
    impl.mmproj = std::make_unique<MmprojModel>(embedded_towers ? load_mmproj(path, /*embedded=*/true)
                                                                : load_mmproj(options.mmproj));
    attach_text_model(*impl.mmproj, {config.text.hidden_size, config.text.vocab_size});
    apply_mmproj(config, *impl.mmproj);
    impl.with_mmproj = std::make_unique<ChainedSource>(*impl.source, *impl.mmproj->source);
    source = impl.with_mmproj.get();
    config_json = impl.mmproj->config_json;
    if (!embedded_towers) origin = path + " with " + options.mmproj;
  }
  impl.media = std::make_unique<MediaEncoders>(config, std::move(config_json), *source, std::move(preprocessor_json),
                                               origin);
  TextWeights weights = load_text_weights(config, *source);
  impl.decoder = std::make_unique<TextDecoder>(std::move(config), std::move(weights));
  impl.decoder->set_numerics(options.numerics);
  impl.pool = std::make_unique<ThreadPool>(options.threads);
  const TensorView& ple = impl.decoder->weights().embed_tokens_per_layer;
  advise_random(ple);
  impl.decoder->set_release_ple_pages(in_read_only_file_mapping(ple.data, tensor_bytes(ple)));
  if (options.progress) prefault(impl.decoder->read_weights(), options.progress);
  for (const TensorView* t : impl.decoder->unread_weights())  // read once, by the transposition above
    if (in_read_only_file_mapping(t->data, tensor_bytes(*t))) release_mapped_pages(t->data, tensor_bytes(*t));
  return m;
}

namespace {

// Bytes of [p, p + n) that this process has mapped in RAM: the "present" bit of each page in
// /proc/self/pagemap (mincore() would count the page cache, which holds pages no one touched).
uint64_t resident_bytes(const void* p, uint64_t n) {
  if (!p || n == 0) return 0;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t first = reinterpret_cast<uintptr_t>(p) / page;
  const uint64_t last = (reinterpret_cast<uintptr_t>(p) + n - 1) / page;
  FILE* f = std::fopen("/proc/self/pagemap", "rb");
  if (!f) return 0;
  uint64_t present = 0;
  std::vector<uint64_t> entries(4096);
  for (uint64_t pg = first; pg <= last;) {
    const uint64_t count = std::min<uint64_t>(entries.size(), last - pg + 1);
    if (std::fseek(f, long(pg * 8), SEEK_SET) != 0) break;
    const size_t got = std::fread(entries.data(), 8, size_t(count), f);
    for (size_t i = 0; i < got; ++i) present += (entries[i] >> 63) & 1;
    if (got < count) break;
    pg += count;
  }
  std::fclose(f);
  return std::min<uint64_t>(present * page, n + page);
}

}  // namespace

MemoryReport Model::memory(const Session* session) const {
  MemoryReport r;
  const TextWeights& w = impl_->decoder->weights();
  for (const TensorView* t : impl_->decoder->read_weights()) {
    r.core_weight_bytes += tensor_bytes(*t);
    r.core_weight_resident += resident_bytes(t->data, tensor_bytes(*t));
  }
  r.core_weight_bytes += impl_->decoder->copied_bytes();  // the copies that replace unread_weights()
  r.core_weight_resident += impl_->decoder->copied_bytes();
  r.ple_table_bytes = tensor_bytes(w.embed_tokens_per_layer);
  r.ple_table_resident = resident_bytes(w.embed_tokens_per_layer.data, r.ple_table_bytes);
  if (session) {
    r.kv_cache_bytes = session->kv_cache_bytes();
    r.scratch_bytes = session->scratch_bytes();
  }
  return r;
}

const ModelConfig& Model::config() const { return impl_->decoder->config(); }
int64_t Model::vocab_size() const { return impl_->decoder->vocab_size(); }
const TextDecoder& Model::decoder() const { return *impl_->decoder; }
ThreadPool& Model::pool() const { return *impl_->pool; }
const Tokenizer* Model::tokenizer() const { return impl_->tokenizer.get(); }

const Tokenizer& Model::require_tokenizer() const {
  if (!impl_->tokenizer)
    fail(impl_->path, " has no tokenizer (a checkpoint directory needs tokenizer.model; a GGUF file needs "
                      "tokenizer.ggml.* metadata)");
  return *impl_->tokenizer;
}

struct Session::Impl {
  const Model& model;
  KvCache cache;
  DecoderScratch scratch;
  int64_t position = 0;
  std::vector<int32_t> tokens;
  std::vector<uint64_t> media_keys;  // per position: 0, or the key of the media embedded there
  std::vector<const float*> overrides;
  std::vector<float> logits;
  std::vector<float> batch_logits;  // decode_batch's [n, vocab] when this session leads a batch
  int64_t reused = 0;
  ForwardOptions forward;
  MatformerProfile profile;
  bool cache_kept = true;
  static int64_t chunk_for(const Model& m, const SessionOptions& o) {
    if (o.max_chunk > 0) return o.max_chunk;
    return m.decoder().numerics() == Numerics::kGgml ? 512 : 256;
  }
  Impl(const Model& m, const SessionOptions& o) : model(m), cache(m.config().text, chunk_for(m, o)) {
    forward.skip_shared_layers = o.fast_paths;
    forward.sparse_ffn = o.fast_paths;
    profile = full_profile(m.config().text);
  }
};

Session::Session(const Model& model, const SessionOptions& options)
    : impl_(std::make_unique<Impl>(model, options)) {
  if (!options.profile.empty()) set_profile(options.profile);
}

void Session::set_profile(const std::string& spec) {
  auto& s = *impl_;
  const TextConfig& c = s.model.config().text;
  if (!c.is_gemma3n()) fail("MatFormer profiles apply to Gemma 3n models only");
  MatformerProfile p = resolve_profile(spec, c);
  bool quantized = false;
  for (const TensorView* t : s.model.decoder().weights().core_tensors()) quantized = quantized || dtype_is_quantized(t->dtype);
  validate_profile(p, c, quantized);
  s.cache_kept = same_kv_layers(s.profile, p, c);
  if (!s.cache_kept) {
    // The cache was written by other layers: the next sync() prefills the whole sequence again.
    s.tokens.clear();
    s.media_keys.clear();
    s.position = 0;
  }
  s.profile = std::move(p);
  s.forward.profile = &s.profile;
}

const std::string& Session::profile_name() const { return impl_->profile.name; }
bool Session::cache_kept_on_last_switch() const { return impl_->cache_kept; }
Session::~Session() = default;

void Session::decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens) {
  G3N_CHECK(!sessions.empty() && sessions.size() == tokens.size(), "decode_batch: ", sessions.size(), " sessions and ",
            tokens.size(), " tokens");
  if (sessions.size() == 1) {
    sessions[0]->feed({tokens[0]});
    return;
  }
  Impl& first = *sessions[0]->impl_;
  const TextDecoder& dec = first.model.decoder();
  const int64_t V = dec.vocab_size(), n = int64_t(sessions.size());
  const int64_t max_pos = dec.text().max_position_embeddings;
  std::vector<KvCache*> caches;
  std::vector<int64_t> positions;
  for (size_t i = 0; i < sessions.size(); ++i) {
    Impl& s = *sessions[i]->impl_;
    G3N_CHECK(&s.model == &first.model, "decode_batch: sessions of different models");
    G3N_CHECK(s.profile == first.profile, "decode_batch: sessions with different MatFormer profiles");
    G3N_CHECK(s.forward.sparse_ffn == first.forward.sparse_ffn, "decode_batch: sessions with different fast paths");
    for (size_t j = 0; j < i; ++j) G3N_CHECK(sessions[j] != sessions[i], "decode_batch: a session appears twice");
    if (s.position + 1 > max_pos)
      fail("the sequence would reach ", s.position + 1, " tokens, beyond the model's context of ", max_pos);
    caches.push_back(&s.cache);
    positions.push_back(s.position);
  }
  std::vector<float>& out = first.batch_logits;
  out.resize(size_t(n * V));
  dec.forward_batch(tokens.data(), n, caches, positions, first.scratch, first.model.pool(), out.data(), first.forward);
  for (size_t i = 0; i < sessions.size(); ++i) {
    Impl& s = *sessions[i]->impl_;
    s.logits.assign(out.begin() + std::ptrdiff_t(i * size_t(V)), out.begin() + std::ptrdiff_t((i + 1) * size_t(V)));
    s.position += 1;
    s.tokens.push_back(tokens[i]);
    s.media_keys.push_back(0);
  }
}

const std::vector<float>& Session::last_logits() const { return impl_->logits; }

const std::vector<float>& Session::feed(std::span<const int32_t> ids, bool all_logits, const PromptEmbeddings* media) {
  auto& s = *impl_;
  const TextDecoder& dec = s.model.decoder();
  const int64_t V = dec.vocab_size();
  const int64_t n = int64_t(ids.size());
  if (n == 0) fail("no tokens to feed");
  const int64_t max_pos = dec.text().max_position_embeddings;
  if (s.position + n > max_pos)
    fail("the sequence would reach ", s.position + n, " tokens, beyond the model's context of ", max_pos);
  std::vector<float>& logits = s.logits;
  logits.resize(size_t(all_logits ? n * V : V));
  const int64_t D = dec.text().hidden_size;
  std::vector<uint64_t> keys(size_t(n), 0);
  s.overrides.assign(size_t(n), nullptr);
  if (media && !media->empty()) {
    if (media->rows.size() != media->positions.size() * size_t(D) || media->keys.size() != media->positions.size())
      fail("media embeddings: ", media->positions.size(), " positions need ", media->positions.size() * size_t(D),
           " values of width ", D, " and as many keys");
    for (size_t i = 0; i < media->positions.size(); ++i) {
      const int64_t p = media->positions[i];
      if (p < 0 || p >= n) fail("media embedding position ", p, " is outside the ", n, " tokens fed");
      s.overrides[size_t(p)] = media->rows.data() + i * size_t(D);
      keys[size_t(p)] = media->keys[i];
    }
  }
  const int64_t chunk = s.cache.max_chunk();
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    const bool last = begin + len == n;
    float* out = all_logits ? logits.data() + begin * V : (last ? logits.data() : nullptr);
    ForwardOptions fo = s.forward;
    if (media && !media->empty()) fo.embedding_overrides = s.overrides.data() + begin;
    dec.forward(ids.data() + begin, len, s.position, s.cache, s.scratch, s.model.pool(), out, all_logits, fo);
    s.position += len;
  }
  s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
  s.media_keys.insert(s.media_keys.end(), keys.begin(), keys.end());
  return logits;
}

const std::vector<float>& Session::sync(const std::vector<int32_t>& ids, const PromptEmbeddings* media) {
  auto& s = *impl_;
  if (ids.empty()) fail("no tokens to feed");
  std::vector<uint64_t> keys(ids.size(), 0);
  if (media)
    for (size_t i = 0; i < media->positions.size() && i < media->keys.size(); ++i)
      if (media->positions[i] >= 0 && size_t(media->positions[i]) < ids.size()) keys[size_t(media->positions[i])] = media->keys[i];
  size_t common = 0;
  while (common < ids.size() && common < s.tokens.size() && ids[common] == s.tokens[common] &&
         keys[common] == s.media_keys[common])
    ++common;
  if (common == ids.size()) --common;  // the last token is fed again for its logits
  // A sliding layer's ring holds the last (window - 1 + chunk) positions, so a rewind of up to
  // `chunk` tokens leaves every key a later query needs in place.
  const int64_t rewind = s.position - int64_t(common);
  if (rewind > s.cache.max_chunk()) common = 0;
  s.position = int64_t(common);
  s.tokens.resize(common);
  s.media_keys.resize(common);
  s.reused = int64_t(common);
  if (!media || media->empty()) return feed(std::span<const int32_t>(ids).subspan(common));
  // Shift the media positions to the part that is fed.
  PromptEmbeddings rest;
  const size_t D = size_t(s.model.decoder().text().hidden_size);
  for (size_t i = 0; i < media->positions.size(); ++i) {
    if (media->positions[i] < int64_t(common)) continue;
    rest.positions.push_back(media->positions[i] - int64_t(common));
    rest.rows.insert(rest.rows.end(), media->rows.begin() + std::ptrdiff_t(i * D), media->rows.begin() + std::ptrdiff_t((i + 1) * D));
    rest.keys.push_back(media->keys[i]);
  }
  return feed(std::span<const int32_t>(ids).subspan(common), false, &rest);
}

int64_t Session::position() const { return impl_->position; }
int64_t Session::prefill_chunk() const { return impl_->cache.max_chunk(); }
int64_t Session::context_length() const { return impl_->model.config().text.max_position_embeddings; }
const std::vector<int32_t>& Session::tokens() const { return impl_->tokens; }
int64_t Session::reused_tokens() const { return impl_->reused; }
const Model& Session::model() const { return impl_->model; }
uint64_t Session::kv_cache_bytes() const { return impl_->cache.bytes(); }

uint64_t Session::scratch_bytes() const {
  const DecoderScratch& s = impl_->scratch;
  uint64_t n = impl_->logits.capacity();
  for (const auto* v : {&s.x0, &s.pli, &s.streams, &s.pred, &s.xn, &s.q, &s.k, &s.v, &s.attn, &s.att, &s.lo, &s.laurel,
                        &s.h1, &s.hn, &s.gate, &s.up, &s.ffn, &s.act, &s.corr, &s.pl_gate, &s.pl_out, &s.router,
                        &s.scores, &s.collapse})
    n += v->capacity();
  return n * sizeof(float);
}

void Session::reset() {
  impl_->position = 0;  // stale cache entries are overwritten before they are read
  impl_->tokens.clear();
  impl_->media_keys.clear();
}

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

}  // namespace g3n
