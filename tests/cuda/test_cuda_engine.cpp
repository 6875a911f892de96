// The serving engine on the GPU (the default model): with the batch-invariant model a request's
// greedy output is the same alone, in a full batch (more than 8 sequences: several decode groups),
// and under preemption, equal to the CPU engine's; cache blocks are all free afterwards.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>

#include "engine/cpu_batched_model.h"
#include "engine/cuda_batched_model.h"
#include "engine/engine.h"
#include "model/model.h"
#include "test_util.h"

namespace dsv2 {
namespace {

std::string default_model_dir() {
  const char* golden = std::getenv("DSV2_GOLDEN_DIR");  // tests/golden of a checkout elsewhere
  return golden ? std::string(golden) + "/../../models/default" : std::string(DSV2_GOLDEN_DIR) + "/../../models/default";
}

using test::EngineOutcome;

// 12 prompts of 3..47 tokens, the first 9 tokens shared (prefix caching).
std::vector<std::vector<int32_t>> prompts() {
  std::vector<std::vector<int32_t>> p;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> ids = {0, 300, 301, 302, 303, 304, 305, 306, 307};
    if (i == 0) ids.resize(3);
    for (int j = 0; j < i * 3; ++j) ids.push_back(int32_t(400 + 17 * i + j));
    p.push_back(ids);
  }
  return p;
}

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override { model_ = load_model(default_model_dir()); }
  std::unique_ptr<CudaDeepseekV2> gpu(int32_t n_blocks, bool invariant, int64_t max_batch, bool fp8 = false) {
    CudaOptions o;
    o.fp8_weights = fp8;
    o.cache_blocks = n_blocks;
    o.block_size = 4;
    o.max_context = 128;
    o.max_batch = max_batch;
    o.max_prefill_chunk = 64;
    o.batch_invariant = invariant;
    o.cache_dtype = DType::F32;
    return std::make_unique<CudaDeepseekV2>(model_.config, *model_.checkpoint, o);
  }
  // Serves prompts() for 16 greedy tokens alone, 12 at once, and 12 at once with preemptions (the
  // batch-invariant model); checks every run's outputs equal the first's and the cache is free after.
  std::vector<std::vector<int32_t>> expect_batching_changes_nothing(bool fp8);
  LoadedModel model_;
};

std::vector<std::vector<int32_t>> CudaEngineTest::expect_batching_changes_nothing(bool fp8) {
  const int64_t n = 16;
  struct Setup {
    int32_t n_blocks;
    SchedulerOptions scheduler;
  };
  const Setup alone{128, {.max_running = 1, .step_token_budget = 64, .prefill_chunk = 64}};
  const Setup batched{256, {.max_running = 12, .step_token_budget = 40, .prefill_chunk = 7}};
  const Setup tight{40, {.max_running = 12, .step_token_budget = 48, .prefill_chunk = 16}};  // 160 slots for up to 12 x 63: preemptions
  std::vector<std::vector<int32_t>> want;
  for (const Setup* s : {&alone, &batched, &tight}) {
    auto net = gpu(s->n_blocks, true, 8, fp8);
    CudaBatchedModel model(*net);
    Engine engine(model, {.max_context = 128, .scheduler = s->scheduler});
    std::vector<EngineOutcome> got = test::serve_all(engine, prompts(), n, false);
    EngineStats st = engine.stats();
    EXPECT_EQ(st.blocks_used, 0);
    EXPECT_EQ(st.blocks_free, s->n_blocks);
    if (s == &tight) {
      EXPECT_GT(st.preemptions, 0);
    }
    if (s == &batched) {
      EXPECT_GT(st.prefix_hit_tokens, 0);
    }
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].reason, FinishReason::Length);
      if (s == &alone) {
        want.push_back(got[i].tokens);
      } else {
        EXPECT_EQ(got[i].tokens, want[i]) << "prompt " << i << ", max_running " << s->scheduler.max_running
                                          << (fp8 ? ", fp8" : "");
      }
    }
  }
  return want;
}

TEST_F(CudaEngineTest, GreedyOutputDoesNotDependOnBatching) {
  const std::vector<std::vector<int32_t>> want = expect_batching_changes_nothing(false);
  // The CPU engine (exact f32) agrees token for token on this model.
  ThreadPool pool(2);
  DeepseekV2 cpu_net(model_.config, model_.weights, pool);
  CpuBatchedModel cpu(cpu_net, {128, 4}, DType::F32);
  Engine engine(cpu, {.max_context = 128, .scheduler = {.max_running = 1, .step_token_budget = 64, .prefill_chunk = 64}});
  std::vector<EngineOutcome> got = test::serve_all(engine, prompts(), 16, false);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].tokens, want[i]) << "CPU engine, prompt " << i;
}

TEST_F(CudaEngineTest, Fp8GreedyOutputDoesNotDependOnBatching) { expect_batching_changes_nothing(true); }

TEST_F(CudaEngineTest, FastBatchingServesEveryRequestAndFreesTheCache) {
  auto net = gpu(128, false, 12);
  CudaBatchedModel model(*net);
  Engine engine(model, {.max_context = 128, .scheduler = {.max_running = 16, .step_token_budget = 64, .prefill_chunk = 32}});
  std::vector<EngineOutcome> got = test::serve_all(engine, prompts(), 16, false);
  for (const EngineOutcome& o : got) {
    EXPECT_EQ(o.reason, FinishReason::Length);
    EXPECT_EQ(o.tokens.size(), 16u);
  }
  EXPECT_EQ(engine.stats().blocks_used, 0);
}

TEST_F(CudaEngineTest, DecodeReturnsOnlyTheWantedLogitRows) {
  // 11 rows (two groups of the batch-invariant mode): rows 2 and 9 wanted, the first group's others
  // and all of the second's but row 9 unread.
  auto net = gpu(64, true, 8);
  std::vector<std::vector<int32_t>> tables;
  for (int32_t b = 0; b < 11; ++b) tables.push_back({b});
  std::vector<const std::vector<int32_t>*> table_of;
  std::vector<int64_t> positions;
  std::vector<int32_t> ids;
  for (int32_t b = 0; b < 11; ++b) {
    table_of.push_back(&tables[size_t(b)]);
    positions.push_back(0);
    ids.push_back(b + 1);
  }
  std::vector<float> all, some;
  std::vector<int32_t> argmax;
  net->decode_paged(table_of, positions, ids, &all, &argmax);
  const std::vector<int64_t> wanted = {2, 9};
  net->decode_paged(table_of, positions, ids, &some, nullptr, &wanted);
  const size_t V = size_t(model_.config.vocab_size);
  ASSERT_EQ(all.size(), 11 * V);
  ASSERT_EQ(some.size(), 2 * V);
  EXPECT_TRUE(std::equal(some.begin(), some.begin() + ptrdiff_t(V), all.begin() + ptrdiff_t(2 * V)));
  EXPECT_TRUE(std::equal(some.begin() + ptrdiff_t(V), some.end(), all.begin() + ptrdiff_t(9 * V)));
  EXPECT_EQ(argmax.size(), 11u);
  const std::vector<int64_t> descending = {9, 2}, outside = {11};
  EXPECT_THROW(net->decode_paged(table_of, positions, ids, &some, nullptr, &descending), Error);
  EXPECT_THROW(net->decode_paged(table_of, positions, ids, &some, nullptr, &outside), Error);
}

TEST_F(CudaEngineTest, RejectsBadBlockTables) {
  auto net = gpu(8, true, 8);
  std::vector<float> logits;
  EXPECT_THROW(net->prefill_paged({0}, 0, {1, 2, 3, 4, 5}, LogitsRows::Last, &logits), Error);  // 5 tokens, 1 block of 4
  EXPECT_THROW(net->prefill_paged({0, 8}, 0, {1, 2, 3, 4, 5}, LogitsRows::Last, &logits), Error);  // block 8 of 8
  EXPECT_THROW(net->prefill(0, {1}, LogitsRows::Last, &logits), Error);  // no per-slot cache
  const std::vector<int32_t> table = {3};
  EXPECT_THROW(net->decode_paged({&table}, {4}, {1}, &logits, nullptr), Error);  // position 4 needs a second block
  net->prefill_paged({3, 5}, 0, {1, 2, 3, 4, 5}, LogitsRows::Last, &logits);
  EXPECT_EQ(logits.size(), size_t(model_.config.vocab_size));
}

}  // namespace
}  // namespace dsv2
