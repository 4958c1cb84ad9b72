// Image and audio parts of chat messages: where multimodal input enters the server.
//
// parse_openai_messages() (tokenizer/chat_template.h) accepts image_url / input_audio parts and
// render_chat() writes a placeholder token for each. Here every such part is decoded from the request
// (a data: URI or input_audio's base64 `data`; remote URLs are refused: the server fetches nothing), and
// encode_media() turns the parts into soft tokens with the model's vision / audio towers (images at
// 768 px; audio clips as the reference hears them: the first 30 s). The chat request then expands the
// placeholders to the encoded token counts, tokenises, and places the rows (place_media). Each row
// carries a hash of its media, so a slot reuses a cached prefix only when the same media sits at the
// same place.
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

// Remote images (image_url with http:// or https://) are fetched only when the server was started with
// --allow-remote-media: at most max_bytes, within timeout_seconds, redirects followed (cpp-httplib: at most 20).
struct RemoteMediaPolicy {
  bool allow = false;
  size_t max_bytes = size_t(16) << 20;
  int timeout_seconds = 10;
};

// Finds and decodes the media parts of an OpenAI message list. Throws ApiError 400 naming the part
// for a malformed data URI, invalid base64, or a remote URL (refused, or failing to download).
std::vector<MediaPart> collect_media(const nlohmann::json& messages, const RemoteMediaPolicy& remote = {});

// Downloads one URL for part `param` (http:// or https://). Throws ApiError 400 naming the part, the
// URL and the problem (status, size, timeout).
std::string fetch_remote_media(const std::string& url, const std::string& param, const RemoteMediaPolicy& remote);

// Encodes the decoded parts, in order. Throws ApiError 400 naming the part when the model has no tower
// for it or the media cannot be decoded (the encoder's message).
std::vector<MediaEmbedding> encode_media(const Model& model, const std::vector<MediaPart>& parts);

}  // namespace g3n::server
