#include "model/kv_cache.h"

#include <algorithm>

namespace g3n {

KvCache::KvCache(const TextConfig& c, int64_t max_chunk) : max_chunk_(max_chunk) {
  const size_t L = size_t(c.num_hidden_layers);
  row_ = int64_t(c.num_key_value_heads) * c.head_dim;
  capacity_.assign(L, 0);
  keys_.resize(L);
  values_.resize(L);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.owns_kv(l)) continue;
    if (c.is_sliding(l)) {
      const int64_t cap = c.sliding_window - 1 + max_chunk;
      capacity_[size_t(l)] = cap;
      keys_[size_t(l)].assign(size_t(cap * row_), 0.0f);
      values_[size_t(l)].assign(size_t(cap * row_), 0.0f);
    } else {
      capacity_[size_t(l)] = -1;
    }
  }
}

void KvCache::reserve(int64_t end) {
  for (size_t l = 0; l < capacity_.size(); ++l) {
    if (capacity_[l] != -1) continue;
    const size_t need = size_t(end * row_);
    if (keys_[l].size() < need) {
      // Grow geometrically so a long generation reallocates O(log n) times.
      const size_t grown = std::max(need, keys_[l].size() * 3 / 2);
      keys_[l].resize(grown);
      values_[l].resize(grown);
    }
  }
}

float* KvCache::slot(int layer, int64_t pos, std::vector<std::vector<float>>& store) {
  const int64_t cap = capacity_[size_t(layer)];
  const int64_t s = cap > 0 ? pos % cap : pos;
  return store[size_t(layer)].data() + s * row_;
}

kernels::KvView KvCache::view(int layer) const {
  const int64_t cap = capacity_[size_t(layer)];
  return {keys_[size_t(layer)].data(), values_[size_t(layer)].data(), cap > 0 ? cap : INT64_MAX};
}

size_t KvCache::bytes() const {
  size_t b = 0;
  for (size_t l = 0; l < keys_.size(); ++l) b += (keys_[l].size() + values_[l].size()) * sizeof(float);
  return b;
}

}  // namespace g3n
