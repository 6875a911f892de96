// The scheduler without a model: token budget, running cap, chunked prefill, prefix reuse (and
// sequences sharing a prefix computing it once), preemption of the newest sequence when blocks run
// out, sequences that can never fit.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "engine/scheduler.h"

namespace dsv2 {
namespace {

SequencePtr make_sequence(uint64_t id, int n_prompt, int32_t first = 100) {
  auto s = std::make_shared<ScheduledSequenceState>();
  s->id = id;
  s->tokens.resize(size_t(n_prompt));
  std::iota(s->tokens.begin(), s->tokens.end(), first);
  s->prompt_length = n_prompt;
  return s;
}

// Runs the schedule as the engine would: computes the tokens, and where a sequence caught up,
// "samples" token 7.
void run(Scheduler& sched, const Schedule& schedule) {
  for (const StepWork& w : schedule.work) {
    sched.computed(*w.sequence, w.n_tokens);
    if (w.sequence->tokens_to_compute() == 0) w.sequence->tokens.push_back(7);
  }
}

int64_t tokens_of(const Schedule& s, const SequencePtr& seq) {
  for (const StepWork& w : s.work)
    if (w.sequence == seq) return w.n_tokens;
  return 0;
}

TEST(Scheduler, ChunksLongPromptsWithoutStallingDecodes) {
  BlockManager blocks(64, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 10, .prefill_chunk = 8});
  auto a = make_sequence(1, 3);
  sched.add(a);
  Schedule s1 = sched.schedule();
  EXPECT_EQ(tokens_of(s1, a), 3);
  run(sched, s1);
  auto b = make_sequence(2, 30, 500);  // a long prompt arrives while `a` decodes
  sched.add(b);
  for (int step = 0; step < 4; ++step) {
    Schedule s = sched.schedule();
    EXPECT_EQ(tokens_of(s, a), 1) << "step " << step;   // a decodes every step
    EXPECT_EQ(tokens_of(s, b), step < 3 ? 8 : 6) << "step " << step;
    run(sched, s);
  }
  EXPECT_EQ(b->n_computed, 30);
  EXPECT_EQ(b->tokens.size(), 31u);
  EXPECT_EQ(sched.n_running(), 2u);
}

TEST(Scheduler, CapsTheRunningSetAndAdmitsInOrder) {
  BlockManager blocks(64, 4);
  Scheduler sched(blocks, {.max_running = 2, .step_token_budget = 64, .prefill_chunk = 16});
  auto a = make_sequence(1, 5), b = make_sequence(2, 5, 200), c = make_sequence(3, 5, 300);
  sched.add(a);
  sched.add(b);
  sched.add(c);
  Schedule s = sched.schedule();
  EXPECT_EQ(s.work.size(), 2u);
  EXPECT_EQ(tokens_of(s, c), 0);
  EXPECT_EQ(sched.n_waiting(), 1u);
  run(sched, s);
  sched.finish(a);
  Schedule s2 = sched.schedule();
  EXPECT_EQ(tokens_of(s2, b), 1);
  EXPECT_EQ(tokens_of(s2, c), 5);
  EXPECT_EQ(sched.n_waiting(), 0u);
}

TEST(Scheduler, ReusesCachedPrefixBlocks) {
  BlockManager blocks(16, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 64});
  auto a = make_sequence(1, 10);
  sched.add(a);
  run(sched, sched.schedule());
  sched.finish(a);  // its two full blocks stay cached
  EXPECT_EQ(blocks.used_blocks(), 0);
  auto b = make_sequence(2, 9);  // the same first 9 tokens: 2 full blocks cached
  sched.add(b);
  Schedule s = sched.schedule();
  EXPECT_EQ(b->cached_prefix_tokens, 8);
  EXPECT_EQ(tokens_of(s, b), 1);
  auto c = make_sequence(3, 8);  // exactly 2 blocks: only the first may be reused (one token must be computed)
  sched.add(c);
  Schedule s2 = sched.schedule();
  EXPECT_EQ(c->cached_prefix_tokens, 4);
  EXPECT_EQ(tokens_of(s2, c), 4);
  EXPECT_EQ(b->blocks[0], c->blocks[0]);
  EXPECT_EQ(blocks.ref_count(b->blocks[0]), 2);
}

// Prompt tokens (positions below prompt_length) the schedule computes.
int64_t prompt_tokens_computed(const Schedule& s) {
  int64_t n = 0;
  for (const StepWork& w : s.work) n += std::max<int64_t>(0, std::min(w.n_tokens, w.sequence->prompt_length - w.sequence->n_computed));
  return n;
}

// Schedules and runs steps until every sequence has generated a token; returns the prompt tokens computed.
int64_t run_until_all_sampled(Scheduler& sched, const std::vector<SequencePtr>& seqs) {
  int64_t computed = 0;
  for (int step = 0; step < 100; ++step) {
    if (std::all_of(seqs.begin(), seqs.end(), [](const SequencePtr& q) { return int64_t(q->tokens.size()) > q->prompt_length; }))
      return computed;
    Schedule s = sched.schedule();
    computed += prompt_tokens_computed(s);
    run(sched, s);
  }
  ADD_FAILURE() << "the sequences did not all sample a token in 100 steps";
  return computed;
}

TEST(Scheduler, SequencesSharingAPromptArrivingTogetherComputeItOnce) {
  BlockManager blocks(64, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 8});
  std::vector<SequencePtr> seqs = {make_sequence(1, 21), make_sequence(2, 21), make_sequence(3, 21)};
  for (const SequencePtr& q : seqs) sched.add(q);
  Schedule first = sched.schedule();
  EXPECT_EQ(tokens_of(first, seqs[0]), 8);
  EXPECT_EQ(tokens_of(first, seqs[1]), 0);  // the first one is computing their first block
  EXPECT_EQ(tokens_of(first, seqs[2]), 0);
  run(sched, first);
  // 21 once; the others take the 5 full blocks before the last token (20 tokens) from the cache.
  EXPECT_EQ(8 + run_until_all_sampled(sched, seqs), 21 + 1 + 1);
  EXPECT_EQ(seqs[1]->cached_prefix_tokens, 20);
  EXPECT_EQ(seqs[2]->cached_prefix_tokens, 20);
  EXPECT_EQ(seqs[1]->blocks[4], seqs[0]->blocks[4]);
  EXPECT_EQ(blocks.prefix_lookup_tokens(), 60);  // each looked up once, however long it waited
  EXPECT_EQ(blocks.prefix_hit_tokens(), 40);
}

TEST(Scheduler, ASequenceWaitsOnlyForTheBlocksItShares) {
  BlockManager blocks(64, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 4});
  auto a = make_sequence(1, 21);
  auto b = make_sequence(2, 21);
  std::iota(b->tokens.begin() + 8, b->tokens.end(), 900);  // the same first 2 blocks, then different
  auto tiny = make_sequence(3, 4);  // no full block before its last token: never waits
  sched.add(a);
  sched.add(b);
  sched.add(tiny);
  Schedule s1 = sched.schedule();
  EXPECT_EQ(tokens_of(s1, b), 0);
  EXPECT_EQ(tokens_of(s1, tiny), 4);  // admitted past the waiting one
  run(sched, s1);
  Schedule s2 = sched.schedule();
  EXPECT_EQ(tokens_of(s2, b), 0);
  run(sched, s2);
  Schedule s3 = sched.schedule();  // a has computed both shared blocks: b goes on alone
  EXPECT_EQ(b->cached_prefix_tokens, 8);
  EXPECT_EQ(tokens_of(s3, b), 4);
  EXPECT_EQ(tokens_of(s3, a), 4);
}

TEST(Scheduler, AWaitingSequenceGoesAheadWhenTheOneComputingItsPrefixEnds) {
  BlockManager blocks(64, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 8});
  auto a = make_sequence(1, 21), b = make_sequence(2, 21);
  sched.add(a);
  sched.add(b);
  run(sched, sched.schedule());  // a computes 8 tokens; b waits
  sched.finish(a);               // a is cancelled mid-prompt; its two blocks stay cached
  Schedule s = sched.schedule();
  EXPECT_EQ(b->cached_prefix_tokens, 8);
  EXPECT_EQ(tokens_of(s, b), 8);
}

TEST(Scheduler, PreemptsTheNewestWhenBlocksRunOutAndRecomputesIt) {
  BlockManager blocks(4, 4);  // 16 token slots
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 64});
  auto a = make_sequence(1, 7), b = make_sequence(2, 7, 300);
  sched.add(a);
  sched.add(b);
  run(sched, sched.schedule());  // 2 blocks each, all 4 used; each holds 8 tokens now
  EXPECT_EQ(blocks.free_blocks(), 0);
  run(sched, sched.schedule());  // position 7 fits the second block
  Schedule s = sched.schedule();  // `a` needs a third block: b (newest) is preempted
  EXPECT_EQ(sched.preemptions(), 1);
  EXPECT_EQ(b->preemptions, 1);
  EXPECT_EQ(b->n_computed, 0);
  EXPECT_TRUE(b->blocks.empty());
  EXPECT_EQ(tokens_of(s, a), 1);
  EXPECT_EQ(tokens_of(s, b), 0);
  EXPECT_EQ(sched.n_waiting(), 1u);
  run(sched, s);
  sched.finish(a);
  Schedule again = sched.schedule();  // b comes back and recomputes prompt + generated tokens
  EXPECT_EQ(tokens_of(again, b), 9);
  EXPECT_EQ(b->tokens.size(), 9u);
}

TEST(Scheduler, ASequenceLargerThanTheCacheIsUnservable) {
  BlockManager blocks(2, 4);
  Scheduler sched(blocks, {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 64});
  auto big = make_sequence(1, 9);
  sched.add(big);
  Schedule s = sched.schedule();
  ASSERT_EQ(s.unservable.size(), 1u);
  EXPECT_EQ(s.unservable[0], big);
  EXPECT_TRUE(s.work.empty());
  EXPECT_EQ(blocks.free_blocks(), 2);
}

TEST(Scheduler, RejectsBadOptions) {
  BlockManager blocks(2, 4);
  EXPECT_THROW(Scheduler(blocks, {.max_running = 0}), Error);
  EXPECT_THROW(Scheduler(blocks, {.max_running = 1, .step_token_budget = 8, .prefill_chunk = 16}), Error);
}

}  // namespace
}  // namespace dsv2
