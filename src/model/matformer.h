// MatFormer profiles: which layers of a Gemma 3n model run and how wide each one's FFN is. A
// profile of an E4B model computes exactly what the checkpoint sliced with the same configuration
// (the MatFormer Lab procedure) computes: kept layers by their original index (their own layer
// type, RoPE, sparsity, PLE slice and KV source), and the prefix of each kept layer's FFN neurons.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace g3n {

struct MatformerProfile {
  std::string name;
  std::vector<int> layers;          // kept original layer indices, increasing
  std::vector<int64_t> ffn_widths;  // FFN width of each kept layer (a prefix of its neurons)

  bool operator==(const MatformerProfile& o) const { return layers == o.layers && ffn_widths == o.ffn_widths; }
};

// The full model: every layer at its full width.
MatformerProfile full_profile(const TextConfig& c);

// The names of the published configurations (google/gemma3n-slicing-configs), in table order.
std::vector<std::string> published_profile_names();

// A profile from: a published name ("Config for official E2B Model"; also "E2B", "E4B", "full"), a
// JSON file ({"layers_skipped": [...], "ffn_hidden_dims": [...]} as the MatFormer Lab takes them),
// or an inline spec "skip=20-24;ffn=8192" (ffn: one width for every kept layer, or a comma list).
// Published widths are relative: 16384 means the layer's full width, 8192 half of it, so the
// profiles also apply to reduced-width E4B-like models. Throws g3n::Error naming what is wrong.
MatformerProfile resolve_profile(const std::string& spec, const TextConfig& c);

// Checks a profile against a model: layers increasing and in range, every KV-producing layer that a
// kept layer reads kept, widths in (0, full] (multiples of 32 when `quantized`).
void validate_profile(const MatformerProfile& p, const TextConfig& c, bool quantized);

// The config of the checkpoint the profile slices out (num_hidden_layers, per-layer intermediate_size,
// num_kv_shared_layers, layer_types and sparsity filtered by the kept layers).
TextConfig sliced_config(const TextConfig& c, const MatformerProfile& p);

// True when two profiles agree on every layer below the first KV-shared layer (kept set and widths):
// then the K/V caches they build are identical and a session can switch without re-prefilling.
bool same_kv_layers(const MatformerProfile& a, const MatformerProfile& b, const TextConfig& c);

}  // namespace g3n
