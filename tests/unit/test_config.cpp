// config.json variants real checkpoints carry, and inconsistent configs named in the error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "model/config.h"

namespace g3n {
namespace {

using json = nlohmann::json;

json small_text() {
  return {{"model_type", "gemma3n_text"}, {"num_hidden_layers", 6}, {"hidden_size", 64},
          {"intermediate_size", 128},     {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"head_dim", 16},               {"num_kv_shared_layers", 2}, {"vocab_size", 512},
          {"vocab_size_per_layer_input", 512}};
}

std::string error_of(const json& j) {
  try {
    parse_config(j.dump());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFollowTheReference) {
  json j = small_text();
  j["num_kv_shared_layers"] = 0;
  const ModelConfig m = parse_config(j.dump());
  const TextConfig& c = m.text;
  EXPECT_FALSE(m.multimodal);
  ASSERT_EQ(c.layer_types.size(), 6u);
  // Every 5th layer is full attention.
  EXPECT_EQ(c.layer_types[4], AttentionType::Full);
  EXPECT_EQ(c.layer_types[3], AttentionType::Sliding);
  // Sparsity defaults to 0.95 on the first 10 layers only when there are more than 10.
  for (float s : c.activation_sparsity) EXPECT_EQ(s, 0.0f);
  EXPECT_EQ(c.intermediate_size, std::vector<int64_t>(6, 128));
  EXPECT_DOUBLE_EQ(c.rope_theta_full, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_theta_sliding, 1e4);
  EXPECT_FLOAT_EQ(c.final_logit_softcapping, 30.0f);
  EXPECT_EQ(c.kv_source_layer, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(Config, KvSharingSourcesAreTheLastLayerOfTheSameType) {
  json j = small_text();
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                      "sliding_attention", "full_attention", "sliding_attention"};
  const TextConfig c = parse_config(j.dump()).text;
  EXPECT_EQ(c.first_kv_shared_layer, 4);
  EXPECT_EQ(c.kv_source_layer, (std::vector<int>{0, 1, 2, 3, 1, 3}));
  EXPECT_TRUE(c.owns_kv(3));
  EXPECT_FALSE(c.owns_kv(4));
}

TEST(Config, OldAndNewRopeKeys) {
  json old_style = small_text();
  old_style["layer_types"] = json::array();
  old_style.erase("layer_types");
  old_style["num_kv_shared_layers"] = 0;
  old_style["rope_theta"] = 2e6;
  old_style["rope_local_base_freq"] = 5e3;
  old_style["rope_scaling"] = nullptr;
  const TextConfig a = parse_config(old_style.dump()).text;
  EXPECT_DOUBLE_EQ(a.rope_theta_full, 2e6);
  EXPECT_DOUBLE_EQ(a.rope_theta_sliding, 5e3);

  json new_style = small_text();
  new_style["num_kv_shared_layers"] = 0;
  new_style["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 3e6}}},
                                  {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 7e3}}}};
  const TextConfig b = parse_config(new_style.dump()).text;
  EXPECT_DOUBLE_EQ(b.rope_theta_full, 3e6);
  EXPECT_DOUBLE_EQ(b.rope_theta_sliding, 7e3);

  new_style["rope_parameters"]["full_attention"]["rope_type"] = "yarn";
  EXPECT_NE(error_of(new_style).find("rope_type"), std::string::npos);
}

TEST(Config, PerLayerIntermediateSizeAndUnknownKeys) {
  json j = small_text();
  j["num_kv_shared_layers"] = 0;
  j["intermediate_size"] = {64, 96, 128, 160, 192, 224};
  j["query_pre_attn_scalar"] = 256;      // present in shipped configs, ignored by the reference
  j["some_future_key"] = {{"a", 1}};     // unknown keys are fine
  const TextConfig c = parse_config(j.dump()).text;
  EXPECT_EQ(c.intermediate_size, (std::vector<int64_t>{64, 96, 128, 160, 192, 224}));
}

TEST(Config, MultimodalConfigReadsTextConfigAndEmbedders) {
  json j = {{"model_type", "gemma3n"},
            {"text_config", small_text()},
            {"vision_config", {{"vocab_offset", 262144}, {"vocab_size", 128}, {"hidden_size", 32}}},
            {"audio_config", {{"vocab_offset", 262272}, {"vocab_size", 128}, {"hidden_size", 24}}},
            {"image_token_id", 262145}};
  j["text_config"]["num_kv_shared_layers"] = 0;
  const ModelConfig m = parse_config(j.dump());
  EXPECT_TRUE(m.multimodal);
  EXPECT_EQ(m.vision.hidden_size, 32);
  EXPECT_EQ(m.audio.vocab_offset, 262272);
  EXPECT_EQ(m.audio.hidden_size, 24);
  EXPECT_EQ(m.text.hidden_size, 64);
}

TEST(Config, InconsistentConfigsNameTheField) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"num_kv_shared_layers", 6}, {"num_kv_shared_layers", 9}, {"head_dim", 0}, {"num_hidden_layers", 0},
      {"intermediate_size", json::array({1, 2})}, {"layer_types", json::array({"sliding_attention"})},
      {"activation_sparsity_pattern", json::array({0.5})}, {"num_attention_heads", 3}, {"hidden_activation", "relu"},
      {"vocab_size", -5},
  };
  for (const auto& c : cases) {
    json j = small_text();
    j[c.field] = c.value;
    const std::string err = error_of(j);
    EXPECT_FALSE(err.empty()) << c.field << " = " << c.value;
    const std::string expect = std::string(c.field) == "num_attention_heads" ? "num_attention_heads" : c.field;
    EXPECT_NE(err.find(expect), std::string::npos) << err;
  }
  EXPECT_NE(error_of(json::array({1, 2})).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of({{"model_type", "llama"}}).find("llama"), std::string::npos);
  json wrong_type = small_text();
  wrong_type["hidden_size"] = "big";
  EXPECT_NE(error_of(wrong_type).find("hidden_size"), std::string::npos);
}

TEST(Config, SharedLayersNeedAProducerOfTheirType) {
  json j = small_text();
  j["layer_types"] = {"sliding_attention", "sliding_attention", "sliding_attention",
                      "sliding_attention", "full_attention", "sliding_attention"};
  const std::string err = error_of(j);
  EXPECT_NE(err.find("layer_types"), std::string::npos) << err;
}

}  // namespace
}  // namespace g3n
