// The serving engine: a thread that runs continuous batching over a paged latent cache.
// Requests are submitted from any thread; each step the scheduler picks the sequences and token
// counts, and the engine runs them all in one BatchedModel::forward (on the CPU or the GPU:
// attention per sequence, every weight read once for all their tokens), samples where a sequence
// has caught up, and reports tokens through the request's callbacks (called on the engine thread;
// keep them short).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "engine/batched_model.h"
#include "engine/block_manager.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"

namespace dsv2 {

struct EngineOptions {
  // Tokens per sequence (prompt + generated); 0: the smaller of max_position_embeddings and the cache
  // (the model's blocks x block size), so that one sequence always fits.
  int64_t max_context = 0;
  SchedulerOptions scheduler;  // max_running is capped at the model's max_batch()
  // Threads that sample a step's sequences in parallel (the CPU model's pool: idle between
  // forwards); null: the engine thread samples them all.
  ThreadPool* sampling_threads = nullptr;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // not empty, ids in the vocabulary
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  int32_t top_logprobs = -1;  // -1: no logprobs; N >= 0: the chosen token's and the N most likely
};

struct TokenEvent {
  int32_t token = 0;
  float logprob = 0;                            // log softmax of the raw logits (when asked for)
  std::vector<std::pair<int32_t, float>> top;   // [top_logprobs] (id, logprob), most likely first
};

enum class FinishReason { Eos, Length, Stopped, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

struct RequestCallbacks {
  // A generated token; returning false ends the request (a stop string, a client gone) as Stopped.
  std::function<bool(const TokenEvent&)> on_token;
  // Called exactly once, last. `prompt_tokens_cached`: tokens the prefix cache supplied.
  std::function<void(FinishReason, int64_t prompt_tokens_cached)> on_finish;
};

struct EngineStats {
  int64_t waiting = 0, running = 0;
  int32_t blocks_used = 0, blocks_free = 0, blocks_total = 0;
  double prefix_hit_rate = 0;
  int64_t prefix_hit_tokens = 0, prefix_lookup_tokens = 0;
  int64_t preemptions = 0, steps = 0;
  int64_t prompt_tokens_computed = 0, generated_tokens = 0;
};

class Engine {
 public:
  // The cache geometry comes from the model; the model outlives the engine.
  Engine(BatchedModel& model, const EngineOptions& options);
  ~Engine();  // stops the loop; unfinished requests get on_finish(Cancelled)
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int64_t max_context() const { return max_context_; }
  // Validates and queues the request (throws Error on a bad one); returns its id. Thread-safe.
  uint64_t submit(GenerationRequest request, RequestCallbacks callbacks);
  // Ends the request at the next step: its sequence and blocks are freed. Thread-safe; unknown ids are ignored.
  void cancel(uint64_t id);
  EngineStats stats() const;  // Thread-safe.

 private:
  struct Active {
    SequencePtr state;
    GenerationRequest request;
    RequestCallbacks callbacks;
    Sampler sampler;
    int64_t generated = 0;
  };
  void loop();
  void step();
  // One forward over every scheduled sequence, then sampling where a sequence caught up.
  void run_step(const std::vector<StepWork>& work);
  // The next token of a sequence that has caught up, from logits ([vocab], its last token's row;
  // changed by the sampler), with its logprobs when the request asks. Touches only `a`.
  TokenEvent sample_token(Active& a, float* logits) const;
  // Appends the token, reports it, ends the request if it is done.
  void report(Active& a, const TokenEvent& event);
  void end(uint64_t id, FinishReason reason);
  void publish_stats();  // copies the scheduler's and block manager's counters into stats_ (mu_ held)
  TokenEvent token_event(const float* logits, int32_t token, int32_t top_n) const;

  BatchedModel& model_;
  const ModelConfig& cfg_;
  EngineOptions o_;
  int64_t max_context_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::unordered_map<uint64_t, std::unique_ptr<Active>> active_;  // engine thread only
  std::vector<float> logits_;                                     // [scheduled sequences, vocab]

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Active>> submitted_;
  std::vector<uint64_t> cancelled_;
  EngineStats stats_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dsv2
