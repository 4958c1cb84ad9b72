// `g3n audio-features` and `g3n encode-audio`: an audio file in, the log-mel features / the audio
// soft tokens out, as float32 .npy files. The raw interface the parity tests compare with
// transformers' Gemma3nAudioFeatureExtractor and Gemma3nModel.get_audio_features.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/thread_pool.h"
#include "commands.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "media/audio.h"
#include "media/mel.h"
#include "model/audio_encoder.h"
#include "model/gguf_mmproj.h"
#include "model/weight_source.h"

namespace g3n::tools {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("cannot read ", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<float> mask_as_floats(const std::vector<uint8_t>& m) { return {m.begin(), m.end()}; }

struct AudioArgs {
  std::string audio, out, mask_out, samples_out, preprocessor;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--audio", audio, "Audio file: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF... any rate and channels")
        ->required();
    cmd->add_option("-o,--out", out, "Output .npy file")->required();
    cmd->add_option("--samples-out", samples_out, "Also write the 16 kHz mono samples fed to the extractor, .npy [n]");
    cmd->add_option("--preprocessor-config", preprocessor, "preprocessor_config.json (default: the reference's defaults)");
  }

  // Decodes, downmixes, resamples; writes --samples-out; returns the 16 kHz samples.
  media::DecodedAudio load(int64_t rate) const {
    media::DecodedAudio a = media::load_audio(audio, rate);
    if (a.truncated)
      std::fprintf(stderr, "g3n: note: %s is longer than %.0f s; only the start was read (the model uses 30 s)\n",
                   audio.c_str(), media::AudioLimits{}.max_seconds);
    if (!samples_out.empty()) write_npy_f32(samples_out, a.samples.data(), {int64_t(a.samples.size())});
    return a;
  }

  media::MelConfig mel_config(const std::string& model_dir = "") const {
    if (!preprocessor.empty()) return media::MelConfig::from_json(read_text(preprocessor));
    if (!model_dir.empty() && fs::exists(fs::path(model_dir) / "preprocessor_config.json"))
      return media::MelConfig::from_json(read_text(fs::path(model_dir) / "preprocessor_config.json"));
    return {};
  }
};

}  // namespace

Action register_audio_features(CLI::App& app) {
  struct Args : AudioArgs {};
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "audio-features", "Write the log-mel features of an audio file as float32 .npy [frames, 128] "
                        "(Gemma3nAudioFeatureExtractor)");
  a->add_to(cmd);
  cmd->add_option("--mask-out", a->mask_out, "Also write input_features_mask as .npy [frames] (1 = valid)");
  return [a] {
    const media::MelExtractor mel(a->mel_config());
    const media::DecodedAudio audio = a->load(mel.config().sampling_rate);
    const media::MelFeatures f = mel.compute(audio.samples.data(), int64_t(audio.samples.size()));
    write_npy_f32(a->out, f.values.data(), {f.frames, f.bins});
    if (!a->mask_out.empty()) write_npy_f32(a->mask_out, mask_as_floats(f.valid).data(), {f.frames});
    std::fprintf(stderr, "g3n: %s: %s, %d ch, %lld Hz -> %lld samples at 16 kHz -> %lld frames\n", a->audio.c_str(),
                 audio.format.c_str(), audio.source_channels, (long long)audio.source_sample_rate,
                 (long long)audio.samples.size(), (long long)f.frames);
    return 0;
  };
}

Action register_encode_audio(CLI::App& app) {
  struct Args : AudioArgs {
    std::string model, mmproj, prompt_out, dump_dir;
    int threads = 0;
    int64_t valid_frames = -1;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "encode-audio", "Write the audio soft tokens of an audio file as float32 .npy [tokens, text hidden] "
                      "(Gemma3nModel.get_audio_features)");
  a->add_to(cmd);
  cmd->add_option("-m,--model", a->model,
                  "Checkpoint directory (multimodal Gemma 3n); with --mmproj, optionally the text model (directory "
                  "or GGUF) the projector must fit, whose vocabulary gives the prompt's padding row");
  cmd->add_option("--mmproj", a->mmproj, "llama.cpp multimodal projector GGUF holding the audio tower");
  cmd->add_option("-t,--threads", a->threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--mask-out", a->mask_out, "Also write the token validity as .npy [tokens] (1 = valid)");
  cmd->add_option("--prompt-out", a->prompt_out,
                  "Also write the rows the decoder receives at the 188 <audio_soft_token> positions, .npy [188, D]");
  cmd->add_option("--dump-dir", a->dump_dir, "Write every named intermediate as DIR/NAME[.LAYER].npy");
  cmd->add_option("--valid-frames", a->valid_frames,
                  "Mark mel frames from this index on as padding (as in a padded batch; for testing)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  return [a] {
    if (a->model.empty() && a->mmproj.empty()) fail("give the model as -m DIR (checkpoint) or --mmproj FILE.gguf");
    // The weights: a checkpoint directory, or an mmproj (whose text model, when given, must match it).
    std::optional<MmprojModel> mm;
    std::optional<TensorStore> store;
    std::unique_ptr<WeightSource> dir_source;
    AudioEncoderConfig config;
    const WeightSource* source = nullptr;
    if (!a->mmproj.empty()) {
      mm = load_mmproj(a->mmproj);
      if (!mm->has_audio) fail(a->mmproj, ": this mmproj has no audio tower (clip.has_audio_encoder)");
      if (!a->model.empty()) attach_text_model(*mm, read_text_model_sizes(a->model));
      std::fprintf(stderr, "g3n: %s: %s\n", a->mmproj.c_str(), mm->summary.c_str());
      config = AudioEncoderConfig::from_json(mm->config_json);
      source = mm->source.get();
    } else {
      config = AudioEncoderConfig::from_json(read_text(fs::path(a->model) / "config.json"));
      store = TensorStore::open_dir(a->model);
      dir_source = safetensors_source(*store);
      source = dir_source.get();
    }
    const AudioEncoder encoder(config, *source);

    const media::MelExtractor mel(a->mel_config(a->model));
    const media::DecodedAudio audio = a->load(mel.config().sampling_rate);
    ThreadPool pool(a->threads);
    const auto t0 = std::chrono::steady_clock::now();
    media::MelFeatures f = mel.compute(audio.samples.data(), int64_t(audio.samples.size()));
    if (a->valid_frames >= 0)
      for (int64_t t = a->valid_frames; t < f.frames; ++t) f.valid[size_t(t)] = 0;
    const auto t1 = std::chrono::steady_clock::now();

    AudioTrace trace;
    if (!a->dump_dir.empty()) {
      fs::create_directories(a->dump_dir);
      trace = [d = a->dump_dir](const std::string& name, int layer, const float* data, int64_t rows, int64_t cols) {
        const std::string file = name + (layer >= 0 ? "." + std::to_string(layer) : "") + ".npy";
        write_npy_f32((fs::path(d) / file).string(), data, {rows, cols});
      };
    }
    const AudioSoftTokens tokens = encoder.encode(f.values.data(), f.frames, f.bins, f.valid.data(), pool, &trace);
    const auto t2 = std::chrono::steady_clock::now();

    write_npy_f32(a->out, tokens.embeddings.data(), {tokens.n, tokens.width});
    if (!a->mask_out.empty()) write_npy_f32(a->mask_out, mask_as_floats(tokens.valid).data(), {tokens.n});
    if (!a->prompt_out.empty()) {
      const std::vector<float> rows = encoder.prompt_embeddings(tokens, pool);
      write_npy_f32(a->prompt_out, rows.data(), {config.audio_soft_tokens_per_image, tokens.width});
    }
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    std::fprintf(stderr,
                 "g3n: %.2f s of audio -> %lld mel frames (%.1f ms) -> %lld audio tokens (encoder %.1f ms, %d threads)\n",
                 double(audio.samples.size()) / double(mel.config().sampling_rate), (long long)f.frames, ms(t1 - t0),
                 (long long)tokens.n, ms(t2 - t1), pool.size());
    return 0;
  };
}

}  // namespace g3n::tools
