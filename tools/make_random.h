// `g3n make-random`: a checkpoint directory in the Hugging Face layout with random weights of the
// real shapes, for the README's default job and the benchmarks.
#pragma once
#include <cstdint>
#include <string>

namespace g3n::tools {

struct MakeRandomOptions {
  std::string preset = "tiny";  // tiny | e2b | e4b
  std::string out;
  uint64_t seed = 0;
  std::string dtype = "bf16";   // bf16 | f32
  int threads = 0;
  std::string modalities;       // "text" | "all" | "" (tiny: all, e2b / e4b: text)
  std::string towers;           // "tiny" | "real" | "" (tiny preset: tiny, else real)
};

void make_random(const MakeRandomOptions& options);

}  // namespace g3n::tools
