#include "runtime/transcribe.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n {

std::string transcription_prompt(const std::string& language, const std::string& target) {
  static const char* rules =
      "Follow these specific instructions for formatting the answer:\n"
      "* Only output the transcription, with no newlines.\n"
      "* When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven, and write 3 instead "
      "of three.";
  if (!target.empty()) {
    const std::string src = language.empty() ? std::string("its original language") : language;
    return "Transcribe the following speech segment in " + src + ", then translate it into " + target +
           ".\n\nWhen formatting the answer, first output the transcription in " + src +
           ", then one newline, then output the string '" + target + ": ', then the translation in " + target + ".";
  }
  if (language.empty()) return std::string("Transcribe the following speech segment in its original language.\n\n") + rules;
  return "Transcribe the following speech segment in " + language + " into " + language + " text.\n\n" + rules;
}

GenerateRequest transcription_request(const Model& model, const Tokenizer& tok, const MediaEmbedding& clip,
                                      const TranscribeOptions& o, PromptEmbeddings& placed) {
  G3N_CHECK(clip.kind == MediaEmbedding::Kind::Audio, clip.source, " is not an audio clip");
  const std::string instruction = o.prompt.empty() ? transcription_prompt(o.language, o.translate_to) : o.prompt;
  const std::string text =
      render_chat({{"user", {{ChatItem::Audio, clip.source}, {ChatItem::Text, instruction}}}}, /*add_generation_prompt=*/true);
  GenerateRequest req;
  req.prompt = tok.encode(expand_media_placeholders(text, 256, int(clip.tokens)), /*add_bos=*/false);
  placed = place_media(model, req.prompt, {&clip});
  req.media = &placed;
  req.sampling.temperature = o.temperature;
  req.sampling.seed = o.seed;
  req.sampling.vocab_limit = std::min<int64_t>(tok.sentencepiece_size(), 262144);
  req.sampling.validate();
  req.max_new_tokens = o.max_new_tokens;
  req.stop_ids = {tok.eos_id(), tok.end_of_turn_id()};
  return req;
}

std::string translation_part(const std::string& answer, const std::string& target) {
  const std::string marker = target + ": ";
  const size_t at = answer.rfind(marker);
  return python_strip(at == std::string::npos ? answer : answer.substr(at + marker.size()));
}

namespace {

std::string timestamp(double seconds, char decimal) {
  const auto ms = int64_t(std::llround(std::max(0.0, seconds) * 1000.0));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld%c%03lld", (long long)(ms / 3600000), (long long)(ms / 60000 % 60),
                (long long)(ms / 1000 % 60), decimal, (long long)(ms % 1000));
  return buf;
}

}  // namespace

std::string format_transcript(const std::vector<TranscriptSegment>& segments, const std::string& format) {
  std::string out;
  if (format == "text") {
    for (const auto& s : segments) {
      const std::string t = python_strip(s.text);
      if (t.empty()) continue;
      if (!out.empty()) out += ' ';
      out += t;
    }
    return out;
  }
  if (format != "srt" && format != "vtt") fail("unknown transcript format '", format, "' (expected text, srt or vtt)");
  const bool srt = format == "srt";
  if (!srt) out = "WEBVTT\n\n";
  int n = 0;
  for (const auto& s : segments) {
    if (srt) out += std::to_string(++n) + "\n";
    out += timestamp(s.start, srt ? ',' : '.') + " --> " + timestamp(s.end, srt ? ',' : '.') + "\n";
    out += python_strip(s.text) + "\n\n";
  }
  return out;
}

}  // namespace g3n
