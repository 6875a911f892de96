#include <gtest/gtest.h>

#include "model/config.h"
#include "model/moe_router.h"

namespace dsv2 {
namespace {

ModelConfig router_config(TopkMethod m, int64_t E, int64_t K, int64_t groups, int64_t topk_group) {
  ModelConfig c = preset_config("v2");
  c.topk_method = m;
  c.n_routed_experts = E;
  c.num_experts_per_tok = K;
  c.n_group = groups;
  c.topk_group = topk_group;
  c.routed_scaling_factor = 1.0;
  return c;
}

TEST(Router, GreedyTakesTheTopK) {
  ModelConfig c = router_config(TopkMethod::Greedy, 6, 3, 1, 1);
  const float s[6] = {0.05f, 0.3f, 0.1f, 0.25f, 0.2f, 0.1f};
  int32_t ids[3];
  float w[3];
  route_token(c, s, ids, w);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 3), (std::vector<int32_t>{1, 3, 4}));
  EXPECT_EQ(std::vector<float>(w, w + 3), (std::vector<float>{0.3f, 0.25f, 0.2f}));
  // Ties go to the lower index.
  const float tie[6] = {0.1f, 0.2f, 0.2f, 0.2f, 0.2f, 0.1f};
  route_token(c, tie, ids, w);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 3), (std::vector<int32_t>{1, 2, 3}));
}

TEST(Router, GroupLimitedKeepsTheBestGroupsByMax) {
  // 4 groups of 2: group maxima 0.30, 0.20, 0.22, 0.10 -> keep groups 0 and 2 (topk_group 2).
  ModelConfig c = router_config(TopkMethod::GroupLimitedGreedy, 8, 3, 4, 2);
  const float s[8] = {0.30f, 0.01f, 0.19f, 0.20f, 0.22f, 0.005f, 0.10f, 0.035f};
  int32_t ids[3];
  float w[3];
  route_token(c, s, ids, w);
  // Experts 3 (0.20) and 2 (0.19) sit in a dropped group, so the third pick is expert 1 (0.01), not 5 (0.005).
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 3), (std::vector<int32_t>{0, 4, 1}));
  EXPECT_FLOAT_EQ(w[0], 0.30f);
  EXPECT_FLOAT_EQ(w[2], 0.01f);
}

TEST(Router, ScalingOrRenormalisation) {
  ModelConfig c = router_config(TopkMethod::Greedy, 4, 2, 1, 1);
  c.routed_scaling_factor = 16.0;
  const float s[4] = {0.4f, 0.1f, 0.3f, 0.2f};
  int32_t ids[2];
  float w[2];
  route_token(c, s, ids, w);
  EXPECT_FLOAT_EQ(w[0], 0.4f * 16);
  EXPECT_FLOAT_EQ(w[1], 0.3f * 16);
  c.norm_topk_prob = true;  // DeepSeek's code: renormalise and do not scale
  route_token(c, s, ids, w);
  EXPECT_NEAR(w[0], 0.4 / 0.7, 1e-6);
  EXPECT_NEAR(w[1], 0.3 / 0.7, 1e-6);
  c.num_experts_per_tok = 1;  // K = 1: the renormalisation branch does not apply
  route_token(c, s, ids, w);
  EXPECT_FLOAT_EQ(w[0], 0.4f * 16);
}

}  // namespace
}  // namespace dsv2
