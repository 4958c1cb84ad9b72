// `g3n run` (one prompt, streamed answer) and `g3n chat` (an interactive conversation that keeps its
// KV cache between turns).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/thread_pool.h"
#include "commands.h"
#include "g3n/engine.h"
#include "media_input.h"
#include "model/config.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::tools {
namespace {

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

// Options shared by run and chat.
struct TextArgs {
  std::string model;
  int threads = 0;
  std::string numerics = "exact";
  std::string system;
  int64_t max_new_tokens = 512;
  std::vector<std::string> stop;
  MediaArgs media;
  bool verbose = false;
  // Sampling: unset values take the checkpoint's generation_config.json defaults.
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<int> top_k;
  uint64_t seed = 0;
  std::string profile;

  void add_to(CLI::App* cmd) {
    cmd->add_option("-m,--model", model, "Checkpoint directory")->required();
    cmd->add_option("-t,--threads", threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
    cmd->add_option("--numerics", numerics, kNumericsHelp)
        ->check(CLI::IsMember({"exact", "ggml"}));
    cmd->add_option("-s,--system", system, "System prompt");
    cmd->add_option("-n,--max-new-tokens", max_new_tokens, "Most tokens to generate per answer")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
    cmd->add_option("--stop", stop, "Stop string (repeatable)")->allow_extra_args(false);
    media.add_to(cmd);
    cmd->add_option("--temperature", temperature, "Sampling temperature (0: greedy)");
    cmd->add_option("--top-k", top_k, "Keep the k most likely tokens (0: off)");
    cmd->add_option("--top-p", top_p, "Nucleus sampling mass");
    cmd->add_option("--min-p", min_p, "Drop tokens below min-p times the most likely");
    cmd->add_option("--repeat-penalty", repetition_penalty, "Repetition penalty (1: off)");
    cmd->add_option("--presence-penalty", presence_penalty, "Presence penalty");
    cmd->add_option("--frequency-penalty", frequency_penalty, "Frequency penalty");
    cmd->add_option("--seed", seed, "Random seed (same seed, same answer)");
    cmd->add_option("--profile", profile, "MatFormer profile: a published name, E2B, a JSON file or skip=..;ffn=..");
    cmd->add_flag("-v,--verbose", verbose, "Print load time, token counts, time to first token and speeds");
  }

  SamplingParams sampling() const {
    SamplingParams p = load_generation_defaults(model);
    if (temperature) p.temperature = *temperature;
    if (top_k) p.top_k = *top_k;
    if (top_p) p.top_p = *top_p;
    if (min_p) p.min_p = *min_p;
    if (repetition_penalty) p.repetition_penalty = *repetition_penalty;
    if (presence_penalty) p.presence_penalty = *presence_penalty;
    if (frequency_penalty) p.frequency_penalty = *frequency_penalty;
    p.seed = seed;
    p.validate();
    return p;
  }

};

struct Loaded {
  std::unique_ptr<Model> model;
  const Tokenizer* tokenizer = nullptr;
};

Loaded load(const TextArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  Loaded l;
  LoadOptions o;
  o.threads = a.threads;
  o.numerics = parse_numerics(a.numerics);
  o.mmproj = a.media.mmproj;
  if (stderr_is_tty() || a.verbose) {
    const bool tty = stderr_is_tty();
    o.progress = [tty](uint64_t done, uint64_t total) {
      if (!tty) return;
      const int width = 30;
      const int fill = total ? int(double(done) / double(total) * width) : width;
      std::fprintf(stderr, "\rloading [%.*s%*s] %5.1f%% of %.2f GB", fill, "##############################",
                   width - fill, "", total ? 100.0 * double(done) / double(total) : 100.0, double(total) / 1e9);
      if (done >= total) std::fprintf(stderr, "\r%*s\r", 60, "");
      std::fflush(stderr);
    };
  }
  l.model = Model::load(a.model, o);
  l.tokenizer = &l.model->require_tokenizer();
  if (a.verbose)
    std::fprintf(stderr, "[g3n] loaded %s in %.2f s (%d threads)\n", a.model.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), l.model->pool().size());
  return l;
}

void print_stats(const GenerateResult& r) {
  const int64_t n = int64_t(r.tokens.size());
  const int64_t computed = r.prompt_tokens - r.reused_tokens;
  std::fprintf(stderr,
               "[g3n] prompt %lld tokens (%lld reused from the cache), time to first token %.3f s, prefill %.1f "
               "tokens/s, decode %lld tokens in %.3f s = %.1f tokens/s, finish: %s\n",
               (long long)r.prompt_tokens, (long long)r.reused_tokens, r.first_token_seconds,
               r.prefill_seconds > 0 ? double(computed) / r.prefill_seconds : 0.0, (long long)n, r.decode_seconds,
               r.decode_seconds > 0 && n > 1 ? double(n - 1) / r.decode_seconds : 0.0, r.finish_reason.c_str());
}

// `raw`: the text itself (with <bos>), no chat template: for base (pretrained, not instruction-tuned) models.
GenerateResult answer(Session& session, const Tokenizer& tok, const TextArgs& a, const std::vector<ChatMessage>& msgs,
                      const MediaSet& media, const std::string* raw = nullptr) {
  GenerateRequest req;
  req.prompt = raw ? tok.encode(media.expand(*raw), /*add_bos=*/true)
                   : tok.encode(media.expand(render_chat(msgs, /*add_generation_prompt=*/true)), /*add_bos=*/false);
  PromptEmbeddings embeddings;
  if (!media.items.empty()) {
    embeddings = media.place(session.model(), req.prompt);
    req.media = &embeddings;
  }
  req.sampling = a.sampling();
  req.sampling.vocab_limit = std::min<int64_t>(tok.sentencepiece_size(), 262144);
  req.max_new_tokens = a.max_new_tokens;
  req.stop_ids = {tok.eos_id(), tok.end_of_turn_id()};
  req.stop_strings = a.stop;
  GenerateResult r = generate(session, tok, req, [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (r.finish_reason == "context")
    std::fprintf(stderr, "g3n: the conversation reached the model's context of %lld tokens\n",
                 (long long)session.context_length());
  if (a.verbose) {
    print_stats(r);
    const MemoryReport m = session.model().memory(&session);
    auto mb = [](uint64_t b) { return double(b) / (1 << 20); };
    std::fprintf(stderr,
                 "[g3n] memory: core weights %.1f MiB mapped (%.1f MiB resident), PLE table %.1f MiB mapped (%.1f MiB "
                 "of pages touched), KV cache %.1f MiB, scratch %.1f MiB\n",
                 mb(m.core_weight_bytes), mb(m.core_weight_resident), mb(m.ple_table_bytes), mb(m.ple_table_resident),
                 mb(m.kv_cache_bytes), mb(m.scratch_bytes));
  }
  return r;
}

std::vector<ChatMessage> with_system(const std::string& system) {
  std::vector<ChatMessage> m;
  if (!system.empty()) m.push_back({"system", {{ChatItem::Text, system}}});
  return m;
}

}  // namespace

Action register_run(CLI::App& app) {
  struct Args : TextArgs {
    std::string prompt, messages_file;
    bool raw = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("run", "Answer one prompt, streaming the text");
  a->add_to(cmd);
  cmd->add_option("prompt", a->prompt, "The user's message");
  cmd->add_option("--messages", a->messages_file, "A JSON file with an OpenAI-style message list to continue");
  cmd->add_flag("--raw", a->raw,
                "Continue the prompt text as it is (no chat template; for base models). Media then go where the text "
                "says <image_soft_token> / <audio_soft_token>");
  return [a] {
    if (a->prompt.empty() == a->messages_file.empty()) fail("give either a prompt or --messages FILE");
    std::vector<ChatMessage> msgs = with_system(a->system);
    if (!a->messages_file.empty()) {
      std::ifstream in(a->messages_file);
      if (!in) fail("cannot read ", a->messages_file);
      nlohmann::json j;
      try {
        in >> j;
      } catch (const nlohmann::json::exception& e) {
        fail(a->messages_file, " is not valid JSON: ", e.what());
      }
      auto parsed = parse_openai_messages(j);
      msgs.insert(msgs.end(), parsed.begin(), parsed.end());
    }
    Loaded l = load(*a);
    MediaSet media;
    media.add(*l.model, a->media, a->verbose);
    if (a->raw) {
      if (!a->messages_file.empty() || !a->system.empty()) fail("--raw takes a prompt only (no --messages, --system)");
      SessionOptions so;
      so.profile = a->profile;
      Session session(*l.model, so);
      answer(session, *l.tokenizer, *a, msgs, media, &a->prompt);
      return 0;
    }
    if (a->messages_file.empty()) {
      std::vector<ChatItem> content = media.chat_items();  // the images and clips, then the text
      content.push_back({ChatItem::Text, a->prompt});
      msgs.push_back({"user", std::move(content)});
    } else if (!media.items.empty()) {
      fail("--image / --audio go with a prompt; in --messages give them as image_url / input_audio parts");
    }
    SessionOptions so;
    so.profile = a->profile;
    Session session(*l.model, so);
    answer(session, *l.tokenizer, *a, msgs, media);
    return 0;
  };
}

Action register_chat(CLI::App& app) {
  auto a = std::make_shared<TextArgs>();
  auto* cmd = app.add_subcommand(
      "chat", "Interactive conversation (/reset starts over, /exit quits, /image FILE and /audio FILE attach media to "
              "the next message, /profile NAME switches the MatFormer size)");
  a->add_to(cmd);
  return [a] {
    Loaded l = load(*a);
    // Media are encoded once, when attached, and their soft tokens reused in every later turn's prompt.
    MediaSet media;
    media.add(*l.model, a->media, a->verbose);
    size_t attached = 0;  // media.items[attached..] go with the next user message
    SessionOptions so;
    so.profile = a->profile;
    Session session(*l.model, so);
    std::vector<ChatMessage> msgs = with_system(a->system);
    const bool interactive = ::isatty(STDIN_FILENO) == 1;
    std::string line;
    for (;;) {
      if (interactive) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      if (line == "/exit" || line == "/quit") break;
      if (line.rfind("/profile", 0) == 0) {
        // Elastic execution: the same loaded weights, another sub-model, from the next answer on.
        const std::string spec = line.size() > 9 ? line.substr(9) : "full";
        try {
          session.set_profile(spec);
          std::fprintf(stderr, "(profile %s; KV cache %s)\n", session.profile_name().c_str(),
                       session.cache_kept_on_last_switch() ? "kept" : "rebuilt on the next turn");
        } catch (const Error& e) {
          std::fprintf(stderr, "g3n: %s\n", e.what());
        }
        continue;
      }
      if (line.rfind("/image ", 0) == 0 || line.rfind("/audio ", 0) == 0) {
        const std::string path = python_strip(line.substr(7));
        try {
          if (line[1] == 'i') media.add_image(*l.model, path, a->media.image_size, a->verbose);
          else media.add_audio(*l.model, path, a->media.max_audio_seconds, a->verbose);
          std::fprintf(stderr, "(%s attached to your next message)\n", path.c_str());
        } catch (const Error& e) {
          std::fprintf(stderr, "g3n: %s\n", e.what());
        }
        continue;
      }
      if (line == "/reset") {
        msgs = with_system(a->system);
        media.items.clear();
        attached = 0;
        session.reset();
        if (interactive) std::fprintf(stderr, "(conversation reset)\n");
        continue;
      }
      std::vector<ChatItem> content = media.chat_items(attached);
      attached = media.items.size();
      content.push_back({ChatItem::Text, line});
      msgs.push_back({"user", std::move(content)});
      GenerateResult r = answer(session, *l.tokenizer, *a, msgs, media);
      msgs.push_back({"assistant", {{ChatItem::Text, r.text}}});
    }
    return 0;
  };
}

}  // namespace g3n::tools
