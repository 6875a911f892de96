// dsv2 serve: the OpenAI-compatible HTTP server over the CPU engine (continuous batching over a
// paged latent cache). Prints "listening on http://HOST:PORT" on stderr once it accepts connections;
// SIGINT/SIGTERM stop it.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/engine.h"
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
  EngineOptions eo;
  eo.n_blocks = int32_t(args.integer("--cache-blocks", 1024));
  eo.block_size = int32_t(args.integer("--block-size", 16));
  eo.cache_dtype = cache_dtype_option(args, DType::F32);
  eo.max_context = args.integer("--context", 0);
  eo.scheduler.max_running = int32_t(args.integer("--max-running", 8));
  eo.scheduler.step_token_budget = args.integer("--step-tokens", 256);
  eo.scheduler.prefill_chunk = args.integer("--prefill-chunk", 64);
  check(eo.n_blocks >= 1, "--cache-blocks must be >= 1");
  check(eo.block_size >= 1 && eo.block_size <= 1024, "--block-size must be in [1, 1024]");
  // Default: all cores but one, which stays free for the HTTP threads (the model's workers spin
  // between jobs; on 2 cores two spinning workers starve the connections).
  const WeightFormat weights = weights_option(args);
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
  LoadedModel model = load_model(dir);
  ThreadPool pool(threads);
  quantize_model(model, weights, pool);
  DeepseekV2 net(model.config, model.weights, pool);
  Engine engine(net, eo);
  Server server(so, model.config, tokenizer, chat.get(), engine);
  const int port = server.bind();
  g_server = &server;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "serving %s (context %lld, %d cache blocks of %d tokens) on http://%s:%d\n", so.model_name.c_str(),
               (long long)engine.max_context(), eo.n_blocks, eo.block_size, so.host.c_str(), port);
  std::fprintf(stderr, "listening on http://%s:%d\n", so.host.c_str(), port);
  std::fflush(stderr);
  server.run();
  g_server = nullptr;
  return 0;
}

}  // namespace dsv2
