#include "model/config.h"

#include "core/quant.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace dsv2 {

using nlohmann::json;

bool ModelConfig::is_moe_layer(int64_t i) const {
  return n_routed_experts > 0 && i >= first_k_dense_replace && i % moe_layer_freq == 0;
}

double ModelConfig::yarn_mscale(double factor, double m) {
  return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0;
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn && yarn->mscale_all_dim != 0.0) {
    double m = yarn_mscale(yarn->factor, yarn->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

double ModelConfig::rope_amplitude() const {
  if (!yarn) return 1.0;
  return yarn_mscale(yarn->factor, yarn->mscale) / yarn_mscale(yarn->factor, yarn->mscale_all_dim);
}

namespace {

// Field readers that name the file and field and the value seen.
class FieldReader {
 public:
  FieldReader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  [[noreturn]] void fail(const char* key, const std::string& why) const {
    std::string seen = j_.contains(key) ? j_.at(key).dump() : "missing";
    if (seen.size() > 80) seen = seen.substr(0, 80) + "...";
    throw Error(source_ + ": field '" + key + "' " + why + " (seen: " + seen + ")");
  }

  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) return *fallback;
      fail(key, "is required");
    }
    const json& v = j_.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return int64_t(v.get<double>());
    fail(key, "must be an integer");
  }

  int64_t positive(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    int64_t v = integer(key, fallback);
    if (v <= 0) fail(key, "must be > 0");
    return v;
  }

  double number(const char* key, std::optional<double> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) return *fallback;
      fail(key, "is required");
    }
    const json& v = j_.at(key);
    if (!v.is_number()) fail(key, "must be a number");
    return v.get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_boolean()) fail(key, "must be true or false");
    return j_.at(key).get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_string()) fail(key, "must be a string");
    return j_.at(key).get<std::string>();
  }

  const json& raw(const char* key) const { return j_.at(key); }
  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
};

YarnScaling parse_yarn(const json& rs, const std::string& source, const char* field) {
  FieldReader r(rs, source + ": " + field);
  YarnScaling y;
  y.factor = r.number("factor");
  if (!(y.factor >= 1.0)) r.fail("factor", "must be >= 1");
  y.original_max_position_embeddings = r.positive("original_max_position_embeddings");
  y.beta_fast = r.number("beta_fast", 32.0);
  y.beta_slow = r.number("beta_slow", 1.0);
  y.mscale = r.number("mscale", 1.0);
  y.mscale_all_dim = r.number("mscale_all_dim", 0.0);
  return y;
}

// rope_scaling (DeepSeek's config.json) or rope_parameters (transformers >= 5).
void parse_rope(const json& j, const FieldReader& r, ModelConfig& c) {
  c.rope_theta = r.number("rope_theta", 10000.0);
  const char* field = r.has("rope_scaling") ? "rope_scaling" : r.has("rope_parameters") ? "rope_parameters" : nullptr;
  if (!field) return;
  const json& rs = j.at(field);
  if (!rs.is_object()) r.fail(field, "must be an object or null");
  FieldReader rr(rs, r.source() + ": " + field);
  std::string type = rr.string("type", rr.string("rope_type", ""));
  if (rr.has("rope_theta")) c.rope_theta = rr.number("rope_theta");
  if (type == "default") return;
  if (type != "yarn")
    throw Error(r.source() + ": " + field + ".type '" + type + "' is not supported (DeepSeek-V2 uses yarn or none)");
  c.yarn = parse_yarn(rs, r.source(), field);
}

DType parse_torch_dtype(const FieldReader& r) {
  const char* key = r.has("torch_dtype") ? "torch_dtype" : "dtype";
  std::string s = r.string(key, "bfloat16");
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  if (s == "float32") return DType::F32;
  r.fail(key, "must be bfloat16, float16 or float32");
}

DType parse_quantization_config(const json& q, const FieldReader& r) {
  if (!q.is_object()) r.fail("quantization_config", "must be an object");
  FieldReader qr(q, r.source() + ": quantization_config");
  if (qr.string("quant_method", "") != "dsv2") qr.fail("quant_method", "must be \"dsv2\" (the only quantization dsv2 reads)");
  if (qr.integer("block_size") != kQuantBlock) qr.fail("block_size", "must be " + std::to_string(kQuantBlock));
  const std::string format = qr.string("format", "");
  if (format == "int8") return DType::Q8_0;
  if (format == "q4") return DType::Q4_0;
  qr.fail("format", "must be int8 or q4");
}

void validate(const ModelConfig& c, const FieldReader& r) {
  if (c.qk_rope_head_dim % 2 != 0) r.fail("qk_rope_head_dim", "must be even (RoPE rotates pairs)");
  if (c.n_routed_experts > 0) {
    if (c.num_experts_per_tok > c.n_routed_experts) r.fail("num_experts_per_tok", "must be <= n_routed_experts");
    if (c.n_routed_experts % c.n_group != 0) r.fail("n_group", "must divide n_routed_experts");
    if (c.topk_group > c.n_group) r.fail("topk_group", "must be <= n_group");
    if (c.topk_method == TopkMethod::GroupLimitedGreedy &&
        c.topk_group * (c.n_routed_experts / c.n_group) < c.num_experts_per_tok)
      r.fail("topk_group", "leaves fewer experts than num_experts_per_tok");
  }
  if (c.first_k_dense_replace > c.num_hidden_layers) r.fail("first_k_dense_replace", "must be <= num_hidden_layers");
  bool any_dense = false;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) any_dense |= !c.is_moe_layer(i);
  if (any_dense && c.intermediate_size <= 0) r.fail("intermediate_size", "must be > 0 (the model has dense layers)");
  auto check_id = [&](const char* key, int64_t id) {
    if (id >= c.vocab_size) r.fail(key, "must be < vocab_size " + std::to_string(c.vocab_size));
  };
  check_id("bos_token_id", c.bos_token_id);
  for (int64_t id : c.eos_token_ids) check_id("eos_token_id", id);
  if (c.yarn && c.yarn->beta_fast <= 0) r.fail("rope_scaling", "beta_fast must be > 0");
  if (c.yarn && c.yarn->beta_slow <= 0) r.fail("rope_scaling", "beta_slow must be > 0");
  if (!(c.rope_theta > 1.0)) r.fail("rope_theta", "must be > 1");
  if (!(c.rms_norm_eps > 0)) r.fail("rms_norm_eps", "must be > 0");
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw Error(source + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), source + ": must hold a JSON object");
  FieldReader r(j, source);

  bool known = false;
  if (r.has("architectures")) {
    if (!j["architectures"].is_array()) r.fail("architectures", "must be a list");
    for (const auto& a : j["architectures"]) known |= a.is_string() && a.get<std::string>() == "DeepseekV2ForCausalLM";
    if (!known) r.fail("architectures", "names no supported architecture (expected DeepseekV2ForCausalLM)");
  } else {
    if (r.string("model_type", "") != "deepseek_v2") r.fail("model_type", "must be deepseek_v2 when 'architectures' is absent");
  }

  ModelConfig c;
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_attention_heads = r.positive("num_attention_heads");
  c.kv_lora_rank = r.positive("kv_lora_rank");
  c.qk_nope_head_dim = r.positive("qk_nope_head_dim");
  c.qk_rope_head_dim = r.positive("qk_rope_head_dim");
  c.v_head_dim = r.positive("v_head_dim");
  if (r.has("q_lora_rank")) c.q_lora_rank = r.positive("q_lora_rank");
  c.max_position_embeddings = r.positive("max_position_embeddings", 2048);
  c.first_k_dense_replace = r.integer("first_k_dense_replace", 0);
  if (c.first_k_dense_replace < 0) r.fail("first_k_dense_replace", "must be >= 0");
  c.moe_layer_freq = r.positive("moe_layer_freq", 1);

  c.n_routed_experts = r.has("n_routed_experts") ? r.positive("n_routed_experts") : 0;
  if (c.n_routed_experts > 0) {
    c.moe_intermediate_size = r.positive("moe_intermediate_size");
    c.num_experts_per_tok = r.positive("num_experts_per_tok");
    c.n_shared_experts = r.integer("n_shared_experts", 0);
    if (c.n_shared_experts < 0) r.fail("n_shared_experts", "must be >= 0");
    c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
    std::string method = r.string("topk_method", "greedy");
    if (method == "greedy" || method == "gready") {
      c.topk_method = TopkMethod::Greedy;
    } else if (method == "group_limited_greedy") {
      c.topk_method = TopkMethod::GroupLimitedGreedy;
    } else {
      r.fail("topk_method", "must be greedy or group_limited_greedy");
    }
    c.n_group = r.positive("n_group", 1);
    c.topk_group = r.positive("topk_group", 1);
    c.norm_topk_prob = r.boolean("norm_topk_prob", false);
    if (r.string("scoring_func", "softmax") != "softmax") r.fail("scoring_func", "must be softmax");
  }
  c.intermediate_size = r.integer("intermediate_size", 0);

  parse_rope(j, r, c);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.bos_token_id = r.integer("bos_token_id", -1);
  if (r.has("eos_token_id") && j["eos_token_id"].is_array()) {
    for (const auto& v : j["eos_token_id"]) {
      if (!v.is_number_integer()) r.fail("eos_token_id", "must be an integer or a list of integers");
      c.eos_token_ids.push_back(v.get<int64_t>());
    }
  } else if (r.has("eos_token_id")) {
    c.eos_token_ids.push_back(r.integer("eos_token_id"));
  }
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids.front();
  c.torch_dtype = parse_torch_dtype(r);
  if (r.has("quantization_config")) c.quantized_linear = parse_quantization_config(j.at("quantization_config"), r);
  validate(c, r);
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  return parse_model_config(read_text_file(path), path);
}

json model_config_to_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {"DeepseekV2ForCausalLM"};
  j["model_type"] = "deepseek_v2";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_attention_heads;
  j["n_shared_experts"] = c.n_shared_experts;
  j["n_routed_experts"] = c.n_routed_experts > 0 ? json(c.n_routed_experts) : json(nullptr);
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["topk_method"] = c.topk_method == TopkMethod::Greedy ? "greedy" : "group_limited_greedy";
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["moe_layer_freq"] = c.moe_layer_freq;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["scoring_func"] = "softmax";
  j["aux_loss_alpha"] = 0.001;
  j["seq_aux"] = true;
  j["q_lora_rank"] = c.q_lora_rank ? json(*c.q_lora_rank) : json(nullptr);
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  if (c.yarn) {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", c.yarn->factor},
                         {"original_max_position_embeddings", c.yarn->original_max_position_embeddings},
                         {"beta_fast", c.yarn->beta_fast},
                         {"beta_slow", c.yarn->beta_slow},
                         {"mscale", c.yarn->mscale},
                         {"mscale_all_dim", c.yarn->mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["use_cache"] = true;
  j["torch_dtype"] = c.torch_dtype == DType::BF16 ? "bfloat16" : c.torch_dtype == DType::F16 ? "float16" : "float32";
  if (c.quantized_linear)
    j["quantization_config"] = {{"quant_method", "dsv2"}, {"format", dtype_name(*c.quantized_linear)}, {"block_size", kQuantBlock}};
  return j;
}

ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  c.vocab_size = 102400;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.max_position_embeddings = 163840;
  c.first_k_dense_replace = 1;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.yarn = YarnScaling{40.0, 4096, 32.0, 1.0, 0.707, 0.707};
  c.bos_token_id = 100000;
  c.eos_token_id = 100001;
  if (name == "v2") {
    c.hidden_size = 5120;
    c.intermediate_size = 12288;
    c.moe_intermediate_size = 1536;
    c.num_hidden_layers = 60;
    c.num_attention_heads = 128;
    c.n_routed_experts = 160;
    c.routed_scaling_factor = 16.0;
    c.topk_method = TopkMethod::GroupLimitedGreedy;
    c.n_group = 8;
    c.topk_group = 3;
    c.q_lora_rank = 1536;
  } else if (name == "v2-lite") {
    c.hidden_size = 2048;
    c.intermediate_size = 10944;
    c.moe_intermediate_size = 1408;
    c.num_hidden_layers = 27;
    c.num_attention_heads = 16;
    c.n_routed_experts = 64;
  } else if (name == "tiny") {
    // V2-Lite's structure at a few MB: plain q_proj, greedy routing, YaRN.
    c.vocab_size = 512;
    c.hidden_size = 64;
    c.intermediate_size = 160;
    c.moe_intermediate_size = 32;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.n_routed_experts = 16;
    c.num_experts_per_tok = 4;
    c.kv_lora_rank = 32;
    c.qk_nope_head_dim = 16;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 16;
    c.max_position_embeddings = 2048;
    c.yarn = YarnScaling{4.0, 512, 32.0, 1.0, 0.707, 0.707};
    c.bos_token_id = 0;
    c.eos_token_id = 1;
  } else {
    throw Error("unknown preset '" + name + "' (expected v2, v2-lite or tiny)");
  }
  c.eos_token_ids = {c.eos_token_id};
  return c;
}

}  // namespace dsv2
