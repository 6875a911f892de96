// dsv2 info: parameter counts and latent-cache size of a model directory or a preset, as JSON.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "model/config.h"
#include "model/model.h"
#include "model/weights.h"

namespace dsv2 {

int cmd_info(Args& args) {
  auto dir = args.value("--model");
  auto preset = args.value("--preset");
  check(dir.has_value() != preset.has_value(), "dsv2 info: give exactly one of --model DIR and --preset NAME");
  const DType cache_dtype = cache_dtype_option(args, DType::BF16);
  args.finish();

  ModelConfig cfg;
  if (dir) {
    cfg = load_model(*dir).config;  // checks every tensor too
  } else {
    cfg = preset_config(*preset);
  }
  const ParameterCounts n = count_parameters(cfg);
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) moe_layers += cfg.is_moe_layer(i);
  const int64_t values_per_token = cfg.latent_width() * cfg.num_hidden_layers;
  nlohmann::json j = {
      {"source", dir ? *dir : "preset:" + *preset},
      {"params_total", n.total},
      {"params_active_per_token", n.active_per_token},
      {"params_active_per_token_with_embedding", n.active_per_token_with_embedding},
      {"num_hidden_layers", cfg.num_hidden_layers},
      {"moe_layers", moe_layers},
      {"kv_cache_dtype", dtype_name(cache_dtype)},
      {"kv_cache_width_per_layer", cfg.latent_width()},
      {"kv_cache_values_per_token", values_per_token},
      {"kv_cache_bytes_per_token", values_per_token * int64_t(dtype_size(cache_dtype))},
      {"softmax_scale", cfg.softmax_scale()},
      {"weights_dtype", dtype_name(cfg.torch_dtype)},
      {"linear_weights", dtype_name(cfg.quantized_linear.value_or(cfg.torch_dtype))},
  };
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace dsv2
