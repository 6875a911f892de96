// dsv2 bench-matmul: the CPU matmul alone on random weights of one shape, in one format: the weight
// bytes it streams per second against the read bandwidth measured in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "core/error.h"
#include "model/quantize.h"
#include "ops/cpu/memory_bandwidth.h"
#include "ops/cpu/ops_cpu.h"

namespace dsv2 {

int cmd_bench_matmul(Args& args) {
  const int64_t rows = args.integer("--rows", 16384), cols = args.integer("--cols", 2048);
  const int64_t tokens = args.integer("--tokens", 1), repeats = args.integer("--repeats", 5);
  check(rows >= 1 && cols >= 1 && tokens >= 1 && repeats >= 1, "--rows, --cols, --tokens and --repeats must be >= 1");
  const std::string weights = args.value("--weights").value_or("bf16");
  check(weights == "bf16" || weights == "int8" || weights == "q4", "--weights must be bf16, int8 or q4 (seen '" + weights + "')");
  const ActivationFormat activations = activations_option(args);
  check(activations == ActivationFormat::F32 || weights == "bf16", "--activations bf16 needs --weights bf16");
  const bool json_out = args.flag("--json");
  ThreadPool pool(threads_option(args));
  args.finish();

  // Several matrices, so that together they are far larger than the caches: [copies, rows, cols], 512 MB
  // of bf16 values. At most kMaxCopies: a shape under 512 KB then fits the caches (its figure is the
  // kernel's, not the memory's), and runs in moments instead of millions of calls a repeat.
  constexpr int64_t kMaxCopies = 1024;
  const int64_t copies = std::clamp<int64_t>((512ll << 20) / (rows * cols * 2), 1, kMaxCopies);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> f32(size_t(rows * cols)), x(size_t(tokens * cols)), y(size_t(tokens * rows));
  for (auto& v : f32) v = normal(rng);
  for (auto& v : x) v = normal(rng);
  std::vector<std::vector<uint8_t>> storage(static_cast<size_t>(copies));
  std::vector<Matrix> mats;
  for (auto& s : storage) {
    Matrix W{DType::F32, f32.data(), rows, cols};
    if (weights == "bf16") {
      s.resize(size_t(rows * cols * 2));
      convert_from_f32(DType::BF16, f32.data(), s.data(), size_t(rows * cols));
      W = Matrix{DType::BF16, s.data(), rows, cols};
      W.activations = activations;
    } else {
      quantize_matrix(W, weights == "int8" ? DType::Q8_0 : DType::Q4_0, s, pool);
    }
    mats.push_back(W);
  }
  const double bw_before = measure_read_bandwidth(pool);
  double best = 1e30;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const Matrix& W : mats) cpu::matmul(pool, x.data(), tokens, W, y.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double bw = std::max(bw_before, measure_read_bandwidth(pool));
  const double gbps = double(mats.front().bytes()) * double(copies) / best / 1e9;
  const double gflops = 2.0 * double(rows * cols * tokens) * double(copies) / best / 1e9;
  const nlohmann::json j = {{"weights", weights},         {"activations", activation_format_name(activations)},
                            {"rows", rows},               {"cols", cols},           {"gflop_per_s", gflops},
                            {"tokens", tokens},           {"threads", pool.size()}, {"matrices", copies},
                            {"cpu_isa", cpu::cpu_isa_name(cpu::cpu_isa())},
                            {"weight_gb_per_s", gbps},    {"read_bandwidth_gb_per_s", bw / 1e9},
                            {"roofline_fraction", gbps / (bw / 1e9)}};
  if (json_out) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s [%lld, %lld] x %lld tokens, %s activations, %s kernels: %.1f GB/s of weights, %.0f%% of %.1f GB/s read bandwidth; %.1f GFLOP/s\n",
                weights.c_str(), (long long)rows, (long long)cols, (long long)tokens, activation_format_name(activations),
                cpu::cpu_isa_name(cpu::cpu_isa()), gbps, 100 * gbps / (bw / 1e9), bw / 1e9, gflops);
  }
  return 0;
}

}  // namespace dsv2
