// The golden fixtures through the whole model on the GPU: both attention paths against the
// transformers reference, greedy continuations, and batched decode equal to one-at-a-time.
#include <gtest/gtest.h>

#include "engine/cuda_sequence.h"
#include "engine/generator.h"
#include "model/cuda/deepseek_v2_cuda.h"
#include "model/model.h"
#include "test_util.h"

namespace dsv2 {
namespace {

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    g_ = test::load_golden(GetParam());
    model_ = load_model(g_.dir);
  }
  std::unique_ptr<CudaDeepseekV2> make(DType cache_dtype, int64_t batch = 1, int64_t chunk = 1024, bool graphs = true) {
    CudaOptions opt;
    opt.use_graphs = graphs;
    opt.cache_dtype = cache_dtype;
    opt.max_batch = batch;
    opt.max_context = 64;
    opt.block_size = 16;
    opt.max_prefill_chunk = chunk;
    opt.shuffle_block_tables = true;
    return std::make_unique<CudaDeepseekV2>(model_.config, *model_.checkpoint, opt);
  }
  void expect_matches_reference(const std::vector<float>& got, double tol, const std::string& what) {
    ASSERT_EQ(got.size(), g_.logits.size()) << what;
    double worst = 0;
    for (int64_t p = 0; p < g_.n_ids; ++p)
      worst = std::max(worst, test::rel_l2(&got[size_t(p * g_.vocab)], &g_.logits[size_t(p * g_.vocab)], size_t(g_.vocab)));
    EXPECT_LE(worst, tol) << what;
    std::printf("[ %s ] %s: worst relative L2 per position %.3g\n", GetParam().c_str(), what.c_str(), worst);
  }
  // Prefill runs cuBLAS GEMMs: with BF16/F16 weights the activations are rounded to that dtype.
  double prefill_tolerance() const { return model_.weights.embed.dtype == DType::F32 ? 1e-4 : 3e-2; }

  test::Golden g_;
  LoadedModel model_;
};

TEST_P(CudaGoldenTest, PrefillPathMatchesReference) {
  auto net = make(DType::F32);
  std::vector<float> logits;
  net->prefill(0, g_.ids, LogitsRows::All, &logits);
  expect_matches_reference(logits, prefill_tolerance(), "prefill, f32 cache");
  auto chunked = make(DType::F32, 1, 7);  // 40 tokens in chunks of 7 over the paged cache
  chunked->prefill(0, g_.ids, LogitsRows::All, &logits);
  expect_matches_reference(logits, prefill_tolerance(), "prefill in chunks of 7");
}

TEST_P(CudaGoldenTest, DecodePathMatchesReference) {
  for (bool graphs : {true, false}) {
    auto net = make(DType::F32, 1, 1024, graphs);
    std::vector<float> all, row;
    for (int32_t id : g_.ids) {
      net->decode({0}, {id}, &row, nullptr);
      all.insert(all.end(), row.begin(), row.end());
    }
    expect_matches_reference(all, 1e-4, graphs ? "decode, f32 cache" : "decode without graphs");
  }
  auto bf16 = make(DType::BF16);
  std::vector<float> all, row;
  for (int32_t id : g_.ids) {
    bf16->decode({0}, {id}, &row, nullptr);
    all.insert(all.end(), row.begin(), row.end());
  }
  expect_matches_reference(all, 3e-2, "decode, bf16 cache");
}

TEST_P(CudaGoldenTest, GreedyContinuationMatchesReference) {
  auto net = make(DType::F32);
  CudaSequence seq(*net, 0);
  GenerationOptions opt;
  opt.max_new_tokens = g_.max_new_tokens;
  EXPECT_EQ(generate(seq, g_.greedy_prompt, opt).tokens, g_.greedy_new_tokens);
}

TEST_P(CudaGoldenTest, BatchedDecodeEqualsOneAtATime) {
  // Sequence b starts at ids[b]: different lengths and contents in one batch of 4 (GEMV path)
  // and of 12 (cuBLAS path).
  for (int64_t B : {4, 12}) {
    auto batched = make(DType::F32, B), single = make(DType::F32, 1);
    std::vector<int> slots(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      slots[size_t(b)] = int(b);
      batched->prefill(int(b), std::vector<int32_t>(g_.ids.begin(), g_.ids.begin() + 3 + b), LogitsRows::Last, nullptr);
    }
    std::vector<float> logits;
    std::vector<int32_t> next;
    batched->decode(slots, std::vector<int32_t>(g_.ids.begin() + 20, g_.ids.begin() + 20 + B), &logits, &next);
    for (int64_t b = 0; b < B; ++b) {
      single->reset(0);
      single->prefill(0, std::vector<int32_t>(g_.ids.begin(), g_.ids.begin() + 3 + b), LogitsRows::Last, nullptr);
      std::vector<float> one;
      std::vector<int32_t> one_next;
      single->decode({0}, {g_.ids[size_t(20 + b)]}, &one, &one_next);
      // The batch-12 step uses cuBLAS (activations rounded for 2-byte weights); batch 4 uses the GEMV kernel.
      const double tol = B <= 8 || model_.weights.embed.dtype == DType::F32 ? 1e-5 : 3e-2;
      EXPECT_LE(test::rel_l2(&logits[size_t(b * g_.vocab)], one.data(), size_t(g_.vocab)), tol) << "B=" << B << " b=" << b;
      if (B <= 8) {
        EXPECT_EQ(next[size_t(b)], one_next[0]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGoldenTest, ::testing::ValuesIn(test::golden_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dsv2
