// The server's sessions: `parallel` slots, each a g3n::Session kept between requests so that a
// request extending a finished conversation reuses its cached prefix; a bounded FIFO queue of
// requests waiting for a slot; and the lock that serialises compute on the model's thread pool.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "g3n/engine.h"

namespace g3n::server {

// A mutex that hands itself out in arrival order (ticket lock), so that slots decoding one token
// at a time take turns instead of one of them re-taking the lock at once.
class FairMutex {
 public:
  void lock();
  void unlock();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ticket_ = 0, serving_ = 0;
};

class SlotPool {
 public:
  SlotPool(const Model& model, int slots, int queue_capacity, const SessionOptions& options = {});

  class Lease {
   public:
    Lease(SlotPool& pool, int index) : pool_(&pool), index_(index) {}
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Session& session() const;
    int index() const { return index_; }

   private:
    SlotPool* pool_;
    int index_;
  };

  // A free slot for `prompt`: the one whose tokens share the longest prefix with it (ties: the one
  // used least recently). Waits in FIFO order while every slot is busy; nullptr at once when
  // `queue_capacity` requests are already waiting, or when close() was called.
  std::unique_ptr<Lease> acquire(const std::vector<int32_t>& prompt);
  // Wakes every waiter with nullptr and refuses new requests.
  void close();

  int size() const { return int(slots_.size()); }
  int active() const;
  int queued() const;
  const SessionOptions& session_options() const { return options_; }

 private:
  struct Slot {
    std::unique_ptr<Session> session;
    bool busy = false;
    uint64_t last_used = 0;
  };
  int pick_locked(const std::vector<int32_t>& prompt) const;  // -1 when none is free
  void release(int index);

  SessionOptions options_;
  std::vector<Slot> slots_;
  const size_t queue_capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> waiting_;  // tickets, in arrival order
  uint64_t next_ticket_ = 0, clock_ = 0;
  int busy_ = 0;
  bool closed_ = false;
};

// Length of the common prefix of two token sequences.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

}  // namespace g3n::server
