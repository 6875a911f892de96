// dsv2 bench-attention: the CPU decode attention alone (cpu::latent_attention, absorbed form) of one
// query token over a latent cache of random rows, for every layer's cache in turn: the cache bytes it
// reads and the multiply-adds it does per second, against the read bandwidth measured in the same run.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/cpu/latent_attention.h"
#include "ops/cpu/memory_bandwidth.h"

namespace dsv2 {

int cmd_bench_attention(Args& args) {
#ifdef DSV2_WITH_CUDA
  if (device_option(args) == Device::Cuda) return bench_attention_cuda(args);
#else
  device_option(args);  // rejects --device cuda with a clear message
#endif
  const int64_t context = args.integer("--context", 16384), nh = args.integer("--heads", 16);
  const int64_t d_c = args.integer("--kv-lora-rank", 512), d_rope = args.integer("--rope-dim", 64);
  const int64_t layers = args.integer("--layers", 4), repeats = args.integer("--repeats", 5);
  check(context >= 1 && nh >= 1 && d_c >= 1 && d_rope >= 1 && layers >= 1 && repeats >= 1,
        "--context, --heads, --kv-lora-rank, --rope-dim, --layers and --repeats must be >= 1");
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  const bool bf16_scores = activations_option(args) == ActivationFormat::BF16;
  check(!bf16_scores || cache_dtype == DType::BF16, "--activations bf16 (scores as bf16 dot products) needs --cache-dtype bf16");
  const bool json_out = args.flag("--json");
  ThreadPool pool(threads_option(args));
  args.finish();

  const int64_t width = d_c + d_rope;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q_lat(size_t(nh * d_c)), q_pe(size_t(nh * d_rope)), o_lat(size_t(nh * d_c)), partial;
  for (auto& v : q_lat) v = 0.05f * normal(rng);
  for (auto& v : q_pe) v = 0.05f * normal(rng);
  // One cache per layer, as a decode step reads them: [layers, context, width].
  std::vector<float> f32(cache_dtype == DType::F32 ? size_t(layers * context * width) : 0);
  std::vector<uint16_t> bf16(cache_dtype == DType::BF16 ? size_t(layers * context * width) : 0);
  for (auto& v : f32) v = normal(rng);
  for (auto& v : bf16) v = f32_to_bf16(normal(rng));
  const float scale = 1.0f / std::sqrt(float(d_c + d_rope));
  const double bw_before = measure_read_bandwidth(pool);
  double best = 1e30;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t layer = 0; layer < layers; ++layer) {
      const size_t offset = size_t(layer * context * width);
      if (cache_dtype == DType::F32) {
        cpu::latent_attention(pool, q_lat.data(), q_pe.data(), d_rope, f32.data() + offset, width, context, nh, d_c, d_rope, scale,
                              o_lat.data(), partial);
      } else {
        cpu::latent_attention(pool, q_lat.data(), q_pe.data(), d_rope, bf16.data() + offset, width, context, nh, d_c, d_rope,
                              scale, o_lat.data(), partial, bf16_scores);
      }
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double bw = std::max(bw_before, measure_read_bandwidth(pool));
  const double bytes = double(layers * context * width) * double(dtype_size(cache_dtype));
  const double gflops = 2.0 * double(layers * context * nh * (width + d_c)) / best / 1e9;
  const nlohmann::json j = {{"context", context},         {"heads", nh},
                            {"kv_lora_rank", d_c},        {"rope_dim", d_rope},
                            {"layers", layers},           {"cache_dtype", dtype_name(cache_dtype)},
                            {"scores", bf16_scores ? "bf16" : "f32"},
                            {"threads", pool.size()},     {"ms_per_token", best * 1e3},
                            {"gflop_per_s", gflops},      {"cache_gb_per_s", bytes / best / 1e9},
                            {"read_bandwidth_gb_per_s", bw / 1e9}};
  if (json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%lld keys × %lld layers, %lld heads, %s cache: %.2f ms per token, %.1f GFLOP/s, %.1f GB/s of cache (read bandwidth %.1f GB/s)\n",
                (long long)context, (long long)layers, (long long)nh, dtype_name(cache_dtype), best * 1e3, gflops,
                bytes / best / 1e9, bw / 1e9);
  }
  return 0;
}

}  // namespace dsv2
