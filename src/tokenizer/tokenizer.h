// Text <-> token ids for Gemma 3n, exactly as the Hugging Face reference tokenizer (GemmaTokenizer /
// tokenizers) does it, on top of the SentencePiece model (tokenizer.model) of the checkpoint.
//
// What the reference does, and so what encode() does:
//   * Added tokens are cut out of the raw text first, leftmost-longest: every control and user-defined piece of
//     the SentencePiece model (`<bos>`, `<start_of_turn>`, `<unused17>`, "\n", "\n\n", `<table>`, "\t", ...) and
//     the ids past the SentencePiece vocabulary (`<end_of_image>` 262144, `<image_soft_token>` 262145, ...).
//     Not the whitespace pieces "▁▁", "▁▁▁", ...: BPE builds those from spaces, and a "▁" typed in the text is
//     a space like any other.
//     With a tokenizer.json next to the model, its `added_tokens` list is used instead, as the reference does.
//     So `<start_of_turn>` typed in the text is id 105, not the characters (SentencePiece alone would split it).
//   * The text between them goes through SentencePiece BPE: " " becomes "▁", no dummy-prefix space is added
//     (Gemma's normalizer has add_dummy_prefix = false), characters outside the vocabulary fall back to bytes.
//     One place where SentencePiece and the reference's BPE differ: a run of more spaces than the longest
//     whitespace piece ("▁" x 31 in Gemma). SentencePiece cuts it greedily (31 + rest), the reference merges
//     pairs in merge-rank order (32 spaces -> 16 + 16). Such runs are cut here the reference's way, with the
//     whitespace merges of tokenizer.json when it has them.
//   * Bytes that are not valid UTF-8 become U+FFFD the way Python's bytes.decode("utf-8", "replace") does it (one
//     U+FFFD per maximal invalid subsequence): the reference only accepts `str`, so that is what it tokenizes.
//
// decode() is the reference's decoder (Replace "▁" -> " ", ByteFallback, Fuse): a run of byte tokens that is
// valid UTF-8 becomes that text; an invalid run becomes one U+FFFD per byte token. Added tokens decode to their
// text; ids past the vocabulary decode to nothing.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace g3n {

// SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
enum class PieceType : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// One entry of tokenizer.json's `added_tokens` (or derived from the SentencePiece model). Matched whole in the
// raw text; `special` ones are dropped by decode(..., skip_special_tokens = true).
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
};

class Tokenizer {
 public:
  // Gemma 3n's well-known ids (spec §10.1).
  static constexpr int32_t kPadId = 0, kEosId = 1, kBosId = 2, kUnkId = 3, kMaskId = 4;
  static constexpr int32_t kStartOfTurnId = 105, kEndOfTurnId = 106;
  static constexpr int32_t kBoiId = 255999, kBoaId = 256000;
  static constexpr int32_t kEoiId = 262144, kImageSoftId = 262145, kEoaId = 262272, kAudioSoftId = 262273;

  // Reads <dir>/tokenizer.model and, when present, <dir>/tokenizer.json (its `added_tokens`). Without
  // tokenizer.json the added tokens are the model's control / unknown / user-defined pieces plus the four
  // Gemma 3n ids past the SentencePiece vocabulary (262144 <end_of_image>, 262145 <image_soft_token>,
  // 262272 <end_of_audio>, 262273 <audio_soft_token>). Throws g3n::Error for a missing or corrupt file.
  static Tokenizer load_dir(const std::string& checkpoint_dir);

  // From a serialized SentencePiece ModelProto (e.g. rebuilt from GGUF metadata). `added_tokens`: as above when
  // absent; when given, exactly that list. `source` names the data in error messages.
  static Tokenizer from_serialized_proto(std::string model_proto,
                                         std::optional<std::vector<AddedToken>> added_tokens = std::nullopt,
                                         const std::string& source = "SentencePiece model");

  // tokenizer.json's added_tokens (throws g3n::Error naming `path` when it is not valid JSON of that shape).
  static std::vector<AddedToken> read_added_tokens_json(const std::string& path);

  Tokenizer(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

  // `add_bos` puts <bos> first (the reference's add_special_tokens=True). A chat-template prompt already starts
  // with "<bos>", which becomes id 2 by itself: encode it with add_bos = false.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // The token's string as the vocabulary spells it ("▁the", "<0xE2>", "<start_of_turn>"); "" for an unknown id.
  std::string piece(int32_t id) const;
  // Id of a piece or added token spelled exactly so; -1 if none.
  int32_t token_id(std::string_view piece) const;
  // Number of ids the tokenizer knows: max(SentencePiece pieces, highest added id + 1).
  int64_t size() const;
  // Number of pieces of the SentencePiece model.
  int64_t sentencepiece_size() const;
  // Type of a SentencePiece piece; nullopt for ids outside the model (added tokens past it, or out of range).
  std::optional<PieceType> piece_type(int32_t id) const;
  bool is_special(int32_t id) const;  // an added token marked special
  const std::vector<AddedToken>& added_tokens() const;

  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }
  int32_t start_of_turn_id() const { return sot_; }
  int32_t end_of_turn_id() const { return eot_; }
  int32_t boi_id() const { return boi_; }  // <start_of_image>
  int32_t eoi_id() const { return eoi_; }  // <end_of_image>
  int32_t boa_id() const { return boa_; }  // <start_of_audio>
  int32_t eoa_id() const { return eoa_; }  // <end_of_audio>
  int32_t image_soft_id() const { return image_soft_; }
  int32_t audio_soft_id() const { return audio_soft_; }

  // Incremental decode for streaming: push() returns the text that is final after this id. Byte tokens are held
  // until their run ends (a multi-byte character split over byte tokens comes out once, whole; a run that turns
  // out invalid becomes U+FFFD per byte, as decode() does). finish() flushes. The concatenation of everything
  // returned equals decode(all ids, skip_special_tokens).
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
    std::string push(int32_t id);
    std::string finish();

   private:
    const Tokenizer* tok_;
    bool skip_special_;
    std::string bytes_;
  };

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  // `space_merges`: the merges of whitespace-run pieces ("▁▁" + "▁", ...) as lengths, best first (from
  // tokenizer.json); empty: the order the reference derives from the vocabulary.
  static Tokenizer build(std::string model_proto, std::optional<std::vector<AddedToken>> added_tokens,
                         std::vector<std::pair<int, int>> space_merges, const std::string& source);
  // Appends the decoded text of one token to `out`, or its byte to `bytes` (flushing `bytes` first otherwise).
  void decode_one(int32_t id, bool skip_special, std::string& bytes, std::string& out) const;

  std::shared_ptr<const Impl> impl_;
  int32_t bos_ = kBosId, eos_ = kEosId, pad_ = kPadId, sot_ = kStartOfTurnId, eot_ = kEndOfTurnId;
  int32_t boi_ = kBoiId, eoi_ = kEoiId, boa_ = kBoaId, eoa_ = kEoaId, image_soft_ = kImageSoftId,
          audio_soft_ = kAudioSoftId;
};

// `bytes` as Python's bytes.decode("utf-8", errors="replace") reads it, re-encoded as UTF-8: each maximal
// invalid subsequence (a bad lead byte, or a lead byte with the valid continuation bytes that follow it) becomes
// one U+FFFD. Surrogates (ED A0..BF ..) and overlong forms are invalid. Valid input comes back unchanged.
std::string sanitize_utf8(std::string_view bytes);

// True when `bytes` is valid UTF-8 (no surrogates, no overlong forms, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

}  // namespace g3n
