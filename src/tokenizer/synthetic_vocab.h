// A made-up SentencePiece model with Gemma's layout, for random test checkpoints that must run from text
// without downloading the real tokenizer (`g3n make-random` writes it as tokenizer.model).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g3n {

// A serialized SentencePiece ModelProto (BPE, byte fallback, Gemma's normalizer: identity, no dummy prefix, spaces
// as "▁", no whitespace folding) with exactly 262144 pieces laid out like Gemma 3n's:
//   0 <pad>, 1 <eos>, 2 <bos> (control), 3 <unk> (unknown), 4 <mask> (control), 5 [multimodal] (user-defined),
//   6..104 <unused0>..<unused98> (control), 105 <start_of_turn>, 106 <end_of_turn> (control),
//   107..137 "\n" x 1..31, 138..167 "▁" x 2..31, 168..237 HTML tags (user-defined),
//   238..493 <0x00>..<0xFF> (byte), 494.. "▁", printable ASCII, some accented letters and punctuation, and common
//   English words with all their prefixes (normal, scores -0, -1, -2, ...), then <unusedN> filler (unused type),
//   255968..255998 "\t" x 1..31 (user-defined), 255999 <start_of_image>, 256000 <start_of_audio> (control),
//   256001..262143 <unused99>..<unused6241> (control).
// Any UTF-8 text round-trips (characters outside the vocabulary fall back to bytes).
std::string make_synthetic_sentencepiece_model();

// One piece of a SentencePiece model; `type` as sentencepiece_model.proto (1 normal, 2 unknown,
// 3 control, 4 user-defined, 5 unused, 6 byte), which is also GGUF's tokenizer.ggml.token_type.
struct SentencePieceEntry {
  std::string text;
  float score = 0.0f;
  uint32_t type = 1;
};

// A serialized SentencePiece ModelProto with these pieces and Gemma's trainer / normalizer settings
// (BPE, byte fallback, identity normaliser). Used for vocabularies that arrive as lists (GGUF).
std::string build_sentencepiece_model(const std::vector<SentencePieceEntry>& pieces, bool add_dummy_prefix);

}  // namespace g3n
