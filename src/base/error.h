// Errors: every failure the user can cause (a bad file, a bad argument) is a g3n::Error
// with a message that names the problem. Nothing in the engine aborts on bad input.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace g3n {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// fail("tensor ", name, " has shape ", s) — builds the message from its parts and throws.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

#define G3N_CHECK(cond, ...)              \
  do {                                    \
    if (!(cond)) ::g3n::fail(__VA_ARGS__); \
  } while (0)

}  // namespace g3n
