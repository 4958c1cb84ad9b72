#include "server/decode_batcher.h"

#include <algorithm>
#include <chrono>

namespace g3n::server {

const std::vector<float>& DecodeBatcher::step(Session& session, int32_t token) {
  Item item{&session, token, false, nullptr};
  std::unique_lock<std::mutex> lock(mu_);
  pending_.push_back(&item);
  cv_.notify_all();
  while (!item.done) {
    if (!leading_) {
      leading_ = true;
      // Give the other decoding requests a moment to hand in their steps (they are sampling their
      // previous token): one pass for all of them reads the weights once.
      cv_.wait_for(lock, std::chrono::milliseconds(3), [&] { return pending_.size() >= members_; });
      std::vector<Item*> batch;
      const size_t take = std::min(pending_.size(), size_t(max_batch_));
      batch.assign(pending_.begin(), pending_.begin() + std::ptrdiff_t(take));
      pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(take));
      lock.unlock();
      run(batch);
      lock.lock();
      for (Item* it : batch) it->done = true;
      leading_ = false;
      ++passes_;
      rows_ += batch.size();
      cv_.notify_all();
    } else {
      cv_.wait(lock);
    }
  }
  if (item.error) std::rethrow_exception(item.error);
  return session.last_logits();
}

void DecodeBatcher::run(std::vector<Item*>& batch) {
  // One pass per MatFormer profile present (sessions of one pass must run the same layers).
  std::vector<bool> taken(batch.size(), false);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (taken[i]) continue;
    std::vector<Item*> group;
    for (size_t j = i; j < batch.size(); ++j)
      if (!taken[j] && batch[j]->session->profile_name() == batch[i]->session->profile_name()) {
        taken[j] = true;
        group.push_back(batch[j]);
      }
    std::vector<Session*> sessions;
    std::vector<int32_t> tokens;
    for (Item* it : group) sessions.push_back(it->session), tokens.push_back(it->token);
    try {
      run_locked_([&] { Session::decode_batch(sessions, tokens); });
    } catch (...) {
      // A failed pass fails each of its rows alone, so that one bad sequence does not take the others down.
      for (Item* it : group) {
        try {
          run_locked_([&] { it->session->feed({it->token}); });
        } catch (...) {
          it->error = std::current_exception();
        }
      }
    }
  }
}

void DecodeBatcher::join() {
  std::lock_guard<std::mutex> lock(mu_);
  ++members_;
}

void DecodeBatcher::leave() {
  std::lock_guard<std::mutex> lock(mu_);
  --members_;
  cv_.notify_all();
}

uint64_t DecodeBatcher::passes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return passes_;
}

uint64_t DecodeBatcher::rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rows_;
}

}  // namespace g3n::server
