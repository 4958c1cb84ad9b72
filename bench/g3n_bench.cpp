// g3n_bench: prefill and decode speed, time to first token, memory, and the bandwidth roofline of
// one model on this machine. Prints one JSON object (bench/compare.py puts it beside llama.cpp's).
//
//   g3n_bench -m DIR [--threads N] [--prefill 128,512] [--decode 128] [--profile NAME]
//   g3n_bench -m DIR [--profile NAME] --versus DIR2 [--versus-profile NAME2] [--rounds 8] ...
//
// --versus loads a second model into the same process and runs the workload on the two in turn,
// --rounds times, printing each round and the medians of the per-round speed ratios (first / second).
// On a shared or virtual machine whose speed drifts by ±10% from minute to minute, alternating
// within one process compares two configurations far more tightly than separate runs do (used by
// bench/matformer_bench.py: a MatFormer profile against the checkpoint sliced with it).
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "g3n/engine.h"
#include "model/config.h"
#include "model/matformer.h"
#include "model/text_decoder.h"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds(clock_type::time_point a, clock_type::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::vector<int32_t> random_ids(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(1000, 200000);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  ids[0] = 2;
  for (size_t i = 1; i < ids.size(); ++i) ids[i] = d(rng);
  return ids;
}

// Streaming read bandwidth of this machine with `threads` readers, in bytes/s.
double measure_bandwidth(g3n::ThreadPool& pool) {
  const size_t n = size_t(1) << 28;  // 1 GiB of floats: far beyond any cache
  std::vector<float> buf(n / sizeof(float), 1.0f);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> partial(size_t(pool.size()) * 64, 0.0);
    const auto t0 = clock_type::now();
    const int64_t chunks = 256;
    const int64_t per = int64_t(buf.size()) / chunks;
    pool.parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
      float acc[16] = {};
      for (int64_t c = c0; c < c1; ++c) {
        const float* p = buf.data() + c * per;
        for (int64_t i = 0; i + 16 <= per; i += 16)
          for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
      }
      float s = 0;
      for (float v : acc) s += v;
      partial[size_t(c0 % int64_t(partial.size()))] += s;
    });
    const double t = seconds(t0, clock_type::now());
    volatile double sink = 0;
    for (double v : partial) sink = sink + v;
    best = std::max(best, double(n) / t);
  }
  return best;
}

// Bytes of weights one decode token reads: every projection of every layer (a KV-shared layer has no
// K/V projections to read), the PLE row, the per-layer projection, the AltUp projections and the LM head.
// Under a MatFormer profile: the kept layers only, each FFN at its width, the kept layers' share of the
// PLE row and of the per-layer projection.
uint64_t decode_weight_bytes(const g3n::Model& model, const g3n::MatformerProfile& profile) {
  const g3n::TextWeights& w = model.decoder().weights();
  const g3n::TextConfig& c = model.config().text;
  auto bytes = [](const g3n::TensorView& t) -> uint64_t { return t.valid() ? g3n::dtype_bytes(t.dtype, t.numel()) : 0; };
  const uint64_t kept = profile.layers.size(), L = uint64_t(c.num_hidden_layers);
  uint64_t b = bytes(w.embed_tokens) + bytes(w.per_layer_model_projection) * kept / L;
  for (const auto& t : w.altup_projections) b += bytes(t);
  for (const auto& t : w.altup_unembed_projections) b += bytes(t);
  for (size_t i = 0; i < profile.layers.size(); ++i) {
    const g3n::TextLayerWeights& l = w.layers[size_t(profile.layers[i])];
    for (const g3n::TensorView* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.laurel_left, &l.laurel_right,
                                     &l.per_layer_input_gate, &l.per_layer_projection})
      b += bytes(*t);
    const uint64_t F = uint64_t(c.intermediate_size[size_t(profile.layers[i])]);
    const uint64_t width = profile.ffn_widths[i] > 0 ? uint64_t(profile.ffn_widths[i]) : F;
    b += (bytes(l.gate_proj) + bytes(l.up_proj) + bytes(l.down_proj)) * width / F;
  }
  const auto& ple = w.embed_tokens_per_layer;
  if (ple.valid()) b += ple.row_bytes() * kept / L;  // one row
  return b;
}

// The workload: a prefill of each length in a fresh session (best of 2), then a 128-token prompt
// (time to first token) and `decode` greedy tokens. Fills prefill, time_to_first_token_seconds,
// decode and memory of `out`.
void run_workload(const g3n::Model& model, const g3n::SessionOptions& so, const std::vector<int64_t>& prefill,
                  int64_t decode, nlohmann::json& out) {
  for (int64_t n : prefill) {
    const auto ids = random_ids(n, uint32_t(n));
    double best = 1e30;
    for (int rep = 0; rep < 2; ++rep) {
      g3n::Session s(model, so);
      const auto t0 = clock_type::now();
      s.feed(ids);
      best = std::min(best, seconds(t0, clock_type::now()));
    }
    out["prefill"][std::to_string(n)] = {{"seconds", best}, {"tokens_per_second", double(n) / best}};
  }
  const auto ids = random_ids(128, 7);
  g3n::Session s(model, so);
  const auto t0 = clock_type::now();
  const std::vector<float>* logits = &s.feed(ids);
  int32_t next = g3n::argmax(logits->data(), model.vocab_size());
  const auto t_first = clock_type::now();
  out["time_to_first_token_seconds"] = seconds(t0, t_first);
  for (int64_t i = 0; i < decode; ++i) {
    logits = &s.feed({next});
    next = g3n::argmax(logits->data(), model.vocab_size());
  }
  const double dt = seconds(t_first, clock_type::now());
  out["decode"] = {{"tokens", decode}, {"seconds", dt}, {"tokens_per_second", double(decode) / dt}};
  const g3n::MemoryReport m = model.memory(&s);
  out["memory"] = {{"core_weight_bytes", m.core_weight_bytes},   {"core_weight_resident", m.core_weight_resident},
                   {"ple_table_bytes", m.ple_table_bytes},       {"ple_table_resident", m.ple_table_resident},
                   {"kv_cache_bytes", m.kv_cache_bytes},         {"scratch_bytes", m.scratch_bytes}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// --versus: the two models in turn, `rounds` times; per round and the medians of first / second.
nlohmann::json run_versus(const g3n::Model& a, const g3n::SessionOptions& sa, const g3n::Model& b,
                          const g3n::SessionOptions& sb, const std::vector<int64_t>& prefill, int64_t decode,
                          int rounds) {
  nlohmann::json out, list = nlohmann::json::array();
  std::map<std::string, std::vector<double>> ratios, speed_a, speed_b;
  for (int r = 0; r < rounds; ++r) {
    nlohmann::json ra, rb;
    run_workload(a, sa, prefill, decode, ra);
    run_workload(b, sb, prefill, decode, rb);
    auto add = [&](const std::string& key, double va, double vb) {
      ratios[key].push_back(va / vb);
      speed_a[key].push_back(va);
      speed_b[key].push_back(vb);
    };
    for (int64_t n : prefill) {
      const std::string k = std::to_string(n);
      add("prefill " + k, ra["prefill"][k]["tokens_per_second"].get<double>(),
          rb["prefill"][k]["tokens_per_second"].get<double>());
    }
    add("decode", ra["decode"]["tokens_per_second"].get<double>(), rb["decode"]["tokens_per_second"].get<double>());
    list.push_back({{"first", ra}, {"second", rb}});
    std::fprintf(stderr, "g3n_bench: round %d/%d: first / second decode %.3f\n", r + 1, rounds,
                 ratios["decode"].back());
  }
  for (const auto& [k, v] : ratios) {
    out["median_ratio"][k] = median(v);
    out["median_tokens_per_second"]["first"][k] = median(speed_a.at(k));
    out["median_tokens_per_second"]["second"][k] = median(speed_b.at(k));
  }
  out["rounds"] = list;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"g3n_bench: speed and memory of one model"};
  std::string model_dir;
  int threads = 2;
  std::vector<int64_t> prefill = {128, 512};
  int64_t decode = 128;
  bool bandwidth = true;
  std::string profile;
  app.add_option("-m,--model", model_dir, "Checkpoint directory")->required();
  app.add_option("-t,--threads", threads, "Threads");
  app.add_option("--prefill", prefill, "Prompt lengths to time")->delimiter(',');
  app.add_option("--decode", decode, "Tokens to decode after a 128-token prompt");
  app.add_flag("!--no-bandwidth", bandwidth, "Skip the memory bandwidth measurement");
  app.add_option("--profile", profile, "MatFormer profile every session runs (see g3n run --profile)");
  std::string versus, versus_profile;
  int rounds = 8;
  app.add_option("--versus", versus, "A second model, run in turn with the first in this process");
  app.add_option("--versus-profile", versus_profile, "MatFormer profile of the --versus model");
  app.add_option("--rounds", rounds, "--versus: rounds of the two workloads")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  try {
    nlohmann::json out;
    g3n::LoadOptions lo;
    lo.threads = threads;
    const auto t_load = clock_type::now();
    auto model = g3n::Model::load(model_dir, lo);
    out["load_seconds"] = seconds(t_load, clock_type::now());
    out["threads"] = model->pool().size();
    out["model"] = model_dir;
    g3n::SessionOptions so;
    so.profile = profile;
    if (!profile.empty()) out["profile"] = profile;

    if (!versus.empty()) {
      auto other = g3n::Model::load(versus, lo);
      g3n::SessionOptions so2;
      so2.profile = versus_profile;
      out["versus"] = versus;
      if (!versus_profile.empty()) out["versus_profile"] = versus_profile;
      out.update(run_versus(*model, so, *other, so2, prefill, decode, rounds));
      std::printf("%s\n", out.dump(2).c_str());
      return 0;
    }

    run_workload(*model, so, prefill, decode, out);

    struct rusage ru {};
    ::getrusage(RUSAGE_SELF, &ru);
    out["peak_rss_bytes"] = uint64_t(ru.ru_maxrss) * 1024;

    const g3n::TextConfig& tc = model->config().text;
    const g3n::MatformerProfile mp = profile.empty() ? g3n::full_profile(tc) : g3n::resolve_profile(profile, tc);
    const uint64_t bytes = decode_weight_bytes(*model, mp);
    out["decode_weight_bytes_per_token"] = bytes;
    if (bandwidth) {
      const double bw = measure_bandwidth(model->pool());
      out["memory_bandwidth_bytes_per_second"] = bw;
      const double roofline = bw / double(bytes);
      out["roofline_tokens_per_second"] = roofline;
      out["share_of_roofline"] = out["decode"]["tokens_per_second"].get<double>() / roofline;
    }
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "g3n_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
