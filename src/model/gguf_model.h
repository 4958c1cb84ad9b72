// Gemma 3n from a GGUF file written the way llama.cpp's converter writes it (architecture
// "gemma3n"): the config from the metadata keys that exist, and the tensors mapped back to their
// Hugging Face names so the same registry and decoder serve both formats.
#pragma once
#include <memory>

#include "formats/gguf.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace g3n {

struct GgufModel {
  ModelConfig config;
  std::unique_ptr<WeightSource> weights;
};

// Throws g3n::Error naming the key or tensor that is missing or inconsistent. The file must outlive
// the returned weights (tensors are viewed in place where their type allows; K-quants and the other
// llama.cpp block types are repacked to Q8_0 at load, 1-D tensors to F32).
GgufModel load_gguf_model(const GgufFile& file);

// The Hugging Face name of a llama.cpp gemma3n tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); empty for names that are not part of the text model.
std::string gemma3n_hf_name(const std::string& gguf_name);
// And back, for writers.
std::string gemma3n_gguf_name(const std::string& hf_name);

}  // namespace g3n
