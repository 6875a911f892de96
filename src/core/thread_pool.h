// A fixed set of worker threads that split index ranges (no oversubscription: the calling thread
// takes a share of every job). Between jobs the workers spin briefly before sleeping, so the
// hundreds of small jobs of a decode step do not pay a wake-up each.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv2 {

class ThreadPool {
 public:
  // n_threads >= 1 counts the calling thread; 0 means the number of hardware threads.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n), at most one chunk per thread,
  // each chunk a multiple of `grain` (except the last). Returns when all chunks are done.
  // The first exception thrown by fn is rethrown here. Not reentrant: fn must not call it.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Calls fn(p) once for every part p in [0, n_parts), the threads taking the next unclaimed part until
  // none is left: a thread that starts late or runs slower takes fewer parts. Exceptions and
  // reentrancy as parallel_for.
  void for_each_part(int64_t n_parts, const std::function<void(int64_t)>& fn);

 private:
  void worker_loop(int index);
  void run_chunk(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> chunks_;  // [thread] -> range; index 0 is the caller's
  std::atomic<uint64_t> generation_{0};              // bumped once per job (after job_/chunks_ are set)
  std::atomic<int> pending_{0};                      // workers still running the current job
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;                         // guarded by mutex_
};

}  // namespace dsv2
