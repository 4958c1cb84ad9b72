// Checked integer arithmetic for sizes read from untrusted files.
#pragma once
#include <cstdint>
#include <limits>

#include "base/error.h"

namespace g3n {

inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("size overflow in ", what);
  return r;
}

inline uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("size overflow in ", what);
  return r;
}

}  // namespace g3n
