// Speech recognition and speech translation with Gemma 3n: Google's prompts, one request per clip of at
// most 30 s (a long recording comes as several clips: Model::encode_audio_*_windows), and the transcript
// formats users ask for (plain text, SubRip, WebVTT, JSON segments).
#pragma once
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "runtime/generator.h"

namespace g3n {

class Tokenizer;

struct TranscribeOptions {
  std::string language;        // spoken language, e.g. "English"; empty: the model decides
  std::string translate_to;    // empty: transcription only
  std::string prompt;          // replaces Google's instruction when not empty
  int64_t max_new_tokens = 512;
  float temperature = 0.0f;    // greedy by default
  uint64_t seed = 0;
};

// Google's instruction: ASR "Transcribe the following speech segment in L into L text." + formatting rules;
// with a target, the chain-of-thought speech translation form (transcription, newline, "T: ", translation).
std::string transcription_prompt(const std::string& language, const std::string& translate_to);

// The request for one clip: one user turn [audio, instruction], the clip's soft tokens placed in `placed`
// (which the request points to: keep it alive while generating).
GenerateRequest transcription_request(const Model& model, const Tokenizer& tokenizer, const MediaEmbedding& clip,
                                      const TranscribeOptions& options, PromptEmbeddings& placed);

// From a speech-translation answer, the translation: the text after the last "<target>: " marker
// (the whole answer, trimmed, when the model did not write one).
std::string translation_part(const std::string& answer, const std::string& translate_to);

struct TranscriptSegment {
  double start = 0, end = 0;  // seconds in the recording
  std::string text;
};

// "text" (segments joined by spaces), "srt", "vtt"; g3n::Error for anything else.
std::string format_transcript(const std::vector<TranscriptSegment>& segments, const std::string& format);

}  // namespace g3n
