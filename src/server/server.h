// `g3n serve`: an OpenAI-compatible HTTP server over one loaded model (cpp-httplib).
//
//   POST /v1/chat/completions   chat (text; image / audio parts answer 400 until the encoders land)
//   POST /v1/completions        raw prompt
//   GET  /v1/models[/ID]        the served model
//   GET  /health                open even with an API key
//   GET  /metrics               Prometheus text
//   GET  /                      the chat page (src/server/web/index.html.inc)
//
// Requests run on `parallel` slots (one Session each, kept between requests for prefix reuse),
// wait in a bounded queue when all are busy, and get 503 + Retry-After beyond it. Compute is
// serialised token by token across slots (the model's ThreadPool runs one job at a time); batched
// decoding across slots is future work.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "g3n/engine.h"
#include "runtime/sampler.h"

namespace g3n::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (see Server::bind)
  std::string api_key;                   // empty: no authentication
  int parallel = 1;                      // slots (sessions)
  int queue = 8;                         // requests that may wait for a slot
  size_t max_body_bytes = size_t(16) << 20;
  std::string model_id;                  // the name /v1/models lists and requests must use
  SamplingParams defaults;               // the checkpoint's generation_config.json
  int http_threads = 0;                  // 0: parallel + queue + 8
  int retry_after_seconds = 1;
  double max_audio_seconds = 600;        // longest recording /v1/audio/* accepts (cut into 30 s clips)
  bool allow_remote_media = false;       // fetch http(s) image_url parts (off: data: URIs only)
  std::vector<std::string> profiles;     // extra MatFormer sizes, "NAME=SPEC" (served as "<model_id>/NAME")
};

class Server {
 public:
  Server(const Model& model, const ServerOptions& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port (the chosen one when options.port is 0). Throws
  // g3n::Error when the address cannot be bound.
  int bind();
  // Serves until stop(); call bind() first.
  void run();
  // Stops accepting, cancels running generations, wakes queued requests (they get 503). Thread-safe.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The chat page served at "/".
extern const char* const kIndexHtml;

}  // namespace g3n::server
