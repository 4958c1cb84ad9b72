// `g3n serve`: the OpenAI-compatible HTTP server (src/server) on one model.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "base/error.h"
#include "base/thread_pool.h"
#include "commands.h"
#include "g3n/engine.h"
#include "runtime/sampler.h"
#include "server/server.h"

namespace g3n::tools {
namespace {

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string default_model_id(const std::string& dir) {
  std::filesystem::path p(dir);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "models/tiny/" -> "tiny"
  const std::string name = p.filename().string();
  return name.empty() ? std::string("g3n") : name;
}

}  // namespace

Action register_serve(CLI::App& app) {
  struct Args {
    std::string model, name, mmproj;
    int threads = 0;
    std::string numerics = "exact";
    server::ServerOptions opt;
    uint64_t max_body = uint64_t(16) << 20;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (chat, completions, models, metrics, web page)");
  cmd->add_option("-m,--model", a->model, "Checkpoint directory")->required();
  cmd->add_option("--host", a->opt.host, "Address to listen on (default: loopback only)");
  cmd->add_option("--port", a->opt.port, "Port (0: any free port, printed at start)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", a->opt.api_key, "Require 'Authorization: Bearer KEY' on /v1/* and /metrics");
  cmd->add_option("--parallel", a->opt.parallel, "Sessions generating at once (each keeps its KV cache between requests)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--queue", a->opt.queue, "Requests that may wait for a free session; beyond them: 503")
      ->check(CLI::Range(0, 100000));
  cmd->add_option("--max-body-bytes", a->max_body, "Largest request body accepted (413 beyond)")
      ->check(CLI::Range(uint64_t(1024), uint64_t(1) << 32));
  cmd->add_option("--name", a->name, "Model id that /v1/models lists and requests name (default: the directory name)");
  cmd->add_option("-t,--threads", a->threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--numerics", a->numerics, kNumericsHelp)
      ->check(CLI::IsMember({"exact", "ggml"}));
  cmd->add_option("--profile", a->opt.profiles,
                  "Also serve a MatFormer size as model '<name>/NAME': NAME=SPEC (a published name, a JSON file or "
                  "skip=..;ffn=..); repeatable. E4B-structured models list the published sizes by themselves")
      ->allow_extra_args(false);
  cmd->add_flag("--allow-remote-media", a->opt.allow_remote_media,
               "Fetch http(s) image_url parts (at most --max-body-bytes each, 10 s); off: data: URIs only");
  cmd->add_option("--mmproj", a->mmproj, "llama.cpp mmproj GGUF with the vision / audio towers (for a GGUF model)");
  cmd->add_option("--max-audio-seconds", a->opt.max_audio_seconds,
                  "Longest recording /v1/audio/transcriptions and /translations accept (cut into 30 s clips)")
      ->check(CLI::Range(1.0, 86400.0));
  return [a] {
    server::ServerOptions opt = a->opt;
    opt.max_body_bytes = size_t(a->max_body);
    opt.model_id = a->name.empty() ? default_model_id(a->model) : a->name;
    opt.defaults = load_generation_defaults(a->model);
    opt.defaults.validate();
    if (!is_loopback(opt.host) && opt.api_key.empty())
      std::fprintf(stderr,
                   "g3n: warning: listening on %s without --api-key: anyone who can reach this address can use the "
                   "server\n",
                   opt.host.c_str());

    // SIGINT / SIGTERM stop the server from a thread of their own; SIGPIPE (a client that went
    // away) is a failed write, not a reason to exit.
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread started below

    const auto t0 = std::chrono::steady_clock::now();
    LoadOptions lo;
    lo.threads = a->threads;
    lo.numerics = parse_numerics(a->numerics);
    lo.mmproj = a->mmproj;
    std::unique_ptr<Model> model = Model::load(a->model, lo);
    model->require_tokenizer();
    server::Server srv(*model, opt);
    const int port = srv.bind();
    std::fprintf(stderr, "g3n: serving %s (model id '%s', %d threads, %d slots, queue %d) loaded in %.2f s\n",
                 a->model.c_str(), opt.model_id.c_str(), model->pool().size(), opt.parallel, opt.queue,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    const std::string shown = opt.host.find(':') != std::string::npos ? "[" + opt.host + "]" : opt.host;
    std::fprintf(stderr, "g3n: listening on http://%s:%d\n", shown.c_str(), port);
    std::fflush(stderr);

    std::thread waiter([&srv, stop_signals] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      srv.stop();
    });
    srv.run();
    // run() also returns when listening fails; wake the waiter if no signal did.
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
    std::fprintf(stderr, "g3n: server stopped\n");
    return 0;
  };
}

}  // namespace g3n::tools
