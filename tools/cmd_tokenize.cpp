// `g3n tokenize` and `g3n detokenize`: text <-> ids with the checkpoint's tokenizer (tokenizer.model [+
// tokenizer.json]), the Gemma 3n chat template, and a JSON-lines batch mode for parity checks.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "commands.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace g3n::tools {

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string from_hex(const std::string& hex, const std::string& what) {
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail(what, ": '", c, "' is not a hex digit");
  };
  std::string clean;
  for (char c : hex)
    if (c != ' ' && c != '\n' && c != '\t' && c != '\r') clean += c;
  if (clean.size() % 2) fail(what, ": odd number of hex digits");
  std::string out;
  for (size_t i = 0; i < clean.size(); i += 2) out += char(nibble(clean[i]) * 16 + nibble(clean[i + 1]));
  return out;
}

void write_raw(const std::string& s) {
  if (!s.empty() && std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) fail("cannot write to stdout");
}

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

std::string dump_json(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// Each line of a JSON-lines file; blank lines are skipped.
template <class F>
void for_each_jsonl(const std::string& path, F&& f) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  std::string line;
  for (size_t no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", no, ": not valid JSON: ", e.what());
    }
    f(j, path + ":" + std::to_string(no));
  }
}

}  // namespace

Action register_tokenize(CLI::App& app) {
  struct Args {
    std::string model, text, hex, file, jsonl, conversation;
    bool chat = false, no_bos = false, print = false, pieces = false, no_generation_prompt = false,
         expand_media = false;
    int image_tokens = 256, audio_tokens = 188;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (or of a chat rendered with the template)");
  cmd->add_option("-m,--model", a->model, "Checkpoint directory (tokenizer.model [+ tokenizer.json])")->required();
  auto* text_opt = cmd->add_option("text", a->text, "Text to tokenize");
  auto* hex = cmd->add_option("--hex", a->hex, "Text given as hex bytes (may be invalid UTF-8)");
  auto* file = cmd->add_option("--file", a->file, "Read the text from this file (raw bytes)");
  auto* jsonl = cmd->add_option("--jsonl", a->jsonl,
                                "Batch: one input per line, a JSON string or {\"text\": ...} or {\"hex\": ...}; "
                                "prints one JSON id list per line");
  auto* conv = cmd->add_option("--template", a->conversation,
                               "Render this JSON file (OpenAI-style message list) with the chat template");
  auto* chat = cmd->add_flag("--chat", a->chat, "Render the text as one user turn with the generation prompt");
  cmd->add_flag("--no-bos", a->no_bos, "Do not put <bos> first (plain text only; a rendered chat has its own)");
  cmd->add_flag("--no-generation-prompt", a->no_generation_prompt,
                "With --template: leave out the trailing <start_of_turn>model");
  cmd->add_flag("--expand-media", a->expand_media,
                "Expand <image_soft_token> / <audio_soft_token> as the processor does before tokenizing");
  cmd->add_option("--image-tokens", a->image_tokens, "Soft tokens per image with --expand-media")->check(CLI::Range(0, 1 << 16));
  cmd->add_option("--audio-tokens", a->audio_tokens, "Soft tokens per audio clip with --expand-media")->check(CLI::Range(0, 1 << 16));
  cmd->add_flag("--print", a->print, "Print the (rendered) text instead of the ids, byte for byte");
  cmd->add_flag("--pieces", a->pieces, "Print the pieces as a JSON list instead of the ids");
  jsonl->excludes(hex)->excludes(file)->excludes(conv)->excludes(chat);
  hex->excludes(file)->excludes(conv);
  file->excludes(conv);
  conv->excludes(chat);

  return [a, text_opt, hex, file, jsonl, conv] {
    const int sources = int(text_opt->count() > 0) + int(hex->count() > 0) + int(file->count() > 0) +
                        int(jsonl->count() > 0) + int(conv->count() > 0);
    if (sources > 1) fail("give the text one way only: as an argument, --hex, --file, --jsonl or --template");
    if (sources == 0)
      fail("no text: give it as an argument (\"\" for the empty string), or with --hex, --file, --jsonl or --template");
    const Tokenizer tok = Tokenizer::load_dir(a->model);

    if (jsonl->count() > 0) {
      std::string out;
      for_each_jsonl(a->jsonl, [&](const nlohmann::json& j, const std::string& where) {
        std::string text;
        if (j.is_string()) {
          text = j.get<std::string>();
        } else if (j.is_object() && j.contains("text") && j["text"].is_string()) {
          text = j["text"].get<std::string>();
        } else if (j.is_object() && j.contains("hex") && j["hex"].is_string()) {
          text = from_hex(j["hex"].get<std::string>(), where);
        } else {
          fail(where, ": expected a JSON string, {\"text\": ...} or {\"hex\": ...}");
        }
        if (a->expand_media) text = expand_media_placeholders(text, a->image_tokens, a->audio_tokens);
        out += dump_json(tok.encode(text, !a->no_bos)) + "\n";
      });
      write_raw(out);
      return 0;
    }

    std::string text;
    bool add_bos = !a->no_bos;
    if (conv->count() > 0) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_all(a->conversation));
      } catch (const nlohmann::json::exception& e) {
        fail(a->conversation, " is not valid JSON: ", e.what());
      }
      try {
        text = render_chat(parse_openai_messages(j), !a->no_generation_prompt);
      } catch (const Error& e) {
        fail(a->conversation, ": ", e.what());
      }
      add_bos = false;
    } else {
      if (hex->count() > 0) {
        text = from_hex(a->hex, "--hex");
      } else if (file->count() > 0) {
        text = read_all(a->file);
      } else {
        text = a->text;
      }
      if (a->chat) {
        text = render_chat({ChatMessage{"user", {ChatItem{ChatItem::Text, text}}}}, true);
        add_bos = false;
      }
    }
    if (a->expand_media) text = expand_media_placeholders(text, a->image_tokens, a->audio_tokens);

    if (a->print) {
      write_raw(text);
      return 0;
    }
    const std::vector<int32_t> ids = tok.encode(text, add_bos);
    if (a->pieces) {
      nlohmann::json p = nlohmann::json::array();
      for (int32_t id : ids) p.push_back(tok.piece(id));
      write_raw(dump_json(p) + "\n");
    } else {
      write_raw(ids_text(ids) + "\n");
    }
    return 0;
  };
}

Action register_detokenize(CLI::App& app) {
  struct Args {
    std::string model, jsonl;
    std::vector<std::string> ids;
    bool skip_special = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("detokenize", "Print the text of token ids");
  cmd->add_option("-m,--model", a->model, "Checkpoint directory (tokenizer.model [+ tokenizer.json])")->required();
  cmd->add_option("ids", a->ids, "Token ids (separated by spaces or commas)");
  cmd->add_option("--jsonl", a->jsonl, "Batch: one JSON id list per line; prints one JSON string per line");
  cmd->add_flag("--skip-special", a->skip_special, "Leave out special tokens (<bos>, <end_of_turn>, ...)");
  return [a] {
    if (!a->jsonl.empty() && !a->ids.empty()) fail("give the ids either as arguments or with --jsonl");
    const Tokenizer tok = Tokenizer::load_dir(a->model);
    if (!a->jsonl.empty()) {
      std::string out;
      for_each_jsonl(a->jsonl, [&](const nlohmann::json& j, const std::string& where) {
        if (!j.is_array()) fail(where, ": expected a JSON list of token ids");
        std::vector<int32_t> ids;
        for (const auto& v : j) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
            fail(where, ": ", v.dump(), " is not a token id");
          ids.push_back(int32_t(v.get<int64_t>()));
        }
        out += dump_json(tok.decode(ids, a->skip_special)) + "\n";
      });
      write_raw(out);
      return 0;
    }
    std::string joined;
    for (const auto& s : a->ids) joined += s + " ";
    write_raw(tok.decode(parse_ids(joined), a->skip_special) + "\n");
    return 0;
  };
}

}  // namespace g3n::tools
