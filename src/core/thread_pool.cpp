#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace dsv2 {

namespace {
// Busy-wait iterations (pause instructions) before a worker sleeps or the caller yields: long enough to
// bridge the serial gaps between the jobs of a decode step (attention, routing, sampling on the calling
// thread: with 2,000 a 220-token decode of the 4-layer int8 model made 8,219 futex calls, with 20,000
// 394; docs/cpu-notes.md, "Decode: the threads waiting for each other"), short enough that an idle
// engine soon gives its cores back to other threads (an HTTP server beside the model) on a machine with
// few cores.
constexpr int kSpinIterations = 20000;
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  chunks_.assign(size_t(n_threads), {0, 0});
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunk(int index) {
  const auto [b, e] = chunks_[size_t(index)];
  if (e <= b) return;
  try {
    (*job_)(b, e);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t units = (n + grain - 1) / grain;
  const int used = int(std::min<int64_t>(units, size()));
  if (used == 1) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int t = 0; t < size(); ++t) {
      const int64_t b = t < used ? units * t / used * grain : n, e = t < used ? std::min(n, units * (t + 1) / used * grain) : n;
      chunks_[size_t(t)] = {b, e};
    }
    job_ = &fn;
    error_ = nullptr;
    pending_.store(int(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  run_chunk(0);
  for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) {
    if (spins < kSpinIterations) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
    err = error_;
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::for_each_part(int64_t n_parts, const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(n_parts, size()), 1, [&](int64_t, int64_t) {
    for (int64_t p; (p = next.fetch_add(1, std::memory_order_relaxed)) < n_parts;) fn(p);
  });
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_.load()) return;
    run_chunk(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace dsv2
