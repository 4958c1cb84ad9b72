#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "base/error.h"
#include "model/config.h"
#include "runtime/stop_matcher.h"
#include "tokenizer/tokenizer.h"

namespace g3n {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

GenerateResult generate(Session& session, const Tokenizer& tokenizer, const GenerateRequest& req,
                        const std::function<bool(const std::string&)>& on_text) {
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  if (req.prompt.empty()) fail("the prompt is empty");
  if (req.max_new_tokens < 1) fail("max_new_tokens must be at least 1");
  Sampler sampler(req.sampling);
  const int64_t context = session.context_length();
  r.prompt_tokens = int64_t(req.prompt.size());
  if (r.prompt_tokens >= context)
    fail("the prompt has ", r.prompt_tokens, " tokens; the model's context is ", context, " tokens");

  const auto t0 = clock::now();
  const std::vector<float>* logits = &session.sync(req.prompt, req.media);
  r.reused_tokens = session.reused_tokens();
  r.prefill_seconds = seconds_since(t0);

  const int64_t vocab = int64_t(logits->size());
  Tokenizer::StreamDecoder stream(tokenizer);
  StopMatcher stops(req.stop_strings);
  bool keep_going = true, stopped_by_string = false;
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    r.text += text;
    if (on_text && !on_text(text)) keep_going = false;
  };

  const auto t1 = clock::now();
  r.finish_reason = "length";
  for (int64_t i = 0; i < req.max_new_tokens && keep_going; ++i) {
    const int32_t next = sampler.sample(logits->data(), vocab, r.tokens);
    r.tokens.push_back(next);
    if (i == 0) r.first_token_seconds = seconds_since(t0);
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), next) != req.stop_ids.end()) {
      r.finish_reason = "stop";
      break;
    }
    emit(stops.push(stream.push(next), stopped_by_string));
    if (stopped_by_string) {
      r.finish_reason = "stop";
      break;
    }
    if (i + 1 == req.max_new_tokens) break;
    if (session.position() + 1 >= context) {
      r.finish_reason = "context";
      break;
    }
    logits = &session.feed({next});
  }
  if (!stopped_by_string) {
    bool stopped = false;
    emit(stops.push(stream.finish(), stopped));
    if (!stopped) emit(stops.flush());
  }
  r.decode_seconds = seconds_since(t1);
  return r;
}

}  // namespace g3n
