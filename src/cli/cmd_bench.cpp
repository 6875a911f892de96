// dsv2 bench: prefill and decode speed of one sequence, with the memory read bandwidth measured
// in the same run and the decode roofline fraction (active weight bytes per token / bandwidth), and
// the process's resident memory after decoding against the weight files' size. The prefill is run twice
// from the same context and reported apart (first_prefill_tokens_per_s, prefill_tokens_per_s): the first
// pass over the weights after loading, and the first use of each buffer, ran at 0.44-0.75 of the speed
// of the second on the development machines (docs/cpu-notes.md, v10).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "ops/cpu/memory_bandwidth.h"
#include "ops/cpu/ops_cpu.h"

namespace dsv2 {

namespace {

// Positions [0, n) of every layer hold random latents of the cached kind (a normalised latent:
// values of unit scale; a rotated key), standing for a long context already prefilled.
void fill_random_context(LatentCache& cache, int64_t n) {
  std::mt19937 rng(2);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cache.width()));
  for (int64_t l = 0; l < cache.n_layers(); ++l)
    for (int64_t p = 0; p < n; ++p) {
      for (float& v : row) v = unit(rng);
      cache.write(l, p, row.data());
    }
  cache.set_length(n);
}

// The process's resident memory now (/proc/self/statm; the bandwidth probe's buffer is freed by then).
size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

}  // namespace

int cmd_bench(Args& args) {
#ifdef DSV2_WITH_CUDA
  if (device_option(args) == Device::Cuda) return bench_cuda(args);
#else
  device_option(args);  // rejects --device cuda with a clear message
#endif
  const std::string dir = args.required("--model");
  const int64_t prompt_tokens = args.integer("--prompt-tokens", 128);
  const int64_t gen_tokens = args.integer("--gen-tokens", 32);
  const int64_t context = args.integer("--context", 0);  // random cached tokens before the prompt
  check(prompt_tokens >= 1, "--prompt-tokens must be >= 1");
  check(context >= 0, "--context must be >= 0");
  check(gen_tokens >= 1, "--gen-tokens must be >= 1");
  const bool json_out = args.flag("--json");
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, Device::Cpu);
  ThreadPool pool(threads_option(args));
  args.finish();

  LoadedModel m = load_model(dir, pages);
  quantize_model(m, weights, pool);
  set_activation_format(m, activations);
  const ModelConfig& cfg = m.config;
  check(context + prompt_tokens + gen_tokens <= cfg.max_position_embeddings,
        "--context + --prompt-tokens + --gen-tokens exceed max_position_embeddings");
  DeepseekV2 net(cfg, m.weights, pool);
  std::mt19937 rng(1);
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
  for (auto& id : prompt) id = int32_t(rng() % uint32_t(cfg.vocab_size));

  const double bw_before = measure_read_bandwidth(pool);
  using clock = std::chrono::steady_clock;
  LatentCache cache = net.make_cache(context + prompt_tokens + gen_tokens, cache_dtype);
  fill_random_context(cache, context);
  std::vector<float> logits;
  // The prompt after the context, in seconds; the cache goes back to the context first.
  const auto prefill = [&] {
    cache.set_length(context);
    const auto t = clock::now();
    net.forward(prompt, cache, AttentionPath::Decompressed, LogitsRows::Last, logits);
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  const double first_prefill_s = prefill();
  const double prefill_s = prefill();
  const int64_t decode_context = cache.length();  // cached tokens when decoding starts
  auto t1 = clock::now();
  for (int64_t i = 0; i < gen_tokens; ++i) {
    int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    net.forward({next}, cache, AttentionPath::Absorbed, LogitsRows::Last, logits);
  }
  const double decode_s = std::chrono::duration<double>(clock::now() - t1).count();
  const size_t resident = resident_bytes();
  const double bw_after = measure_read_bandwidth(pool);

  const double bytes_per_token = decode_weight_bytes_per_token(cfg, m.weights);  // as loaded, scales included
  const double decode_tps = double(gen_tokens) / decode_s;
  const double bw = std::max(bw_before, bw_after);
  nlohmann::json j = {
      {"model", dir},
      {"threads", pool.size()},
      {"cpu_isa", cpu::cpu_isa_name(cpu::cpu_isa())},
      {"weights_dtype", dtype_name(cfg.torch_dtype)},
      {"linear_weights", dtype_name(m.weights.layers.front().kv_a_proj.dtype)},
      {"activations", activation_format_name(activations)},
      {"weight_pages", m.checkpoint->residency() == FileResidency::HugePages ? "huge" : "mapped"},
      {"cache_dtype", dtype_name(cache_dtype)},
      {"context_tokens", context},
      {"prompt_tokens", prompt_tokens},
      {"gen_tokens", gen_tokens},
      {"decode_context_tokens", decode_context},
      {"first_prefill_tokens_per_s", double(prompt_tokens) / first_prefill_s},
      {"prefill_tokens_per_s", double(prompt_tokens) / prefill_s},
      {"decode_tokens_per_s", decode_tps},
      {"decode_weight_bytes_per_token", bytes_per_token},
      {"decode_weight_gb_per_s", bytes_per_token * decode_tps / 1e9},
      {"read_bandwidth_gb_per_s_before", bw_before / 1e9},
      {"read_bandwidth_gb_per_s_after", bw_after / 1e9},
      {"decode_roofline_fraction", bytes_per_token * decode_tps / bw},
      {"weight_file_bytes", m.checkpoint->file_bytes()},
      {"resident_bytes_after_decode", resident},
      {"latent_cache_bytes", cache.bytes_per_token() * size_t(cache.capacity())},
  };
  if (json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("prefill %lld tokens: %.2f tokens/s (the first after loading: %.2f)\ndecode %lld tokens: %.2f tokens/s (%.1f GB/s of weights, %.0f%% of %.1f GB/s read bandwidth)\n",
                static_cast<long long>(prompt_tokens), double(prompt_tokens) / prefill_s,
                double(prompt_tokens) / first_prefill_s, static_cast<long long>(gen_tokens),
                decode_tps, bytes_per_token * decode_tps / 1e9, 100.0 * bytes_per_token * decode_tps / bw, bw / 1e9);
  }
  return 0;
}

}  // namespace dsv2
