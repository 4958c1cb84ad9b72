// The tokenizer a GGUF file carries: g3n's own files keep the exact SentencePiece model
// (g3n.tokenizer.model); llama.cpp-style files list the vocabulary (tokenizer.ggml.tokens / scores /
// token_type), from which the SentencePiece model is rebuilt with Gemma's settings.
#pragma once
#include <optional>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

namespace g3n {

// nullopt when the file has no tokenizer; throws g3n::Error when the one it has is inconsistent.
std::optional<Tokenizer> tokenizer_from_gguf(const GgufFile& file);

}  // namespace g3n
