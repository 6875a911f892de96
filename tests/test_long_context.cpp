// Contexts longer than one key group of the absorbed attention (1,024 keys in chunks of 256): the
// decode path, which splits the groups over threads and merges their partial softmaxes, equals the
// prefill path and does not depend on the thread count; with the f32 cache and with the bf16 one
// (which the decode path reads in place).
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
  cfg.kv_lora_rank = 64;  // the shapes the AVX-512 kernel takes (4 heads, 64 + 16 latent values)
  const std::string dir = test::temp_dir("long") + "/m";
  {
    ThreadPool pool(2);
    RandomModelOptions opt;
    opt.dtype = DType::F32;
    write_random_model(cfg, dir, opt, pool);
  }
  LoadedModel m = load_model(dir);
  std::mt19937 rng(5);
  const int64_t n = 2100, first = 2080;  // decode positions 2080..2099 attend to 3 groups of keys
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = int32_t(rng() % uint32_t(cfg.vocab_size));

  auto run = [&](int threads, AttentionPath tail_path, DType cache_dtype) {
    ThreadPool pool(threads);
    DeepseekV2 net(m.config, m.weights, pool);
    LatentCache cache = net.make_cache(n, cache_dtype);
    std::vector<float> logits, all;
    net.forward(std::vector<int32_t>(ids.begin(), ids.begin() + first), cache, AttentionPath::Decompressed, LogitsRows::Last,
                logits);
    for (int64_t p = first; p < n; ++p) {
      net.forward({ids[size_t(p)]}, cache, tail_path, LogitsRows::Last, logits);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  };
  for (DType cache_dtype : {DType::F32, DType::BF16}) {
    const std::vector<float> absorbed = run(2, AttentionPath::Absorbed, cache_dtype);
    const std::vector<float> decompressed = run(2, AttentionPath::Decompressed, cache_dtype);
    const int64_t V = cfg.vocab_size;
    // Both paths see the same cached values; they differ in the order of f32 sums: ~1e-6.
    for (int64_t p = 0; p < n - first; ++p)
      ASSERT_LE(test::rel_l2(&absorbed[size_t(p * V)], &decompressed[size_t(p * V)], size_t(V)), 1e-5)
          << "position " << first + p << " cache " << dtype_name(cache_dtype);
    EXPECT_EQ(run(1, AttentionPath::Absorbed, cache_dtype), absorbed) << dtype_name(cache_dtype);
  }
}

}  // namespace
}  // namespace dsv2
