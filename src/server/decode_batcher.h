// Continuous batching of decode steps across the server's slots: a slot that has sampled its next token
// hands (session, token) to the batcher and waits; whoever finds the batcher idle becomes the leader,
// takes every step waiting at that moment (grouped by MatFormer profile) and runs them as one pass over
// the weights (Session::decode_batch) under the compute lock, then wakes them. Requests join and leave
// between steps; a lone request decodes exactly as before.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

#include "g3n/engine.h"

namespace g3n::server {

class DecodeBatcher {
 public:
  // `run_locked(f)` runs f while holding the server's compute lock.
  explicit DecodeBatcher(std::function<void(const std::function<void()>&)> run_locked, int max_batch = 64)
      : run_locked_(std::move(run_locked)), max_batch_(max_batch) {}

  // Appends `token` to `session` (one decode step) and returns its logits; rethrows the step's error.
  const std::vector<float>& step(Session& session, int32_t token);

  // Requests that are decoding: a leader waits (up to a couple of milliseconds) until each of them has
  // handed in its step, so that they share one pass instead of alternating between two half batches.
  void join();
  void leave();
  struct Membership {
    explicit Membership(DecodeBatcher& b) : b_(b) { b_.join(); }
    ~Membership() { b_.leave(); }
    DecodeBatcher& b_;
  };

  // Rows per pass, for /metrics: (passes, rows) so far.
  uint64_t passes() const;
  uint64_t rows() const;

 private:
  struct Item {
    Session* session;
    int32_t token;
    bool done = false;
    std::exception_ptr error;
  };
  void run(std::vector<Item*>& batch);

  std::function<void(const std::function<void()>&)> run_locked_;
  int max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item*> pending_;
  bool leading_ = false;
  size_t members_ = 0;
  uint64_t passes_ = 0, rows_ = 0;
};

}  // namespace g3n::server
