// Tests for the llama.cpp mmproj name mapping (model/gguf_mmproj.h) and the refusals that need no
// tensors. Whole files (every tower, every output type, llama.cpp itself reading them) are covered by
// tests/parity/test_gguf_mmproj.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "base/error.h"
#include "formats/gguf_writer.h"
#include "model/gguf_mmproj.h"
#include "quant/ggml_types.h"

namespace g3n {
namespace {

namespace fs = std::filesystem;

TEST(MmprojNames, LlamaCppToHuggingFaceAndBack) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"v.conv_stem.conv.weight", "model.vision_tower.timm_model.conv_stem.conv.weight"},
      {"v.conv_stem.conv.bias", "model.vision_tower.timm_model.conv_stem.conv.bias"},
      {"v.blk.0.0.conv_exp.weight", "model.vision_tower.timm_model.blocks.0.0.conv_exp.weight"},
      {"v.blk.2.17.attn.key.down_conv.weight", "model.vision_tower.timm_model.blocks.2.17.attn.key.down_conv.weight"},
      {"v.blk.3.38.layer_scale.gamma", "model.vision_tower.timm_model.blocks.3.38.layer_scale.gamma"},
      {"v.msfa.ffn.pw_proj.bn.weight", "model.vision_tower.timm_model.msfa.ffn.pw_proj.bn.weight"},
      {"mm.input_projection.weight", "model.embed_vision.embedding_projection.weight"},
      {"mm.soft_emb_norm.weight", "model.embed_vision.soft_embedding_norm.weight"},
      {"a.conv1d.1.weight", "model.audio_tower.subsample_conv_projection.conv_1.conv.weight"},
      {"a.conv1d.0.norm.weight", "model.audio_tower.subsample_conv_projection.conv_0.norm.weight"},
      {"a.pre_encode.out.weight", "model.audio_tower.subsample_conv_projection.input_proj_linear.weight"},
      {"a.blk.11.per_dim_scale", "model.audio_tower.conformer.11.attention.attn.per_dim_scale"},
      {"a.blk.0.linear_pos.weight",
       "model.audio_tower.conformer.0.attention.attn.relative_position_embedding.pos_proj.weight"},
      {"a.blk.3.conv_dw.weight", "model.audio_tower.conformer.3.lconv1d.depthwise_conv1d.weight"},
      {"a.blk.3.ffn_down_1.weight", "model.audio_tower.conformer.3.ffw_layer_end.ffw_layer_2.weight"},
      {"a.blk.3.layer_pre_norm.weight", "model.audio_tower.conformer.3.norm.weight"},
      {"mm.a.input_projection.weight", "model.embed_audio.embedding_projection.weight"},
  };
  for (const auto& [g, hf] : pairs) {
    EXPECT_EQ(mmproj_hf_name(g), hf) << g;
    EXPECT_EQ(mmproj_gguf_name(hf), g) << hf;
  }
  // Read as well, written never: the A_ENC_INP_PROJ name and a per_dim_scale with ".weight".
  EXPECT_EQ(mmproj_hf_name("a.input_projection.weight"),
            "model.audio_tower.subsample_conv_projection.input_proj_linear.weight");
  EXPECT_EQ(mmproj_hf_name("a.blk.2.per_dim_scale.weight"), "model.audio_tower.conformer.2.attention.attn.per_dim_scale");
  for (const char* g : {"v.blk.0.0.se.conv_reduce.weight", "v.blk.x.0.bn1.weight", "v.blk.0.bn1.weight", "token_embd.weight",
                        "a.blk.0.attn_q.bias", "a.conv1d.0.bias", "mm.post_proj_norm.weight", "v.blk.0.0."})
    EXPECT_EQ(mmproj_hf_name(g), "") << g;
  EXPECT_EQ(mmproj_gguf_name("model.language_model.layers.0.self_attn.q_proj.weight"), "");
}

class MmprojFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("g3n_mmproj_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A metadata-only file (plus one tiny tensor).
  std::string write(const std::string& name, const std::vector<std::pair<std::string, GgufValue>>& kv) {
    const std::string p = (dir_ / name).string();
    GgufWriter w(p);
    for (const auto& [k, v] : kv) w.set(k, v);
    w.add_tensor("token_embd.weight", ggml::F32, {4, 2});
    const float zeros[8] = {};
    w.write_tensor("token_embd.weight", zeros, sizeof(zeros));
    w.finish();
    return p;
  }

  static std::string error_of(const std::string& path) {
    try {
      load_mmproj(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  fs::path dir_;
};

TEST_F(MmprojFiles, RefusesWhatIsNotAGemma3nProjector) {
  const std::string text =
      write("text.gguf", {{"general.architecture", "gemma3n"}, {"gemma3n.embedding_length", uint32_t(4)}});
  EXPECT_NE(error_of(text).find("general.architecture is 'gemma3n', not 'clip'"), std::string::npos) << error_of(text);
  EXPECT_NE(error_of(text).find("this is a text model"), std::string::npos);

  const std::string gemma3 = write("gemma3.gguf", {{"general.architecture", "clip"},
                                                   {"clip.has_vision_encoder", true},
                                                   {"clip.projector_type", "gemma3"}});
  EXPECT_NE(error_of(gemma3).find("the vision projector type is 'gemma3', not Gemma 3n's 'gemma3nv'"), std::string::npos)
      << error_of(gemma3);

  const std::string none = write("none.gguf", {{"general.architecture", "clip"}});
  EXPECT_NE(error_of(none).find("neither a vision nor an audio encoder"), std::string::npos) << error_of(none);

  const std::string no_blocks = write("noblocks.gguf", {{"general.architecture", "clip"},
                                                        {"clip.has_vision_encoder", true},
                                                        {"clip.vision.projector_type", "gemma3nv"},
                                                        {"clip.vision.projection_dim", uint32_t(2048)}});
  EXPECT_NE(error_of(no_blocks).find("no vision blocks"), std::string::npos) << error_of(no_blocks);

  // read_text_model_sizes refuses an mmproj where a text model belongs.
  try {
    read_text_model_sizes(none);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a text model"), std::string::npos) << e.what();
  }
  const TextModelSizes t = read_text_model_sizes(text);
  EXPECT_EQ(t.hidden_size, 4);
  EXPECT_EQ(t.vocab_size, 2);
}

}  // namespace
}  // namespace g3n
