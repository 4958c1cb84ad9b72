#include "server/slots.h"

#include <algorithm>

namespace g3n::server {

void FairMutex::lock() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t ticket = next_ticket_++;
  cv_.wait(lock, [&] { return serving_ == ticket; });
}

void FairMutex::unlock() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++serving_;
  }
  cv_.notify_all();
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

SlotPool::SlotPool(const Model& model, int slots, int queue_capacity, const SessionOptions& options)
    : options_(options), queue_capacity_(size_t(std::max(0, queue_capacity))) {
  slots_.resize(size_t(std::max(1, slots)));
  for (auto& s : slots_) s.session = std::make_unique<Session>(model, options_);
}

SlotPool::Lease::~Lease() { pool_->release(index_); }

Session& SlotPool::Lease::session() const { return *pool_->slots_[size_t(index_)].session; }

int SlotPool::pick_locked(const std::vector<int32_t>& prompt) const {
  int best = -1;
  size_t best_prefix = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.busy) continue;
    const size_t p = common_prefix(s.session->tokens(), prompt);
    if (best < 0 || p > best_prefix || (p == best_prefix && s.last_used < slots_[size_t(best)].last_used)) {
      best = int(i);
      best_prefix = p;
    }
  }
  return best;
}

std::unique_ptr<SlotPool::Lease> SlotPool::acquire(const std::vector<int32_t>& prompt) {
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_) return nullptr;
  int index = waiting_.empty() ? pick_locked(prompt) : -1;
  if (index < 0) {
    if (waiting_.size() >= queue_capacity_) return nullptr;
    const uint64_t ticket = next_ticket_++;
    waiting_.push_back(ticket);
    cv_.wait(lock, [&] { return closed_ || (waiting_.front() == ticket && busy_ < int(slots_.size())); });
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
    if (closed_) {
      cv_.notify_all();
      return nullptr;
    }
    index = pick_locked(prompt);
    cv_.notify_all();  // the next waiter may take another free slot
  }
  Slot& s = slots_[size_t(index)];
  s.busy = true;
  s.last_used = ++clock_;
  ++busy_;
  return std::make_unique<Lease>(*this, index);
}

void SlotPool::release(int index) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots_[size_t(index)].busy = false;
    --busy_;
  }
  cv_.notify_all();
}

void SlotPool::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

int SlotPool::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

int SlotPool::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int(waiting_.size());
}

}  // namespace g3n::server
