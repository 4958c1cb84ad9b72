// generate() (runtime/generator.h) for sessions that share one model: the same decode loop, token for
// token (same sampler, streaming decoder, stop tokens / strings, limits), but every pass over the
// model (a prefill chunk, one decoded token) runs under `compute`, because the model's ThreadPool
// serves one parallel_for at a time. Slots therefore take turns token by token, and a long prompt
// is prefilled chunk by chunk (the chunk boundaries sync() would use, so the result is identical)
// instead of holding the others up for the whole prompt.
//
// Kept as a step loop of its own because it is also the shape batched decoding needs: the next
// step there is one pass that feeds the next token of every active slot together.
#pragma once
#include <functional>
#include <string>

#include "runtime/generator.h"
#include "server/slots.h"

namespace g3n::server {

struct StepHooks {
  // Text as it becomes final; returning false cancels (the client went away).
  std::function<bool(const std::string&)> on_text;
  // Checked before every pass over the model; true cancels (the server is stopping).
  std::function<bool()> cancelled;
  // Called after each sampled token with the seconds since the previous one (or since the start
  // of the call, for the first).
  std::function<void(int64_t index, double seconds)> on_token;
  // The decode step (token -> its logits); unset: session.feed under the compute lock. The server sets
  // its DecodeBatcher here so that slots decode together.
  std::function<const std::vector<float>&(Session&, int32_t)> decode;
};

// finish_reason as generate(), plus "cancelled" when on_text or cancelled() stopped it.
// `prefill_chunk`: the session's SessionOptions::max_chunk. Throws g3n::Error as generate() does.
// `media`: soft-token embeddings for sync() (then the prompt is prefilled in one turn).
GenerateResult generate_stepped(Session& session, const Tokenizer& tokenizer, const GenerateRequest& request,
                                FairMutex& compute, int64_t prefill_chunk, const StepHooks& hooks,
                                const PromptEmbeddings* media = nullptr);

}  // namespace g3n::server
