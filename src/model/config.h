// config.json of a DeepseekV2ForCausalLM checkpoint (spec §1), validated, with the derived
// constants the forward needs. Behaviour follows DeepSeek's original modeling code where it and
// transformers differ (norm_topk_prob, moe_layer_freq).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/dtype.h"

namespace dsv2 {

enum class TopkMethod { Greedy, GroupLimitedGreedy };

struct YarnScaling {
  double factor = 1.0;                    // s
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;                // H
  int64_t intermediate_size = 0;          // dense SwiGLU width
  int64_t moe_intermediate_size = 0;      // one routed expert's width (I_moe)
  int64_t num_hidden_layers = 0;          // L
  int64_t num_attention_heads = 0;        // nh
  int64_t n_shared_experts = 0;           // shared MLP width = n_shared_experts * I_moe
  int64_t n_routed_experts = 0;           // E (0: no MoE layers)
  int64_t num_experts_per_tok = 0;        // K
  double routed_scaling_factor = 1.0;
  TopkMethod topk_method = TopkMethod::Greedy;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t moe_layer_freq = 1;
  int64_t first_k_dense_replace = 0;
  bool norm_topk_prob = false;
  std::optional<int64_t> q_lora_rank;     // d_cq; empty: plain q_proj
  int64_t kv_lora_rank = 0;               // d_c
  int64_t qk_nope_head_dim = 0;           // d_nope
  int64_t qk_rope_head_dim = 0;           // d_rope
  int64_t v_head_dim = 0;                 // d_v
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  std::optional<YarnScaling> yarn;        // rope_scaling {type: yarn}; empty: plain RoPE
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;              // first of eos_token_ids
  std::vector<int64_t> eos_token_ids;     // every id that ends generation
  DType torch_dtype = DType::BF16;        // the checkpoint's declared dtype
  // quantization_config {"quant_method": "dsv2", "format": "int8" | "q4", "block_size": 32} (written by
  // dsv2 quantize): the Linear matrices are stored as Q8_0 / Q4_0 values with F16 `<name>.scales`.
  std::optional<DType> quantized_linear;

  // Derived (spec §1.2).
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }        // d_qk
  int64_t latent_width() const { return kv_lora_rank + qk_rope_head_dim; }           // 576
  int64_t shared_intermediate() const { return n_shared_experts * moe_intermediate_size; }
  // Layer i uses MoE iff n_routed_experts > 0, i >= first_k_dense_replace and i % moe_layer_freq == 0.
  bool is_moe_layer(int64_t i) const;
  // mscale_fn(s, m) = 1 if s <= 1 else 0.1 m ln s + 1.
  static double yarn_mscale(double factor, double m);
  // d_qk^-1/2 * mscale_fn(s, mscale_all_dim)^2 (spec §6.3).
  double softmax_scale() const;
  // cos/sin amplitude mscale_fn(s, mscale) / mscale_fn(s, mscale_all_dim) (spec §6.2).
  double rope_amplitude() const;
};

// Parses and validates config.json text; `source` (a path) prefixes every error message.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);
ModelConfig load_model_config(const std::string& model_dir);
// The DeepSeek-style config.json for `cfg` (with rope_scaling), as the released checkpoints write it.
nlohmann::json model_config_to_json(const ModelConfig& cfg);

// Shapes of the released models and a tiny one for tests: "v2", "v2-lite", "tiny".
ModelConfig preset_config(const std::string& name);

}  // namespace dsv2
