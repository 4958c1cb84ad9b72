// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition / presence / frequency
// penalties, seeded for repeatable runs. Order as transformers applies its logits processors:
// penalties, temperature, top-k, top-p, min-p.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace g3n {

struct SamplingParams {
  float temperature = 1.0f;          // 0: greedy
  int top_k = 64;                    // 0: off
  float top_p = 0.95f;               // 1: off
  float min_p = 0.0f;                // 0: off
  float repetition_penalty = 1.0f;   // 1: off (HF: divide positive logits / multiply negative ones of seen tokens)
  float presence_penalty = 0.0f;     // OpenAI: minus this once for every token already generated
  float frequency_penalty = 0.0f;    // OpenAI: minus this times the token's count
  uint64_t seed = 0;
  int64_t vocab_limit = 262144;      // ids >= this (multimodal soft/hard tokens) are never sampled

  // Throws g3n::Error naming the parameter when one is out of range.
  void validate() const;
};

// Defaults from a checkpoint's generation_config.json (Gemma 3n: temperature 1.0, top-k 64,
// top-p 0.95); the built-in defaults when the file is absent.
SamplingParams load_generation_defaults(const std::string& checkpoint_dir);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from logits [n]; `history` are the tokens the penalties count (the
  // generated ones for presence/frequency, the whole sequence for repetition).
  int32_t sample(const float* logits, int64_t n, const std::vector<int32_t>& history);

  // The candidate set after filtering, as (id, probability), for tests.
  std::vector<std::pair<int32_t, float>> distribution(const float* logits, int64_t n,
                                                      const std::vector<int32_t>& history) const;

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace g3n
