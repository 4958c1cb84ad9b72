#include "server/openai_api.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <random>

#include "base/error.h"
#include "server/api_error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::server {
namespace {

using nlohmann::json;

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> number_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw ApiError(400, std::string(name) + " must be a number", name, "invalid_type");
  const double d = v->get<double>();
  if (!std::isfinite(d)) throw ApiError(400, std::string(name) + " must be a finite number", name, "invalid_value");
  return d;
}

std::optional<int64_t> integer_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();  // signed or unsigned that fits
  if (v->is_number_unsigned()) throw ApiError(400, std::string(name) + " is too large", name, "invalid_value");
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
  }
  throw ApiError(400, std::string(name) + " must be an integer", name, "invalid_type");
}

std::optional<bool> bool_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw ApiError(400, std::string(name) + " must be a boolean", name, "invalid_type");
  return v->get<bool>();
}

// The request's model: the served id or one of its MatFormer profiles (job.model_id, job.profile).
void check_model(const json& body, const ServedModel& model, Job& job) {
  job.model_id = model.id;
  const json* v = field(body, "model");
  if (!v) return;  // OpenAI requires it; a missing one means the served model
  if (!v->is_string()) throw ApiError(400, "model must be a string", "model", "invalid_type");
  const std::string name = v->get<std::string>();
  if (name.empty()) return;
  job.profile = profile_of(model, name);
  job.model_id = name;
}

}  // namespace

std::string profile_of(const ServedModel& model, const std::string& id) {
  if (id == model.id) return "";
  for (const auto& [name, spec] : model.profiles)
    if (id == name) return spec;
  std::string known = "'" + model.id + "'";
  for (const auto& p : model.profiles) known += ", '" + p.first + "'";
  throw ApiError(404, "The model '" + id + "' does not exist; this server serves " + known, "model", "model_not_found");
}

namespace {

// Fields g3n cannot honour: one 400 that names each of them.
void check_unsupported(const json& body, bool chat) {
  std::vector<std::pair<std::string, std::string>> bad;  // (field, why)
  if (auto n = integer_field(body, "n")) {
    if (*n < 1) throw ApiError(400, "n must be at least 1, got " + std::to_string(*n), "n", "invalid_value");
    if (*n > 1) bad.push_back({"n", "n > 1 (one choice per request)"});
  }
  if (auto b = integer_field(body, "best_of"); b && *b > 1) bad.push_back({"best_of", "best_of > 1"});
  if (const json* t = field(body, "tools"); t && !(t->is_array() && t->empty()))
    bad.push_back({"tools", "tools (no function calling)"});
  if (field(body, "functions")) bad.push_back({"functions", "functions (no function calling)"});
  if (const json* t = field(body, "tool_choice"); t && !(t->is_string() && *t == "none"))
    bad.push_back({"tool_choice", "tool_choice (no function calling)"});
  if (const json* t = field(body, "function_call"); t && !(t->is_string() && *t == "none"))
    bad.push_back({"function_call", "function_call (no function calling)"});
  if (const json* f = field(body, "response_format")) {
    const bool text = f->is_object() && f->contains("type") && (*f)["type"] == "text";
    if (!text) bad.push_back({"response_format", "response_format other than {\"type\": \"text\"}"});
  }
  if (const json* l = field(body, "logprobs")) {
    const bool off = (l->is_boolean() && !l->get<bool>()) || (!chat && l->is_number_integer() && l->get<int64_t>() == 0);
    if (!off) bad.push_back({"logprobs", "logprobs"});
  }
  if (const json* l = field(body, "top_logprobs"); l && !(l->is_number_integer() && l->get<int64_t>() == 0))
    bad.push_back({"top_logprobs", "top_logprobs"});
  if (const json* l = field(body, "logit_bias"); l && !(l->is_object() && l->empty()))
    bad.push_back({"logit_bias", "logit_bias"});
  if (const json* e = field(body, "echo"); e && !(e->is_boolean() && !e->get<bool>())) bad.push_back({"echo", "echo"});
  if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get_ref<const std::string&>().empty()))
    bad.push_back({"suffix", "suffix"});
  if (field(body, "audio")) bad.push_back({"audio", "audio output"});
  if (field(body, "prediction")) bad.push_back({"prediction", "prediction"});
  if (const json* m = field(body, "modalities"); m && *m != json::array({"text"}))
    bad.push_back({"modalities", "modalities other than [\"text\"]"});
  if (bad.empty()) return;
  std::string msg = "unsupported parameter" + std::string(bad.size() > 1 ? "s: " : ": ");
  for (size_t i = 0; i < bad.size(); ++i) msg += (i ? ", " : "") + bad[i].second;
  throw ApiError(400, msg, bad[0].first, "unsupported_parameter");
}

// A double as a float without overflowing the cast (out-of-range values stay out of range for validate()).
float to_float(double d) { return float(std::clamp(d, -1e30, 1e30)); }

// Sampling fields over the checkpoint's defaults; ranges as SamplingParams::validate() checks them.
SamplingParams parse_sampling(const json& body, const ServedModel& model) {
  SamplingParams p = model.defaults;
  if (auto v = number_field(body, "temperature")) p.temperature = to_float(*v);
  if (auto v = number_field(body, "top_p")) p.top_p = to_float(*v);
  if (auto v = integer_field(body, "top_k")) {
    if (*v < 0 || *v > std::numeric_limits<int>::max())
      throw ApiError(400, "top_k must be in [0, 2^31), got " + std::to_string(*v), "top_k", "invalid_value");
    p.top_k = int(*v);
  }
  if (auto v = number_field(body, "min_p")) p.min_p = to_float(*v);
  if (auto v = number_field(body, "presence_penalty")) p.presence_penalty = to_float(*v);
  if (auto v = number_field(body, "frequency_penalty")) p.frequency_penalty = to_float(*v);
  if (auto v = number_field(body, "repetition_penalty")) p.repetition_penalty = to_float(*v);
  if (auto v = integer_field(body, "seed")) {
    p.seed = uint64_t(*v);
  } else {
    static std::mutex mu;
    static std::mt19937_64 rng{std::random_device{}()};
    std::lock_guard<std::mutex> lock(mu);
    p.seed = rng();
  }
  p.vocab_limit = std::min<int64_t>(model.tokenizer->sentencepiece_size(), 262144);
  try {
    p.validate();
  } catch (const Error& e) {
    const std::string msg = e.what();
    throw ApiError(400, msg, msg.substr(0, msg.find(' ')), "invalid_value");
  }
  return p;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 16) throw ApiError(400, "stop takes at most 16 strings", "stop", "invalid_value");
    for (const auto& s : *v) {
      if (!s.is_string()) throw ApiError(400, "stop must be a string or a list of strings", "stop", "invalid_type");
      out.push_back(s.get<std::string>());
    }
  } else {
    throw ApiError(400, "stop must be a string or a list of strings", "stop", "invalid_type");
  }
  for (const auto& s : out)
    if (s.empty()) throw ApiError(400, "stop strings must not be empty", "stop", "invalid_value");
  return out;
}

// Everything the two endpoints share; the prompt must be set already.
void finish_job(Job& job, const json& body, const ServedModel& model, const char* prompt_param) {
  const Tokenizer& tok = *model.tokenizer;
  job.gen.sampling = parse_sampling(body, model);
  job.gen.stop_strings = parse_stop(body);
  job.gen.stop_ids = {tok.eos_id(), tok.end_of_turn_id()};
  job.stream = bool_field(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw ApiError(400, "stream_options must be an object", "stream_options", "invalid_type");
    job.include_usage = bool_field(*so, "include_usage").value_or(false);
  }
  const int64_t P = int64_t(job.gen.prompt.size()), C = model.context;
  if (P == 0) throw ApiError(400, std::string(prompt_param) + " is empty", prompt_param, "invalid_value");
  if (P >= C)
    throw ApiError(400,
                   "the prompt has " + std::to_string(P) + " tokens; the model's context is " + std::to_string(C) +
                       " tokens",
                   prompt_param, "context_length_exceeded");
  const char* limit_name = "max_completion_tokens";
  std::optional<int64_t> limit = integer_field(body, limit_name);
  if (!limit) {
    limit_name = "max_tokens";
    limit = integer_field(body, limit_name);
  }
  if (limit) {
    if (*limit < 1)
      throw ApiError(400, std::string(limit_name) + " must be at least 1, got " + std::to_string(*limit), limit_name,
                     "invalid_value");
    if (*limit > C - P)
      throw ApiError(400,
                     "the prompt has " + std::to_string(P) + " tokens and " + limit_name + " asks for " +
                         std::to_string(*limit) + " more: " + std::to_string(P + *limit) +
                         " is beyond the model's context of " + std::to_string(C) + " tokens",
                     limit_name, "context_length_exceeded");
    job.gen.max_new_tokens = *limit;
  } else {
    job.gen.max_new_tokens = C - P;
  }
}

}  // namespace

Job parse_chat_request(const json& body, const ServedModel& model) {
  Job job;
  check_model(body, model, job);
  const json* messages = field(body, "messages");
  if (!messages) throw ApiError(400, "messages is required", "messages", "missing_required_parameter");
  if (!messages->is_array()) throw ApiError(400, "messages must be a list of messages", "messages", "invalid_type");
  if (messages->empty()) throw ApiError(400, "messages must not be empty", "messages", "invalid_value");
  check_unsupported(body, true);

  // "developer" is OpenAI's newer name for the system role.
  json msgs = *messages;
  for (auto& m : msgs)
    if (m.is_object() && m.contains("role") && m["role"] == "developer") m["role"] = "system";
  std::vector<ChatMessage> chat;
  std::string prompt;
  try {
    chat = parse_openai_messages(msgs);
    for (size_t i = 0; i < chat.size(); ++i)
      if (chat[i].role != "system" && chat[i].role != "user" && chat[i].role != "assistant")
        fail("messages[", i, "] has role '", chat[i].role, "' (expected system, developer, user or assistant)");
    prompt = render_chat(chat, /*add_generation_prompt=*/true);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  }
  job.chat = true;
  job.media = collect_media(msgs, model.remote_media);
  std::vector<MediaEmbedding> encoded;
  if (!job.media.empty()) {
    if (!model.encode_media || !model.model)
      throw ApiError(400, "this server does not take image or audio input", job.media[0].param, "unsupported_media");
    encoded = model.encode_media(job.media);
    int image_tokens = 256, audio_tokens = 188;
    for (const auto& m : encoded) (m.kind == MediaEmbedding::Kind::Image ? image_tokens : audio_tokens) = int(m.tokens);
    prompt = expand_media_placeholders(prompt, image_tokens, audio_tokens);
  }
  job.gen.prompt = model.tokenizer->encode(prompt, /*add_bos=*/false);
  if (!encoded.empty()) {
    std::vector<const MediaEmbedding*> ptrs;
    for (const auto& m : encoded) ptrs.push_back(&m);
    try {
      job.embeddings = place_media(*model.model, job.gen.prompt, ptrs);
    } catch (const Error& e) {
      // The text itself spelled placeholder tokens: their count no longer matches the media.
      throw ApiError(400, e.what(), "messages", "invalid_value");
    }
  }
  finish_job(job, body, model, "messages");
  return job;
}

Job parse_completion_request(const json& body, const ServedModel& model) {
  Job job;
  check_model(body, model, job);
  const json* prompt = field(body, "prompt");
  if (!prompt) throw ApiError(400, "prompt is required", "prompt", "missing_required_parameter");
  check_unsupported(body, false);
  job.chat = false;
  const Tokenizer& tok = *model.tokenizer;
  auto ids_from = [&](const json& list) {
    std::vector<int32_t> ids;
    for (const auto& v : list) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.size())
        throw ApiError(400, "prompt: token ids must be integers in [0, " + std::to_string(tok.size()) + ")", "prompt",
                       "invalid_value");
      ids.push_back(int32_t(v.get<int64_t>()));
    }
    return ids;
  };
  auto encode = [&](const std::string& text) {
    // A raw prompt gets <bos> first, unless it spells it itself.
    return tok.encode(text, /*add_bos=*/text.rfind("<bos>", 0) != 0);
  };
  const json* p = prompt;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    if (p->get_ref<const std::string&>().empty()) throw ApiError(400, "prompt is empty", "prompt", "invalid_value");
    job.gen.prompt = encode(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    job.gen.prompt = ids_from(*p);
  } else if (p->is_array() && p->size() > 1) {
    throw ApiError(400, "unsupported parameter: prompt with more than one entry (one completion per request)",
                   "prompt", "unsupported_parameter");
  } else {
    throw ApiError(400, "prompt must be a string, a list of token ids, or a list with one of those", "prompt",
                   "invalid_type");
  }
  finish_job(job, body, model, "prompt");
  return job;
}

std::string make_id(const char* prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t a, b;
  {
    std::lock_guard<std::mutex> lock(mu);
    a = rng();
    b = rng();
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%016llx%08llx", prefix, (unsigned long long)a, (unsigned long long)(b & 0xffffffffu));
  return buf;
}

std::string openai_finish_reason(const std::string& finish) { return finish == "stop" ? "stop" : "length"; }

json usage_json(const GenerateResult& r) {
  const int64_t n = int64_t(r.tokens.size());
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", n},
          {"total_tokens", r.prompt_tokens + n},
          {"prompt_tokens_details", {{"cached_tokens", r.reused_tokens}}}};
}

json completion_response(const Job& job, [[maybe_unused]] const ServedModel& model, const std::string& id, int64_t created,
                         const GenerateResult& r) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(r.finish_reason)}};
  if (job.chat)
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  else
    choice["text"] = r.text;
  return {{"id", id},
          {"object", job.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", job.model_id},
          {"system_fingerprint", "g3n-0.1.0"},
          {"choices", json::array({choice})},
          {"usage", usage_json(r)}};
}

json stream_chunk(const Job& job, [[maybe_unused]] const ServedModel& model, const std::string& id, int64_t created,
                  const std::string* text, bool first, const GenerateResult* finish) {
  json choice = {{"index", 0}, {"logprobs", nullptr},
                 {"finish_reason", finish ? json(openai_finish_reason(finish->finish_reason)) : json(nullptr)}};
  if (job.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (text) delta["content"] = *text;
    else if (first) delta["content"] = "";
    choice["delta"] = delta;
  } else {
    choice["text"] = text ? *text : std::string();
  }
  json j = {{"id", id},
            {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", job.model_id},
            {"system_fingerprint", "g3n-0.1.0"},
            {"choices", json::array({choice})}};
  if (finish) j["usage"] = usage_json(*finish);
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace g3n::server
