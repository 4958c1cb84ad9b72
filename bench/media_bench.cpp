// media_bench: time to encode images (MobileNet-V5 + embedder) at 256 / 512 / 768 px and a 30 s clip
// (log-mel + USM Conformer + embedder) with a checkpoint's towers. Prints one JSON object.
//
//   media_bench -m DIR [--image FILE] [--audio FILE] [--threads 2] [--repeat 3]
//
// Each figure is the best of --repeat runs after one warm-up run (the first touches the weights' pages and
// builds the tower). Decoding the file is included (as a user would pay it); model loading is not.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "g3n/engine.h"

int main(int argc, char** argv) {
  CLI::App app{"g3n media encoder benchmark"};
  std::string model, image = "data/samples/house.png", audio;
  int threads = 2, repeat = 3;
  std::vector<int64_t> sizes = {256, 512, 768};
  app.add_option("-m,--model", model, "Multimodal checkpoint directory")->required();
  app.add_option("--image", image, "Image file");
  app.add_option("--audio", audio, "Audio file (30 s gives the full 188 tokens); empty: no audio timing");
  app.add_option("--sizes", sizes, "Image sizes, e.g. --sizes 256 512 768");
  app.add_option("-t,--threads", threads, "Threads");
  app.add_option("--repeat", repeat, "Timed runs per figure (best kept)");
  CLI11_PARSE(app, argc, argv);
  try {
    using clock = std::chrono::steady_clock;
    g3n::LoadOptions lo;
    lo.threads = threads;
    auto m = g3n::Model::load(model, lo);
    nlohmann::json out = {{"threads", threads}, {"repeat", repeat}, {"model", model}};
    auto best_of = [&](auto&& fn) {
      fn();  // warm-up
      double best = 1e30;
      for (int r = 0; r < repeat; ++r) {
        const auto t0 = clock::now();
        fn();
        best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count());
      }
      return best;
    };
    if (m->supports_images())
      for (int64_t s : sizes) out["image_seconds"][std::to_string(s)] = best_of([&] { m->encode_image_file(image, s); });
    if (m->supports_audio() && !audio.empty()) {
      double dur = 0;
      out["audio_seconds"] = best_of([&] { dur = m->encode_audio_file(audio).duration; });
      out["audio_clip_seconds"] = dur;
    }
    std::printf("%s\n", out.dump().c_str());
  } catch (const g3n::Error& e) {
    std::fprintf(stderr, "media_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
