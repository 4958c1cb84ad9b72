#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <climits>
#include <iterator>
#include <nlohmann/json.hpp>
#include <queue>
#include <tuple>
#include <unordered_map>

#include "base/error.h"

namespace g3n {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";    // U+2581 "▁"

// Length of the valid UTF-8 sequence at s[i], or 0 with `consumed` = length of the maximal invalid subpart
// (the lead byte plus the continuation bytes that were still acceptable), as Python's decoder counts it.
size_t utf8_sequence(std::string_view s, size_t i, size_t& consumed) {
  const auto b = uint8_t(s[i]);
  if (b < 0x80) return consumed = 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (b >= 0xE1 && b <= 0xEF) {
    need = 2;
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;  // nothing past U+10FFFF
  } else {
    consumed = 1;  // C0, C1, F5..FF, or a stray continuation byte
    return 0;
  }
  size_t j = i + 1;
  int k = 0;
  while (k < need && j < s.size()) {
    const auto c = uint8_t(s[j]);
    if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) break;
    ++j, ++k;
  }
  consumed = j - i;
  return k == need ? consumed : 0;
}

// The byte of a token spelled "<0xAB>", as the reference's ByteFallback decoder reads it (u8::from_str_radix on
// the two characters after "<0x"), or -1.
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t[3] == '+') return hex(t[4]);  // from_str_radix accepts a leading '+'
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Number of "▁" in `s` if it is made of nothing else, else 0.
int space_run_length(std::string_view s) {
  if (s.empty() || s.size() % kSpaceMark.size()) return 0;
  for (size_t i = 0; i < s.size(); i += kSpaceMark.size())
    if (s.substr(i, kSpaceMark.size()) != kSpaceMark) return 0;
  return int(s.size() / kSpaceMark.size());
}

void append_replacing_space_mark(std::string& out, std::string_view t) {
  size_t start = 0;
  for (size_t p; (p = t.find(kSpaceMark, start)) != std::string_view::npos; start = p + kSpaceMark.size()) {
    out.append(t.substr(start, p - start));
    out += ' ';
  }
  out.append(t.substr(start));
}

void flush_bytes(std::string& bytes, std::string& out) {
  if (bytes.empty()) return;
  if (is_valid_utf8(bytes)) {
    out += bytes;
  } else {
    for (size_t i = 0; i < bytes.size(); ++i) out += kReplacement;
  }
  bytes.clear();
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("cannot open ", p.string());
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("cannot read ", p.string());
  return data;
}

// ---- The part of sentencepiece_model.proto we need: ModelProto.pieces (field 1) {piece 1, score 2, type 3}.
// The library does not expose piece types (user-defined ones in particular), so the pieces are read here.

struct ProtoReader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& source;

  bool done() const { return p >= end; }
  [[noreturn]] void broken(const char* what) const {
    fail(source, " is not a valid SentencePiece model (", what, ")");
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) broken("truncated varint");
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    broken("varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > uint64_t(end - p)) broken("a length-delimited field runs past the end");
    std::string_view s(reinterpret_cast<const char*>(p), size_t(n));
    p += n;
    return s;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1:
        if (end - p < 8) broken("truncated fixed64");
        p += 8;
        break;
      case 2: bytes(); break;
      case 5:
        if (end - p < 4) broken("truncated fixed32");
        p += 4;
        break;
      default: broken("unsupported wire type");
    }
  }
};

std::vector<PieceType> read_piece_types(const std::string& model, const std::string& source) {
  std::vector<PieceType> types;
  const auto* base = reinterpret_cast<const uint8_t*>(model.data());
  ProtoReader r{base, base + model.size(), source};
  while (!r.done()) {
    const uint64_t tag = r.varint();
    const auto field = uint32_t(tag >> 3), wire = uint32_t(tag & 7);
    if (field == 0) r.broken("field number 0");
    if (field != 1) {
      r.skip(wire);
      continue;
    }
    if (wire != 2) r.broken("ModelProto.pieces is not a message");
    const std::string_view msg = r.bytes();
    ProtoReader m{reinterpret_cast<const uint8_t*>(msg.data()), reinterpret_cast<const uint8_t*>(msg.data()) + msg.size(),
                  source};
    uint64_t type = 1;  // NORMAL is the default
    while (!m.done()) {
      const uint64_t t = m.varint();
      if ((t >> 3) == 3 && (t & 7) == 0) {
        type = m.varint();
      } else {
        m.skip(uint32_t(t & 7));
      }
    }
    if (type < 1 || type > 6) fail(source, ": piece ", types.size(), " has unknown type ", type);
    types.push_back(PieceType(type));
  }
  return types;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0, consumed = 0; i < s.size(); i += consumed)
    if (utf8_sequence(s, i, consumed) == 0) return false;
  return true;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0, consumed = 0; i < s.size(); i += consumed) {
    if (utf8_sequence(s, i, consumed)) {
      out.append(s.substr(i, consumed));
    } else {
      out += kReplacement;
    }
  }
  return out;
}

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::vector<PieceType> types;
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, uint32_t> added_by_id;              // id -> index into `added`
  std::unordered_map<std::string_view, int32_t> added_by_content;  // views into added[i].content
  std::array<std::vector<uint32_t>, 256> match_lengths;           // per first byte, distinct lengths, longest first
  int64_t size = 0;
  // Whitespace-run pieces: space_run_id[k] = id of "▁" x k (k = 1 .. max_space_run).
  int max_space_run = 0;
  std::vector<int32_t> space_run_id;
  std::vector<std::vector<int32_t>> space_rank;  // [a][b]: merge rank of ("▁" x a, "▁" x b); INT32_MAX: none

  int32_t sp_lookup(std::string_view piece) const {
    const int id = sp.PieceToId(piece);  // the unknown id when absent
    return id >= 0 && id < int(types.size()) && sp.IdToPiece(id) == piece ? id : -1;
  }
  void sp_encode(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::vector<int> ids;
    const auto st = sp.Encode(text, &ids);
    if (!st.ok()) fail("SentencePiece could not encode the text: ", st.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
  std::vector<int> split_space_run(size_t n) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
};

// The reference's BPE on a run of n "▁": every adjacent pair whose merge exists is merged, best rank first (ties:
// leftmost), until none is left. Whitespace merges rank above every other merge, so this happens before the run
// meets its neighbours. Returns the lengths of the pieces, left to right.
std::vector<int> Tokenizer::Impl::split_space_run(size_t n) const {
  std::vector<int> len(n, 1);
  std::vector<int64_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) prev[i] = int64_t(i) - 1, next[i] = i + 1 < n ? int64_t(i) + 1 : -1;
  using Item = std::tuple<int32_t, int64_t, int, int>;  // rank, left position, left len, right len (staleness check)
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  auto rank = [&](int a, int b) {
    return a <= max_space_run && b <= max_space_run ? space_rank[size_t(a)][size_t(b)] : INT32_MAX;
  };
  auto push = [&](int64_t l) {
    if (l < 0 || next[size_t(l)] < 0) return;
    const int a = len[size_t(l)], b = len[size_t(next[size_t(l)])];
    const int32_t r = rank(a, b);
    if (r != INT32_MAX) heap.emplace(r, l, a, b);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int64_t(i));
  while (!heap.empty()) {
    const auto [r, l, a, b] = heap.top();
    heap.pop();
    const int64_t rgt = next[size_t(l)];
    if (len[size_t(l)] != a || len[size_t(l)] == 0 || rgt < 0 || len[size_t(rgt)] != b) continue;  // stale
    len[size_t(l)] = a + b;
    len[size_t(rgt)] = 0;
    next[size_t(l)] = next[size_t(rgt)];
    if (next[size_t(l)] >= 0) prev[size_t(next[size_t(l)])] = l;
    push(prev[size_t(l)]);
    push(l);
  }
  std::vector<int> out;
  for (int64_t i = 0; i >= 0; i = next[size_t(i)]) out.push_back(len[size_t(i)]);
  return out;
}

void Tokenizer::Impl::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (max_space_run < 2) return sp_encode(text, out);
  std::string carry;  // a lone "▁" left at the end of a long run goes with the text after it
  size_t start = 0, i = 0;
  while (i < text.size()) {
    size_t j = i, run = 0;
    for (;;) {
      if (j < text.size() && text[j] == ' ') {
        ++j, ++run;
      } else if (text.compare(j, kSpaceMark.size(), kSpaceMark) == 0) {
        j += kSpaceMark.size(), ++run;
      } else {
        break;
      }
    }
    if (run == 0) {
      ++i;
      continue;
    }
    if (run > size_t(max_space_run)) {  // shorter runs become one piece either way
      sp_encode(carry.empty() ? text.substr(start, i - start) : carry + std::string(text.substr(start, i - start)), out);
      carry.clear();
      const std::vector<int> parts = split_space_run(run);
      for (size_t k = 0; k < parts.size(); ++k) {
        if (k + 1 == parts.size() && parts[k] == 1 && j < text.size()) {
          carry = " ";
        } else {
          out.push_back(space_run_id[size_t(parts[k])]);
        }
      }
      start = j;
    }
    i = j;
  }
  sp_encode(carry.empty() ? text.substr(start) : carry + std::string(text.substr(start)), out);
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {
  auto find = [&](const char* content, int32_t fallback) {
    const int32_t id = token_id(content);
    return id >= 0 ? id : fallback;
  };
  bos_ = find("<bos>", kBosId);
  eos_ = find("<eos>", kEosId);
  pad_ = find("<pad>", kPadId);
  sot_ = find("<start_of_turn>", kStartOfTurnId);
  eot_ = find("<end_of_turn>", kEndOfTurnId);
  boi_ = find("<start_of_image>", kBoiId);
  eoi_ = find("<end_of_image>", kEoiId);
  boa_ = find("<start_of_audio>", kBoaId);
  eoa_ = find("<end_of_audio>", kEoaId);
  image_soft_ = find("<image_soft_token>", kImageSoftId);
  audio_soft_ = find("<audio_soft_token>", kAudioSoftId);
}

Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_serialized_proto(std::string model_proto, std::optional<std::vector<AddedToken>> added_tokens,
                                           const std::string& source) {
  return build(std::move(model_proto), std::move(added_tokens), {}, source);
}

Tokenizer Tokenizer::build(std::string model_proto, std::optional<std::vector<AddedToken>> added_tokens,
                           std::vector<std::pair<int, int>> space_merges, const std::string& source) {
  if (model_proto.empty()) fail(source, " is empty");
  auto impl = std::make_shared<Impl>();
  impl->types = read_piece_types(model_proto, source);
  const auto st = impl->sp.LoadFromSerializedProto(model_proto);
  if (!st.ok()) fail(source, " is not a valid SentencePiece model: ", st.ToString());
  const int n = impl->sp.GetPieceSize();
  if (n != int(impl->types.size()))
    fail(source, ": SentencePiece reports ", n, " pieces, the model lists ", impl->types.size());

  if (added_tokens) {
    impl->added = std::move(*added_tokens);
  } else {
    // What the reference makes of the vocabulary: control pieces and <unk> become special added tokens,
    // user-defined ones plain added tokens -- except the whitespace runs "▁▁".., which stay ordinary vocabulary
    // that BPE builds from spaces (so a literal "▁" in the text counts as a space, as in the reference).
    for (int id = 0; id < n; ++id) {
      const PieceType t = impl->types[size_t(id)];
      if (t == PieceType::Control || t == PieceType::Unknown ||
          (t == PieceType::UserDefined && space_run_length(impl->sp.IdToPiece(id)) == 0))
        impl->added.push_back({impl->sp.IdToPiece(id), id, t != PieceType::UserDefined});
    }
    if (n <= kEoiId) {
      const std::pair<const char*, int32_t> extra[] = {{"<end_of_image>", kEoiId},
                                                       {"<image_soft_token>", kImageSoftId},
                                                       {"<end_of_audio>", kEoaId},
                                                       {"<audio_soft_token>", kAudioSoftId}};
      for (const auto& [content, id] : extra)
        if (impl->sp_lookup(content) < 0) impl->added.push_back({content, id, true});
    }
  }

  int64_t size = n;
  for (uint32_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& a = impl->added[i];
    if (a.id < 0) fail(source, ": added token '", a.content, "' has negative id ", a.id);
    size = std::max<int64_t>(size, int64_t(a.id) + 1);
    impl->added_by_id.emplace(a.id, i);
    if (a.content.empty()) continue;
    if (!impl->added_by_content.emplace(std::string_view(a.content), a.id).second) continue;
    auto& lens = impl->match_lengths[uint8_t(a.content[0])];
    if (std::find(lens.begin(), lens.end(), uint32_t(a.content.size())) == lens.end())
      lens.push_back(uint32_t(a.content.size()));
  }
  for (auto& lens : impl->match_lengths) std::sort(lens.rbegin(), lens.rend());
  impl->size = size;

  // Whitespace-run pieces "▁", "▁▁", ... and the ranks of their merges.
  std::string run;
  impl->space_run_id.push_back(-1);
  for (int k = 1; k <= 256; ++k) {
    run += kSpaceMark;
    const int32_t id = impl->sp_lookup(run);
    if (id < 0) break;
    impl->space_run_id.push_back(id);
    impl->max_space_run = k;
  }
  const int m = impl->max_space_run;
  impl->space_rank.assign(size_t(m) + 1, std::vector<int32_t>(size_t(m) + 1, INT32_MAX));
  if (space_merges.empty()) {
    // The order the reference gives merges derived from the vocabulary: by the merged piece's rank (shorter run
    // first), then longer left part first.
    for (int total = 2; total <= m; ++total)
      for (int a = total - 1; a >= 1; --a) space_merges.emplace_back(a, total - a);
  }
  int32_t r = 0;
  for (const auto& [a, b] : space_merges) {
    if (a >= 1 && b >= 1 && a + b <= m && impl->space_rank[size_t(a)][size_t(b)] == INT32_MAX)
      impl->space_rank[size_t(a)][size_t(b)] = r;
    ++r;
  }
  return Tokenizer(std::move(impl));
}

namespace {

struct TokenizerJson {
  std::vector<AddedToken> added;
  std::vector<std::pair<int, int>> space_merges;  // merges of whitespace-run pieces, in the file's order
};

// Reads added_tokens and the whitespace merges of model.merges; everything else (the 262k-entry vocab, the other
// merges) is dropped while parsing.
TokenizerJson read_tokenizer_json(const std::string& path) {
  using E = nlohmann::json::parse_event_t;
  std::string top_key, model_key;
  TokenizerJson out;
  auto note_merge = [&](int a, int b) {
    if (a > 0 && b > 0) out.space_merges.emplace_back(a, b);
  };
  auto keep = [&](int depth, E ev, nlohmann::json& v) -> bool {
    if (ev == E::key) {
      if (depth == 1) {
        top_key = v.get<std::string>();
        return top_key == "added_tokens" || top_key == "model";
      }
      if (depth == 2 && top_key == "model") {
        model_key = v.get<std::string>();
        return model_key == "merges";
      }
      return true;
    }
    if (depth == 3 && top_key == "model" && model_key == "merges") {
      if (ev == E::array_end && v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string()) {
        note_merge(space_run_length(v[0].get_ref<const std::string&>()), space_run_length(v[1].get_ref<const std::string&>()));
        return false;
      }
      if (ev == E::value && v.is_string()) {  // the older "a b" form
        const std::string& m = v.get_ref<const std::string&>();
        const size_t sp = m.find(' ');
        if (sp != std::string::npos) note_merge(space_run_length(std::string_view(m).substr(0, sp)),
                                                space_run_length(std::string_view(m).substr(sp + 1)));
        return false;
      }
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path), keep);
  } catch (const nlohmann::json::exception& e) {
    fail(path, " is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path, ": expected a JSON object at the top level");
  if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return out;
  const auto& list = j["added_tokens"];
  if (!list.is_array()) fail(path, ": \"added_tokens\" is not a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() || !e.contains("content") ||
        !e["content"].is_string())
      fail(path, ": added_tokens[", i, "] needs an integer \"id\" and a string \"content\"");
    const int64_t id = e["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX) fail(path, ": added_tokens[", i, "] has id ", id, " out of range");
    AddedToken a;
    a.id = int32_t(id);
    a.content = e["content"].get<std::string>();
    a.special = e.contains("special") && e["special"].is_boolean() && e["special"].get<bool>();
    out.added.push_back(std::move(a));
  }
  return out;
}

}  // namespace

std::vector<AddedToken> Tokenizer::read_added_tokens_json(const std::string& path) {
  return read_tokenizer_json(path).added;
}

Tokenizer Tokenizer::load_dir(const std::string& checkpoint_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(checkpoint_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("checkpoint directory ", checkpoint_dir, " does not exist");
  const fs::path model = dir / "tokenizer.model";
  if (!fs::is_regular_file(model, ec))
    fail("no tokenizer.model in ", checkpoint_dir, " (the SentencePiece model is needed to turn text into tokens)");
  std::optional<std::vector<AddedToken>> added;
  std::vector<std::pair<int, int>> space_merges;
  const fs::path json = dir / "tokenizer.json";
  if (fs::is_regular_file(json, ec)) {
    TokenizerJson tj = read_tokenizer_json(json.string());
    added = std::move(tj.added);
    space_merges = std::move(tj.space_merges);
  }
  return build(read_file(model), std::move(added), std::move(space_merges), model.string());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::string cleaned;
  if (!is_valid_utf8(text)) {
    cleaned = sanitize_utf8(text);
    text = cleaned;
  }
  std::vector<int32_t> out;
  if (add_bos) out.push_back(bos_);
  const Impl& im = *impl_;
  size_t seg = 0, pos = 0;
  while (pos < text.size()) {
    const auto& lens = im.match_lengths[uint8_t(text[pos])];
    int32_t hit = -1;
    size_t hit_len = 0;
    for (uint32_t len : lens) {
      if (len > text.size() - pos) continue;
      const auto it = im.added_by_content.find(text.substr(pos, len));
      if (it != im.added_by_content.end()) {
        hit = it->second, hit_len = len;
        break;
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    im.encode_segment(text.substr(seg, pos - seg), out);
    out.push_back(hit);
    pos += hit_len;
    seg = pos;
  }
  im.encode_segment(text.substr(seg), out);
  return out;
}

void Tokenizer::decode_one(int32_t id, bool skip_special, std::string& bytes, std::string& out) const {
  const Impl& im = *impl_;
  if (id < 0) fail("token id ", id, " is negative");
  std::string_view tok;
  if (const auto it = im.added_by_id.find(id); it != im.added_by_id.end()) {
    const AddedToken& a = im.added[it->second];
    if (skip_special && a.special) return;
    tok = a.content;
  } else if (id < int32_t(im.types.size())) {
    tok = im.sp.IdToPiece(id);
  } else {
    return;  // not in the vocabulary: the reference decodes it to nothing
  }
  const int b = byte_token_value(tok);
  if (b >= 0) {
    bytes += char(b);
    return;
  }
  flush_bytes(bytes, out);
  append_replacing_space_mark(out, tok);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string out, bytes;
  for (int32_t id : ids) decode_one(id, skip_special_tokens, bytes, out);
  flush_bytes(bytes, out);
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  const Impl& im = *impl_;
  if (const auto it = im.added_by_id.find(id); it != im.added_by_id.end()) return im.added[it->second].content;
  if (id >= 0 && id < int32_t(im.types.size())) return im.sp.IdToPiece(id);
  return {};
}

int32_t Tokenizer::token_id(std::string_view piece) const {
  const Impl& im = *impl_;
  if (const auto it = im.added_by_content.find(piece); it != im.added_by_content.end()) return it->second;
  return im.sp_lookup(piece);
}

int64_t Tokenizer::size() const { return impl_->size; }
int64_t Tokenizer::sentencepiece_size() const { return int64_t(impl_->types.size()); }

std::optional<PieceType> Tokenizer::piece_type(int32_t id) const {
  if (id < 0 || id >= int32_t(impl_->types.size())) return std::nullopt;
  return impl_->types[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

// ---------------------------------------------------------------------------------------------------------------

Tokenizer::StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tok_(&tokenizer), skip_special_(skip_special_tokens) {}

std::string Tokenizer::StreamDecoder::push(int32_t id) {
  std::string out;
  tok_->decode_one(id, skip_special_, bytes_, out);
  return out;
}

std::string Tokenizer::StreamDecoder::finish() {
  std::string out;
  flush_bytes(bytes_, out);
  return out;
}

}  // namespace g3n
