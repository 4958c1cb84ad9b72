// Per-sequence K/V cache of the text decoder. Only layers that own their K/V have storage: the
// KV-shared upper layers read their source layer's cache. Full-attention layers keep every
// position; sliding layers keep a ring of (window - 1 + max_chunk) positions, enough for a chunk of
// queries to see their whole window while the chunk's own keys are written.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "model/config.h"

namespace g3n {

class KvCache {
 public:
  KvCache() = default;
  KvCache(const TextConfig& config, int64_t max_chunk);

  // Makes room for positions up to `end` (exclusive) in every full-attention layer.
  void reserve(int64_t end);

  // Storage for the key / value of absolute position `pos` in layer `layer` (which must own K/V).
  float* key(int layer, int64_t pos) { return slot(layer, pos, keys_); }
  float* value(int layer, int64_t pos) { return slot(layer, pos, values_); }

  kernels::KvView view(int layer) const;
  int64_t max_chunk() const { return max_chunk_; }
  size_t bytes() const;

 private:
  float* slot(int layer, int64_t pos, std::vector<std::vector<float>>& store);
  std::vector<int64_t> capacity_;  // per layer, 0 for layers without storage; -1 = grows (full attention)
  std::vector<std::vector<float>> keys_, values_;
  int64_t row_ = 0, max_chunk_ = 0;
};

}  // namespace g3n
