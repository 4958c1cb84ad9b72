#include "model/matformer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"

namespace g3n {

const char* gemma3n_slicing_configs_csv();  // generated from data/gemma3n_slicing_configs.csv

namespace {

struct PublishedRow {
  std::string name;
  std::vector<int> skipped;
  std::vector<int> full_width;  // E4B layers that keep 16384
};

// "4 9-24 29" -> {4, 9, 10, ..., 24, 29}
std::vector<int> parse_ranges(const std::string& text, const std::string& what) {
  std::vector<int> out;
  std::istringstream in(text);
  std::string item;
  while (in >> item) {
    for (char& ch : item)
      if (ch == ',') ch = ' ';
    std::istringstream parts(item);
    std::string part;
    while (parts >> part) {
      const size_t dash = part.find('-');
      try {
        const int a = std::stoi(part.substr(0, dash));
        const int b = dash == std::string::npos ? a : std::stoi(part.substr(dash + 1));
        if (a < 0 || b < a || b > 4096) fail("bad range");
        for (int i = a; i <= b; ++i) out.push_back(i);
      } catch (const std::exception&) {
        fail(what, ": '", part, "' is not a layer index or range");
      }
    }
  }
  return out;
}

const std::vector<PublishedRow>& published() {
  static const std::vector<PublishedRow> rows = [] {
    std::vector<PublishedRow> r;
    std::istringstream in(gemma3n_slicing_configs_csv());
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      if (header) {
        header = false;
        continue;
      }
      const size_t a = line.find(','), b = line.find(',', a + 1);
      r.push_back({line.substr(0, a), parse_ranges(line.substr(a + 1, b - a - 1), "slicing table"),
                   parse_ranges(line.substr(b + 1), "slicing table")});
    }
    return r;
  }();
  return rows;
}

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

MatformerProfile from_published(const PublishedRow& row, const TextConfig& c) {
  if (c.num_hidden_layers != 35)
    fail("profile '", row.name, "' is a configuration of the 35-layer E4B model; this model has ", c.num_hidden_layers,
         " layers");
  MatformerProfile p;
  p.name = row.name;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (std::count(row.skipped.begin(), row.skipped.end(), l)) continue;
    const int64_t full = c.intermediate_size[size_t(l)];
    const bool keeps_full = std::count(row.full_width.begin(), row.full_width.end(), l) > 0;
    p.layers.push_back(l);
    p.ffn_widths.push_back(keeps_full ? full : full / 2);  // 16384 -> full, 8192 -> half
  }
  return p;
}

MatformerProfile from_lists(const std::string& name, const std::vector<int>& skipped, const std::vector<int64_t>& ffn,
                            const TextConfig& c) {
  MatformerProfile p;
  p.name = name;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    if (!std::count(skipped.begin(), skipped.end(), l)) p.layers.push_back(l);
  for (int s : skipped)
    if (s < 0 || s >= c.num_hidden_layers)
      fail("profile '", name, "': skipped layer ", s, " is outside [0, ", c.num_hidden_layers, ")");
  if (ffn.size() == 1) p.ffn_widths.assign(p.layers.size(), ffn[0]);
  else if (ffn.empty())
    for (int l : p.layers) p.ffn_widths.push_back(c.intermediate_size[size_t(l)]);
  else p.ffn_widths = ffn;
  if (p.ffn_widths.size() != p.layers.size())
    fail("profile '", name, "': ", p.ffn_widths.size(), " FFN widths for ", p.layers.size(), " kept layers");
  return p;
}

}  // namespace

MatformerProfile full_profile(const TextConfig& c) {
  MatformerProfile p;
  p.name = "full";
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    p.layers.push_back(l);
    p.ffn_widths.push_back(c.intermediate_size[size_t(l)]);
  }
  return p;
}

std::vector<std::string> published_profile_names() {
  std::vector<std::string> names;
  for (const auto& r : published()) names.push_back(r.name);
  return names;
}

MatformerProfile resolve_profile(const std::string& spec, const TextConfig& c) {
  const std::string key = lower(spec);
  if (key.empty() || key == "full" || key == "e4b") return full_profile(c);
  for (const auto& r : published())
    if (lower(r.name) == key) return from_published(r, c);
  if (key == "e2b") return from_published(published()[1], c);

  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(spec, ec)) {
    std::ifstream in(spec);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const nlohmann::json::exception& e) {
      fail("profile file ", spec, " is not valid JSON: ", e.what());
    }
    if (!j.is_object()) fail("profile file ", spec, " is not a JSON object");
    std::vector<int> skipped;
    std::vector<int64_t> ffn;
    try {
      if (j.contains("layers_skipped")) skipped = j["layers_skipped"].get<std::vector<int>>();
      if (j.contains("ffn_hidden_dims")) ffn = j["ffn_hidden_dims"].get<std::vector<int64_t>>();
    } catch (const nlohmann::json::exception&) {
      fail("profile file ", spec, ": layers_skipped and ffn_hidden_dims must be lists of integers");
    }
    return from_lists(j.value("name", fs::path(spec).stem().string()), skipped, ffn, c);
  }
  if (spec.find('=') != std::string::npos) {
    std::vector<int> skipped;
    std::vector<int64_t> ffn;
    std::istringstream in(spec);
    std::string field;
    while (std::getline(in, field, ';')) {
      const size_t eq = field.find('=');
      const std::string k = lower(field.substr(0, eq)), v = eq == std::string::npos ? "" : field.substr(eq + 1);
      if (k == "skip") skipped = parse_ranges(v, "profile skip=");
      else if (k == "ffn") {
        std::string list = v;
        for (char& ch : list)
          if (ch == ',') ch = ' ';
        std::istringstream nums(list);
        std::string num;
        while (nums >> num) {
          try {
            ffn.push_back(std::stoll(num));
          } catch (const std::exception&) {
            fail("profile ffn=: '", num, "' is not a width");
          }
        }
      } else {
        fail("profile '", spec, "': unknown field '", k, "' (expected skip= and ffn=)");
      }
    }
    return from_lists(spec, skipped, ffn, c);
  }
  std::string known;
  for (const auto& r : published()) known += "\n  " + r.name;
  fail("unknown profile '", spec, "': give a published name, E2B / E4B, a JSON file or skip=..;ffn=.. Published:", known);
}

void validate_profile(const MatformerProfile& p, const TextConfig& c, bool quantized) {
  if (p.layers.empty()) fail("profile '", p.name, "' keeps no layer");
  if (p.layers.size() != p.ffn_widths.size())
    fail("profile '", p.name, "': ", p.ffn_widths.size(), " FFN widths for ", p.layers.size(), " layers");
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const int l = p.layers[i];
    if (l < 0 || l >= c.num_hidden_layers) fail("profile '", p.name, "': layer ", l, " does not exist");
    if (i && l <= p.layers[i - 1]) fail("profile '", p.name, "': layers must increase (", p.layers[i - 1], ", ", l, ")");
    const int64_t w = p.ffn_widths[i], full = c.intermediate_size[size_t(l)];
    if (w <= 0 || w > full) fail("profile '", p.name, "': FFN width ", w, " of layer ", l, " is outside (0, ", full, "]");
    if (quantized && w % 32 != 0)
      fail("profile '", p.name, "': FFN width ", w, " of layer ", l, " must be a multiple of 32 for quantised weights");
    const int src = c.kv_source_layer[size_t(l)];
    if (!std::binary_search(p.layers.begin(), p.layers.end(), src))
      fail("profile '", p.name, "' skips layer ", src, ", whose K/V cache kept layer ", l, " reads");
  }
}

TextConfig sliced_config(const TextConfig& c, const MatformerProfile& p) {
  TextConfig s = c;
  s.num_hidden_layers = int(p.layers.size());
  s.intermediate_size = p.ffn_widths;
  s.layer_types.clear();
  s.activation_sparsity.clear();
  int shared = 0;
  for (int l : p.layers) {
    s.layer_types.push_back(c.layer_types[size_t(l)]);
    s.activation_sparsity.push_back(c.activation_sparsity[size_t(l)]);
    if (l >= c.first_kv_shared_layer) ++shared;
  }
  s.num_kv_shared_layers = shared;
  s.validate();
  return s;
}

bool same_kv_layers(const MatformerProfile& a, const MatformerProfile& b, const TextConfig& c) {
  auto below = [&](const MatformerProfile& p) {
    std::vector<std::pair<int, int64_t>> v;
    for (size_t i = 0; i < p.layers.size(); ++i)
      if (p.layers[i] < c.first_kv_shared_layer) v.emplace_back(p.layers[i], p.ffn_widths[i]);
    return v;
  };
  return below(a) == below(b);
}

}  // namespace g3n
