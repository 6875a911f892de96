// The serving engine on the default model: greedy output equals `generate` over a contiguous cache,
// alone, in a full batch, with prefix sharing and with preemption (f32 and bf16 activations); requests sharing a prompt that
// arrive together compute it once; cancellation frees every block.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/cpu_batched_model.h"
#include "engine/engine.h"
#include "engine/generator.h"
#include "model/model.h"
#include "model/quantize.h"
#include "test_util.h"

namespace dsv2 {
namespace {

const std::string kModel = std::string(DSV2_SOURCE_DIR) + "/models/default";

using test::EngineOutcome;
using test::serve_all;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = load_model(kModel);
    net_ = std::make_unique<DeepseekV2>(model_.config, model_.weights, pool_);
  }
  std::vector<int32_t> reference(const std::vector<int32_t>& prompt, int64_t n) {
    CpuSequence seq(*net_, int64_t(prompt.size()) + n, DType::F32);
    GenerationOptions o;
    o.max_new_tokens = n;
    return generate(seq, prompt, o).tokens;
  }
  // The CPU model over a pool of n_blocks blocks of 4 tokens.
  std::unique_ptr<CpuBatchedModel> pool_of(int32_t n_blocks) {
    return std::make_unique<CpuBatchedModel>(*net_, LatentPoolShape{n_blocks, 4}, DType::F32);
  }
  std::vector<std::vector<int32_t>> prompts() const {
    std::vector<std::vector<int32_t>> p;
    for (int i = 0; i < 6; ++i) {
      std::vector<int32_t> ids = {0, 300, 301, 302, 303, 304, 305, 306, 307, 308};  // shared prefix
      for (int j = 0; j <= i * 7; ++j) ids.push_back(int32_t(400 + 13 * i + j));
      p.push_back(ids);
    }
    return p;
  }

  // Serves prompts() alone, batched and under preemption; each output must equal reference().
  void expect_output_independent_of_batching() {
    const int64_t n = 12;
    std::vector<std::vector<int32_t>> want;
    for (const auto& p : prompts()) want.push_back(reference(p, n));

    struct Setup {
      int32_t n_blocks;
      SchedulerOptions scheduler;
    };
    const Setup one_at_a_time{64, {.max_running = 1, .step_token_budget = 16, .prefill_chunk = 16}};
    const Setup batched{128, {.max_running = 6, .step_token_budget = 24, .prefill_chunk = 8}};
    const Setup tight{24, {.max_running = 6, .step_token_budget = 32, .prefill_chunk = 8}};  // 96 slots for 6 sequences of up to 58: preemptions
    for (const Setup* setup : {&one_at_a_time, &batched, &tight}) {
      auto model = pool_of(setup->n_blocks);
      Engine engine(*model, {.max_context = 0, .scheduler = setup->scheduler});
      std::vector<EngineOutcome> got = serve_all(engine, prompts(), n);
      for (size_t i = 0; i < got.size(); ++i) {
        std::vector<int32_t> expect = want[i];
        EXPECT_EQ(got[i].tokens, expect) << "prompt " << i << ", max_running " << setup->scheduler.max_running;
      }
      EngineStats st = engine.stats();
      EXPECT_EQ(st.blocks_used, 0);
      EXPECT_EQ(st.blocks_free, setup->n_blocks);
      if (setup == &tight) {
        EXPECT_GT(st.preemptions, 0);
      }
      if (setup == &batched) {
        EXPECT_GT(st.prefix_hit_tokens, 0);
      }
    }
  }

  ThreadPool pool_{2};
  LoadedModel model_;
  std::unique_ptr<DeepseekV2> net_;
};

TEST_F(EngineTest, GreedyOutputDoesNotDependOnBatching) { expect_output_independent_of_batching(); }

// The same with the activations of the BF16 matmuls rounded to bf16 (--activations bf16).
TEST_F(EngineTest, GreedyOutputDoesNotDependOnBatchingWithBf16Activations) {
  set_activation_format(model_, ActivationFormat::BF16);
  expect_output_independent_of_batching();
}

TEST_F(EngineTest, RequestsSharingAPromptArrivingTogetherComputeItOnce) {
  const int64_t n = 8;
  std::vector<int32_t> shared = {0};
  for (int32_t j = 0; j < 39; ++j) shared.push_back(300 + 7 * j);  // 40 tokens: 9 full blocks before the last
  std::vector<int32_t> longer = shared;
  longer.insert(longer.end(), {900, 901, 902, 903, 904, 905});
  const std::vector<std::vector<int32_t>> prompts = {shared, shared, longer};
  auto model = pool_of(64);
  Engine engine(*model, {.max_context = 0, .scheduler = {.max_running = 4, .step_token_budget = 64, .prefill_chunk = 8}});
  std::vector<EngineOutcome> got = serve_all(engine, prompts, n);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i].tokens, reference(prompts[i], n)) << "prompt " << i;
  const EngineStats st = engine.stats();
  // The first computes all 40; the second its last 4 (36 cached); the third 46 - 40 (40 cached).
  EXPECT_EQ(st.prompt_tokens_computed, 40 + 4 + 6);
  EXPECT_EQ(st.prefix_hit_tokens, 36 + 40);
  EXPECT_EQ(st.blocks_used, 0);
}

TEST_F(EngineTest, CancelFreesTheSequenceAndItsBlocks) {
  auto model = pool_of(32);
  Engine engine(*model, {});
  std::promise<FinishReason> finished;
  std::atomic<int> produced = 0;
  GenerationRequest r;
  r.prompt = {0, 300, 301, 302, 303, 304};
  r.max_new_tokens = 100;
  r.stop_at_eos = false;
  uint64_t id = engine.submit(r, {[&](const TokenEvent&) {
                                    ++produced;
                                    return true;
                                  },
                                  [&](FinishReason why, int64_t) { finished.set_value(why); }});
  while (produced < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine.cancel(id);
  EXPECT_EQ(finished.get_future().get(), FinishReason::Cancelled);
  EXPECT_LT(produced.load(), 100);
  EXPECT_EQ(engine.stats().blocks_used, 0);
}

TEST_F(EngineTest, RejectsBadRequests) {
  auto model = pool_of(8);
  Engine engine(*model, {.max_context = 32, .scheduler = {}});
  GenerationRequest r;
  EXPECT_THROW(engine.submit(r, {}), Error);  // empty prompt
  r.prompt = {0, int32_t(model_.config.vocab_size)};
  EXPECT_THROW(engine.submit(r, {}), Error);
  r.prompt = std::vector<int32_t>(32, 5);
  EXPECT_THROW(engine.submit(r, {}), Error);  // fills the context
  r.prompt = {5};
  r.sampling.top_p = 0;
  EXPECT_THROW(engine.submit(r, {}), Error);
  // The context defaults to what the cache holds, and may not exceed it.
  auto small = pool_of(2);
  EXPECT_EQ(Engine(*small, {}).max_context(), 8);
  EXPECT_THROW(Engine(*small, {.max_context = 9, .scheduler = {}}), Error);
}

}  // namespace
}  // namespace dsv2
