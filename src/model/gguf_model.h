// Gemma 3n from a GGUF file written the way llama.cpp's converter writes it (architecture
// "gemma3n"): the config from the metadata keys that exist, and the tensors mapped back to their
// Hugging Face names so the same registry and decoder serve both formats.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace g3n {

struct GgufModel {
  ModelConfig config;
  std::unique_ptr<WeightSource> weights;
};

// GGUF tensors under their Hugging Face names (views into the mapped file, or tensors converted at
// load, which it owns). Shared by the text model and the multimodal projector (gguf_mmproj.h).
class GgufSource final : public WeightSource {
 public:
  const TensorView* find(const std::string& name) const override {
    auto it = views_.find(name);
    return it == views_.end() ? nullptr : &it->second;
  }

  void add(const std::string& hf_name, TensorView v) { views_[hf_name] = std::move(v); }

  // Owned storage for tensors converted at load.
  uint8_t* allocate(size_t bytes) {
    owned_.push_back(std::make_unique<uint8_t[]>(bytes));
    return owned_.back().get();
  }

 private:
  std::map<std::string, TensorView> views_;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

// A GGUF tensor as the engine reads it: in place when a kernel reads its type (F32, F16, BF16, Q8_0,
// Q4_0); otherwise converted into `src`'s storage (matrices whose rows are whole Q8_0 blocks repacked
// to Q8_0, everything else dequantised to F32). `float_only`: every type but F32/F16/BF16 is
// dequantised to F32 (for code without quantised kernels, such as the vision tower). Shape row-major
// (GGUF ne reversed). Throws g3n::Error naming `file` and the tensor for a type g3n cannot read.
TensorView as_engine_tensor(const GgufTensorInfo& t, GgufSource& src, const std::string& file, bool float_only = false);

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
