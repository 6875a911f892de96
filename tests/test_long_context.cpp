// Contexts longer than one key chunk of the absorbed attention (256 keys): the decode path, which
// splits the keys over threads and merges partial softmaxes, equals the prefill path and does not
// depend on the thread count.
#include <gtest/gtest.h>

#include <random>

#include "core/thread_pool.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

namespace dsv2 {
namespace {

TEST(LongContext, AbsorbedOverManyKeyChunksEqualsDecompressed) {
  ModelConfig cfg = preset_config("tiny");
  cfg.num_hidden_layers = 2;
  const std::string dir = test::temp_dir("long") + "/m";
  {
    ThreadPool pool(2);
    RandomModelOptions opt;
    opt.dtype = DType::F32;
    write_random_model(cfg, dir, opt, pool);
  }
  LoadedModel m = load_model(dir);
  std::mt19937 rng(5);
  const int64_t n = 560, first = 530;  // decode positions 530..559 attend to 3 chunks of keys
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = int32_t(rng() % uint32_t(cfg.vocab_size));

  auto run = [&](int threads, AttentionPath tail_path) {
    ThreadPool pool(threads);
    DeepseekV2 net(m.config, m.weights, pool);
    LatentCache cache = net.make_cache(n, DType::F32);
    std::vector<float> logits, all;
    net.forward(std::vector<int32_t>(ids.begin(), ids.begin() + first), cache, AttentionPath::Decompressed, LogitsRows::Last,
                logits);
    for (int64_t p = first; p < n; ++p) {
      net.forward({ids[size_t(p)]}, cache, tail_path, LogitsRows::Last, logits);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  };
  const std::vector<float> absorbed = run(2, AttentionPath::Absorbed);
  const std::vector<float> decompressed = run(2, AttentionPath::Decompressed);
  const int64_t V = cfg.vocab_size;
  for (int64_t p = 0; p < n - first; ++p)
    ASSERT_LE(test::rel_l2(&absorbed[size_t(p * V)], &decompressed[size_t(p * V)], size_t(V)), 1e-5) << "position " << first + p;
  EXPECT_EQ(run(1, AttentionPath::Absorbed), absorbed);
}

}  // namespace
}  // namespace dsv2
