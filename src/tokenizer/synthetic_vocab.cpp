#include "tokenizer/synthetic_vocab.h"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "base/error.h"

namespace g3n {

namespace {

// ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/), just what ModelProto needs.

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
void put_tag(std::string& out, uint32_t field, uint32_t wire) { put_varint(out, (uint64_t(field) << 3) | wire); }
void put_bytes(std::string& out, uint32_t field, std::string_view s) {
  put_tag(out, field, 2);
  put_varint(out, s.size());
  out.append(s);
}
void put_uint(std::string& out, uint32_t field, uint64_t v) {
  put_tag(out, field, 0);
  put_varint(out, v);
}
void put_int32(std::string& out, uint32_t field, int32_t v) {  // int32: negative values are 10-byte varints
  put_tag(out, field, 0);
  put_varint(out, uint64_t(int64_t(v)));
}
void put_float(std::string& out, uint32_t field, float f) {
  put_tag(out, field, 5);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  for (int i = 0; i < 4; ++i) out += char(uint8_t(u >> (8 * i)));
}

// sentencepiece_model.proto field numbers.
enum : uint32_t { kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3 };
enum : uint32_t { kPiecePiece = 1, kPieceScore = 2, kPieceType = 3 };
enum : uint32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

constexpr int kVocab = 262144;
constexpr int kFirstNormal = 494, kFirstTab = 255968, kBoi = 255999, kBoa = 256000, kLateUnused = 256001;

constexpr const char* kHtmlTags[] = {
    "<table>", "<caption>", "<thead>", "<tbody>", "<tfoot>", "<tr>", "<th>", "<td>",
    "</table>", "</caption>", "</thead>", "</tbody>", "</tfoot>", "</tr>", "</th>", "</td>",
    "<h1>", "<h2>", "<h3>", "<h4>", "<h5>", "<h6>", "<blockquote>",
    "</h1>", "</h2>", "</h3>", "</h4>", "</h5>", "</h6>", "</blockquote>",
    "<strong>", "<em>", "<b>", "<i>", "<u>", "<s>", "<sub>", "<sup>", "<code>",
    "</strong>", "</em>", "</b>", "</i>", "</u>", "</s>", "</sub>", "</sup>", "</code>",
    "<a>", "<html>", "<body>", "<img>", "<span>", "<bbox>", "<ul>", "<li>", "<div>", "<iframe>", "<footer>",
    "</a>", "</html>", "</body>", "</img>", "</span>", "</bbox>", "</ul>", "</li>", "</div>", "</iframe>", "</footer>",
};
static_assert(sizeof(kHtmlTags) / sizeof(kHtmlTags[0]) == 70);

// Common English words (and a few subwords); each one is added with all its prefixes, with and without "▁",
// so BPE can build it one character at a time.
constexpr const char* kWords[] = {
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
    "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
    "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how",
    "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
    "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
    "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now",
    "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "hello", "world", "model",
    "user", "system", "assistant", "question", "answer", "please", "thank", "thanks", "yes", "good", "new",
    "work", "help", "name", "what", "where", "why", "because", "very", "just", "know", "think", "text", "token",
    "image", "audio", "code", "data", "test", "random", "function", "return", "print", "def", "class", "import",
    "int", "float", "string", "true", "false", "none", "null", "value", "list", "file", "line", "ing", "ed",
    "er", "ly", "tion", "es", "s", "ment", "ness", "able", "est", "'s", "n't", "'re", "'ll", "'ve", "'m",
};

// Single characters beyond ASCII that European text uses often.
constexpr const char* kExtraChars[] = {
    "é", "è", "ê", "ë", "à", "â", "ä", "á", "ã", "å", "ç", "ñ", "ù", "û", "ü", "ú", "ö", "ô", "ó", "ò", "õ",
    "î", "ï", "í", "ì", "ß", "æ", "ø", "œ", "É", "À", "Ç", "Ü", "Ö", "Ä", "€", "£", "°", "–", "—", "“", "”",
    "‘", "’", "«", "»", "…", "·", "¿", "¡",
};

struct Piece {
  std::string text;
  float score;
  uint32_t type;
};

}  // namespace

std::string make_synthetic_sentencepiece_model() {
  std::vector<Piece> pieces(static_cast<size_t>(kVocab));
  auto set = [&](int id, std::string text, uint32_t type, float score = 0.0f) {
    pieces[size_t(id)] = {std::move(text), score, type};
  };
  const std::string space_mark = "\xE2\x96\x81";

  set(0, "<pad>", kControl);
  set(1, "<eos>", kControl);
  set(2, "<bos>", kControl);
  set(3, "<unk>", kUnknown);
  set(4, "<mask>", kControl);
  set(5, "[multimodal]", kUserDefined);
  for (int i = 0; i <= 98; ++i) set(6 + i, "<unused" + std::to_string(i) + ">", kControl);
  set(105, "<start_of_turn>", kControl);
  set(106, "<end_of_turn>", kControl);
  for (int n = 1; n <= 31; ++n) set(106 + n, std::string(size_t(n), '\n'), kUserDefined);  // 107..137
  for (int n = 2; n <= 31; ++n) {                                                           // 138..167
    std::string s;
    for (int k = 0; k < n; ++k) s += space_mark;
    set(136 + n, s, kUserDefined);
  }
  for (int i = 0; i < 70; ++i) set(168 + i, kHtmlTags[i], kUserDefined);
  for (int b = 0; b < 256; ++b) {  // 238..493
    static const char* hex = "0123456789ABCDEF";
    set(238 + b, std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", kByte);
  }

  // Normal pieces, best first.
  std::vector<std::string> normal;
  std::unordered_set<std::string> seen;
  auto add = [&](const std::string& s) {
    if (!s.empty() && seen.insert(s).second) normal.push_back(s);
  };
  add(space_mark);
  for (char c = 0x21; c <= 0x7e; ++c) add(std::string(1, c));
  for (const char* c : kExtraChars) add(c);
  for (char c = 'a'; c <= 'z'; ++c) add(space_mark + c);
  for (char c = 'A'; c <= 'Z'; ++c) add(space_mark + c);
  for (char c = '0'; c <= '9'; ++c) add(space_mark + c);
  for (const char* w : kWords) {
    const std::string word = w;
    for (size_t n = 2; n <= word.size(); ++n) add(word.substr(0, n));
    const std::string spaced = space_mark + word;
    for (size_t n = space_mark.size() + 2; n <= spaced.size(); ++n) add(spaced.substr(0, n));
    std::string cap = word;
    if (cap[0] >= 'a' && cap[0] <= 'z') {
      cap[0] = char(cap[0] - 'a' + 'A');
      for (size_t n = 2; n <= cap.size(); ++n) add(cap.substr(0, n));
      const std::string spaced_cap = space_mark + cap;
      for (size_t n = space_mark.size() + 2; n <= spaced_cap.size(); ++n) add(spaced_cap.substr(0, n));
    }
  }
  G3N_CHECK(kFirstNormal + int(normal.size()) <= kFirstTab, "synthetic vocabulary: too many normal pieces");
  int id = kFirstNormal;
  for (size_t i = 0; i < normal.size(); ++i) set(id++, normal[i], kNormal, -float(i));
  for (int unused = 6242; id < kFirstTab; ++id, ++unused) set(id, "<unused" + std::to_string(unused) + ">", kUnused);
  for (int n = 1; n <= 31; ++n) set(kFirstTab - 1 + n, std::string(size_t(n), '\t'), kUserDefined);
  set(kBoi, "<start_of_image>", kControl);
  set(kBoa, "<start_of_audio>", kControl);
  for (int i = kLateUnused; i < kVocab; ++i) set(i, "<unused" + std::to_string(99 + i - kLateUnused) + ">", kControl);

  std::vector<SentencePieceEntry> entries;
  entries.reserve(pieces.size());
  for (Piece& p : pieces) entries.push_back({std::move(p.text), p.score, p.type});
  return build_sentencepiece_model(entries, /*add_dummy_prefix=*/false);
}

std::string build_sentencepiece_model(const std::vector<SentencePieceEntry>& pieces, bool add_dummy_prefix) {
  std::string model;
  model.reserve(pieces.size() * 24);
  std::string msg;
  for (const SentencePieceEntry& p : pieces) {
    msg.clear();
    put_bytes(msg, kPiecePiece, p.text);
    put_float(msg, kPieceScore, p.score);
    put_uint(msg, kPieceType, p.type);
    put_bytes(model, kModelPieces, msg);
  }

  // Gemma's trainer and normalizer settings: BPE with byte fallback, digits split, whitespace-only
  // pieces allowed, identity normalisation, no dummy prefix.
  std::string trainer;
  put_uint(trainer, 3, 2);                                  // model_type = BPE
  put_int32(trainer, 4, int32_t(pieces.size()));            // vocab_size
  put_uint(trainer, 25, 1);          // split_digits
  put_uint(trainer, 26, 1);          // allow_whitespace_only_pieces
  put_uint(trainer, 35, 1);          // byte_fallback
  put_int32(trainer, 40, 3);         // unk_id
  put_int32(trainer, 41, 2);         // bos_id
  put_int32(trainer, 42, 1);         // eos_id
  put_int32(trainer, 43, 0);         // pad_id
  put_bytes(trainer, 45, "<unk>");   // unk_piece
  put_bytes(trainer, 46, "<bos>");   // bos_piece
  put_bytes(trainer, 47, "<eos>");   // eos_piece
  put_bytes(trainer, 48, "<pad>");   // pad_piece
  put_bytes(model, kModelTrainerSpec, trainer);

  std::string normalizer;
  put_bytes(normalizer, 1, "identity");             // name
  put_uint(normalizer, 3, add_dummy_prefix ? 1 : 0);  // add_dummy_prefix
  put_uint(normalizer, 4, 0);                       // remove_extra_whitespaces = false
  put_uint(normalizer, 5, 1);                       // escape_whitespaces = true
  put_bytes(model, kModelNormalizerSpec, normalizer);
  return model;
}

}  // namespace g3n
