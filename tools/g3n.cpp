// The g3n command-line program. Subcommands:
//   score       logits of every position of a token sequence, as a .npy file
//   generate    greedy decoding from a token sequence, prints the new ids
//   make-random a random checkpoint with real Gemma 3n shapes
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "base/error.h"
#include "formats/npy.h"
#include "g3n/engine.h"
#include "make_random.h"

namespace {

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
    if (used != cur.size() || v < 0 || v > INT32_MAX) g3n::fail("--ids: '", cur, "' is not a token id");
    ids.push_back(int32_t(v));
    cur.clear();
  };
  for (char ch : text) {
    if (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n') flush();
    else cur += ch;
  }
  flush();
  if (ids.empty()) g3n::fail("--ids is empty");
  return ids;
}

struct Common {
  std::string model;
  int threads = 0;
  std::string ids;
};

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("-m,--model", c.model, "Checkpoint directory (config.json + safetensors)")->required();
  cmd->add_option("-t,--threads", c.threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
}

std::unique_ptr<g3n::Model> load(const Common& c) {
  g3n::LoadOptions opts;
  opts.threads = c.threads;
  return g3n::Model::load(c.model, opts);
}

int run_score(const Common& c, const std::string& out) {
  auto model = load(c);
  const std::vector<int32_t> ids = parse_ids(c.ids);
  g3n::Session session(*model);
  std::vector<float> logits = session.feed(ids, /*all_logits=*/true);
  g3n::write_npy_f32(out, logits.data(), {int64_t(ids.size()), model->vocab_size()});
  return 0;
}

int run_generate(const Common& c, int n_new) {
  auto model = load(c);
  const std::vector<int32_t> ids = parse_ids(c.ids);
  g3n::Session session(*model);
  std::vector<float> logits = session.feed(ids);
  std::string line;
  for (int i = 0; i < n_new; ++i) {
    const int32_t next = g3n::argmax(logits.data(), model->vocab_size());
    line += (i ? " " : "") + std::to_string(next);
    if (i + 1 < n_new) logits = session.feed({next});
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"g3n: Gemma 3n inference on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "g3n 0.1.0");

  Common score_args, gen_args;
  std::string score_out;
  auto* score = app.add_subcommand("score", "Write the logits of every position as a float32 .npy [tokens, vocab]");
  add_common(score, score_args);
  score->add_option("--ids", score_args.ids, "Token ids, e.g. 2,105,2364")->required();
  score->add_option("-o,--out", score_out, "Output .npy file")->required();

  int n_new = 32;
  auto* gen = app.add_subcommand("generate", "Greedy-decode after the given ids and print the new ids");
  add_common(gen, gen_args);
  gen->add_option("--ids", gen_args.ids, "Prompt token ids, e.g. 2,105,2364")->required();
  gen->add_option("-n,--max-new-tokens", n_new, "Tokens to generate")->check(CLI::Range(1, 1 << 20));

  g3n::tools::MakeRandomOptions mr;
  auto* make_random = app.add_subcommand("make-random", "Write a random checkpoint with real Gemma 3n shapes");
  make_random->add_option("--preset", mr.preset, "tiny | e2b | e4b")->check(CLI::IsMember({"tiny", "e2b", "e4b"}));
  make_random->add_option("-o,--out", mr.out, "Output directory")->required();
  make_random->add_option("--seed", mr.seed, "Random seed");
  make_random->add_option("--dtype", mr.dtype, "bf16 | f32")->check(CLI::IsMember({"bf16", "f32"}));
  make_random->add_option("-t,--threads", mr.threads, "Worker threads (0: all cores)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*score) return run_score(score_args, score_out);
    if (*gen) return run_generate(gen_args, n_new);
    if (*make_random) {
      g3n::tools::make_random(mr);
      return 0;
    }
  } catch (const g3n::Error& e) {
    std::fprintf(stderr, "g3n: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "g3n: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
