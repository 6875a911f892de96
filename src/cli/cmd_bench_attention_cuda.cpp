// dsv2 bench-attention --device cuda: the GPU decode attention alone (cuda::attend_latents: the
// absorbed form's attention over a paged latent cache, split over the context, then combined) for a
// batch of sequences of one context length, timed with CUDA events; the cache bytes read per second
// against the copy bandwidth measured in the same run, for calls launched from the host and for the
// same calls captured as one CUDA graph. Each sequence's blocks sit at random places in the pool, as a
// serving engine hands them out.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "ops/cuda/ceilings.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"

namespace dsv2 {

int bench_attention_cuda(Args& args) {
  const int64_t batch = args.integer("--batch", 1), context = args.integer("--context", 4096);
  const int64_t nh = args.integer("--heads", 16), d_c = args.integer("--kv-lora-rank", 512);
  const int64_t d_rope = args.integer("--rope-dim", 64), block = args.integer("--block-size", 64);
  const int64_t repeats = args.integer("--repeats", 50);
  check(batch >= 1 && context >= 1 && nh >= 1 && d_c >= 1 && d_rope >= 1 && block >= 1 && repeats >= 1,
        "--batch, --context, --heads, --kv-lora-rank, --rope-dim, --block-size and --repeats must be >= 1");
  check(batch <= 65535 && context <= INT32_MAX, "--batch must be <= 65535 and --context < 2^31");
  const DType cache_dtype = cache_dtype_option(args, DType::BF16);
  const std::string kernel_name = args.value("--kernel").value_or("auto");
  using Kernel = cuda::DecodeAttentionKernel;
  check(kernel_name == "auto" || kernel_name == "warp-mma" || kernel_name == "warpgroup-mma",
        "--kernel must be auto, warp-mma or warpgroup-mma (seen '" + kernel_name + "')");
  const Kernel kernel = kernel_name == "warp-mma"        ? Kernel::warp_mma
                        : kernel_name == "warpgroup-mma" ? Kernel::warpgroup_mma
                                                         : Kernel::automatic;
  const bool json_out = args.flag("--json");
  args.finish();

  const double copy_bw = cuda::measure_copy_bandwidth();
  // attend_latents reads the query's rotary part at offset d_nope of its rows and never d_v (the value
  // expansion is not part of it): V2's d_nope of 128, and d_v set to it.
  const int64_t width = d_c + d_rope, d_nope = 128, max_blocks = (context + block - 1) / block;
  const cuda::MlaShape shape{nh, d_nope, d_rope, d_nope, d_c, 1.0f / std::sqrt(float(d_nope + d_rope))};
  cuda::PagedLatentCache cache{nullptr, cache_dtype, 1, batch * max_blocks, block, width};
  const int64_t cache_values = batch * max_blocks * block * width;
  cuda::DeviceBuffer cache_data(size_t(cache_values) * dtype_size(cache_dtype));
  cache.data = cache_data.get();
  cuda::fill_uniform(cache.data, cache_dtype, cache_values, 0.0f, 1.0f, 11, nullptr);
  std::vector<int32_t> tables(size_t(batch * max_blocks));
  const std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(context));
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), std::mt19937(3));
  cuda::DeviceBuffer d_tables(tables.size() * 4), d_lens(lens.size() * 4);
  DSV2_CUDA_CHECK(cudaMemcpy(d_tables.get(), tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  DSV2_CUDA_CHECK(cudaMemcpy(d_lens.get(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
  cuda::DeviceBuffer q(size_t(batch * nh * (d_nope + d_rope)) * 4), q_lat(size_t(batch * nh * d_c) * 4),
      o_lat(size_t(batch * nh * d_c) * 4),
      partials(size_t(cuda::absorbed_attention_scratch_floats(batch, nh, d_c, context)) * 4);
  cuda::fill_uniform(q.get(), DType::F32, batch * nh * (d_nope + d_rope), 0.0f, 1.0f, 12, nullptr);
  cuda::fill_uniform(q_lat.get(), DType::F32, batch * nh * d_c, 0.0f, 1.0f, 13, nullptr);

  cudaStream_t stream;
  DSV2_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto run = [&] {
    cuda::attend_latents(shape, q.get<float>(), q_lat.get<float>(), cache, 0, d_tables.get<int32_t>(), max_blocks,
                         d_lens.get<int32_t>(), batch, context, partials.get<float>(), o_lat.get<float>(), stream, kernel);
  };
  cudaEvent_t start, stop;
  DSV2_CUDA_CHECK(cudaEventCreate(&start));
  DSV2_CUDA_CHECK(cudaEventCreate(&stop));
  // Seconds per call of `launch` (which runs `repeats` calls), after one untimed launch.
  auto time_calls = [&](auto launch) {
    launch();
    DSV2_CUDA_CHECK(cudaEventRecord(start, stream));
    launch();
    DSV2_CUDA_CHECK(cudaEventRecord(stop, stream));
    DSV2_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DSV2_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return double(ms) / 1e3 / double(repeats);
  };
  // Launched one after another from the host, then the same calls captured as one CUDA graph (as a
  // decode step runs them: no launch gaps, each kernel starting while the previous one finishes).
  const double seconds = time_calls([&] {
    for (int64_t i = 0; i < repeats; ++i) run();
  });
  cudaGraph_t graph;
  cudaGraphExec_t graph_exec;
  DSV2_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int64_t i = 0; i < repeats; ++i) run();
  DSV2_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  DSV2_CUDA_CHECK(cudaGraphInstantiate(&graph_exec, graph, 0));
  const double captured = time_calls([&] { DSV2_CUDA_CHECK(cudaGraphLaunch(graph_exec, stream)); });
  cudaGraphExecDestroy(graph_exec);
  cudaGraphDestroy(graph);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  const double bytes = double(batch * context * width) * double(dtype_size(cache_dtype));
  const nlohmann::json j = {{"device", "cuda"},
                            {"batch", batch},
                            {"context", context},
                            {"heads", nh},
                            {"kv_lora_rank", d_c},
                            {"rope_dim", d_rope},
                            {"block_size", block},
                            {"cache_dtype", dtype_name(cache_dtype)},
                            {"kernel", kernel_name},
                            {"us_per_call", seconds * 1e6},
                            {"us_per_call_captured", captured * 1e6},
                            {"cache_gb_per_s", bytes / seconds / 1e9},
                            {"cache_gb_per_s_captured", bytes / captured / 1e9},
                            {"copy_bandwidth_gb_per_s", copy_bw / 1e9},
                            {"fraction_of_copy_bandwidth", bytes / seconds / copy_bw},
                            {"fraction_of_copy_bandwidth_captured", bytes / captured / copy_bw}};
  std::printf("%s\n", json_out ? j.dump(2).c_str() : j.dump().c_str());
  return 0;
}

}  // namespace dsv2
