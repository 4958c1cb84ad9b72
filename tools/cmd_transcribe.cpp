// `g3n transcribe`: speech recognition and speech translation with the prompts Google gives for Gemma 3n.
// A recording longer than 30 s is cut at quiet points into clips of at most 30 s (media/audio_split.h);
// each clip is transcribed in turn (greedy by default) and the texts are joined with a space.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "base/error.h"
#include "commands.h"
#include "g3n/engine.h"
#include "runtime/generator.h"
#include "runtime/transcribe.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::tools {

Action register_transcribe(CLI::App& app) {
  struct Args {
    std::string model, audio, language, target, prompt;
    int threads = 0;
    std::string numerics = "exact";
    int64_t max_new_tokens = 512;
    double max_audio_seconds = 3600;
    float temperature = 0.0f;
    bool verbose = false, translation_only = false;
    std::string profile, format = "text", mmproj;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("transcribe", "Speech to text (and speech translation) with a Gemma 3n checkpoint");
  cmd->add_option("audio", a->audio, "Audio file (WAV, FLAC, OGG, MP3, ...); any length up to --max-audio-seconds")
      ->required();
  cmd->add_option("-m,--model", a->model, "Multimodal Gemma 3n checkpoint")->required();
  cmd->add_option("-l,--language", a->language, "Spoken language, e.g. English (default: the model decides)");
  cmd->add_option("--translate-to", a->target, "Also translate into this language, e.g. English");
  cmd->add_flag("--translation-only", a->translation_only, "With --translate-to: print only the translation");
  cmd->add_option("--prompt", a->prompt, "Instruction to use instead of Google's ASR / AST prompt");
  cmd->add_option("-t,--threads", a->threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--numerics", a->numerics, kNumericsHelp)
      ->check(CLI::IsMember({"exact", "ggml"}));
  cmd->add_option("-n,--max-new-tokens", a->max_new_tokens, "Most tokens per 30 s clip")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  cmd->add_option("--max-audio-seconds", a->max_audio_seconds, "Longest recording accepted")
      ->check(CLI::Range(1.0, 86400.0));
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (default 0: greedy)")
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--profile", a->profile, "MatFormer profile of the text decoder");
  cmd->add_option("--mmproj", a->mmproj, "llama.cpp mmproj GGUF with the audio tower (for a GGUF model)");
  cmd->add_flag("-v,--verbose", a->verbose, "Print clip boundaries, encode and decode times");
  cmd->add_option("-f,--format", a->format, "text (streamed), srt or vtt (one cue per clip, printed at the end)")
      ->check(CLI::IsMember({"text", "srt", "vtt"}));
  return [a] {
    if (a->translation_only && a->target.empty()) fail("--translation-only needs --translate-to LANGUAGE");
    LoadOptions lo;
    lo.threads = a->threads;
    lo.numerics = parse_numerics(a->numerics);
    lo.mmproj = a->mmproj;
    auto model = Model::load(a->model, lo);
    const Tokenizer& tok = model->require_tokenizer();
    if (!model->supports_audio())
      fail(a->model, " has no audio tower: transcription needs a multimodal Gemma 3n checkpoint");
    const std::vector<MediaEmbedding> clips = model->encode_audio_file_windows(a->audio, a->max_audio_seconds);
    TranscribeOptions to;
    to.language = a->language;
    to.translate_to = a->target;
    to.prompt = a->prompt;
    to.max_new_tokens = a->max_new_tokens;
    to.temperature = a->temperature;
    SessionOptions so;
    so.profile = a->profile;
    Session session(*model, so);
    const bool stream = a->format == "text";
    const std::string marker = a->target + ": ";
    std::vector<TranscriptSegment> segments;
    for (size_t i = 0; i < clips.size(); ++i) {
      const MediaEmbedding& clip = clips[i];
      if (a->verbose)
        std::fprintf(stderr, "[g3n] clip %zu/%zu: %s (%s, encoded in %.2f s)\n", i + 1, clips.size(),
                     clip.source.c_str(), clip.description.c_str(), clip.encode_seconds);
      to.seed = i;
      PromptEmbeddings placed;
      const GenerateRequest req = transcription_request(*model, tok, clip, to, placed);
      if (stream && i > 0) std::fputc(a->translation_only ? '\n' : ' ', stdout);
      // --translation-only: hold the text back until the "<target>: " marker, then stream the rest.
      std::string held;
      bool in_translation = !a->translation_only;
      const GenerateResult r = generate(session, tok, req, [&](const std::string& piece) {
        if (!stream) return true;
        if (in_translation) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
        } else {
          held += piece;
          const size_t at = held.find(marker);
          if (at != std::string::npos) {
            in_translation = true;
            std::fputs(held.c_str() + at + marker.size(), stdout);
          }
        }
        std::fflush(stdout);
        return true;
      });
      if (stream && !in_translation) std::fputs(held.c_str(), stdout);  // no marker: print what the model said
      segments.push_back({clip.offset, clip.offset + clip.duration,
                          a->translation_only ? translation_part(r.text, a->target) : r.text});
      if (a->verbose)
        std::fprintf(stderr, "\n[g3n] clip %zu: %zu tokens, prefill %.2f s, decode %.2f s, finish %s\n", i + 1,
                     r.tokens.size(), r.prefill_seconds, r.decode_seconds, r.finish_reason.c_str());
    }
    if (!stream) {
      std::fputs(format_transcript(segments, a->format).c_str(), stdout);
      return 0;
    }
    std::fputc('\n', stdout);
    return 0;
  };
}

}  // namespace g3n::tools
