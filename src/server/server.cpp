#include "server/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "model/config.h"
#include "model/matformer.h"
#include "model/text_decoder.h"
#include "server/api_error.h"
#include "server/json_guard.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/slots.h"
#include "server/decode_batcher.h"
#include "server/stepped_generate.h"
#include "server/transcription.h"
#include "tokenizer/tokenizer.h"

namespace g3n::server {
namespace {

using nlohmann::json;
using clock = std::chrono::steady_clock;

std::string endpoint_label(const std::string& path) {
  for (const char* p : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  if (path == "/index.html") return "/";
  return "other";
}

// The MatFormer sizes /v1/models offers besides the whole model: for an E4B-structured Gemma 3n, every
// published configuration the weights support ("<id>/E2B", "<id>/E2.98B-layer", "<id>/E3.24B-block", ...);
// plus --profile NAME=SPEC ones ("<id>/NAME").
std::vector<std::pair<std::string, std::string>> served_profiles(const Model& m, const std::string& id,
                                                                 const std::vector<std::string>& extra) {
  std::vector<std::pair<std::string, std::string>> out;
  const TextConfig& c = m.config().text;
  if (!c.is_gemma3n()) {
    if (!extra.empty()) fail("--profile: MatFormer profiles apply to Gemma 3n models only");
    return out;
  }
  bool quantized = false;
  for (const TensorView* t : m.decoder().weights().core_tensors()) quantized = quantized || dtype_is_quantized(t->dtype);
  for (const std::string& name : published_profile_names()) {
    if (name == "Main model") continue;
    std::string alias = name;
    if (name == "Config for official E2B Model") alias = "E2B";
    else if (name.rfind("Config for ", 0) == 0) {
      alias = name.substr(11);  // "E2.98B (layer-level)" -> "E2.98B-layer"
      const size_t sp = alias.find(" (");
      if (sp != std::string::npos) alias = alias.substr(0, sp) + "-" + alias.substr(sp + 2, alias.find('-', sp) - sp - 2);
    }
    try {
      const MatformerProfile p = resolve_profile(name, c);
      if (p == full_profile(c)) continue;
      validate_profile(p, c, quantized);
      out.emplace_back(id + "/" + alias, name);
    } catch (const Error&) {
      // not this model's structure (e.g. a 30-layer E2B has no E4B sub-models)
    }
  }
  for (const std::string& e : extra) {
    const size_t eq = e.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == e.size())
      fail("--profile '", e, "': expected NAME=SPEC, e.g. small=skip=20-24;ffn=8192");
    const std::string spec = e.substr(eq + 1);
    const MatformerProfile p = resolve_profile(spec, c);  // errors name the problem
    validate_profile(p, c, quantized);
    out.emplace_back(id + "/" + e.substr(0, eq), spec);
  }
  return out;
}

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status(), e.body()); }

bool same_secret(const std::string& a, const std::string& b) {
  // Constant time in the length of the longer string.
  unsigned diff = unsigned(a.size() != b.size());
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    diff |= unsigned((i < a.size() ? uint8_t(a[i]) : 0) ^ (i < b.size() ? uint8_t(b[i]) : 0));
  return diff == 0;
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

}  // namespace

struct Server::Impl {
  const Model& model;
  ServerOptions opt;
  ServedModel served;
  Metrics metrics;
  SlotPool slots;
  FairMutex compute;
  DecodeBatcher batcher{[this](const std::function<void()>& f) {
    std::lock_guard<FairMutex> lock(compute);
    f();
  }};
  httplib::Server http;
  std::atomic<bool> stopping{false};
  int port = -1;

  Impl(const Model& m, const ServerOptions& o)
      : model(m), opt(o), slots(m, std::max(1, o.parallel), std::max(0, o.queue)) {
    served.id = opt.model_id.empty() ? std::string("g3n") : opt.model_id;
    served.context = m.config().text.max_position_embeddings;
    served.defaults = opt.defaults;
    served.tokenizer = &m.require_tokenizer();
    served.model = &m;
    served.remote_media.allow = opt.allow_remote_media;
    served.remote_media.max_bytes = opt.max_body_bytes;
    served.profiles = served_profiles(m, served.id, opt.profiles);
    served.encode_media = [this](const std::vector<MediaPart>& parts) {
      std::lock_guard<FairMutex> lock(compute);  // the encoders use the model's thread pool
      return encode_media(model, parts);
    };
    served.created = unix_now();
    metrics.slots = slots.size();
    const int threads = opt.http_threads > 0 ? opt.http_threads : slots.size() + std::max(0, opt.queue) + 8;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_keep_alive_timeout(5);
    http.set_read_timeout(30);
    http.set_write_timeout(30);
    routes();
  }

  // Runs a handler, turning exceptions into OpenAI error objects.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const ApiError& e) {
      send_error(res, e);
      if (e.status() == 503) res.set_header("Retry-After", std::to_string(opt.retry_after_seconds));
    } catch (const Error& e) {
      send_error(res, ApiError(400, e.what()));
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
    }
  }

  void check_auth(const httplib::Request& req) const {
    if (opt.api_key.empty()) return;
    const std::string h = req.get_header_value("Authorization");
    if (h.empty())
      throw ApiError(401, "Missing API key: send it as the header 'Authorization: Bearer <key>'", "", "invalid_api_key");
    const std::string prefix = "Bearer ";
    if (h.compare(0, prefix.size(), prefix) != 0 || !same_secret(h.substr(prefix.size()), opt.api_key))
      throw ApiError(401, "Incorrect API key provided", "", "invalid_api_key");
  }

  // The body, at most max_body_bytes. A larger Content-Length gets 413 from httplib before anything
  // is kept (it discards the body); a larger chunked body is discarded from the limit on, up to
  // 64 MiB more (so that the client reads the 413 rather than a reset connection), then cut off.
  std::string read_body(httplib::Response& res, const httplib::ContentReader& reader) const {
    std::string body;
    bool too_big = false;
    uint64_t discarded = 0;
    const bool ok = reader([&](const char* data, size_t len) {
      if (too_big || body.size() + len > opt.max_body_bytes) {
        too_big = true;
        discarded += len;
        return discarded <= (uint64_t(64) << 20);
      }
      body.append(data, len);
      return true;
    });
    if (too_big || res.status == 413) {
      res.set_header("Connection", "close");
      throw ApiError(413,
                     "the request body is larger than this server's limit of " + std::to_string(opt.max_body_bytes) +
                         " bytes (--max-body-bytes)",
                     "", "request_too_large");
    }
    if (!ok) throw ApiError(400, "could not read the request body", "", "invalid_body");
    return body;
  }

  GenerateResult run_job(SlotPool::Lease& lease, const Job& job, clock::time_point arrival,
                         std::function<bool(const std::string&)> on_text) {
    StepHooks hooks;
    hooks.on_text = std::move(on_text);
    hooks.cancelled = [this] { return stopping.load(); };
    hooks.decode = [this](Session& session, int32_t token) -> const std::vector<float>& {
      return batcher.step(session, token);
    };
    hooks.on_token = [&](int64_t i, double seconds) {
      if (i == 0)
        metrics.time_to_first_token.observe(std::chrono::duration<double>(clock::now() - arrival).count());
      else
        metrics.time_per_output_token.observe(seconds);
    };
    if (model.config().text.is_gemma3n()) {
      // Elastic execution: this slot's session runs the request's size; the KV cache stays when the two
      // sizes share every cache-writing layer, else the prompt is prefilled again (exact either way).
      std::lock_guard<FairMutex> lock(compute);
      lease.session().set_profile(job.profile.empty() ? "full" : job.profile);
    }
    DecodeBatcher::Membership member(batcher);
    GenerateResult r = generate_stepped(lease.session(), *served.tokenizer, job.gen, compute,
                                        lease.session().prefill_chunk(), hooks, &job.embeddings);
    metrics.prompt_tokens += uint64_t(r.prompt_tokens);
    metrics.reused_prompt_tokens += uint64_t(std::max<int64_t>(0, r.reused_tokens));
    metrics.generated_tokens += r.tokens.size();
    if (r.finish_reason == "cancelled") ++metrics.cancelled;
    return r;
  }

  void completions(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                   bool chat) {
    const auto arrival = clock::now();
    const std::string body = read_body(res, reader);
    check_auth(req);
    const json j = parse_request_body(body);
    Job job = chat ? parse_chat_request(j, served) : parse_completion_request(j, served);
    std::unique_ptr<SlotPool::Lease> lease = slots.acquire(job.gen.prompt);
    if (!lease) {
      if (stopping) throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
      throw ApiError(503,
                     "the server is busy: " + std::to_string(slots.size()) + " slots are generating and " +
                         std::to_string(opt.queue) + " requests are waiting (--parallel, --queue); retry later",
                     "", "server_busy");
    }
    const std::string id = make_id(chat ? "chatcmpl" : "cmpl");
    const int64_t created = unix_now();
    if (!job.stream) {
      GenerateResult r = run_job(*lease, job, arrival, {});
      lease.reset();
      if (r.finish_reason == "cancelled") throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
      send_json(res, 200, completion_response(job, served, id, created, r));
      return;
    }
    struct Stream {
      std::unique_ptr<SlotPool::Lease> lease;
      Job job;
      std::string id;
      int64_t created;
      clock::time_point arrival;
    };
    auto st = std::make_shared<Stream>(Stream{std::move(lease), std::move(job), id, created, arrival});
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st](size_t, httplib::DataSink& sink) {
          bool ok = true;
          auto write = [&](const std::string& s) {
            if (ok && !sink.write(s.data(), s.size())) ok = false;
            return ok;
          };
          const Job& job = st->job;
          if (job.chat) write(sse(stream_chunk(job, served, st->id, st->created, nullptr, true, nullptr)));
          GenerateResult r;
          try {
            r = run_job(*st->lease, job, st->arrival, [&](const std::string& text) {
              return write(sse(stream_chunk(job, served, st->id, st->created, &text, false, nullptr)));
            });
          } catch (const std::exception& e) {
            st->lease.reset();
            write(sse(ApiError(dynamic_cast<const Error*>(&e) ? 400 : 500, e.what()).body()));
            write("data: [DONE]\n\n");
            if (ok) sink.done();
            return ok;
          }
          st->lease.reset();  // the slot is free as soon as generation ends
          if (!ok || r.finish_reason == "cancelled") return false;  // the client went away / shutting down
          write(sse(stream_chunk(job, served, st->id, st->created, nullptr, false, &r)));
          if (job.include_usage)
            write(sse({{"id", st->id},
                       {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
                       {"created", st->created},
                       {"model", served.id},
                       {"choices", json::array()},
                       {"usage", usage_json(r)}}));
          write("data: [DONE]\n\n");
          if (!ok) return false;
          sink.done();
          return true;
        },
        [st](bool) { st->lease.reset(); });
  }

  // /v1/audio/transcriptions and /v1/audio/translations: the recording is cut into clips of at most 30 s
  // (as `g3n transcribe`), each clip one greedy request on a slot; segments keep the clips' times.
  void transcriptions(const httplib::Request& req, httplib::Response& res, bool translate) {
    const auto arrival = clock::now();
    check_auth(req);
    TranscriptionJob job = parse_transcription_request(req, translate);
    const std::string profile = job.model.empty() ? std::string() : profile_of(served, job.model);  // 404 if unknown
    if (!model.supports_audio())
      throw ApiError(400, "this model has no audio tower, so it cannot transcribe", "file", "unsupported_media");
    std::vector<MediaEmbedding> clips;
    {
      std::lock_guard<FairMutex> lock(compute);
      try {
        clips = model.encode_audio_windows(job.file.data(), job.file.size(), job.filename, opt.max_audio_seconds);
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "file", "invalid_media");
      }
    }
    std::vector<PromptEmbeddings> placed(clips.size());
    std::vector<GenerateRequest> requests;
    for (size_t i = 0; i < clips.size(); ++i) {
      job.options.seed = i;
      requests.push_back(transcription_request(model, *served.tokenizer, clips[i], job.options, placed[i]));
    }
    std::unique_ptr<SlotPool::Lease> lease = slots.acquire(requests.front().prompt);
    if (!lease) throw ApiError(503, "the server is busy; retry later", "", "server_busy");
    std::vector<TranscriptSegment> segments;
    double duration = 0;
    for (size_t i = 0; i < clips.size(); ++i) {
      Job as_job;
      as_job.gen = requests[i];
      as_job.embeddings = placed[i];
      as_job.profile = profile;
      GenerateResult r = run_job(*lease, as_job, arrival, {});
      if (r.finish_reason == "cancelled") throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
      const std::string text = translate ? translation_part(r.text, "English") : r.text;
      segments.push_back({clips[i].offset, clips[i].offset + clips[i].duration, text});
      duration = clips[i].offset + clips[i].duration;
    }
    lease.reset();
    send_transcript(res, job, segments, duration);
  }

  json model_object(const std::string& id) const {
    json j = {{"id", id},
              {"object", "model"},
              {"created", served.created},
              {"owned_by", "g3n"},
              {"context_length", served.context},
              {"slots", slots.size()}};
    if (const std::string spec = profile_of(served, id); !spec.empty()) {
      j["matformer_profile"] = spec;
      j["parent"] = served.id;
    }
    return j;
  }
  json model_list() const {
    json data = json::array({model_object(served.id)});
    for (const auto& p : served.profiles) data.push_back(model_object(p.first));
    return {{"object", "list"}, {"data", data}};
  }

  void routes() {
    using httplib::Request;
    using httplib::Response;
    http.Post("/v1/chat/completions", [this](const Request& req, Response& res, const httplib::ContentReader& reader) {
      guarded(res, [&] { completions(req, res, reader, true); });
    });
    http.Post("/v1/completions", [this](const Request& req, Response& res, const httplib::ContentReader& reader) {
      guarded(res, [&] { completions(req, res, reader, false); });
    });
    http.Post("/v1/audio/transcriptions", [this](const Request& req, Response& res) {
      guarded(res, [&] { transcriptions(req, res, false); });
    });
    http.Post("/v1/audio/translations", [this](const Request& req, Response& res) {
      guarded(res, [&] { transcriptions(req, res, true); });
    });
    http.Get("/v1/models", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        check_auth(req);
        send_json(res, 200, model_list());
      });
    });
    http.Get("/v1/models/(.+)", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        check_auth(req);
        const std::string name = req.matches[1];
        send_json(res, 200, model_object(name));  // 404 from profile_of for an unknown id
      });
    });
    http.Get("/health", [this](const Request&, Response& res) {
      send_json(res, 200,
                {{"status", stopping ? "stopping" : "ok"},
                 {"slots", slots.size()},
                 {"active", slots.active()},
                 {"queued", slots.queued()}});
    });
    http.Get("/metrics", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        check_auth(req);
        metrics.active = slots.active();
        metrics.queued = slots.queued();
        std::string text = metrics.render();
        text += "# HELP g3n_decode_passes_total Batched decode passes over the weights (continuous batching).\n"
                "# TYPE g3n_decode_passes_total counter\ng3n_decode_passes_total " + std::to_string(batcher.passes()) +
                "\n# HELP g3n_decode_rows_total Tokens decoded by those passes (rows / passes = mean batch size).\n"
                "# TYPE g3n_decode_rows_total counter\ng3n_decode_rows_total " + std::to_string(batcher.rows()) + "\n";
        res.set_content(text, "text/plain; version=0.0.4");
      });
    });
    auto page = [](const Request&, Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_content(kIndexHtml, "text/html; charset=utf-8");
    };
    http.Get("/", page);
    http.Get("/index.html", page);

    // Statuses httplib sets itself (404 no route, 400 bad request line, 413 body too large, ...)
    // get an OpenAI error object too.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const Request& req, Response& res) {
      if (!res.body.empty() || res.has_header("Content-Type")) return httplib::Server::HandlerResponse::Unhandled;
      std::string msg;
      if (res.status == 404) msg = "no such endpoint: " + req.method + " " + req.path;
      else if (res.status == 405) msg = "method not allowed: " + req.method + " " + req.path;
      else if (res.status == 413) msg = "the request body is larger than this server's limit (--max-body-bytes)";
      else if (res.status == 400) msg = "malformed HTTP request";
      else msg = "HTTP error " + std::to_string(res.status);
      send_json(res, res.status, ApiError(res.status, msg).body());
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, ApiError(500, "internal error: " + what));
    });
    http.set_logger([this](const Request& req, const Response& res) { metrics.count_request(endpoint_label(req.path), res.status); });
  }
};

Server::Server(const Model& model, const ServerOptions& options) : impl_(std::make_unique<Impl>(model, options)) {}

Server::~Server() {
  stop();
}

int Server::bind() {
  auto& s = *impl_;
  if (s.opt.port == 0) {
    s.port = s.http.bind_to_any_port(s.opt.host);
  } else {
    s.port = s.http.bind_to_port(s.opt.host, s.opt.port) ? s.opt.port : -1;
  }
  if (s.port < 0)
    fail("cannot listen on ", s.opt.host, ":", s.opt.port, " (is the port in use, or the host not an address of this machine?)");
  return s.port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  auto& s = *impl_;
  s.stopping = true;
  s.slots.close();
  s.http.stop();
}

}  // namespace g3n::server
