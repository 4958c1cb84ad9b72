// Where the weights come from. The tensor registry (weights.cpp) asks for tensors by their Hugging
// Face names; a source answers from a safetensors checkpoint directly, or from a GGUF file whose
// llama.cpp names and layouts it maps back (gguf_model.cpp).
#pragma once
#include <memory>
#include <string>

#include "base/tensor.h"

namespace g3n {

class TensorStore;

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor with this Hugging Face name, or nullptr. Throws g3n::Error when it exists but cannot
  // be used (an unsupported dtype).
  virtual const TensorView* find(const std::string& name) const = 0;
};

std::unique_ptr<WeightSource> safetensors_source(const TensorStore& store);

}  // namespace g3n
