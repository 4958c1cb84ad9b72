// OpenAI's request and response schemas for /v1/chat/completions and /v1/completions: a request body
// becomes a Job (tokenized prompt, sampling, limits), checked field by field (ApiError 400 naming the
// field, 404 for another model); results become completion objects or SSE chunks.
#pragma once
#include <utility>
#include <functional>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "runtime/generator.h"
#include "server/media.h"

namespace g3n {
class Tokenizer;
}

namespace g3n::server {

// What requests are checked against.
struct ServedModel {
  std::string id;
  int64_t context = 0;           // max_position_embeddings
  SamplingParams defaults;       // generation_config.json (temperature, top_k, top_p, ...)
  const Tokenizer* tokenizer = nullptr;
  int64_t created = 0;           // unix time the server started
  const Model* model = nullptr;
  RemoteMediaPolicy remote_media;  // --allow-remote-media
  // MatFormer sizes served from the one loaded model: (model id, profile spec), e.g. ("g3n/E2B", "E2B").
  std::vector<std::pair<std::string, std::string>> profiles;
  // Encodes a request's images / audio (the server runs it under its compute lock); unset: media refused.
  std::function<std::vector<MediaEmbedding>(const std::vector<MediaPart>&)> encode_media;
};

struct Job {
  bool chat = true;
  bool stream = false;
  bool include_usage = false;    // stream_options.include_usage: one more chunk, choices [] + usage
  GenerateRequest gen;           // prompt, sampling, max_new_tokens, stop ids / strings
  std::vector<MediaPart> media;  // decoded image / audio parts (chat), in prompt order
  PromptEmbeddings embeddings;   // their soft tokens at the placeholder positions of gen.prompt
  std::string model_id;          // the id the request named (the served one when it named none)
  std::string profile;           // its MatFormer profile spec ("" = the whole model)
};

// The profile spec of a model id: "" for the served model itself; throws ApiError 404 for an unknown id.
std::string profile_of(const ServedModel& model, const std::string& id);

// Throw ApiError (400 / 404) for anything the request gets wrong or asks for that g3n cannot do.
Job parse_chat_request(const nlohmann::json& body, const ServedModel& model);
Job parse_completion_request(const nlohmann::json& body, const ServedModel& model);

// "chatcmpl-..." / "cmpl-..." ids.
std::string make_id(const char* prefix);

// OpenAI has no "context" / "cancelled": both are "length".
std::string openai_finish_reason(const std::string& finish);

nlohmann::json usage_json(const GenerateResult& r);

nlohmann::json completion_response(const Job& job, const ServedModel& model, const std::string& id, int64_t created,
                                   const GenerateResult& r);

// One streamed chunk. `text`: the delta (chat: the first chunk carries role "assistant" and no
// text); `finish`: non-null on the last chunk, which also carries `usage` when given.
nlohmann::json stream_chunk(const Job& job, const ServedModel& model, const std::string& id, int64_t created,
                            const std::string* text, bool first, const GenerateResult* finish);

// "data: <json>\n\n"
std::string sse(const nlohmann::json& j);

// j.dump() that never throws on bad UTF-8 (replaces it).
std::string dump(const nlohmann::json& j);

}  // namespace g3n::server
