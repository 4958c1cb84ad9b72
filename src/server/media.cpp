#include "server/media.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "server/api_error.h"
#include "server/json_guard.h"

namespace g3n::server {
namespace {

using nlohmann::json;

// "data:<mime>[;param...];base64,<payload>" -> (mime, bytes).
MediaPart decode_data_uri(const std::string& uri, MediaPart part) {
  const size_t comma = uri.find(',');
  if (uri.rfind("data:", 0) != 0 || comma == std::string::npos)
    throw ApiError(400, part.param + ": expected a data: URI (data:<type>;base64,...)", part.param, "invalid_media");
  const std::string header = uri.substr(5, comma - 5);
  const bool is_base64 = header.size() >= 7 && header.compare(header.size() - 7, 7, ";base64") == 0;
  if (!is_base64)
    throw ApiError(400, part.param + ": only base64 data URIs are supported", part.param, "invalid_media");
  part.mime = header.substr(0, header.find(';'));
  auto bytes = base64_decode(std::string_view(uri).substr(comma + 1));
  if (!bytes) throw ApiError(400, part.param + ": the data URI is not valid base64", part.param, "invalid_base64");
  if (bytes->empty()) throw ApiError(400, part.param + ": the data URI holds no data", part.param, "invalid_media");
  part.bytes = std::move(*bytes);
  return part;
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::string url_of(const json& part, const std::string& at) {
  // {type: image_url, image_url: {url}} or {image_url: "..."}; {type: image, url | image}.
  for (const char* key : {"image_url", "url", "image", "path"}) {
    const json* v = member(part, key);
    if (!v) continue;
    if (v->is_string()) return v->get<std::string>();
    if (const json* u = member(*v, "url"); u && u->is_string()) return u->get<std::string>();
  }
  throw ApiError(400, at + ": an image part needs image_url.url", at, "invalid_media");
}

}  // namespace

std::string fetch_remote_media(const std::string& url, const std::string& param, const RemoteMediaPolicy& remote) {
  const bool https = url.rfind("https://", 0) == 0;
  if (!https && url.rfind("http://", 0) != 0)
    throw ApiError(400, param + ": unsupported URL scheme (expected data:, http:// or https://)", param, "invalid_media");
  const size_t host_end = url.find('/', https ? 8 : 7);
  const std::string origin = url.substr(0, host_end);
  const std::string path = host_end == std::string::npos ? std::string("/") : url.substr(host_end);
  httplib::Client client(origin);
  client.set_follow_location(true);
  client.set_connection_timeout(remote.timeout_seconds, 0);
  client.set_read_timeout(remote.timeout_seconds, 0);
  std::string body;
  bool too_big = false;
  auto res = client.Get(path, [&](const char* data, size_t n) {
    if (body.size() + n > remote.max_bytes) {
      too_big = true;
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (too_big)
    throw ApiError(400, param + ": " + url + " is larger than " + std::to_string(remote.max_bytes) + " bytes", param,
                   "invalid_media");
  if (!res)
    throw ApiError(400, param + ": could not download " + url + " (" + httplib::to_string(res.error()) + ")", param,
                   "invalid_media");
  if (res->status != 200)
    throw ApiError(400, param + ": downloading " + url + " answered HTTP " + std::to_string(res->status), param,
                   "invalid_media");
  if (body.empty()) throw ApiError(400, param + ": " + url + " is empty", param, "invalid_media");
  return body;
}

std::vector<MediaPart> collect_media(const json& messages, const RemoteMediaPolicy& remote) {
  std::vector<MediaPart> out;
  if (!messages.is_array()) return out;
  for (size_t m = 0; m < messages.size(); ++m) {
    const json* content = member(messages[m], "content");
    if (!content || !content->is_array()) continue;
    for (size_t p = 0; p < content->size(); ++p) {
      const json& part = (*content)[p];
      const json* type = member(part, "type");
      if (!type || !type->is_string()) continue;  // parse_openai_messages reports it
      const std::string t = type->get<std::string>();
      MediaPart mp;
      mp.param = "messages[" + std::to_string(m) + "].content[" + std::to_string(p) + "]";
      if (t == "image_url" || t == "image") {
        mp.kind = MediaPart::Image;
        const std::string url = url_of(part, mp.param);
        if (url.rfind("data:", 0) != 0) {
          if (!remote.allow)
            throw ApiError(400,
                           mp.param + ": only data: URIs are accepted (this server fetches no URLs; start it with "
                                      "--allow-remote-media to allow http(s) images)",
                           mp.param, "invalid_media");
          mp.bytes = fetch_remote_media(url, mp.param, remote);
          mp.mime = "application/octet-stream";  // the decoder goes by the bytes' magic, not the type
          out.push_back(std::move(mp));
          continue;
        }
        out.push_back(decode_data_uri(url, std::move(mp)));
      } else if (t == "input_audio" || t == "audio") {
        mp.kind = MediaPart::Audio;
        const json* audio = member(part, "input_audio");
        if (!audio) audio = member(part, "audio");
        const json* data = audio ? member(*audio, "data") : nullptr;
        if (audio && audio->is_string()) data = audio;
        if (!data || !data->is_string())
          throw ApiError(400, mp.param + ": an audio part needs input_audio.data (base64)", mp.param, "invalid_media");
        const std::string& s = data->get_ref<const std::string&>();
        if (s.rfind("data:", 0) == 0) {
          out.push_back(decode_data_uri(s, std::move(mp)));
          continue;
        }
        const json* format = audio ? member(*audio, "format") : nullptr;
        mp.mime = "audio/" + (format && format->is_string() ? format->get<std::string>() : std::string("wav"));
        auto bytes = base64_decode(s);
        if (!bytes) throw ApiError(400, mp.param + ": input_audio.data is not valid base64", mp.param, "invalid_base64");
        if (bytes->empty()) throw ApiError(400, mp.param + ": input_audio.data is empty", mp.param, "invalid_media");
        mp.bytes = std::move(*bytes);
        out.push_back(std::move(mp));
      }
    }
  }
  return out;
}

std::vector<MediaEmbedding> encode_media(const Model& model, const std::vector<MediaPart>& parts) {
  std::vector<MediaEmbedding> out;
  for (const MediaPart& p : parts) {
    const bool image = p.kind == MediaPart::Image;
    if (image ? !model.supports_images() : !model.supports_audio())
      throw ApiError(400,
                     std::string("this model has no ") + (image ? "vision" : "audio") + " tower, so it cannot take " +
                         (image ? "images" : "audio") + " (" + p.param + ")",
                     p.param, "unsupported_media");
    try {
      out.push_back(image ? model.encode_image(p.bytes.data(), p.bytes.size(), p.param)
                          : model.encode_audio(p.bytes.data(), p.bytes.size(), p.param));
    } catch (const Error& e) {
      throw ApiError(400, e.what(), p.param, "invalid_media");
    }
  }
  return out;
}

}  // namespace g3n::server
