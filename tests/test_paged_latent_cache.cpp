// The paged latent cache: the forward over blocks of a shared pool, in a shuffled order, gives
// exactly the logits of the contiguous cache (both paths, chunked).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/paged_latent_cache.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "test_util.h"

namespace dsv2 {
namespace {

TEST(PagedLatentCache, ShuffledBlocksGiveTheContiguousLogitsExactly) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    test::Golden g = test::load_golden("lite_like");
    LoadedModel model = load_model(g.dir);
    ThreadPool pool(2);
    DeepseekV2 net(model.config, model.weights, pool);
    const int32_t block_size = 4;
    const int64_t n = g.n_ids;
    LatentBlockPool blocks(32, model.config.num_hidden_layers, block_size, model.config.latent_width(), dtype);
    PagedLatentCache paged(blocks);
    std::vector<BlockId> order(32);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(7));
    order.resize(size_t((n + block_size - 1) / block_size));
    paged.block_table() = order;
    LatentCache contiguous = net.make_cache(n, dtype);

    // Chunks of 5 (crossing block edges) through the decompressed path, then the rest one at a time.
    std::vector<float> want, got;
    int64_t at = 0;
    while (at < n) {
      const int64_t take = at < n / 2 ? std::min<int64_t>(5, n / 2 - at) : 1;
      std::vector<int32_t> ids(g.ids.begin() + at, g.ids.begin() + at + take);
      const AttentionPath path = take > 1 ? AttentionPath::Decompressed : AttentionPath::Absorbed;
      net.forward(ids, contiguous, path, LogitsRows::All, want);
      net.forward(ids, paged, path, LogitsRows::All, got);
      ASSERT_EQ(want, got) << "tokens " << at << ".." << at + take;
      at += take;
    }
    EXPECT_EQ(paged.length(), n);
  }
}

TEST(PagedLatentCache, WritingPastTheBlockTableIsAnError) {
  LatentBlockPool blocks(2, 1, 4, 8, DType::F32);
  PagedLatentCache paged(blocks);
  paged.block_table() = {1};
  std::vector<float> row(8, 1.0f), out(8);
  paged.write(0, 3, row.data());
  paged.read(0, 3, 1, out.data());
  EXPECT_EQ(out, row);
  EXPECT_THROW(paged.write(0, 4, row.data()), Error);
  EXPECT_THROW(paged.set_length(5), Error);
}

}  // namespace
}  // namespace dsv2
