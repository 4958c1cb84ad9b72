// The Gemma 3n chat template (HF convert_gemma3n_weights.py `_CHAT_TEMPLATE`, spec §10.2), the processor's
// image / audio placeholder expansion (Gemma3nProcessor, spec §10.3), and OpenAI-style message lists.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace g3n {

struct ChatItem {
  enum Kind { Text, Image, Audio };
  Kind kind = Text;
  // Text: the text. Image / Audio: where the media comes from (URL, path or data URI) when the message said so;
  // the template itself only writes a placeholder token.
  std::string text;
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (rendered "model"); anything else is rendered verbatim
  std::vector<ChatItem> content;
};

// The prompt the Gemma 3n template renders:
//   "<bos>" + for each turn "<start_of_turn>" + role + "\n" + content + "<end_of_turn>\n"
//   [+ "<start_of_turn>model\n" with add_generation_prompt].
// A first `system` message is not a turn: its first item's text (not trimmed) + "\n\n" starts the first turn.
// Text is trimmed (Python str.strip() whitespace), Image -> "<image_soft_token>", Audio -> "<audio_soft_token>",
// items are joined without separators. Turns must alternate user / other / user / ... starting with user;
// otherwise g3n::Error with the template's message and the offending position. An empty list is an error.
std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// Gemma3nProcessor's expansion: every "<image_soft_token>" becomes
//   "\n\n<start_of_image>" + image_tokens x "<image_soft_token>" + "<end_of_image>\n\n"
// and every "<audio_soft_token>" becomes
//   "\n\n<start_of_audio>" + audio_tokens x "<audio_soft_token>" + "<end_of_audio>\n\n".
std::string expand_media_placeholders(const std::string& prompt, int image_tokens = 256, int audio_tokens = 188);

// An OpenAI-style message list (or an object with a "messages" list): each message {role, content} where content
// is a string, or a list of parts {type: "text", text}, {type: "image_url", image_url: {url} | url},
// {type: "input_audio", input_audio: {data, format}}, {type: "image", url | path | image}, {type: "audio",
// url | path | audio}. Anything else is a g3n::Error naming the message and part.
std::vector<ChatMessage> parse_openai_messages(const nlohmann::json& messages);

// Python's str.strip() with no argument (what Jinja's `trim` filter does): removes leading and trailing
// characters for which str.isspace() is true.
std::string python_strip(std::string_view s);

}  // namespace g3n
