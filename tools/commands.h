// Each g3n subcommand registers itself on the CLI11 app and returns the action to run when chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace g3n::tools {

using Action = std::function<int()>;

// Adds one subcommand to `app`; the returned action runs it. Options are bound to state the
// register function owns (kept alive by the action).
Action register_score(CLI::App& app);
Action register_generate(CLI::App& app);
Action register_make_random(CLI::App& app);
Action register_run(CLI::App& app);
Action register_chat(CLI::App& app);
Action register_quantize(CLI::App& app);
Action register_slice(CLI::App& app);
Action register_tokenize(CLI::App& app);
Action register_detokenize(CLI::App& app);
Action register_serve(CLI::App& app);
Action register_encode_image(CLI::App& app);
Action register_preprocess_image(CLI::App& app);
Action register_audio_features(CLI::App& app);
Action register_encode_audio(CLI::App& app);
Action register_video_frames(CLI::App& app);
Action register_transcribe(CLI::App& app);

// Shared option helpers.
std::vector<int32_t> parse_ids(const std::string& text);
inline constexpr const char* kNumericsHelp =
    "Arithmetic: exact (g3n's own, the default) or ggml (llama.cpp's CPU arithmetic, to reproduce its numbers on "
    "the same GGUF file)";

}  // namespace g3n::tools
