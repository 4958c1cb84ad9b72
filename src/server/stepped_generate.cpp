#include "server/stepped_generate.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "base/error.h"
#include "runtime/stop_matcher.h"
#include "tokenizer/tokenizer.h"

namespace g3n::server {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


}  // namespace

GenerateResult generate_stepped(Session& session, const Tokenizer& tokenizer, const GenerateRequest& req,
                                FairMutex& compute, int64_t prefill_chunk, const StepHooks& hooks,
                                const PromptEmbeddings* media) {
  if (media && media->empty()) media = nullptr;
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  if (req.prompt.empty()) fail("the prompt is empty");
  if (req.max_new_tokens < 1) fail("max_new_tokens must be at least 1");
  Sampler sampler(req.sampling);
  const int64_t context = session.context_length();
  r.prompt_tokens = int64_t(req.prompt.size());
  if (r.prompt_tokens >= context)
    fail("the prompt has ", r.prompt_tokens, " tokens; the model's context is ", context, " tokens");
  auto cancelled = [&] { return hooks.cancelled && hooks.cancelled(); };

  const auto t0 = clock::now();
  // Prefill chunk by chunk, each chunk one turn on the model. sync() keeps what the session shares
  // with the prompt (unless the rewind is longer than a chunk: then it starts over) and feeds the
  // rest in chunks of `prefill_chunk` from there; syncing to the same boundaries one at a time
  // computes exactly the same thing.
  const int64_t chunk = std::max<int64_t>(1, prefill_chunk);
  size_t common = common_prefix(session.tokens(), req.prompt);
  if (common == req.prompt.size()) --common;
  if (session.position() - int64_t(common) > chunk) common = 0;
  int64_t reused = -1;
  const std::vector<float>* logits = nullptr;
  std::vector<int32_t> part;
  for (size_t end = common + size_t(chunk); !media && end < req.prompt.size(); end += size_t(chunk)) {
    if (cancelled()) {
      r.finish_reason = "cancelled";
      return r;
    }
    part.assign(req.prompt.begin(), req.prompt.begin() + std::ptrdiff_t(end));
    std::lock_guard<FairMutex> lock(compute);
    session.sync(part);
    if (reused < 0) reused = session.reused_tokens();
  }
  if (cancelled()) {
    r.finish_reason = "cancelled";
    return r;
  }
  {
    std::lock_guard<FairMutex> lock(compute);
    logits = &session.sync(req.prompt, media);
    if (reused < 0) reused = session.reused_tokens();
  }
  r.reused_tokens = reused;
  r.prefill_seconds = seconds_since(t0);

  const int64_t vocab = int64_t(logits->size());
  Tokenizer::StreamDecoder stream(tokenizer);
  StopMatcher stops(req.stop_strings);
  bool keep_going = true, stopped_by_string = false;
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    r.text += text;
    if (keep_going && hooks.on_text && !hooks.on_text(text)) keep_going = false;
  };

  const auto t1 = clock::now();
  auto last = t0;
  r.finish_reason = "length";
  for (int64_t i = 0; i < req.max_new_tokens && keep_going; ++i) {
    const int32_t next = sampler.sample(logits->data(), vocab, r.tokens);
    r.tokens.push_back(next);
    const auto now = clock::now();
    if (i == 0) r.first_token_seconds = std::chrono::duration<double>(now - t0).count();
    if (hooks.on_token) hooks.on_token(i, std::chrono::duration<double>(now - last).count());
    last = now;
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
    if (!keep_going || cancelled()) break;
    if (hooks.decode) {
      logits = &hooks.decode(session, next);
    } else {
      std::lock_guard<FairMutex> lock(compute);
      logits = &session.feed({next});
    }
  }
  if (!keep_going || (cancelled() && r.finish_reason == "length" && int64_t(r.tokens.size()) < req.max_new_tokens)) {
    r.finish_reason = "cancelled";
  } else if (!stopped_by_string) {
    bool stopped = false;
    emit(stops.push(stream.finish(), stopped));
    if (!stopped) emit(stops.flush());
  }
  r.decode_seconds = seconds_since(t1);
  return r;
}

}  // namespace g3n::server
