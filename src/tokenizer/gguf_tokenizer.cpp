#include "tokenizer/gguf_tokenizer.h"

#include "base/error.h"
#include "tokenizer/synthetic_vocab.h"

namespace g3n {

std::optional<Tokenizer> tokenizer_from_gguf(const GgufFile& f) {
  const std::string source = f.path() + " (tokenizer metadata)";
  if (f.has("g3n.tokenizer.model")) {
    const auto bytes = f.get_array<uint8_t>("g3n.tokenizer.model");
    return Tokenizer::from_serialized_proto(std::string(bytes.begin(), bytes.end()), std::nullopt, source);
  }
  if (!f.has("tokenizer.ggml.tokens")) return std::nullopt;
  const std::string model = f.get_string("tokenizer.ggml.model", "llama");
  if (model != "llama")
    fail(f.path(), ": tokenizer.ggml.model is '", model, "'; only SentencePiece ('llama') vocabularies are supported");
  const auto tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
  const auto scores = f.get_array<float>("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
  const auto types = f.get_array<int32_t>("tokenizer.ggml.token_type", std::vector<int32_t>(tokens.size(), 1));
  if (scores.size() != tokens.size() || types.size() != tokens.size())
    fail(f.path(), ": tokenizer.ggml.tokens has ", tokens.size(), " entries but scores has ", scores.size(),
         " and token_type ", types.size());
  std::vector<SentencePieceEntry> pieces;
  pieces.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = types[i];
    if (t < 1 || t > 6) fail(f.path(), ": tokenizer.ggml.token_type[", i, "] is ", t, " (expected 1..6)");
    pieces.push_back({tokens[i], scores[i], uint32_t(t)});
  }
  // llama.cpp's converter marks <unk> as a control token; SentencePiece needs exactly one UNKNOWN piece.
  const uint32_t unk = f.get_u32("tokenizer.ggml.unknown_token_id", 3);
  if (unk >= pieces.size()) fail(f.path(), ": tokenizer.ggml.unknown_token_id ", unk, " is outside the vocabulary");
  for (auto& p : pieces)
    if (p.type == 2) p.type = 3;
  pieces[unk].type = 2;
  const bool dummy_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", false);
  return Tokenizer::from_serialized_proto(build_sentencepiece_model(pieces, dummy_prefix), std::nullopt, source);
}

}  // namespace g3n
