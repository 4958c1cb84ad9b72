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
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::tools {
namespace {

const char* kNumberRules =
    "Follow these specific instructions for formatting the answer:\n"
    "* Only output the transcription, with no newlines.\n"
    "* When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven, and write 3 instead of "
    "three.";

// The instruction for one clip: automatic speech recognition, or (with a target language) speech
// translation in the chain-of-thought form (transcribe, then translate).
std::string transcription_prompt(const std::string& language, const std::string& target) {
  if (!target.empty()) {
    const std::string src = language.empty() ? std::string("its original language") : language;
    return "Transcribe the following speech segment in " + src + ", then translate it into " + target +
           ".\n\nWhen formatting the answer, first output the transcription in " + src +
           ", then one newline, then output the string '" + target + ": ', then the translation in " + target + ".";
  }
  if (language.empty()) return std::string("Transcribe the following speech segment in its original language.\n\n") + kNumberRules;
  return "Transcribe the following speech segment in " + language + " into " + language + " text.\n\n" + kNumberRules;
}

}  // namespace

Action register_transcribe(CLI::App& app) {
  struct Args {
    std::string model, audio, language, target, prompt;
    int threads = 0;
    int64_t max_new_tokens = 512;
    double max_audio_seconds = 3600;
    float temperature = 0.0f;
    bool verbose = false, translation_only = false;
    std::string profile;
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
  cmd->add_option("-n,--max-new-tokens", a->max_new_tokens, "Most tokens per 30 s clip")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  cmd->add_option("--max-audio-seconds", a->max_audio_seconds, "Longest recording accepted")
      ->check(CLI::Range(1.0, 86400.0));
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (default 0: greedy)")
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--profile", a->profile, "MatFormer profile of the text decoder");
  cmd->add_flag("-v,--verbose", a->verbose, "Print clip boundaries, encode and decode times");
  return [a] {
    if (a->translation_only && a->target.empty()) fail("--translation-only needs --translate-to LANGUAGE");
    LoadOptions lo;
    lo.threads = a->threads;
    auto model = Model::load(a->model, lo);
    const Tokenizer& tok = model->require_tokenizer();
    if (!model->supports_audio())
      fail(a->model, " has no audio tower: transcription needs a multimodal Gemma 3n checkpoint");
    const std::vector<MediaEmbedding> clips = model->encode_audio_file_windows(a->audio, a->max_audio_seconds);
    const std::string instruction = a->prompt.empty() ? transcription_prompt(a->language, a->target) : a->prompt;
    SessionOptions so;
    so.profile = a->profile;
    Session session(*model, so);
    const std::string marker = a->target + ": ";
    for (size_t i = 0; i < clips.size(); ++i) {
      const MediaEmbedding& clip = clips[i];
      if (a->verbose)
        std::fprintf(stderr, "[g3n] clip %zu/%zu: %s (%s, encoded in %.2f s)\n", i + 1, clips.size(),
                     clip.source.c_str(), clip.description.c_str(), clip.encode_seconds);
      const std::string text = render_chat({{"user", {{ChatItem::Audio, clip.source}, {ChatItem::Text, instruction}}}},
                                           /*add_generation_prompt=*/true);
      GenerateRequest req;
      req.prompt = tok.encode(expand_media_placeholders(text, 256, int(clip.tokens)), /*add_bos=*/false);
      const PromptEmbeddings placed = place_media(*model, req.prompt, {&clip});
      req.media = &placed;
      req.sampling.temperature = a->temperature;
      req.sampling.seed = i;
      req.sampling.vocab_limit = std::min<int64_t>(tok.sentencepiece_size(), 262144);
      req.max_new_tokens = a->max_new_tokens;
      req.stop_ids = {tok.eos_id(), tok.end_of_turn_id()};
      if (i > 0) std::fputc(a->translation_only ? '\n' : ' ', stdout);
      // --translation-only: hold the text back until the "<target>: " marker, then stream the rest.
      std::string held;
      bool in_translation = !a->translation_only;
      const GenerateResult r = generate(session, tok, req, [&](const std::string& piece) {
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
      if (!in_translation) std::fputs(held.c_str(), stdout);  // no marker: print what the model said
      if (a->verbose)
        std::fprintf(stderr, "\n[g3n] clip %zu: %zu tokens, prefill %.2f s, decode %.2f s, finish %s\n", i + 1,
                     r.tokens.size(), r.prefill_seconds, r.decode_seconds, r.finish_reason.c_str());
    }
    std::fputc('\n', stdout);
    return 0;
  };
}

}  // namespace g3n::tools
