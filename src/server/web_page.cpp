// The chat page served at "/": src/server/web/index.html.inc is the page itself, wrapped in a raw
// string literal so that it compiles into the binary (and rebuilds when it changes).
#include "server/server.h"

namespace g3n::server {

const char* const kIndexHtml =
#include "server/web/index.html.inc"
    ;

}  // namespace g3n::server
