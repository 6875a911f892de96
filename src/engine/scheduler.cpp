#include "engine/scheduler.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace dsv2 {

void validate_scheduler_options(const SchedulerOptions& o) {
  check(o.max_running >= 1, "--max-running must be >= 1 (seen " + std::to_string(o.max_running) + ")");
  check(o.prefill_chunk >= 1, "--prefill-chunk must be >= 1 (seen " + std::to_string(o.prefill_chunk) + ")");
  check(o.step_token_budget >= o.prefill_chunk, "--step-tokens (" + std::to_string(o.step_token_budget) +
                                                    ") must be >= --prefill-chunk (" + std::to_string(o.prefill_chunk) + ")");
}

Scheduler::Scheduler(BlockManager& blocks, const SchedulerOptions& options) : blocks_(blocks), o_(options) {
  validate_scheduler_options(options);
}

void Scheduler::add(SequencePtr sequence) {
  check(sequence && !sequence->tokens.empty(), "scheduler: a sequence needs at least one token");
  waiting_.push_back(std::move(sequence));
}

int64_t Scheduler::chunk_for(const ScheduledSequenceState& s) const {
  return std::min(s.tokens_to_compute(), o_.prefill_chunk);
}

int64_t Scheduler::blocks_needed(int64_t n_tokens) const {
  return (n_tokens + blocks_.block_size() - 1) / blocks_.block_size();
}

bool Scheduler::ensure_blocks(ScheduledSequenceState& s, int64_t n_tokens) {
  const int64_t need = blocks_needed(s.n_computed + n_tokens);
  while (int64_t(s.blocks.size()) < need) {
    auto b = blocks_.allocate();
    if (!b) return false;
    s.blocks.push_back(*b);
  }
  return true;
}

void Scheduler::release_blocks(ScheduledSequenceState& s) {
  blocks_.release_all(s.blocks);
  s.blocks.clear();
  s.n_computed = 0;
  s.n_registered = 0;
  s.last_hash = kRootBlockHash;
  s.prefix_looked_up = false;
}

void Scheduler::take_cached_prefix(ScheduledSequenceState& s) {
  const int64_t limit = int64_t(s.tokens.size()) - 1;  // at least one token is left to compute
  if (!s.prefix_looked_up) {
    s.prefix_looked_up = true;
    s.blocks = blocks_.acquire_cached_prefix(s.tokens, limit);
  } else {
    blocks_.extend_cached_prefix(s.blocks, s.tokens, limit);  // a waiting sequence holds only its cached prefix
  }
  const int64_t bs = blocks_.block_size();
  for (; s.n_registered < int64_t(s.blocks.size()); ++s.n_registered)
    s.last_hash = chain_block_hash(s.last_hash, std::span<const int32_t>(s.tokens).subspan(size_t(s.n_registered * bs), size_t(bs)));
  s.n_computed = s.n_registered * bs;
  s.cached_prefix_tokens = s.n_computed;
}

bool Scheduler::next_block_being_computed(const ScheduledSequenceState& s) const {
  const int64_t start = s.n_computed, end = start + blocks_.block_size();
  if (end > int64_t(s.tokens.size()) - 1) return false;  // a block it could not take from the cache
  return std::any_of(running_.begin(), running_.end(), [&](const SequencePtr& r) {
    return r->n_computed >= start && r->n_computed < end && int64_t(r->tokens.size()) >= end &&
           std::equal(s.tokens.begin(), s.tokens.begin() + end, r->tokens.begin());
  });
}

Schedule Scheduler::schedule() {
  Schedule out;
  int64_t budget = o_.step_token_budget;
  // Running sequences, oldest first; preempt from the back when blocks run out.
  for (size_t i = 0; i < running_.size();) {
    ScheduledSequenceState& s = *running_[i];
    const int64_t n = chunk_for(s);
    if (n > budget) {
      ++i;
      continue;
    }
    bool preempted_self = false;
    while (!ensure_blocks(s, n)) {
      if (blocks_needed(s.n_computed + n) > blocks_.total_blocks()) break;  // could never fit
      SequencePtr victim = running_.back();
      running_.pop_back();
      release_blocks(*victim);
      ++victim->preemptions;
      ++preemptions_;
      waiting_.push_front(victim);
      if (victim.get() == &s) {
        preempted_self = true;
        break;
      }
      // A victim already scheduled this step gives its work back.
      auto it = std::find_if(out.work.begin(), out.work.end(), [&](const StepWork& w) { return w.sequence == victim; });
      if (it != out.work.end()) {
        budget += it->n_tokens;
        out.work.erase(it);
      }
    }
    if (preempted_self) break;  // everything after it was newer and is gone too
    if (blocks_needed(s.n_computed + n) > int64_t(s.blocks.size())) {
      out.unservable.push_back(running_[i]);
      running_.erase(running_.begin() + long(i));
      continue;
    }
    out.work.push_back({running_[i], n});
    budget -= n;
    ++i;
  }
  // Admit waiting sequences in order while there is room. One whose next prompt block a running
  // sequence is computing stays waiting (later ones may go first) and takes it from the prefix
  // cache at a later step.
  for (auto it = waiting_.begin(); it != waiting_.end() && int64_t(running_.size()) < o_.max_running && budget > 0;) {
    SequencePtr seq = *it;
    ScheduledSequenceState& s = *seq;
    take_cached_prefix(s);
    if (next_block_being_computed(s)) {
      ++it;
      continue;
    }
    const int64_t n = chunk_for(s);
    if (n > budget) break;
    if (blocks_needed(s.n_computed + n) > blocks_.total_blocks()) {
      it = waiting_.erase(it);
      release_blocks(s);
      out.unservable.push_back(seq);
      continue;
    }
    if (!ensure_blocks(s, n)) {
      // Not enough free blocks: give back what it took and wait until running sequences finish.
      release_blocks(s);
      break;
    }
    it = waiting_.erase(it);
    running_.push_back(seq);
    out.work.push_back({seq, n});
    budget -= n;
  }
  return out;
}

void Scheduler::computed(ScheduledSequenceState& s, int64_t n) {
  s.n_computed += n;
  const int64_t bs = blocks_.block_size();
  while ((s.n_registered + 1) * bs <= s.n_computed) {
    auto ids = std::span<const int32_t>(s.tokens).subspan(size_t(s.n_registered * bs), size_t(bs));
    s.last_hash = blocks_.register_full_block(s.blocks[size_t(s.n_registered)], s.last_hash, ids);
    ++s.n_registered;
  }
}

void Scheduler::finish(const SequencePtr& sequence) {
  auto r = std::find(running_.begin(), running_.end(), sequence);
  if (r != running_.end()) running_.erase(r);
  auto w = std::find(waiting_.begin(), waiting_.end(), sequence);
  if (w != waiting_.end()) waiting_.erase(w);
  release_blocks(*sequence);
}

}  // namespace dsv2
