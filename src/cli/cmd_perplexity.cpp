// dsv2 perplexity: exp(mean negative log-likelihood) of a text's tokens under the model, over
// consecutive windows of --context tokens (at most max_position_embeddings; each window starts with an
// empty cache, its first token is context only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {

int cmd_perplexity(Args& args) {
  const std::string dir = args.required("--model");
  const std::string text_path = args.required("--text");
  const int64_t context = args.integer("--context", 512);
  const int64_t max_tokens = args.integer("--max-tokens", 0);
  check(context >= 2, "--context must be >= 2");
  check(max_tokens >= 0, "--max-tokens must be >= 0 (0: the whole text)");
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, Device::Cpu);
  const int threads = threads_option(args);
  args.finish();

  std::vector<int32_t> ids = Tokenizer::load(dir).encode(read_text_file(text_path), SpecialTokens::Add);
  if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));
  check(ids.size() >= 2, text_path + ": fewer than 2 tokens");
  Backend backend(dir, Device::Cpu, threads, DType::F32, context, weights, activations, pages);
  const int64_t V = backend.config().vocab_size;
  const int64_t window_tokens = std::min(context, backend.config().max_position_embeddings);
  double nll = 0;
  int64_t scored = 0, windows = 0;
  std::vector<float> logits;
  for (size_t w0 = 0; w0 + 1 < ids.size(); w0 += size_t(window_tokens), ++windows) {
    const size_t w1 = std::min(ids.size(), w0 + size_t(window_tokens));
    const std::vector<int32_t> window(ids.begin() + long(w0), ids.begin() + long(w1));
    std::unique_ptr<SequenceModel> seq = backend.new_sequence();
    seq->append(window, AttentionPath::Decompressed, LogitsRows::All, logits);  // [window, V]
    for (size_t p = 0; p + 1 < window.size(); ++p) {
      const float* row = &logits[p * size_t(V)];
      double mx = row[0], sum = 0;
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      nll += std::log(sum) + mx - row[window[p + 1]];
      ++scored;
    }
  }
  const nlohmann::json j = {{"model", dir},
                            {"text", text_path},
                            {"weights", weight_format_name(weights)},
                            {"activations", activation_format_name(activations)},
                            {"context", window_tokens},
                            {"windows", windows},
                            {"tokens_scored", scored},
                            {"mean_nll", nll / double(scored)},
                            {"perplexity", std::exp(nll / double(scored))}};
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace dsv2
