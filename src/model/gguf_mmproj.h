// Gemma 3n's vision tower (and audio tower) from a llama.cpp multimodal projector GGUF ("mmproj"), as
// llama.cpp's converter writes it (convert_hf_to_gguf.py --mmproj, class Gemma3nVisionAudioModel):
// general.architecture "clip", clip.vision.projector_type "gemma3nv" (MobileNet-V5 + embed_vision),
// clip.audio.projector_type "gemma3na" (USM Conformer + embed_audio).
//
// The tensors are mapped back to their Hugging Face names (the table is in gguf_mmproj.cpp), so
// VisionEncoder and AudioEncoder read an mmproj exactly as they read a checkpoint directory. The file
// does not describe the towers' structure; it is derived from the tensors present and their shapes,
// with the rules llama.cpp's own MobileNet-V5 graph applies (the first block of every stage strides
// by 2; the fusion adapter reads the ends of stages 2 and 3, or of the last stage when there are fewer
// than 4). Values the converter does not write (the audio attention chunking, reduction factor, ...)
// are the released model's, as llama.cpp assumes too.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "formats/gguf.h"
#include "model/config.h"
#include "model/weight_source.h"

namespace g3n {

struct MmprojModel {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<WeightSource> source;  // Hugging Face names (model.vision_tower.timm_model.*, model.embed_vision.*,
                                         // model.audio_tower.*, model.embed_audio.*); views into `file`
  bool has_vision = false, has_audio = false;
  int64_t projection_dim = 0;  // width of the soft tokens = the text model's hidden size (clip.*.projection_dim)
  // A Gemma3nConfig-style config.json text: vision_config (architecture, and model_args when the tower
  // is not mobilenetv5_300m_enc), audio_config, and a text_config holding only what the mmproj knows
  // (hidden_size = projection_dim; attach_text_model adds the text model's vocabulary). parse_config,
  // parse_vision_arch and AudioEncoderConfig::from_json read it.
  std::string config_json;
  // One line for logs: "vision: mobilenetv5_300m_enc; audio: 12 Conformer layers x 1536; soft tokens of width 2048".
  std::string summary;
};

// Opens, maps and checks an mmproj file: every tensor of each tower it holds is checked for presence and
// shape against the structure the file implies, before anything is computed. Throws g3n::Error naming
// the file and the problem (a missing or mis-shaped tensor by its llama.cpp and Hugging Face names, a
// projector type that is not Gemma 3n's, a text-model GGUF given as mmproj, ...). Tensors are used in
// place where their type allows (vision: F32/F16/BF16, others dequantised to F32 at load; audio matrices
// also Q8_0/Q4_0 in place, other block types repacked to Q8_0).
// `embedded`: the towers sit inside a Gemma 3n text GGUF (what `g3n quantize` writes by default: one file
// with every modality, clip.* keys beside gemma3n.*); the architecture check is then skipped.
MmprojModel load_mmproj(const std::string& path, bool embedded = false);

// True when a GGUF file declares towers of its own (clip.has_vision_encoder / clip.has_audio_encoder).
bool gguf_has_towers(const GgufFile& file);

// The sizes of a text model an mmproj must match.
struct TextModelSizes {
  int64_t hidden_size = 0;  // the soft tokens' width
  int64_t vocab_size = 0;   // the audio prompt pads with embed_audio(vocab_size - 1)
};
// Read without loading any weights: a checkpoint directory's config.json, or a GGUF file's
// <arch>.embedding_length and token_embd rows. Throws g3n::Error.
TextModelSizes read_text_model_sizes(const std::string& path);

// Checks that `mm` projects to `text.hidden_size` (throws g3n::Error naming both sizes otherwise) and
// records the text model's sizes in mm.config_json's text_config.
void attach_text_model(MmprojModel& mm, const TextModelSizes& text);

// The multimodal half of a text model's config from an mmproj: sets config.multimodal and the
// vision / audio embedder configs. Throws g3n::Error when the mmproj's projection width is not
// config.text.hidden_size (an mmproj of another model).
void apply_mmproj(ModelConfig& config, const MmprojModel& mm);

// The Hugging Face name of a llama.cpp mmproj tensor ("v.blk.1.0.dw_mid.conv.weight" ->
// "model.vision_tower.timm_model.blocks.1.0.dw_mid.conv.weight"); empty for names g3n does not use.
std::string mmproj_hf_name(const std::string& gguf_name);
// And back (the name llama.cpp's converter writes); empty for names that are not part of an mmproj.
std::string mmproj_gguf_name(const std::string& hf_name);

}  // namespace g3n
