// The decode loop shared by the CLI and the server: prefill (reusing the session's cached prefix),
// sample, stream text out, stop on end-of-turn / EOS / stop strings / token limit / context limit.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "runtime/sampler.h"

namespace g3n {

class Tokenizer;

struct GenerateRequest {
  std::vector<int32_t> prompt;          // the whole sequence (the session reuses what it already holds)
  SamplingParams sampling;
  int64_t max_new_tokens = 256;
  std::vector<int32_t> stop_ids = {1, 106};  // <eos>, <end_of_turn>
  std::vector<std::string> stop_strings;
  const PromptEmbeddings* media = nullptr;  // soft tokens of images / audio in the prompt (place_media)
};

struct GenerateResult {
  std::string text;
  std::vector<int32_t> tokens;  // generated, including a stop token that ended it
  std::string finish_reason;    // "stop" (stop token or string), "length" (max_new_tokens), "context"
  int64_t prompt_tokens = 0, reused_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0, first_token_seconds = 0;
};

// on_text receives text as it becomes final (whole UTF-8 characters, stop strings held back until
// they are ruled out); returning false cancels generation.
GenerateResult generate(Session& session, const Tokenizer& tokenizer, const GenerateRequest& request,
                        const std::function<bool(const std::string&)>& on_text = {});

}  // namespace g3n
