// `g3n preprocess-image` and `g3n encode-image`: an image file to the Gemma 3n image processor's pixels,
// and to the 256 soft tokens the language model receives (MobileNet-V5 + embed_vision). The raw
// interfaces the vision parity checks use.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>

#include "base/error.h"
#include "base/thread_pool.h"
#include "commands.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "media/image.h"
#include "model/config.h"
#include "model/gguf_mmproj.h"
#include "model/vision_encoder.h"

namespace g3n::tools {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A float32 [3, H, W] .npy (little-endian '<f4', C order), for feeding the encoder exact pixels.
std::vector<float> read_pixels_npy(const std::string& path, int64_t& h, int64_t& w) {
  const std::string bytes = read_text(path);
  G3N_CHECK(bytes.size() >= 10 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0, path, ": not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t hlen = 0, start = 0;
  if (major == 1) {
    hlen = size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8;
    start = 10;
  } else {
    G3N_CHECK(bytes.size() >= 12, path, ": truncated .npy header");
    hlen = size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8 | size_t(uint8_t(bytes[10])) << 16 |
           size_t(uint8_t(bytes[11])) << 24;
    start = 12;
  }
  G3N_CHECK(hlen <= bytes.size() - start, path, ": truncated .npy header");
  const std::string header = bytes.substr(start, hlen);
  G3N_CHECK(header.find("'<f4'") != std::string::npos, path, ": pixels must be float32 ('<f4')");
  G3N_CHECK(header.find("'fortran_order': False") != std::string::npos, path, ": pixels must be in C order");
  const size_t at = header.find("'shape': (");
  long long c = 0, hh = 0, ww = 0;
  G3N_CHECK(at != std::string::npos &&
                std::sscanf(header.c_str() + at, "'shape': (%lld, %lld, %lld)", &c, &hh, &ww) == 3,
            path, ": pixels must have shape (3, H, W)");
  h = hh;
  w = ww;
  G3N_CHECK(c == 3 && h > 0 && w > 0 && h <= 8192 && w <= 8192, path, ": pixels of shape (", c, ", ", h, ", ", w,
            "), expected (3, H, W) with H, W in 1..8192");
  const size_t n = size_t(3 * h * w);
  G3N_CHECK(bytes.size() - start - hlen == n * 4, path, ": data size does not match the shape");
  std::vector<float> px(n);
  std::memcpy(px.data(), bytes.data() + start + hlen, n * 4);
  return px;
}

void check_size(int64_t size) {
  if (size != 256 && size != 512 && size != 768)
    std::fprintf(stderr, "g3n: note: Gemma 3n was trained at 256, 512 and 768 px; using %lld\n", (long long)size);
}

}  // namespace

Action register_preprocess_image(CLI::App& app) {
  struct Args {
    std::string image, out;
    int64_t size = 768;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("preprocess-image",
                                 "Write the Gemma 3n image processor's pixels of an image as a float32 .npy [3, N, N]");
  cmd->add_option("--image", a->image, "Image file (JPEG, PNG, BMP, GIF)")->required();
  cmd->add_option("--image-size", a->size, "Square side in pixels (256, 512 or 768)")->check(CLI::Range(1, 4096));
  cmd->add_option("-o,--out", a->out, "Output .npy file")->required();
  return [a] {
    const media::RgbImage img = media::load_image(a->image);
    const std::vector<float> px = media::preprocess_image(img, a->size);
    write_npy_f32(a->out, px.data(), {3, a->size, a->size});
    return 0;
  };
}

Action register_encode_image(CLI::App& app) {
  struct Args {
    std::string model, mmproj, image, pixels, out, features_out;
    int64_t size = 768;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("encode-image",
                                 "Write an image's soft tokens (MobileNet-V5 + embed_vision) as a float32 .npy [256, hidden]");
  cmd->add_option("-m,--model", a->model,
                  "Checkpoint directory (config.json + safetensors); with --mmproj, optionally the text model "
                  "(directory or GGUF) the projector must fit");
  cmd->add_option("--mmproj", a->mmproj, "llama.cpp multimodal projector GGUF holding the vision tower");
  auto* img_opt = cmd->add_option("--image", a->image, "Image file (JPEG, PNG, BMP, GIF)");
  auto* px_opt = cmd->add_option("--pixels", a->pixels, "Preprocessed pixels instead: float32 .npy [3, H, W]");
  img_opt->excludes(px_opt);
  cmd->add_option("--image-size", a->size, "Square side in pixels (256, 512 or 768)")->check(CLI::Range(1, 4096));
  cmd->add_option("-o,--out", a->out, "Output .npy file")->required();
  cmd->add_option("--features-out", a->features_out, "Also write the tower output, .npy [256, 2048]");
  cmd->add_option("-t,--threads", a->threads, "Worker threads (0: all cores)")->check(CLI::Range(0, 1024));
  return [a] {
    if (a->image.empty() == a->pixels.empty()) fail("give the input as --image FILE or --pixels FILE.npy");
    if (a->model.empty() && a->mmproj.empty()) fail("give the model as -m DIR (checkpoint) or --mmproj FILE.gguf");
    // The weights: a checkpoint directory, or an mmproj (whose text model, when given, must match it).
    std::optional<MmprojModel> mm;
    std::optional<TensorStore> store;
    std::unique_ptr<WeightSource> dir_source;
    std::string config_text;
    const WeightSource* source = nullptr;
    if (!a->mmproj.empty()) {
      mm = load_mmproj(a->mmproj);
      if (!mm->has_vision) fail(a->mmproj, ": this mmproj has no vision tower (clip.has_vision_encoder)");
      if (!a->model.empty()) attach_text_model(*mm, read_text_model_sizes(a->model));
      std::fprintf(stderr, "g3n: %s: %s\n", a->mmproj.c_str(), mm->summary.c_str());
      config_text = mm->config_json;
      source = mm->source.get();
    } else {
      config_text = read_text(a->model + "/config.json");
      store = TensorStore::open_dir(a->model);
      dir_source = safetensors_source(*store);
      source = dir_source.get();
    }
    const ModelConfig config = parse_config(config_text);
    const VisionArch arch = parse_vision_arch(config_text);
    const VisionEncoder encoder(config, arch, *source);

    std::vector<float> px;
    int64_t h = a->size, w = a->size;
    if (!a->pixels.empty()) {
      px = read_pixels_npy(a->pixels, h, w);
    } else {
      check_size(a->size);
      px = media::preprocess_image(media::load_image(a->image), a->size);
    }
    ThreadPool pool(a->threads);
    const std::vector<float> feats = encoder.features(px.data(), h, w, pool);
    if (!a->features_out.empty())
      write_npy_f32(a->features_out, feats.data(), {encoder.tokens_per_image(), encoder.feature_dim()});
    const std::vector<float> tokens = encoder.embed_features(feats.data(), encoder.tokens_per_image(), pool);
    write_npy_f32(a->out, tokens.data(), {encoder.tokens_per_image(), encoder.embedding_dim()});
    return 0;
  };
}

}  // namespace g3n::tools
