// The g3n command-line program: one subcommand per file in tools/, registered here.
#include <cstdio>
#include <utility>
#include <vector>

#include "base/error.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"g3n: Gemma 3n inference on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "g3n 0.1.0");

  using namespace g3n::tools;
  std::vector<std::pair<CLI::App*, Action>> commands;
  auto add = [&](Action (*reg)(CLI::App&)) {
    Action a = reg(app);
    commands.emplace_back(app.get_subcommands({}).back(), std::move(a));
  };
  add(register_score);
  add(register_generate);
  add(register_make_random);
  add(register_run);
  add(register_chat);
  add(register_quantize);
  add(register_slice);
  add(register_tokenize);
  add(register_detokenize);
  add(register_serve);
  add(register_encode_image);
  add(register_preprocess_image);
  add(register_audio_features);
  add(register_encode_audio);
  add(register_video_frames);
  add(register_transcribe);

  CLI11_PARSE(app, argc, argv);
  try {
    for (auto& [cmd, action] : commands)
      if (cmd->parsed()) return action();
  } catch (const g3n::Error& e) {
    std::fprintf(stderr, "g3n: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "g3n: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
