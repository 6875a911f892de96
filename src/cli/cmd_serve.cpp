// dsv2 serve: the OpenAI-compatible HTTP server over the engine (continuous batching over a paged
// latent cache) on the CPU or the GPU (--device cuda). Prints "listening on http://HOST:PORT" on
// stderr once it accepts connections; SIGINT/SIGTERM stop it.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/cpu_batched_model.h"
#include "engine/engine.h"
#ifdef DSV2_WITH_CUDA
#include "engine/cuda_batched_model.h"
#include "model/cuda/deepseek_v2_cuda.h"
#endif
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {

namespace {
Server* g_server = nullptr;
void on_stop_signal(int) {
  if (g_server) g_server->stop();
}
}  // namespace

int cmd_serve(Args& args) {
  const std::string dir = args.required("--model");
  ServerOptions so;
  so.host = args.value("--host").value_or("127.0.0.1");
  so.port = int(args.integer("--port", 8000));
  check(so.port >= 0 && so.port <= 65535, "--port must be in [0, 65535] (0: any free port)");
  so.api_key = args.value("--api-key").value_or("");
  so.model_name = args.value("--served-model-name").value_or(std::filesystem::path(dir).lexically_normal().filename().string());
  if (so.model_name.empty()) so.model_name = "dsv2";
  so.http_threads = int(args.integer("--http-threads", 32));
  check(so.http_threads >= 2, "--http-threads must be >= 2");
  const Device device = device_option(args);
  const LatentPoolShape pool_shape{int32_t(args.integer("--cache-blocks", 1024)), int32_t(args.integer("--block-size", 16))};
  // The CPU keeps exact f32 latents by default; the GPU bf16 (half the memory; its kernels read bf16).
  const DType cache_dtype = cache_dtype_option(args, device == Device::Cuda ? DType::BF16 : DType::F32);
  EngineOptions eo;
  eo.max_context = args.integer("--context", 0);
  eo.scheduler.max_running = int32_t(args.integer("--max-running", 8));
  eo.scheduler.step_token_budget = args.integer("--step-tokens", 256);
  eo.scheduler.prefill_chunk = args.integer("--prefill-chunk", 64);
  const bool fast_batching = args.flag("--fast-batching");
  check(!fast_batching || device == Device::Cuda, "--fast-batching applies to --device cuda");
  check(pool_shape.n_blocks >= 1, "--cache-blocks must be >= 1");
  check(pool_shape.block_size >= 1 && pool_shape.block_size <= 1024, "--block-size must be in [1, 1024]");
  // Default: all cores but one, which stays free for the HTTP threads (the model's workers spin
  // between jobs; on 2 cores two spinning workers starve the connections).
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, device);
  int threads = threads_option(args);
  if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency() - 1));
  args.finish();
  validate_scheduler_options(eo.scheduler);

  const Tokenizer tokenizer = Tokenizer::load(dir);
  std::unique_ptr<ChatTemplate> chat;
  try {
    chat = std::make_unique<ChatTemplate>(ChatTemplate::from_model_dir(dir));
  } catch (const Error& e) {
    std::fprintf(stderr, "no chat template (%s): /v1/chat/completions will answer 400\n", e.what());
  }
  LoadedModel model = load_model(dir, pages);
  // The CPU model's threads, which also sample each step's sequences; on the GPU, threads for sampling.
  ThreadPool pool(device == Device::Cpu ? threads : int(std::clamp(std::thread::hardware_concurrency() / 2, 1u, 8u)));
  eo.sampling_threads = &pool;
  std::unique_ptr<DeepseekV2> cpu_net;
  std::shared_ptr<void> gpu_net;  // the GPU model, kept alive beside its BatchedModel
  std::unique_ptr<BatchedModel> batched;
  if (device == Device::Cpu) {
    quantize_model(model, weights, pool);
    set_activation_format(model, activations);
    cpu_net = std::make_unique<DeepseekV2>(model.config, model.weights, pool);
    batched = std::make_unique<CpuBatchedModel>(*cpu_net, pool_shape, cache_dtype);
  } else {
#ifdef DSV2_WITH_CUDA
    check((weights == WeightFormat::AsStored || weights == WeightFormat::Fp8) && !model.config.quantized_linear,
          "--device cuda serves the BF16/F16/F32 weights as stored or as fp8 (no --weights int8|q4, no quantized directories)");
    check(activations == ActivationFormat::F32, "--activations bf16 is a CPU option (--device cuda: its own kernels)");
    const int64_t cache_tokens = int64_t(pool_shape.n_blocks) * pool_shape.block_size;
    CudaOptions co;
    co.cache_dtype = cache_dtype;
    co.block_size = pool_shape.block_size;
    co.cache_blocks = pool_shape.n_blocks;
    co.max_context = eo.max_context > 0 ? eo.max_context : std::min(model.config.max_position_embeddings, cache_tokens);
    // By default every token runs through the exact decode kernels in groups of up to 8, so that a
    // request's output does not depend on the batch it shares; --fast-batching puts prompts and
    // large decode batches on tensor cores instead.
    co.batch_invariant = !fast_batching;
    co.fp8_weights = weights == WeightFormat::Fp8;
    co.max_batch = fast_batching ? eo.scheduler.max_running : std::min<int64_t>(eo.scheduler.max_running, 8);
    co.max_prefill_chunk = std::min(co.max_context, std::max<int64_t>(eo.scheduler.prefill_chunk, 1));
    check(co.max_context <= cache_tokens, "--context " + std::to_string(co.max_context) + " exceeds the cache's " +
                                              std::to_string(cache_tokens) + " tokens (--cache-blocks x --block-size)");
    auto gpu = std::make_shared<CudaDeepseekV2>(model.config, *model.checkpoint, co);
    batched = std::make_unique<CudaBatchedModel>(*gpu);
    gpu_net = gpu;
#endif
  }
  Engine engine(*batched, eo);
  Server server(so, model.config, tokenizer, chat.get(), engine);
  const int port = server.bind();
  g_server = &server;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "serving %s on %s (context %lld, %d cache blocks of %d tokens) on http://%s:%d\n", so.model_name.c_str(),
               device == Device::Cuda ? "the GPU" : "the CPU", (long long)engine.max_context(), pool_shape.n_blocks,
               pool_shape.block_size, so.host.c_str(), port);
  std::fprintf(stderr, "listening on http://%s:%d\n", so.host.c_str(), port);
  std::fflush(stderr);
  server.run();
  g_server = nullptr;
  return 0;
}

}  // namespace dsv2
