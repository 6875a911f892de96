#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"
#include "model/weights.h"

namespace dsv2 {
namespace {

using nlohmann::json;

json lite_json() { return model_config_to_json(preset_config("v2-lite")); }

void expect_error(const json& j, const std::string& needle) {
  try {
    parse_model_config(j.dump(), "cfg.json");
    FAIL() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
}

TEST(Config, RoundTripsThePresets) {
  for (const char* name : {"v2", "v2-lite", "tiny"}) {
    ModelConfig a = preset_config(name);
    ModelConfig b = parse_model_config(model_config_to_json(a).dump(), name);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.q_lora_rank, b.q_lora_rank);
    EXPECT_EQ(a.topk_method, b.topk_method);
    EXPECT_EQ(a.n_group, b.n_group);
    EXPECT_EQ(a.routed_scaling_factor, b.routed_scaling_factor);
    ASSERT_TRUE(b.yarn.has_value());
    EXPECT_EQ(a.yarn->mscale_all_dim, b.yarn->mscale_all_dim);
    EXPECT_EQ(b.eos_token_ids, std::vector<int64_t>{a.eos_token_id});
  }
}

TEST(Config, DerivedConstantsOfTheReleasedModels) {
  ModelConfig v2 = preset_config("v2");
  EXPECT_EQ(v2.qk_head_dim(), 192);
  EXPECT_EQ(v2.latent_width(), 576);
  EXPECT_EQ(v2.shared_intermediate(), 3072);
  EXPECT_NEAR(v2.softmax_scale(), 0.1147213868, 1e-10);
  EXPECT_NEAR(ModelConfig::yarn_mscale(40, 0.707), 1.2608037774, 1e-10);
  EXPECT_DOUBLE_EQ(v2.rope_amplitude(), 1.0);
  ModelConfig v25 = v2;  // DeepSeek-V2.5: mscale = mscale_all_dim = 1.0
  v25.yarn->mscale = v25.yarn->mscale_all_dim = 1.0;
  EXPECT_NEAR(v25.softmax_scale(), 0.1352337789, 1e-10);
  // A decode token reads the active parameters and one embedding row (2.45B + 2,048 for V2-Lite).
  EXPECT_EQ(count_parameters(preset_config("v2-lite")).read_per_decode_token, 2451435008 + 2048);
  ModelConfig plain = v2;
  plain.yarn.reset();
  EXPECT_NEAR(plain.softmax_scale(), 0.0721687836, 1e-10);
}

TEST(Config, MoeLayerRuleFollowsDeepSeeksCode) {
  json j = lite_json();
  j["first_k_dense_replace"] = 2;
  j["moe_layer_freq"] = 3;
  ModelConfig c = parse_model_config(j.dump(), "x");
  std::vector<bool> moe;
  for (int i = 0; i < 7; ++i) moe.push_back(c.is_moe_layer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, false, false, true, false, false, true}));
  j["n_routed_experts"] = nullptr;  // a dense model
  ModelConfig dense = parse_model_config(j.dump(), "x");
  EXPECT_FALSE(dense.is_moe_layer(6));
}

TEST(Config, AcceptsTheVariantsFoundInReleasedFiles) {
  json j = lite_json();
  j["topk_method"] = "gready";  // the remote code's default spelling
  EXPECT_EQ(parse_model_config(j.dump(), "x").topk_method, TopkMethod::Greedy);
  j["eos_token_id"] = {100001, 100002};
  EXPECT_EQ(parse_model_config(j.dump(), "x").eos_token_ids, (std::vector<int64_t>{100001, 100002}));
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 5000.0}, {"factor", 4.0},
                          {"original_max_position_embeddings", 128}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  ModelConfig c = parse_model_config(j.dump(), "x");
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_EQ(c.rope_theta, 5000.0);
  EXPECT_EQ(c.yarn->factor, 4.0);
  j["q_lora_rank"] = nullptr;
  EXPECT_FALSE(parse_model_config(j.dump(), "x").q_lora_rank.has_value());
}

TEST(Config, BadInputNamesTheFieldAndValue) {
  try {
    parse_model_config("{\"vocab_size\": 10,", "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos);
  }
  json j = lite_json();
  j["architectures"] = {"LlamaForCausalLM"};
  expect_error(j, "architectures");
  j = lite_json();
  j.erase("hidden_size");
  expect_error(j, "hidden_size");
  j = lite_json();
  j["hidden_size"] = "2048";
  expect_error(j, "hidden_size");
  j = lite_json();
  j["num_attention_heads"] = -4;
  expect_error(j, "num_attention_heads");
  j = lite_json();
  j["topk_method"] = "noaux_tc";
  expect_error(j, "noaux_tc");
  j = lite_json();
  j["scoring_func"] = "sigmoid";
  expect_error(j, "scoring_func");
  j = lite_json();
  j["rope_scaling"]["type"] = "linear";
  expect_error(j, "linear");
  j = lite_json();
  j["num_experts_per_tok"] = 65;
  expect_error(j, "num_experts_per_tok");
  j = lite_json();
  j["n_group"] = 5;
  expect_error(j, "n_group");
  j = lite_json();
  j["qk_rope_head_dim"] = 63;
  expect_error(j, "qk_rope_head_dim");
  j = lite_json();
  j["eos_token_id"] = 200000;
  expect_error(j, "eos_token_id");
  expect_error(json::array(), "JSON object");
}

}  // namespace
}  // namespace dsv2
