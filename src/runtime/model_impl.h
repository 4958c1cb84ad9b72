// What a loaded Model owns (private to src/runtime).
#pragma once
#include <memory>
#include <string>

#include "base/thread_pool.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "g3n/engine.h"
#include "model/gguf_mmproj.h"
#include "model/text_decoder.h"
#include "model/weight_source.h"
#include "runtime/media_encoders.h"
#include "tokenizer/tokenizer.h"

namespace g3n {

struct Model::Impl {
  // Own the mappings (and converted tensors) every TensorView points into.
  std::unique_ptr<TensorStore> store;
  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<WeightSource> source;
  std::unique_ptr<MmprojModel> mmproj;         // --mmproj: the towers' file
  std::unique_ptr<WeightSource> with_mmproj;   // source, then the mmproj's tensors
  std::unique_ptr<Tokenizer> tokenizer;
  std::string path;
  std::unique_ptr<TextDecoder> decoder;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<MediaEncoders> media;  // vision / audio towers, when the model has them
};

}  // namespace g3n
