// Image and audio parts of chat messages: where multimodal input plugs into the server.
//
// parse_openai_messages() (tokenizer/chat_template.h) accepts image_url / input_audio parts and
// render_chat() writes a placeholder token for each. Here every such part is decoded from the request
// (a data: URI or input_audio's base64 `data`; remote URLs are refused: the server fetches nothing),
// and then prepare_media() is called. Until the vision and audio encoders land, prepare_media()
// answers 400 "image input is not available in this build" (or "audio ...").
//
// WIRING POINT for the encoders: prepare_media() gets the decoded bytes of every part in prompt
// order. It should decode them with src/media, run the encoder, expand the placeholders
// (expand_media_placeholders) and return the PromptEmbeddings (soft-token positions in the tokenized
// prompt, rows, and a key per position, e.g. a hash of the bytes, so that a slot reuses a cached
// prefix only when the same media sits at the same place). The server already passes a non-empty
// result on to sync() (see server.cpp, `media`).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "g3n/engine.h"

namespace g3n::server {

struct MediaPart {
  enum Kind { Image, Audio } kind = Image;
  std::string param;      // where it sits in the request, e.g. "messages[0].content[1]"
  std::string mime;       // from the data URI, or "audio/<format>"
  std::string bytes;      // decoded
};

// Finds and decodes the media parts of an OpenAI message list. Throws ApiError 400 naming the part
// for a malformed data URI, invalid base64 or a remote URL.
std::vector<MediaPart> collect_media(const nlohmann::json& messages);

// Turns the decoded parts into prompt embeddings. Throws ApiError 400 while the encoders are absent.
PromptEmbeddings prepare_media(const std::vector<MediaPart>& parts);

}  // namespace g3n::server
