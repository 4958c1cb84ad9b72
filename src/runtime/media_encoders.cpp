#include "runtime/media_encoders.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "base/error.h"
#include "media/audio.h"
#include "media/audio_split.h"
#include "media/image.h"
#include "runtime/model_impl.h"

namespace g3n {

uint64_t content_hash(const void* data, size_t n, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9E3779B97F4A7C15ull);
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h ? h : 1;  // 0 means "no media" in the session's key list
}

namespace {

bool has_tensor(const WeightSource& source, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    try {
      if (source.find(n)) return true;
    } catch (const Error&) {
      return true;  // present but unusable: let the encoder's constructor report it
    }
  }
  return false;
}

}  // namespace

MediaEncoders::MediaEncoders(const ModelConfig& config, std::string config_json, const WeightSource& source,
                             std::string preprocessor_json, std::string origin)
    : config_(config),
      config_json_(std::move(config_json)),
      preprocessor_json_(std::move(preprocessor_json)),
      origin_(std::move(origin)),
      source_(source) {
  if (!config_.multimodal || config_json_.empty()) return;
  has_vision_ = has_tensor(source_, {"model.vision_tower.timm_model.conv_stem.conv.weight",
                                     "vision_tower.timm_model.conv_stem.conv.weight"});
  has_audio_ = has_tensor(source_, {"model.audio_tower.subsample_conv_projection.input_proj_linear.weight",
                                    "audio_tower.subsample_conv_projection.input_proj_linear.weight"});
}

MediaEncoders::~MediaEncoders() = default;

const VisionEncoder& MediaEncoders::vision() const {
  if (!has_vision_)
    fail(origin_, " has no vision tower: image input needs a multimodal Gemma 3n checkpoint (config.json with "
                  "vision_config and the model.vision_tower.* tensors), or a GGUF model with --mmproj");
  std::lock_guard<std::mutex> lock(mu_);
  if (!vision_) vision_ = std::make_unique<VisionEncoder>(config_, parse_vision_arch(config_json_), source_);
  return *vision_;
}

const AudioEncoder& MediaEncoders::audio() const {
  if (!has_audio_)
    fail(origin_, " has no audio tower: audio input needs a multimodal Gemma 3n checkpoint (config.json with "
                  "audio_config and the model.audio_tower.* tensors), or a GGUF model with --mmproj");
  std::lock_guard<std::mutex> lock(mu_);
  if (!audio_) audio_ = std::make_unique<AudioEncoder>(AudioEncoderConfig::from_json(config_json_), source_);
  return *audio_;
}

const media::MelExtractor& MediaEncoders::mel() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!mel_)
    mel_ = std::make_unique<media::MelExtractor>(preprocessor_json_.empty() ? media::MelConfig{}
                                                                            : media::MelConfig::from_json(preprocessor_json_));
  return *mel_;
}

// ---------------------------------------------------------------------------------------------------
// Model: encoding
// ---------------------------------------------------------------------------------------------------

namespace {

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

std::string image_description(const media::RgbImage& img, int64_t size) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %lldx%lld -> %lldx%lld", img.format.c_str(), (long long)img.width,
                (long long)img.height, (long long)size, (long long)size);
  return buf;
}

void check_image_size(int64_t size) {
  G3N_CHECK(size >= 32 && size <= 2048, "image size ", size, " is outside 32..2048 (Gemma 3n uses 256, 512 or 768)");
}

MediaEmbedding embed_rgb(const Model& model, const MediaEncoders& enc, const media::RgbImage& img,
                         const std::string& name, int64_t size, clock_type::time_point t0) {
  check_image_size(size);
  const VisionEncoder& vision = enc.vision();
  const std::vector<float> px = media::preprocess_image(img, size);
  MediaEmbedding m;
  m.kind = MediaEmbedding::Kind::Image;
  m.rows = vision.encode(px.data(), size, size, model.pool());
  m.tokens = vision.tokens_per_image();
  m.valid_tokens = m.tokens;
  m.key = content_hash(img.rgb.data(), img.rgb.size(), uint64_t(img.width) << 40 ^ uint64_t(img.height) << 20 ^ uint64_t(size));
  m.source = name;
  m.description = image_description(img, size);
  m.encode_seconds = since(t0);
  return m;
}

}  // namespace

bool Model::supports_images() const { return impl_->media && impl_->media->has_vision(); }
bool Model::supports_audio() const { return impl_->media && impl_->media->has_audio(); }

MediaEmbedding Model::encode_image_file(const std::string& path, int64_t size) const {
  const auto t0 = clock_type::now();
  impl_->media->vision();  // a clear error before decoding when there is no tower
  return embed_rgb(*this, *impl_->media, media::load_image(path), path, size, t0);
}

MediaEmbedding Model::encode_image(const void* data, size_t n, const std::string& name, int64_t size) const {
  const auto t0 = clock_type::now();
  impl_->media->vision();
  return embed_rgb(*this, *impl_->media, media::decode_image(static_cast<const uint8_t*>(data), n, name), name, size, t0);
}

MediaEmbedding Model::encode_rgb(const uint8_t* rgb, int64_t width, int64_t height, const std::string& name,
                                 int64_t size) const {
  const auto t0 = clock_type::now();
  G3N_CHECK(rgb && width > 0 && height > 0 && width <= 32768 && height <= 32768 && width * height <= (int64_t(100) << 20),
            name, ": an RGB image of ", width, "x", height, " (expected 1..32768 per side, at most 100 Mpixels)");
  impl_->media->vision();
  media::RgbImage img;
  img.width = width;
  img.height = height;
  img.rgb.assign(rgb, rgb + size_t(width * height * 3));
  img.format = "RGB";
  img.source_channels = 3;
  return embed_rgb(*this, *impl_->media, img, name, size, t0);
}

MediaEmbedding Model::encode_pixels(const float* pixels, int64_t height, int64_t width, const std::string& name) const {
  const auto t0 = clock_type::now();
  G3N_CHECK(height >= 32 && width >= 32 && height <= 2048 && width <= 2048, name, ": pixels of ", height, "x", width,
            " (expected 32..2048 per side)");
  const VisionEncoder& vision = impl_->media->vision();
  MediaEmbedding m;
  m.kind = MediaEmbedding::Kind::Image;
  m.rows = vision.encode(pixels, height, width, pool());
  m.tokens = vision.tokens_per_image();
  m.valid_tokens = m.tokens;
  m.key = content_hash(pixels, size_t(3 * height * width) * sizeof(float), uint64_t(height) << 32 ^ uint64_t(width));
  m.source = name;
  m.description = "pixels " + std::to_string(width) + "x" + std::to_string(height);
  m.encode_seconds = since(t0);
  return m;
}

MediaEmbedding Model::encode_audio_samples(std::span<const float> samples, const std::string& name) const {
  const auto t0 = clock_type::now();
  const AudioEncoder& audio = impl_->media->audio();
  const media::MelExtractor& mel = impl_->media->mel();
  const int64_t rate = mel.config().sampling_rate;
  const int64_t n = int64_t(samples.size());
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(samples[size_t(i)])) fail(name, ": sample ", i, " is not a finite number");
  const media::MelFeatures f = mel.compute(samples.data(), n);
  if (f.frames == 0)
    fail(name, ": the clip is too short (", n, " samples at ", rate, " Hz); the feature extractor needs more than ",
         mel.frame_length(), " samples");
  const AudioSoftTokens tokens = audio.encode(f.values.data(), f.frames, f.bins, f.valid.data(), pool());
  MediaEmbedding m;
  m.kind = MediaEmbedding::Kind::Audio;
  m.rows = audio.prompt_embeddings(tokens, pool());
  m.tokens = audio.config().audio_soft_tokens_per_image;
  m.valid_tokens = int64_t(std::count(tokens.valid.begin(), tokens.valid.end(), uint8_t(1)));
  m.key = content_hash(samples.data(), samples.size() * sizeof(float), 0xA0D10);
  m.source = name;
  m.duration = double(std::min(n, mel.config().max_length)) / double(rate);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.2f s%s -> %lld audio tokens", double(n) / double(rate),
                n > mel.config().max_length ? " (the model hears the first 30 s)" : "", (long long)m.valid_tokens);
  m.description = buf;
  m.encode_seconds = since(t0);
  return m;
}

namespace {

MediaEmbedding embed_decoded(const Model& model, const media::DecodedAudio& a, const std::string& name,
                             clock_type::time_point t0) {
  MediaEmbedding m = model.encode_audio_samples(a.samples, name);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s, %d ch, %lld Hz, ", a.format.c_str(), a.source_channels,
                (long long)a.source_sample_rate);
  m.description = buf + m.description;
  m.encode_seconds = since(t0);
  return m;
}

}  // namespace

MediaEmbedding Model::encode_audio_file(const std::string& path) const {
  const auto t0 = clock_type::now();
  impl_->media->audio();
  return embed_decoded(*this, media::load_audio(path, impl_->media->mel().config().sampling_rate), path, t0);
}

MediaEmbedding Model::encode_audio(const void* data, size_t n, const std::string& name) const {
  const auto t0 = clock_type::now();
  impl_->media->audio();
  return embed_decoded(*this, media::load_audio_memory(data, n, impl_->media->mel().config().sampling_rate, {}, name),
                       name, t0);
}

namespace {

std::vector<MediaEmbedding> encode_windows(const Model& model, const media::DecodedAudio& a, const std::string& what,
                                           double max_seconds, int64_t rate, double decode_seconds) {
  if (a.truncated)
    fail(what, " is longer than the limit of ", max_seconds, " s (raise it with --max-audio-seconds)");
  std::vector<MediaEmbedding> out;
  const auto windows = media::split_long_audio(a.samples.data(), int64_t(a.samples.size()), rate);
  for (size_t i = 0; i < windows.size(); ++i) {
    const auto& w = windows[i];
    std::string name = what;
    if (windows.size() > 1) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " [%.2f s - %.2f s]", double(w.begin) / double(rate), double(w.end) / double(rate));
      name += buf;
    }
    out.push_back(model.encode_audio_samples(
        std::span<const float>(a.samples).subspan(size_t(w.begin), size_t(w.end - w.begin)), name));
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s, %d ch, %lld Hz, ", a.format.c_str(), a.source_channels,
                  (long long)a.source_sample_rate);
    out.back().description = buf + out.back().description;
    out.back().offset = double(w.begin) / double(rate);
    if (i == 0) out.back().encode_seconds += decode_seconds;
  }
  return out;
}

media::AudioLimits window_limits(double max_seconds) {
  G3N_CHECK(max_seconds > 0 && max_seconds <= 24 * 3600, "the audio length limit must be in (0, 86400] s");
  media::AudioLimits limits;
  limits.max_seconds = max_seconds;
  return limits;
}

}  // namespace

std::vector<MediaEmbedding> Model::encode_audio_file_windows(const std::string& path, double max_seconds) const {
  const auto limits = window_limits(max_seconds);
  const auto t0 = clock_type::now();
  impl_->media->audio();
  const int64_t rate = impl_->media->mel().config().sampling_rate;
  const media::DecodedAudio a = media::load_audio(path, rate, limits);
  return encode_windows(*this, a, path, max_seconds, rate, since(t0));
}

std::vector<MediaEmbedding> Model::encode_audio_windows(const void* data, size_t size, const std::string& name,
                                                        double max_seconds) const {
  const auto limits = window_limits(max_seconds);
  const auto t0 = clock_type::now();
  impl_->media->audio();
  const int64_t rate = impl_->media->mel().config().sampling_rate;
  const media::DecodedAudio a = media::load_audio_memory(data, size, rate, limits, name);
  return encode_windows(*this, a, name, max_seconds, rate, since(t0));
}

// ---------------------------------------------------------------------------------------------------
// Placing soft tokens into a prompt
// ---------------------------------------------------------------------------------------------------

PromptEmbeddings place_media(const Model& model, std::span<const int32_t> ids,
                             const std::vector<const MediaEmbedding*>& media) {
  const ModelConfig& c = model.config();
  const int64_t D = c.text.hidden_size;
  PromptEmbeddings out;
  for (const auto kind : {MediaEmbedding::Kind::Image, MediaEmbedding::Kind::Audio}) {
    const bool image = kind == MediaEmbedding::Kind::Image;
    const int64_t placeholder = image ? c.image_token_id : c.audio_token_id;
    std::vector<const MediaEmbedding*> items;
    int64_t rows = 0;
    for (const MediaEmbedding* m : media)
      if (m && m->kind == kind) {
        G3N_CHECK(int64_t(m->rows.size()) == m->tokens * D, m->source, ": ", m->rows.size(), " values for ", m->tokens,
                  " tokens of width ", D);
        items.push_back(m);
        rows += m->tokens;
      }
    int64_t slots = 0;
    for (int32_t id : ids) slots += id == placeholder;
    if (slots != rows) {
      const char* what = image ? "image" : "audio";
      fail("the prompt has ", slots, " ", what, " soft-token positions (id ", placeholder, ") but ", items.size(), " ",
           what, items.size() == 1 ? "" : "s", " with ", rows, " soft tokens were given");
    }
    size_t item = 0;
    int64_t row = 0;
    for (size_t p = 0; p < ids.size() && !items.empty(); ++p) {
      if (ids[p] != placeholder) continue;
      while (row == items[item]->tokens) ++item, row = 0;
      out.positions.push_back(int64_t(p));
      out.rows.insert(out.rows.end(), items[item]->rows.begin() + std::ptrdiff_t(row * D),
                      items[item]->rows.begin() + std::ptrdiff_t((row + 1) * D));
      out.keys.push_back(items[item]->key);
      ++row;
    }
  }
  // PromptEmbeddings wants increasing positions: merge the two kinds.
  std::vector<size_t> order(out.positions.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return out.positions[a] < out.positions[b]; });
  PromptEmbeddings sorted;
  sorted.positions.reserve(order.size());
  sorted.keys.reserve(order.size());
  sorted.rows.reserve(out.rows.size());
  for (size_t i : order) {
    sorted.positions.push_back(out.positions[i]);
    sorted.keys.push_back(out.keys[i]);
    sorted.rows.insert(sorted.rows.end(), out.rows.begin() + std::ptrdiff_t(i * size_t(D)),
                       out.rows.begin() + std::ptrdiff_t((i + 1) * size_t(D)));
  }
  return sorted;
}

}  // namespace g3n
