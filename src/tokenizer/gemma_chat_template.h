// The Gemma 3n chat template as Jinja text (see gemma_chat_template.cpp).
#pragma once

namespace g3n {

const char* gemma3n_chat_template();

}  // namespace g3n
