// Continuous batching: which sequences run in the next step and how many tokens each computes.
// Plain CPU bookkeeping over a BlockManager; the engine runs the forwards the schedule names.
//
// Each step has a token budget and a cap on running sequences. Running sequences come first, oldest
// first: a decoding sequence computes 1 token, a prefilling one a chunk of min(prefill_chunk, what it
// has left) tokens; a sequence whose chunk does not fit the budget left waits for the next step, so a
// sequence's chunks never depend on what else runs (results do not depend on batching). Waiting
// sequences are then admitted in arrival order, taking cached prefix blocks first. A waiting
// sequence whose next full prompt block a running sequence with the same tokens is computing right
// now stays waiting and takes that block from the prefix cache once it is registered, so sequences
// that share a prefix and arrive together compute it once; it is never held for a block it could
// not take (the last prompt token is always computed), and it goes ahead when no running sequence
// is at that block any more (finished, preempted). When a running sequence needs a block and none
// is free, the newest running sequence is preempted: its blocks are released and it goes back to
// the front of the queue to be recomputed later (prompt and generated tokens so far).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "engine/block_manager.h"

namespace dsv2 {

struct SchedulerOptions {
  int32_t max_running = 8;          // sequences in the running set
  int64_t step_token_budget = 256;  // tokens computed per step, all sequences together
  int64_t prefill_chunk = 64;       // tokens of one prompt per step (<= step_token_budget)
};
void validate_scheduler_options(const SchedulerOptions& o);

// What the scheduler knows of a sequence. The engine derives its request state from this.
struct ScheduledSequenceState {
  uint64_t id = 0;
  std::vector<int32_t> tokens;   // the prompt, then every generated token
  int64_t prompt_length = 0;
  int64_t n_computed = 0;        // tokens whose latents are in the cache (a prefix of `tokens`)
  std::vector<BlockId> blocks;   // the block table: position p is in blocks[p / block_size]
  int64_t n_registered = 0;      // leading full blocks registered with the prefix cache
  uint64_t last_hash = kRootBlockHash;  // chained hash of those blocks
  int64_t cached_prefix_tokens = 0;     // tokens taken from the prefix cache at the last admission
  bool prefix_looked_up = false;        // since it last held no blocks (so a waiting sequence looks up once)
  int32_t preemptions = 0;

  int64_t tokens_to_compute() const { return int64_t(tokens.size()) - n_computed; }
};
using SequencePtr = std::shared_ptr<ScheduledSequenceState>;

struct StepWork {
  SequencePtr sequence;
  int64_t n_tokens;  // compute tokens[n_computed, n_computed + n_tokens)
};

struct Schedule {
  std::vector<StepWork> work;
  // Sequences that can never fit the cache (more blocks than exist): the engine ends them.
  std::vector<SequencePtr> unservable;
};

class Scheduler {
 public:
  Scheduler(BlockManager& blocks, const SchedulerOptions& options);

  void add(SequencePtr sequence);  // joins the waiting queue
  Schedule schedule();
  // After the forward of `n` tokens of the sequence: advances n_computed, registers full blocks.
  void computed(ScheduledSequenceState& sequence, int64_t n);
  // Removes the sequence (running or waiting) and releases its blocks.
  void finish(const SequencePtr& sequence);

  size_t n_waiting() const { return waiting_.size(); }
  size_t n_running() const { return running_.size(); }
  int64_t preemptions() const { return preemptions_; }
  const SchedulerOptions& options() const { return o_; }

 private:
  // A waiting sequence takes the cached blocks of its prompt: all it finds on its first attempt,
  // then those registered since (it holds only that prefix while it waits).
  void take_cached_prefix(ScheduledSequenceState& s);
  // Whether a running sequence with the same tokens is computing, right now, the full block that
  // follows the waiting sequence's cached prefix, and that block is one it may take from the cache.
  bool next_block_being_computed(const ScheduledSequenceState& s) const;
  bool ensure_blocks(ScheduledSequenceState& s, int64_t n_tokens);  // false: out of blocks
  void release_blocks(ScheduledSequenceState& s);
  int64_t chunk_for(const ScheduledSequenceState& s) const;
  int64_t blocks_needed(int64_t n_tokens) const;

  BlockManager& blocks_;
  SchedulerOptions o_;
  std::deque<SequencePtr> waiting_;
  std::vector<SequencePtr> running_;  // in admission order: back = newest
  int64_t preemptions_ = 0;
};

}  // namespace dsv2
