// Tests for the tokenizer library: the synthetic Gemma-layout vocabulary, encode/decode, the stream decoder, the
// chat template and placeholder expansion. Expected strings marked "reference" were produced by transformers 5.24
// (apply_chat_template with the Gemma 3n template; Python's bytes.decode("utf-8", "replace"); str.strip()).
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/synthetic_vocab.h"
#include "tokenizer/tokenizer.h"

namespace g3n {
namespace {

namespace fs = std::filesystem;

const std::string& synthetic_model() {
  static const std::string m = make_synthetic_sentencepiece_model();
  return m;
}

const Tokenizer& synthetic() {
  static const Tokenizer t = Tokenizer::from_serialized_proto(synthetic_model());
  return t;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("g3n_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }
  void write(const std::string& name, const std::string& data) const {
    std::ofstream(path_ / name, std::ios::binary) << data;
  }

 private:
  fs::path path_;
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- synthetic vocabulary -------------------------------------------------------------------------------------

TEST(SyntheticVocab, LoadsInSentencePiece) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(synthetic_model()).ok());
  EXPECT_EQ(sp.GetPieceSize(), 262144);
  EXPECT_EQ(sp.unk_id(), 3);
  EXPECT_EQ(sp.bos_id(), 2);
  EXPECT_EQ(sp.eos_id(), 1);
  EXPECT_EQ(sp.pad_id(), 0);
  EXPECT_EQ(sp.IdToPiece(0), "<pad>");
  EXPECT_EQ(sp.IdToPiece(4), "<mask>");
  EXPECT_EQ(sp.IdToPiece(105), "<start_of_turn>");
  EXPECT_EQ(sp.IdToPiece(106), "<end_of_turn>");
  EXPECT_EQ(sp.IdToPiece(255999), "<start_of_image>");
  EXPECT_EQ(sp.IdToPiece(256000), "<start_of_audio>");
  EXPECT_EQ(sp.IdToPiece(262143), "<unused6241>");
  EXPECT_TRUE(sp.IsControl(105) && sp.IsControl(2) && sp.IsUnknown(3));
  for (int b = 0; b < 256; ++b) EXPECT_TRUE(sp.IsByte(238 + b)) << b;
  EXPECT_EQ(sp.IdToPiece(238 + 0x41), "<0x41>");
  EXPECT_EQ(sp.IdToPiece(107), "\n");
  EXPECT_EQ(sp.IdToPiece(138), "\xE2\x96\x81\xE2\x96\x81");
  EXPECT_EQ(sp.IdToPiece(255968), "\t");
  // SentencePiece alone: no dummy prefix, spaces as "▁".
  std::vector<std::string> pieces;
  ASSERT_TRUE(sp.Encode("the model", &pieces).ok());
  EXPECT_EQ(pieces, (std::vector<std::string>{"the", "\xE2\x96\x81model"}));
}

TEST(SyntheticVocab, TokenizerIdsAndTypes) {
  const Tokenizer& t = synthetic();
  EXPECT_EQ(t.sentencepiece_size(), 262144);
  EXPECT_EQ(t.size(), 262274);  // + <end_of_image> 262144 ... <audio_soft_token> 262273
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.start_of_turn_id(), 105);
  EXPECT_EQ(t.end_of_turn_id(), 106);
  EXPECT_EQ(t.boi_id(), 255999);
  EXPECT_EQ(t.boa_id(), 256000);
  EXPECT_EQ(t.eoi_id(), 262144);
  EXPECT_EQ(t.image_soft_id(), 262145);
  EXPECT_EQ(t.eoa_id(), 262272);
  EXPECT_EQ(t.audio_soft_id(), 262273);
  EXPECT_EQ(t.token_id("<start_of_turn>"), 105);
  EXPECT_EQ(t.token_id("<image_soft_token>"), 262145);
  EXPECT_EQ(t.token_id("no such piece"), -1);
  EXPECT_EQ(t.piece(262273), "<audio_soft_token>");
  EXPECT_EQ(t.piece(262200), "");
  EXPECT_EQ(t.piece(-5), "");
  EXPECT_EQ(t.piece_type(3), PieceType::Unknown);
  EXPECT_EQ(t.piece_type(105), PieceType::Control);
  EXPECT_EQ(t.piece_type(107), PieceType::UserDefined);
  EXPECT_EQ(t.piece_type(238), PieceType::Byte);
  EXPECT_EQ(t.piece_type(494), PieceType::Normal);
  EXPECT_EQ(t.piece_type(262144), std::nullopt);
  EXPECT_TRUE(t.is_special(105));
  EXPECT_TRUE(t.is_special(262145));
  EXPECT_FALSE(t.is_special(107));  // user-defined: an added token, not special
  EXPECT_FALSE(t.is_special(494));
}

TEST(SyntheticVocab, EncodesSensibly) {
  const Tokenizer& t = synthetic();
  const auto ids = t.encode("Hello world, the model is good.", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_LE(ids.size(), 14u);  // words, not bytes
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_NE(t.piece_type(ids[i]), PieceType::Byte) << t.piece(ids[i]);
  EXPECT_EQ(t.encode("<start_of_turn>user\nhi<end_of_turn>\n", false).front(), 105);
  EXPECT_EQ(t.encode("\n\n", false), (std::vector<int32_t>{108}));
  EXPECT_EQ(t.encode("  ", false), (std::vector<int32_t>{138}));
  EXPECT_EQ(t.encode("\t\t", false), (std::vector<int32_t>{255969}));
  EXPECT_EQ(t.encode("", true), (std::vector<int32_t>{2}));
  EXPECT_TRUE(t.encode("", false).empty());
  // 😀 is not in the vocabulary: four byte tokens.
  EXPECT_EQ(t.encode("\xF0\x9F\x98\x80", false), (std::vector<int32_t>{238 + 0xF0, 238 + 0x9F, 238 + 0x98, 238 + 0x80}));
}

TEST(SyntheticVocab, RoundTripsArbitraryUtf8) {
  const Tokenizer& t = synthetic();
  const std::vector<std::string> samples = {
      "plain ascii text", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "émoji 😀👨‍👩‍👧 flags 🇮🇹",
      "日本語のテキスト", "مرحبا بالعالم", "नमस्ते", std::string("a\0b", 3), "\x7f\x01\x1b[0m",
      repeat(" ", 100) + "x" + repeat("\n", 40), "<start_of_turn>model\n<end_of_turn>", "<0x41> <unused5> [multimodal]",
      "\xF4\x8F\xBF\xBF (U+10FFFF)",
  };
  for (const auto& s : samples) EXPECT_EQ(t.decode(t.encode(s, false)), s) << s;

  std::mt19937 rng(123);
  std::uniform_int_distribution<uint32_t> cp(1, 0x10FFFF);
  for (int round = 0; round < 300; ++round) {
    std::string s;
    const int n = int(rng() % 20);
    for (int i = 0; i < n; ++i) {
      uint32_t c = rng() % 3 == 0 ? cp(rng) : 0x20 + rng() % 0x5f;
      if (c >= 0xD800 && c <= 0xDFFF) c = 0xFFFD;
      if (c < 0x80) {
        s += char(c);
      } else if (c < 0x800) {
        s += char(0xC0 | (c >> 6)), s += char(0x80 | (c & 0x3F));
      } else if (c < 0x10000) {
        s += char(0xE0 | (c >> 12)), s += char(0x80 | ((c >> 6) & 0x3F)), s += char(0x80 | (c & 0x3F));
      } else {
        s += char(0xF0 | (c >> 18)), s += char(0x80 | ((c >> 12) & 0x3F)), s += char(0x80 | ((c >> 6) & 0x3F)),
            s += char(0x80 | (c & 0x3F));
      }
    }
    ASSERT_TRUE(is_valid_utf8(s));
    EXPECT_EQ(t.decode(t.encode(s, false)), s);
    std::string with_bos = "<bos>";
    with_bos += s;
    EXPECT_EQ(t.decode(t.encode(s, true)), with_bos);
    EXPECT_EQ(t.decode(t.encode(s, true), /*skip_special_tokens=*/true), s);
  }
}

TEST(SyntheticVocab, LongSpaceRunsFollowBpeMergeOrder) {
  const Tokenizer& t = synthetic();
  const int32_t a = t.token_id("a"), b = t.token_id("b");
  auto spaces = [&](int n) { return 136 + n; };  // "▁" x n, n = 2..31
  EXPECT_EQ(t.encode(std::string("a") + repeat(" ", 31) + "b", false), (std::vector<int32_t>{a, spaces(31), b}));
  EXPECT_EQ(t.encode(std::string("a") + repeat(" ", 32) + "b", false), (std::vector<int32_t>{a, spaces(16), spaces(16), b}));
  EXPECT_EQ(t.encode(std::string("a") + repeat(" ", 33) + "b", false), (std::vector<int32_t>{a, spaces(16), spaces(17), b}));
  EXPECT_EQ(t.encode(repeat(" ", 100), false),
            (std::vector<int32_t>{spaces(16), spaces(16), spaces(16), spaces(16), spaces(16), spaces(20)}));
  // A literal "▁" counts as a space.
  EXPECT_EQ(t.encode("a \xE2\x96\x81 b", false), (std::vector<int32_t>{a, spaces(3), b}));
}

TEST(Tokenizer, InvalidUtf8ReadAsPythonReplace) {
  // reference: bytes.decode("utf-8", "replace")
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(sanitize_utf8("\xE2\x82"), R);
  EXPECT_EQ(sanitize_utf8("\xE2\x82" "A"), R + "A");
  EXPECT_EQ(sanitize_utf8("\xF0\x80\x80"), R + R + R);
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), R + R + R);  // a lone surrogate, CESU-8
  EXPECT_EQ(sanitize_utf8("\xC0\xAF"), R + R);
  EXPECT_EQ(sanitize_utf8("\xF4\x90\x80\x80"), R + R + R + R);
  EXPECT_EQ(sanitize_utf8("a\xFF" "b"), "a" + R + "b");
  EXPECT_EQ(sanitize_utf8("\xE0\xA0"), R);
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98"), R);
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_TRUE(is_valid_utf8("\xF0\x9F\x98\x80 ok"));
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));
  const Tokenizer& t = synthetic();
  EXPECT_EQ(t.encode("x\xE2\x82y", false), t.encode("x" + R + "y", false));
}

TEST(Tokenizer, DecodeByteRunsLikeTheReference) {
  const Tokenizer& t = synthetic();
  const int32_t B = 238;
  const int32_t x = t.token_id("x");
  // A valid run is its text; an invalid run is one U+FFFD per byte token, even the valid part.
  EXPECT_EQ(t.decode({B + 0xE2, B + 0x82, B + 0xAC}), "\xE2\x82\xAC");
  EXPECT_EQ(t.decode({B + 0xE2, B + 0x82, B + 0xAC, B + 0xFF}), repeat("\xEF\xBF\xBD", 4));
  EXPECT_EQ(t.decode({B + 0xE2, B + 0x82, x, B + 0xAC}), repeat("\xEF\xBF\xBD", 2) + "x" + "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({262200, 999999}), "");  // unknown ids decode to nothing
  EXPECT_EQ(t.decode({2, 105, x, 106}), "<bos><start_of_turn>x<end_of_turn>");
  EXPECT_EQ(t.decode({2, 105, x, 106}, true), "x");
  // A skipped special token does not end a byte run.
  EXPECT_EQ(t.decode({B + 0xE2, 105, B + 0x82, B + 0xAC}, true), "\xE2\x82\xAC");
  EXPECT_NE(error_of([&] { t.decode({-1}); }).find("negative"), std::string::npos);
}

// ---- stream decoder -------------------------------------------------------------------------------------------

TEST(StreamDecoder, MultiByteCharacterComesOutOnceWhole) {
  const Tokenizer& t = synthetic();
  const int32_t B = 238;
  Tokenizer::StreamDecoder s(t);
  EXPECT_EQ(s.push(t.token_id("hi")), "hi");
  EXPECT_EQ(s.push(B + 0xF0), "");
  EXPECT_EQ(s.push(B + 0x9F), "");
  EXPECT_EQ(s.push(B + 0x98), "");
  EXPECT_EQ(s.push(B + 0x80), "");
  EXPECT_EQ(s.push(t.token_id("\xE2\x96\x81the")), "\xF0\x9F\x98\x80 the");
  EXPECT_EQ(s.push(B + 0xC3), "");
  EXPECT_EQ(s.push(B + 0xA9), "");
  EXPECT_EQ(s.finish(), "\xC3\xA9");
  EXPECT_EQ(s.finish(), "");
}

TEST(StreamDecoder, ConcatenationEqualsDecode) {
  const Tokenizer& t = synthetic();
  std::mt19937 rng(7);
  const std::vector<std::string> chars = {"é", "日", "😀", "👨‍👩‍👧", "€", "x", " ", "\n"};
  for (int round = 0; round < 400; ++round) {
    std::vector<int32_t> ids;
    const int n = 1 + int(rng() % 15);
    for (int i = 0; i < n; ++i) {
      const uint32_t r = rng() % 10;
      if (r < 4) {  // the byte tokens of a character, sometimes cut short
        const std::string& c = chars[rng() % chars.size()];
        size_t len = c.size();
        if (rng() % 4 == 0) len = 1 + rng() % len;
        for (size_t k = 0; k < len; ++k) ids.push_back(238 + uint8_t(c[k]));
      } else if (r < 6) {
        ids.push_back(238 + int32_t(rng() % 256));
      } else if (r < 7) {
        const int32_t sp[] = {2, 105, 106, 107, 138, 262145, 262273, 262200};
        ids.push_back(sp[rng() % 8]);
      } else {
        ids.push_back(494 + int32_t(rng() % 2000));
      }
    }
    for (bool skip : {false, true}) {
      Tokenizer::StreamDecoder s(t, skip);
      std::string out;
      for (int32_t id : ids) out += s.push(id);
      out += s.finish();
      EXPECT_EQ(out, t.decode(ids, skip));
      EXPECT_TRUE(is_valid_utf8(out));
    }
  }
}

// ---- loading --------------------------------------------------------------------------------------------------

TEST(TokenizerLoad, ClearErrors) {
  TempDir d;
  EXPECT_NE(error_of([&] { Tokenizer::load_dir(d.str() + "/missing"); }).find("does not exist"), std::string::npos);
  const std::string e = error_of([&] { Tokenizer::load_dir(d.str()); });
  EXPECT_NE(e.find("no tokenizer.model in " + d.str()), std::string::npos) << e;
  d.write("tokenizer.model", "\x0a\xff\xff\xff\xff\x0f garbage");
  EXPECT_NE(error_of([&] { Tokenizer::load_dir(d.str()); }).find("not a valid SentencePiece model"), std::string::npos);
  d.write("tokenizer.model", "");
  EXPECT_NE(error_of([&] { Tokenizer::load_dir(d.str()); }).find("empty"), std::string::npos);
  d.write("tokenizer.model", synthetic_model());
  d.write("tokenizer.json", "{not json");
  EXPECT_NE(error_of([&] { Tokenizer::load_dir(d.str()); }).find("tokenizer.json is not valid JSON"), std::string::npos);
  d.write("tokenizer.json", R"({"added_tokens": [{"content": "<x>"}]})");
  EXPECT_NE(error_of([&] { Tokenizer::load_dir(d.str()); }).find("added_tokens[0]"), std::string::npos);
}

TEST(TokenizerLoad, TokenizerJsonAddedTokensAndMerges) {
  TempDir d;
  d.write("tokenizer.model", synthetic_model());
  nlohmann::json j;
  j["added_tokens"] = nlohmann::json::array({
      {{"id", 105}, {"content", "<start_of_turn>"}, {"special", true}},
      {{"id", 262145}, {"content", "<image_soft_token>"}, {"special", true}},
      {{"id", 262300}, {"content", "<my_token>"}, {"special", false}},
  });
  // Whitespace merges that prefer the longest merged run: 33 spaces become 31 + 2 instead of 16 + 17.
  nlohmann::json merges = nlohmann::json::array();
  for (int total = 31; total >= 2; --total)
    for (int a = 1; a < total; ++a) merges.push_back({repeat("\xE2\x96\x81", a), repeat("\xE2\x96\x81", total - a)});
  merges.push_back({"a", "b"});
  j["model"] = {{"type", "BPE"}, {"vocab", {{"a", 1}}}, {"merges", merges}};
  d.write("tokenizer.json", j.dump());
  const Tokenizer t = Tokenizer::load_dir(d.str());
  EXPECT_EQ(t.size(), 262301);
  EXPECT_EQ(t.encode("x<my_token>y", false)[1], 262300);
  EXPECT_EQ(t.decode({262300}), "<my_token>");
  EXPECT_FALSE(t.is_special(262300));
  // Only the listed added tokens are matched: <end_of_turn> is not in the list, so it is spelled out.
  EXPECT_GT(t.encode("<end_of_turn>", false).size(), 1u);
  EXPECT_EQ(t.encode("<start_of_turn>", false), (std::vector<int32_t>{105}));
  const int32_t a = t.token_id("a"), b = t.token_id("b");
  EXPECT_EQ(t.encode(std::string("a") + repeat(" ", 33) + "b", false), (std::vector<int32_t>{a, 136 + 31, 136 + 2, b}));
}

// ---- chat template --------------------------------------------------------------------------------------------

ChatMessage msg(std::string role, std::string text) { return {std::move(role), {{ChatItem::Text, std::move(text)}}}; }

TEST(ChatTemplate, SpecExample) {
  EXPECT_EQ(render_chat({msg("system", "You are helpful."), msg("user", "Hello!")}, true),
            "<bos><start_of_turn>user\nYou are helpful.\n\nHello!<end_of_turn>\n<start_of_turn>model\n");
}

TEST(ChatTemplate, MatchesReferenceRenderings) {
  const std::vector<ChatMessage> multi = {msg("system", "Be brief."), msg("user", " Hi "), msg("assistant", "Hello!\n"),
                                          msg("user", "Bye")};
  EXPECT_EQ(render_chat(multi, true),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(render_chat(multi, false),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n");
  const std::vector<ChatMessage> media = {
      {"user", {{ChatItem::Text, "Look: "}, {ChatItem::Image, ""}, {ChatItem::Text, " and listen "}, {ChatItem::Audio, ""}}}};
  EXPECT_EQ(render_chat(media, true),
            "<bos><start_of_turn>user\nLook:<image_soft_token>and listen<audio_soft_token><end_of_turn>\n"
            "<start_of_turn>model\n");
  const std::vector<ChatMessage> trim = {msg("user", "\u3000\u00a0 x \u2028\u0085"),
                                         msg("tool", "\u200bzero width stays\u200b")};
  EXPECT_EQ(render_chat(trim, false),
            "<bos><start_of_turn>user\nx<end_of_turn>\n<start_of_turn>tool\n\u200bzero width stays\u200b<end_of_turn>\n");
  EXPECT_EQ(render_chat({msg("system", "nobody listens")}, false), "<bos>");
  EXPECT_EQ(render_chat({msg("system", "nobody listens")}, true), "<bos><start_of_turn>model\n");
}

TEST(ChatTemplate, AlternationErrors) {
  auto err = [](const std::vector<ChatMessage>& m) { return error_of([&] { render_chat(m, true); }); };
  const std::string e1 = err({msg("assistant", "hi")});
  EXPECT_NE(e1.find("Conversation roles must alternate user/assistant/user/assistant/..."), std::string::npos) << e1;
  EXPECT_NE(e1.find("messages[0]"), std::string::npos) << e1;
  EXPECT_NE(err({msg("user", "a"), msg("user", "b")}).find("messages[1] has role 'user'"), std::string::npos);
  EXPECT_NE(err({msg("system", "s"), msg("assistant", "a")}).find("messages[1]"), std::string::npos);
  EXPECT_NE(err({msg("user", "a"), msg("assistant", "b"), msg("assistant", "c")}).find("messages[2]"), std::string::npos);
  EXPECT_NE(err({}).find("no messages"), std::string::npos);
  EXPECT_NE(err({{"system", {{ChatItem::Image, ""}}}, msg("user", "x")}).find("system message"), std::string::npos);
}

TEST(ChatTemplate, PythonStrip) {
  EXPECT_EQ(python_strip("  x  "), "x");
  EXPECT_EQ(python_strip("\x1c\x1dx\x1e\x1f"), "x");
  EXPECT_EQ(python_strip("\u200bx\u200b"), "\u200bx\u200b");
  EXPECT_EQ(python_strip("\ufeffx"), "\ufeffx");
  EXPECT_EQ(python_strip(" \t\n"), "");
  EXPECT_EQ(python_strip("a b"), "a b");
  EXPECT_EQ(python_strip("\xff "), "\xff");
}

TEST(ChatTemplate, ExpandMediaPlaceholders) {
  EXPECT_EQ(expand_media_placeholders("A<image_soft_token>B<audio_soft_token>C", 2, 1),
            "A\n\n<start_of_image><image_soft_token><image_soft_token><end_of_image>\n\nB"
            "\n\n<start_of_audio><audio_soft_token><end_of_audio>\n\nC");
  const std::string full = expand_media_placeholders("<image_soft_token><audio_soft_token>");
  size_t n_img = 0, n_aud = 0;
  for (size_t p = 0; (p = full.find("<image_soft_token>", p)) != std::string::npos; p += 1) ++n_img;
  for (size_t p = 0; (p = full.find("<audio_soft_token>", p)) != std::string::npos; p += 1) ++n_aud;
  EXPECT_EQ(n_img, 256u);
  EXPECT_EQ(n_aud, 188u);
  EXPECT_EQ(expand_media_placeholders("no media"), "no media");
  const Tokenizer& t = synthetic();
  const auto ids = t.encode(expand_media_placeholders("<image_soft_token>", 3, 0), false);
  EXPECT_EQ(ids, (std::vector<int32_t>{108, 255999, 262145, 262145, 262145, 262144, 108}));
}

TEST(ChatTemplate, ParseOpenAiMessages) {
  const auto j = nlohmann::json::parse(R"({"messages": [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": [
      {"type": "text", "text": "look"},
      {"type": "image_url", "image_url": {"url": "http://x/a.png"}},
      {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
      {"type": "image", "path": "/tmp/b.png"},
      {"type": "audio"}
    ]}]})");
  const auto m = parse_openai_messages(j);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, "system");
  ASSERT_EQ(m[0].content.size(), 1u);
  EXPECT_EQ(m[0].content[0].text, "sys");
  ASSERT_EQ(m[1].content.size(), 5u);
  EXPECT_EQ(m[1].content[1].kind, ChatItem::Image);
  EXPECT_EQ(m[1].content[1].text, "http://x/a.png");
  EXPECT_EQ(m[1].content[2].kind, ChatItem::Audio);
  EXPECT_EQ(m[1].content[2].text, "AAAA");
  EXPECT_EQ(m[1].content[3].text, "/tmp/b.png");
  EXPECT_EQ(m[1].content[4].kind, ChatItem::Audio);
  EXPECT_EQ(render_chat(m, true),
            "<bos><start_of_turn>user\nsys\n\nlook<image_soft_token><audio_soft_token><image_soft_token>"
            "<audio_soft_token><end_of_turn>\n<start_of_turn>model\n");

  auto err = [](const char* s) { return error_of([&] { parse_openai_messages(nlohmann::json::parse(s)); }); };
  EXPECT_NE(err(R"([{"role": "user", "content": [{"type": "video"}]}])").find("messages[0].content[0]"),
            std::string::npos);
  EXPECT_NE(err(R"([{"content": "x"}])").find("role"), std::string::npos);
  EXPECT_NE(err(R"([{"role": "assistant", "content": null}])").find("Invalid content type"), std::string::npos);
  EXPECT_NE(err(R"({"x": 1})").find("list of messages"), std::string::npos);
}

}  // namespace
}  // namespace g3n
