// dsv2 bench --device cuda: prefill and batched decode on one GPU, with the copy bandwidth and
// the bf16 GEMM rate measured in the same run, and the fractions of those ceilings reached.
#include <cuda_profiler_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "core/error.h"
#include "model/cuda/deepseek_v2_cuda.h"
#include "model/model.h"
#include "model/weights.h"
#include "ops/cuda/ceilings.h"

namespace dsv2 {

int bench_cuda(Args& args) {
  auto dir = args.value("--model");
  auto preset = args.value("--preset");
  check(dir.has_value() != preset.has_value(), "dsv2 bench --device cuda: give exactly one of --model DIR and --preset NAME");
  const int64_t prompt_tokens = args.integer("--prompt-tokens", 128);
  const int64_t gen_tokens = args.integer("--gen-tokens", 64);
  const int64_t batch = args.integer("--batch", 1);
  const int64_t layers = args.integer("--layers", 0);
  check(prompt_tokens >= 1 && gen_tokens >= 2, "--prompt-tokens must be >= 1 and --gen-tokens >= 2");
  check(batch >= 1 && batch <= 4096, "--batch must be between 1 and 4096");
  const bool json_out = args.flag("--json");
  const bool no_graphs = args.flag("--no-graphs");
  CudaOptions opt;
  opt.cache_dtype = cache_dtype_option(args, DType::BF16);
  opt.max_batch = batch;
  // The sequence capacity the model is built for, as generate's and serve's --context: the decode
  // graphs' attention splits follow it, not the sequences' lengths.
  opt.max_context = args.integer("--capacity", prompt_tokens + gen_tokens);
  check(opt.max_context >= prompt_tokens + gen_tokens,
        "--capacity must hold the prompt and the generated tokens (>= " + std::to_string(prompt_tokens + gen_tokens) + ")");
  const int64_t prefill_chunk = args.integer("--prefill-chunk", kLongPromptChunk);
  check(prefill_chunk >= 1, "--prefill-chunk must be >= 1");
  opt.max_prefill_chunk = std::min(prompt_tokens, prefill_chunk);
  opt.use_graphs = !no_graphs;
  const WeightFormat weights = weights_option(args);
  check(weights == WeightFormat::AsStored || weights == WeightFormat::Fp8,
        "dsv2 bench --device cuda: --weights must be bf16 (as stored) or fp8");
  opt.fp8_weights = weights == WeightFormat::Fp8;
  args.flag("--random");  // presets are always random weights
  threads_option(args);
  args.finish();

  const double copy_bw = cuda::measure_copy_bandwidth();
  const double gemm_flops = cuda::measure_bf16_gemm_flops();

  std::unique_ptr<LoadedModel> loaded;
  std::unique_ptr<CudaDeepseekV2> net;
  ModelConfig cfg;
  if (dir) {
    loaded = std::make_unique<LoadedModel>(load_model(*dir));
    cfg = loaded->config;
    net = std::make_unique<CudaDeepseekV2>(cfg, *loaded->checkpoint, opt);
  } else {
    cfg = preset_config(*preset);
    if (layers > 0) {
      check(layers <= cfg.num_hidden_layers, "--layers must be <= " + std::to_string(cfg.num_hidden_layers));
      cfg.num_hidden_layers = layers;
    }
    net = std::make_unique<CudaDeepseekV2>(cfg, DType::BF16, 7, opt);
  }

  std::mt19937 rng(1);
  auto random_ids = [&](int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& id : v) id = int32_t(rng() % uint32_t(cfg.vocab_size));
    return v;
  };
  using clock = std::chrono::steady_clock;
  // Prefill every sequence (one prompt at a time); the first one also warms up.
  net->prefill(0, random_ids(prompt_tokens), LogitsRows::Last, nullptr);
  net->reset(0);
  auto t0 = clock::now();
  for (int b = 0; b < batch; ++b) net->prefill(b, random_ids(prompt_tokens), LogitsRows::Last, nullptr);
  const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();

  std::vector<int> slots(static_cast<size_t>(batch));
  for (int b = 0; b < batch; ++b) slots[size_t(b)] = b;
  std::vector<int32_t> ids = random_ids(batch), next;
  net->decode(slots, ids, nullptr, &next);  // captures the graph
  auto t1 = clock::now();
  for (int64_t s = 1; s < gen_tokens; ++s) {
    // The last step alone inside the profiler range: `ncu --profile-from-start off` times one step.
    if (s == gen_tokens - 1) cudaProfilerStart();
    net->decode(slots, next, nullptr, &ids);
    std::swap(ids, next);
  }
  cudaProfilerStop();
  const double decode_s = std::chrono::duration<double>(clock::now() - t1).count();
  const int64_t steps = gen_tokens - 1;

  const ParameterCounts params = count_parameters(cfg);
  const double flops_per_token = 2.0 * double(params.active_per_token);
  const double decode_tps = double(batch * steps) / decode_s;
  // The prompt's causal attention: every (query, key ≤ query) pair of every head and layer multiplies
  // d_qk values for its score and d_v for its share of the output.
  const double prompt_pairs = double(prompt_tokens) * double(prompt_tokens + 1) / 2.0;
  const double attention_flops = double(batch) * double(cfg.num_hidden_layers) * double(cfg.num_attention_heads) *
                                 2.0 * double(cfg.qk_head_dim() + cfg.v_head_dim) *
                                 prompt_pairs;
  const double prefill_flops = flops_per_token * double(batch * prompt_tokens);
  // Every weight a batch-1 decode step reads (one embedding row, K experts per MoE layer, ...), as
  // the GPU holds them (FP8 scales included).
  const double step_bytes = net->decode_weight_bytes(double(cfg.num_experts_per_tok));
  // The bytes a batch's decode step must read at least: the weights (the experts a batch touches
  // estimated for uniform routing: E·(1 − (1 − K/E)^B) distinct experts per MoE layer instead of K)
  // and the latent cache of every sequence (mean context of the timed steps).
  double distinct_experts = 0;
  if (cfg.n_routed_experts > 0) {
    const double E = double(cfg.n_routed_experts), K = double(cfg.num_experts_per_tok);
    distinct_experts = E * (1.0 - std::pow(1.0 - K / E, double(batch)));
  }
  const double mean_context = double(prompt_tokens) + 0.5 * double(gen_tokens);
  const double batch_step_bytes =
      net->decode_weight_bytes(distinct_experts) +
      double(batch) * mean_context * double(cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)) *
          double(dtype_size(opt.cache_dtype));
  const double step_s = decode_s / double(steps);
  nlohmann::json j = {
      {"device", "cuda"},
      {"model", dir ? *dir : "preset:" + *preset},
      {"layers", cfg.num_hidden_layers},
      {"batch", batch},
      {"prompt_tokens", prompt_tokens},
      {"gen_tokens", gen_tokens},
      {"capacity", opt.max_context},
      {"prefill_chunk", opt.max_prefill_chunk},
      {"cache_dtype", dtype_name(opt.cache_dtype)},
      {"weights", weight_format_name(weights)},
      {"cuda_graphs", !no_graphs},
      {"copy_bandwidth_gb_per_s", copy_bw / 1e9},
      {"bf16_gemm_tflop_per_s", gemm_flops / 1e12},
      {"prefill_tokens_per_s", double(batch * prompt_tokens) / prefill_s},
      {"prefill_tflop_per_s", prefill_flops / prefill_s / 1e12},
      {"prefill_fraction_of_gemm_peak", prefill_flops / prefill_s / gemm_flops},
      {"prefill_attention_tflop", attention_flops / 1e12},
      {"prefill_fraction_of_gemm_peak_with_attention", (prefill_flops + attention_flops) / prefill_s / gemm_flops},
      {"decode_tokens_per_s", decode_tps},
      {"decode_step_ms", 1e3 * step_s},
      {"decode_weight_bytes_per_token_batch1", step_bytes},
      {"batch1_roofline_tokens_per_s", copy_bw / step_bytes},
      {"decode_step_floor_bytes", batch_step_bytes},
      {"decode_step_gb_per_s", batch_step_bytes / step_s / 1e9},
      {"decode_fraction_of_roofline", batch_step_bytes / step_s / copy_bw},
  };
  if (json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace dsv2
