#include "tokenizer/chat_template.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace g3n {

namespace {

bool python_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Decodes the UTF-8 character of `len` bytes at s[i]; returns UINT32_MAX when it is not one valid character.
uint32_t decode_char(std::string_view s, size_t i, size_t len) {
  if (len == 0 || i + len > s.size()) return UINT32_MAX;
  const auto b0 = uint8_t(s[i]);
  size_t want;
  uint32_t c;
  if (b0 < 0x80) {
    want = 1, c = b0;
  } else if ((b0 & 0xe0) == 0xc0) {
    want = 2, c = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    want = 3, c = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    want = 4, c = b0 & 0x07;
  } else {
    return UINT32_MAX;
  }
  if (want != len) return UINT32_MAX;
  for (size_t k = 1; k < len; ++k) {
    const auto b = uint8_t(s[i + k]);
    if ((b & 0xc0) != 0x80) return UINT32_MAX;
    c = (c << 6) | (b & 0x3f);
  }
  return c;
}

size_t lead_length(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xe0) == 0xc0) return 2;
  if ((b & 0xf0) == 0xe0) return 3;
  if ((b & 0xf8) == 0xf0) return 4;
  return 0;
}

const char* kind_token(ChatItem::Kind k) {
  return k == ChatItem::Image ? "<image_soft_token>" : "<audio_soft_token>";
}

std::string replace_all_once(const std::string& s, std::string_view image_from, const std::string& image_to,
                             std::string_view audio_from, const std::string& audio_to) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t pi = s.find(image_from, i), pa = s.find(audio_from, i);
    const size_t p = std::min(pi, pa);
    if (p == std::string::npos) break;
    out.append(s, i, p - i);
    if (p == pi) {
      out += image_to;
      i = p + image_from.size();
    } else {
      out += audio_to;
      i = p + audio_from.size();
    }
  }
  out.append(s, i, std::string::npos);
  return out;
}

std::string where(size_t m) { return "messages[" + std::to_string(m) + "]"; }

std::string optional_string(const nlohmann::json& obj, std::initializer_list<const char*> keys) {
  if (!obj.is_object()) return {};
  for (const char* k : keys) {
    if (!obj.contains(k)) continue;
    const auto& v = obj[k];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object()) {
      const std::string inner = optional_string(v, {"url", "path", "data"});
      if (!inner.empty()) return inner;
    }
  }
  return {};
}

}  // namespace

std::string python_strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e) {
    const size_t len = lead_length(uint8_t(s[b]));
    const uint32_t c = decode_char(s, b, len);
    if (c == UINT32_MAX || !python_isspace(c)) break;
    b += len;
  }
  while (e > b) {
    size_t start = e - 1;
    while (start > b && e - start < 4 && (uint8_t(s[start]) & 0xc0) == 0x80) --start;
    const uint32_t c = decode_char(s, start, e - start);
    if (c == UINT32_MAX || !python_isspace(c)) break;
    e = start;
  }
  return std::string(s.substr(b, e - b));
}

std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  if (messages.empty()) fail("the conversation has no messages");
  std::string out = "<bos>";
  std::string first_user_prefix;
  size_t first = 0;
  if (messages[0].role == "system") {
    const auto& c = messages[0].content;
    if (c.empty() || c[0].kind != ChatItem::Text)
      fail("the system message (messages[0]) must start with text: the template uses the text of its first item");
    first_user_prefix = c[0].text + "\n\n";
    first = 1;
  }
  for (size_t m = first; m < messages.size(); ++m) {
    const size_t index0 = m - first;
    const ChatMessage& msg = messages[m];
    const bool is_user = msg.role == "user";
    if (is_user != (index0 % 2 == 0)) {
      fail("Conversation roles must alternate user/assistant/user/assistant/...: ", where(m), " has role '",
           msg.role, "' where ", index0 % 2 == 0 ? "'user'" : "a role other than 'user' (e.g. 'assistant')",
           " is expected", first ? " (after the system message)" : "");
    }
    const std::string role = msg.role == "assistant" ? "model" : msg.role;
    out += "<start_of_turn>" + role + "\n";
    if (index0 == 0) out += first_user_prefix;
    for (const ChatItem& item : msg.content) {
      if (item.kind == ChatItem::Text) {
        out += python_strip(item.text);
      } else {
        out += kind_token(item.kind);
      }
    }
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string expand_media_placeholders(const std::string& prompt, int image_tokens, int audio_tokens) {
  if (image_tokens < 0 || audio_tokens < 0) fail("placeholder token counts must not be negative");
  std::string image = "\n\n<start_of_image>";
  for (int i = 0; i < image_tokens; ++i) image += "<image_soft_token>";
  image += "<end_of_image>\n\n";
  std::string audio = "\n\n<start_of_audio>";
  for (int i = 0; i < audio_tokens; ++i) audio += "<audio_soft_token>";
  audio += "<end_of_audio>\n\n";
  return replace_all_once(prompt, "<image_soft_token>", image, "<audio_soft_token>", audio);
}

std::vector<ChatMessage> parse_openai_messages(const nlohmann::json& j) {
  const nlohmann::json* list = &j;
  if (j.is_object() && j.contains("messages")) list = &j["messages"];
  if (!list->is_array()) fail("expected a list of messages (or an object with a \"messages\" list)");
  std::vector<ChatMessage> out;
  for (size_t m = 0; m < list->size(); ++m) {
    const auto& msg = (*list)[m];
    if (!msg.is_object()) fail(where(m), " is not an object");
    if (!msg.contains("role") || !msg["role"].is_string()) fail(where(m), " has no string \"role\"");
    ChatMessage cm;
    cm.role = msg["role"].get<std::string>();
    if (!msg.contains("content")) fail(where(m), " has no \"content\"");
    const auto& content = msg["content"];
    if (content.is_string()) {
      cm.content.push_back({ChatItem::Text, content.get<std::string>()});
    } else if (content.is_array()) {
      for (size_t p = 0; p < content.size(); ++p) {
        const auto& part = content[p];
        const std::string at = where(m) + ".content[" + std::to_string(p) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          fail(at, " is not an object with a string \"type\"");
        const std::string type = part["type"].get<std::string>();
        if (type == "text") {
          if (!part.contains("text") || !part["text"].is_string()) fail(at, " (type text) has no string \"text\"");
          cm.content.push_back({ChatItem::Text, part["text"].get<std::string>()});
        } else if (type == "image_url" || type == "image") {
          cm.content.push_back({ChatItem::Image, optional_string(part, {"image_url", "url", "path", "image"})});
        } else if (type == "input_audio" || type == "audio") {
          cm.content.push_back({ChatItem::Audio, optional_string(part, {"input_audio", "url", "path", "audio"})});
        } else {
          fail(at, " has unsupported type '", type, "' (expected text, image_url, input_audio, image or audio)");
        }
      }
    } else {
      fail(where(m), ": Invalid content type (content must be a string or a list of parts)");
    }
    out.push_back(std::move(cm));
  }
  return out;
}

}  // namespace g3n
