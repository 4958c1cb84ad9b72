#include "base/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace g3n {

namespace {

// Spin iterations before a thread blocks (~30 us on the 2-core AVX-512 VM): a decode step calls
// parallel_for hundreds of times with little serial work between the calls, and waking a blocked thread
// through a futex costs microseconds on both sides of every call. Spinning this briefly made E2B q4 decode
// 14% faster there (8.5 -> 9.6 tok/s on 2 threads); a pool left idle longer than that blocks.
constexpr int kSpin = 2000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    const int64_t begin = next_.fetch_add(job_chunk_);
    if (begin >= job_n_) break;
    (*job_)(begin, std::min(job_n_, begin + job_chunk_));
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    // Spin for the next job a while, then block until parallel_for (or the destructor) wakes us.
    bool ready = false;
    for (int i = 0; i < kSpin && !ready; ++i) {
      ready = stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      if (!ready) cpu_relax();
    }
    if (!ready) {
      std::unique_lock<std::mutex> lock(mu_);
      ++sleeping_;
      wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      --sleeping_;
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunks();
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be checking busy_ under the lock
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (workers_.empty() || max_chunks == 1) {
    fn(0, n);
    return;
  }
  // About 4 chunks per thread balances load without much scheduling overhead.
  const int64_t chunks = std::min<int64_t>(max_chunks, int64_t(size()) * 4);
  bool sleepers = false;
  {
    std::lock_guard<std::mutex> lock(mu_);  // a worker about to block checks generation_ under the lock
    job_ = &fn;
    job_n_ = n;
    job_chunk_ = (n + chunks - 1) / chunks;
    next_.store(0);
    busy_.store(int(workers_.size()));
    generation_.fetch_add(1, std::memory_order_release);
    sleepers = sleeping_ > 0;
  }
  if (sleepers) wake_.notify_all();
  run_chunks();
  for (int i = 0; i < kSpin && busy_.load(std::memory_order_acquire) != 0; ++i) cpu_relax();
  if (busy_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return busy_.load() == 0; });
  }
  job_ = nullptr;
}

}  // namespace g3n
