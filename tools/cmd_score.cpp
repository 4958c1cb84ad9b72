// `g3n score` and `g3n generate`: token ids in, logits / greedy ids out. The raw interface that parity
// checks use; text prompts come with the tokenizer.
#include <cstdio>
#include <memory>

#include "base/error.h"
#include "commands.h"
#include "formats/npy.h"
#include "g3n/engine.h"
#include "media_input.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::tools {

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(cur, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != cur.size() || v < 0 || v > INT32_MAX) fail("'", cur, "' is not a token id");
    ids.push_back(int32_t(v));
    cur.clear();
  };
  for (char ch : text) {
    if (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n') flush();
    else cur += ch;
  }
  flush();
  return ids;
}

namespace {

struct ModelArgs {
  std::string model;
  int threads = 0;
  std::string numerics = "exact";
  std::string ids, prompt;
  bool chat = false;
  bool plain = false;
  int64_t chunk = 0;  // 0: the session default (SessionOptions::max_chunk)
  std::string profile;
  MediaArgs media;

  SessionOptions session_options() const {
    SessionOptions o;
    o.fast_paths = !plain;
    o.max_chunk = chunk;
    o.profile = profile;
    return o;
  }

  void add_to(CLI::App* cmd) {
    cmd->add_flag("--plain", plain, "Turn off the exact shortcuts (for checking them)");
    cmd->add_option("--profile", profile, "MatFormer profile: a published name, E2B, a JSON file or skip=..;ffn=..");
    cmd->add_option("--chunk", chunk, "Prompt tokens per prefill pass (default 256; 512 with --numerics ggml, llama.cpp's default n_ubatch)")->check(CLI::Range(1, 1 << 16));
    cmd->add_option("-m,--model", model, "Checkpoint directory (config.json + safetensors)")->required();
    cmd->add_option("-t,--threads", threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
    cmd->add_option("--numerics", numerics, kNumericsHelp)
        ->check(CLI::IsMember({"exact", "ggml"}));
    auto* ids_opt = cmd->add_option("--ids", ids, "Token ids, e.g. 2,105,2364");
    auto* prompt_opt = cmd->add_option("--prompt", prompt, "Text, tokenised with the checkpoint's tokenizer");
    ids_opt->excludes(prompt_opt);
    cmd->add_flag("--chat", chat, "With --prompt: render it as one user turn of the chat template");
    media.add_to(cmd);
  }
  std::unique_ptr<Model> load() const {
    LoadOptions opts;
    opts.threads = threads;
    opts.numerics = parse_numerics(numerics);
    opts.mmproj = media.mmproj;
    return Model::load(model, opts);
  }
  // The prompt's ids; the media (--image / --audio) are encoded into `set` and fill the placeholders:
  // <image_soft_token> / <audio_soft_token> in a --prompt text (expanded as the processor does; with --chat
  // and no placeholder in the text, one per file goes before the text), or the soft-token ids in --ids.
  std::vector<int32_t> token_ids(const Model& m, MediaSet& set) const {
    set.add(m, media, /*verbose=*/false);
    if (!prompt.empty()) {
      const Tokenizer& tok = m.require_tokenizer();
      const bool has_placeholders = prompt.find("<image_soft_token>") != std::string::npos ||
                          prompt.find("<audio_soft_token>") != std::string::npos;
      if (chat) {
        std::vector<ChatItem> content = has_placeholders ? std::vector<ChatItem>{} : set.chat_items();
        content.push_back({ChatItem::Text, prompt});
        return tok.encode(set.expand(render_chat({{"user", content}}, true)), /*add_bos=*/false);
      }
      return tok.encode(set.items.empty() ? prompt : set.expand(prompt), /*add_bos=*/true);
    }
    if (chat) fail("--chat needs --prompt");
    auto v = parse_ids(ids);
    if (v.empty()) fail("give the input as --ids 2,105,... or --prompt TEXT");
    return v;
  }
  // Soft tokens at the placeholder positions (none without media).
  static PromptEmbeddings placed(const Model& m, const MediaSet& set, const std::vector<int32_t>& ids) {
    return set.items.empty() ? PromptEmbeddings{} : set.place(m, ids);
  }
};

}  // namespace

Action register_score(CLI::App& app) {
  struct Args : ModelArgs {
    std::string out;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("score", "Write the logits of every position as a float32 .npy [tokens, vocab]");
  a->add_to(cmd);
  cmd->add_option("-o,--out", a->out, "Output .npy file")->required();
  return [a] {
    auto model = a->load();
    MediaSet media;
    const std::vector<int32_t> ids = a->token_ids(*model, media);
    const PromptEmbeddings embeddings = Args::placed(*model, media, ids);
    Session session(*model, a->session_options());
    const std::vector<float>& logits = session.feed(ids, /*all_logits=*/true, &embeddings);
    write_npy_f32(a->out, logits.data(), {int64_t(ids.size()), model->vocab_size()});
    return 0;
  };
}

Action register_generate(CLI::App& app) {
  struct Args : ModelArgs {
    int n_new = 32;
    std::string logits_out;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("generate", "Greedy-decode after the given ids and print the new ids");
  a->add_to(cmd);
  cmd->add_option("-n,--max-new-tokens", a->n_new, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--logits-out", a->logits_out, "Also write the logits that chose each new token, .npy [n, vocab]");
  return [a] {
    auto model = a->load();
    MediaSet media;
    const std::vector<int32_t> ids = a->token_ids(*model, media);
    const PromptEmbeddings embeddings = Args::placed(*model, media, ids);
    Session session(*model, a->session_options());
    const std::vector<float>* logits = &session.feed(ids, /*all_logits=*/false, &embeddings);
    std::vector<float> all;
    for (int i = 0; i < a->n_new; ++i) {
      if (!a->logits_out.empty()) all.insert(all.end(), logits->begin(), logits->end());
      // Greedy over the whole output space, exactly as the reference's argmax.
      const int32_t next = argmax(logits->data(), model->vocab_size());
      std::printf("%s%d", i ? " " : "", next);
      std::fflush(stdout);
      if (i + 1 < a->n_new) logits = &session.feed({next});
    }
    std::printf("\n");
    if (!a->logits_out.empty()) write_npy_f32(a->logits_out, all.data(), {int64_t(a->n_new), model->vocab_size()});
    return 0;
  };
}

}  // namespace g3n::tools
