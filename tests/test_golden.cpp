// End to end against Hugging Face transformers (float64 reference logits, greedy continuations)
// on tiny models in the released checkpoint layout: Lite-like, V2-like (q compression,
// group-limited routing, scaling 16, BF16, two shards), no rope scaling with every layer MoE
// (F16), two dense layers with v_head_dim != qk_nope_head_dim.
#include <gtest/gtest.h>

#include "core/thread_pool.h"
#include "engine/generator.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::Golden;

// f32 compute against a float64 reference (transformers rounds some steps to f32 itself):
// the measured worst relative L2 per position is ~2e-6; 1e-4 leaves room for summation order.
constexpr double kTolerance = 1e-4;

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    g_ = test::load_golden(GetParam());
    model_ = load_model(g_.dir);
  }
  // Runs the ids through `path`, one chunk at a time of the given sizes, returns [n, vocab].
  std::vector<float> logits(AttentionPath path, const std::vector<int64_t>& chunks, DType cache_dtype = DType::F32) {
    DeepseekV2 net(model_.config, model_.weights, pool_);
    LatentCache cache = net.make_cache(int64_t(g_.ids.size()), cache_dtype);
    std::vector<float> all, part;
    size_t at = 0;
    for (int64_t c : chunks) {
      std::vector<int32_t> ids(g_.ids.begin() + long(at), g_.ids.begin() + long(at + size_t(c)));
      net.forward(ids, cache, path, LogitsRows::All, part);
      all.insert(all.end(), part.begin(), part.end());
      at += size_t(c);
    }
    EXPECT_EQ(at, g_.ids.size());
    return all;
  }
  void expect_matches_reference(const std::vector<float>& got, double tol) {
    ASSERT_EQ(got.size(), g_.logits.size());
    for (int64_t p = 0; p < g_.n_ids; ++p) {
      double e = test::rel_l2(&got[size_t(p * g_.vocab)], &g_.logits[size_t(p * g_.vocab)], size_t(g_.vocab));
      EXPECT_LE(e, tol) << "position " << p;
    }
  }
  std::vector<int64_t> one_at_a_time() const { return std::vector<int64_t>(g_.ids.size(), 1); }

  Golden g_;
  LoadedModel model_;
  ThreadPool pool_{2};
};

TEST_P(GoldenTest, PrefillPathMatchesReference) {
  expect_matches_reference(logits(AttentionPath::Decompressed, {g_.n_ids}), kTolerance);
}

TEST_P(GoldenTest, DecodePathMatchesReference) {
  expect_matches_reference(logits(AttentionPath::Absorbed, one_at_a_time()), kTolerance);
}

TEST_P(GoldenTest, ChunkedPrefillMatchesReference) {
  // A prompt in three pieces, the later ones attending to cached latents of the earlier ones.
  expect_matches_reference(logits(AttentionPath::Decompressed, {7, 1, g_.n_ids - 8}), kTolerance);
  expect_matches_reference(logits(AttentionPath::Absorbed, {5, g_.n_ids - 5}), kTolerance);
}

TEST_P(GoldenTest, DecodePathEqualsPrefillPath) {
  std::vector<float> a = logits(AttentionPath::Decompressed, {g_.n_ids});
  std::vector<float> b = logits(AttentionPath::Absorbed, one_at_a_time());
  for (int64_t p = 0; p < g_.n_ids; ++p)
    EXPECT_LE(test::rel_l2(&b[size_t(p * g_.vocab)], &a[size_t(p * g_.vocab)], size_t(g_.vocab)), 1e-5) << "position " << p;
}

TEST_P(GoldenTest, Bf16CacheStaysCloseToReference) {
  // A bf16 latent cache rounds c and k_pe' to 8 significant bits: ~1e-3 relative error.
  expect_matches_reference(logits(AttentionPath::Absorbed, one_at_a_time(), DType::BF16), 2e-2);
}

TEST_P(GoldenTest, GreedyContinuationMatchesReference) {
  DeepseekV2 net(model_.config, model_.weights, pool_);
  GenerationOptions opt;
  opt.max_new_tokens = g_.max_new_tokens;
  CpuSequence seq(net, int64_t(g_.greedy_prompt.size()) + g_.max_new_tokens, DType::F32);
  GenerationResult r = generate(seq, g_.greedy_prompt, opt);
  EXPECT_EQ(r.tokens, g_.greedy_new_tokens);
}

TEST_P(GoldenTest, ResultDoesNotDependOnThreadCount) {
  std::vector<float> two = logits(AttentionPath::Decompressed, {g_.n_ids});
  ThreadPool one(1);
  DeepseekV2 net(model_.config, model_.weights, one);
  LatentCache cache = net.make_cache(g_.n_ids, DType::F32);
  std::vector<float> single;
  net.forward(g_.ids, cache, AttentionPath::Decompressed, LogitsRows::All, single);
  EXPECT_EQ(single, two);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(test::golden_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dsv2
