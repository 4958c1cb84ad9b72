// Where the weights come from. The tensor registry (weights.cpp) asks for tensors by their Hugging
// Face names; a source answers from a safetensors checkpoint directly, or from a GGUF file whose
// llama.cpp names and layouts it maps back (gguf_model.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "base/tensor.h"

namespace g3n {

class TensorStore;

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor with this Hugging Face name, or nullptr. Throws g3n::Error when it exists but cannot
  // be used (an unsupported dtype).
  virtual const TensorView* find(const std::string& name) const = 0;
  // The same, told the shape the loader expects (the loaders ask through this). A source that makes
  // tensors up (make-random's planner) answers with one of that shape; the others ignore it.
  virtual const TensorView* find_as(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    (void)expected_shape;
    return find(name);
  }
};

std::unique_ptr<WeightSource> safetensors_source(const TensorStore& store);

}  // namespace g3n
