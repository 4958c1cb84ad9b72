// Reuse of large activation buffers within one forward pass.
//
// The media encoders allocate and free tensors of a few MB to ~75 MB per layer. Blocks that large are
// mapped fresh by malloc every time, so each layer paid the kernel's page faults and zeroing, then
// std::vector's own zero fill (~7% of the vision tower's time, all of it on the calling thread). A
// vector with ActivationAllocator leaves new elements uninitialised, and while an
// ActivationBufferScope lives on the thread, freed blocks are kept and handed out again for a request
// of exactly the same size (same-shaped layers repeat); the scope frees them when it ends. Without a
// scope the allocator is plain operator new / delete.
#pragma once
#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace g3n {

class ActivationBufferScope {
 public:
  // Keeps at most max_bytes of freed blocks (the oldest go first).
  explicit ActivationBufferScope(size_t max_bytes = size_t(1) << 30) : max_bytes_(max_bytes), outer_(current()) {
    current() = this;
  }
  ~ActivationBufferScope() {
    for (const Block& b : free_) ::operator delete(b.p);
    current() = outer_;
  }
  ActivationBufferScope(const ActivationBufferScope&) = delete;
  ActivationBufferScope& operator=(const ActivationBufferScope&) = delete;

  static void* allocate(size_t bytes) {
    if (ActivationBufferScope* s = current())
      for (size_t i = s->free_.size(); i-- > 0;)
        if (s->free_[i].bytes == bytes) {
          void* p = s->free_[i].p;
          s->free_.erase(s->free_.begin() + std::ptrdiff_t(i));
          s->held_ -= bytes;
          return p;
        }
    return ::operator new(bytes);
  }

  static void release(void* p, size_t bytes) {
    ActivationBufferScope* s = current();
    if (!s || bytes > s->max_bytes_) {
      ::operator delete(p);
      return;
    }
    s->free_.push_back({p, bytes});
    s->held_ += bytes;
    while (s->held_ > s->max_bytes_) {
      ::operator delete(s->free_.front().p);
      s->held_ -= s->free_.front().bytes;
      s->free_.erase(s->free_.begin());
    }
  }

 private:
  struct Block {
    void* p;
    size_t bytes;
  };
  static ActivationBufferScope*& current() {
    thread_local ActivationBufferScope* scope = nullptr;
    return scope;
  }
  size_t max_bytes_, held_ = 0;
  ActivationBufferScope* outer_;
  std::vector<Block> free_;
};

// std::allocator for activation tensors: new elements are left uninitialised (resize does not zero),
// blocks come from the thread's ActivationBufferScope when one is open.
template <class T>
struct ActivationAllocator {
  using value_type = T;
  ActivationAllocator() = default;
  template <class U>
  ActivationAllocator(const ActivationAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(size_t n) { return static_cast<T*>(ActivationBufferScope::allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { ActivationBufferScope::release(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialised: no zero fill
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const ActivationAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using ActivationVector = std::vector<T, ActivationAllocator<T>>;

}  // namespace g3n
