// dsv2 bench-tokenizer --tokenizer PATH FILE [--threads N] [--repeat R] [--chunk-bytes B] [--json]
// Encode throughput (no special tokens) on FILE cut into chunks of whole lines of at least
// B bytes (default 4096): one thread encoding the chunks in order, and the batch encoder over
// N threads. Each figure is the best of R timed passes after one warm-up pass.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {
namespace {

std::vector<std::string_view> line_chunks(std::string_view text, size_t min_bytes) {
  std::vector<std::string_view> chunks;
  while (!text.empty()) {
    const size_t newline = text.size() <= min_bytes ? std::string_view::npos : text.find('\n', min_bytes);
    const size_t cut = newline == std::string_view::npos ? text.size() : newline + 1;
    chunks.push_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  return chunks;
}

template <class F>
double best_seconds(int64_t repeat, F&& run) {
  double best = 1e300;
  for (int64_t r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int cmd_bench_tokenizer(Args& args) {
  const std::string path = args.required("--tokenizer");
  const int threads = threads_option(args);
  const int64_t repeat = args.integer("--repeat", 3);
  const int64_t chunk_bytes = args.integer("--chunk-bytes", 4096);
  const bool json = args.flag("--json");
  const std::vector<std::string> files = args.positionals();
  args.finish();
  check(files.size() == 1, "dsv2 bench-tokenizer: give exactly one text FILE");
  check(repeat >= 1 && repeat <= 100, "dsv2 bench-tokenizer: --repeat must be between 1 and 100");
  check(chunk_bytes >= 1, "dsv2 bench-tokenizer: --chunk-bytes must be >= 1");

  const Tokenizer tokenizer = Tokenizer::load(path);
  const std::string text = read_text_file(files[0]);
  const std::vector<std::string_view> chunks = line_chunks(text, size_t(chunk_bytes));
  ThreadPool pool(threads);

  int64_t n_tokens = 0;
  for (std::string_view chunk : chunks) n_tokens += int64_t(tokenizer.encode(chunk, SpecialTokens::Omit).size());
  const double single = best_seconds(repeat, [&] {
    for (std::string_view chunk : chunks) tokenizer.encode(chunk, SpecialTokens::Omit);
  });
  const double batch = best_seconds(repeat, [&] { tokenizer.encode_batch(chunks, SpecialTokens::Omit, pool); });
  const double mb = double(text.size()) / 1e6;
  if (json) {
    nlohmann::json j = {{"tokenizer", tokenizer.name()}, {"file", files[0]},         {"bytes", text.size()},
                        {"chunks", chunks.size()},       {"tokens", n_tokens},         {"threads", pool.size()},
                        {"single_thread_MBps", mb / single}, {"batch_MBps", mb / batch}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("tokenizer %s\nfile %s: %.3f MB in %zu chunks, %lld tokens\n", tokenizer.name().c_str(),
                files[0].c_str(), mb, chunks.size(), static_cast<long long>(n_tokens));
    std::printf("single thread: %.2f MB/s (%.2f M tokens/s)\n", mb / single, double(n_tokens) / single / 1e6);
    std::printf("batch, %d threads: %.2f MB/s (%.2f M tokens/s)\n", pool.size(), mb / batch,
                double(n_tokens) / batch / 1e6);
  }
  return 0;
}

}  // namespace dsv2
