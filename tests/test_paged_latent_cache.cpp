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

TEST(ForwardBatch, EachSequenceGetsExactlyItsAloneLogits) {
  test::Golden g = test::load_golden("v2_like");
  LoadedModel model = load_model(g.dir);
  ThreadPool pool(2);
  DeepseekV2 net(model.config, model.weights, pool);
  const int64_t V = model.config.vocab_size;
  // Three sequences with different histories: decoding, prefilling a chunk, and a fresh prompt.
  std::vector<std::vector<int32_t>> history = {{g.ids.begin(), g.ids.begin() + 9}, {g.ids.begin() + 3, g.ids.begin() + 7}, {}};
  std::vector<std::vector<int32_t>> step = {{g.ids[9]}, {g.ids.begin() + 10, g.ids.begin() + 15}, {g.ids.begin(), g.ids.begin() + 6}};
  const AttentionPath paths[] = {AttentionPath::Absorbed, AttentionPath::Decompressed, AttentionPath::Decompressed};
  std::vector<LatentCache> alone, together;
  std::vector<float> want, logits;
  for (size_t i = 0; i < 3; ++i) {
    alone.push_back(net.make_cache(32, DType::F32));
    together.push_back(net.make_cache(32, DType::F32));
    if (!history[i].empty()) {
      net.forward(history[i], alone[i], AttentionPath::Decompressed, LogitsRows::Last, logits);
      net.forward(history[i], together[i], AttentionPath::Decompressed, LogitsRows::Last, logits);
    }
  }
  for (size_t i = 0; i < 3; ++i) {
    net.forward(step[i], alone[i], paths[i], LogitsRows::Last, logits);
    want.insert(want.end(), logits.begin(), logits.end());
  }
  std::vector<DeepseekV2::SequenceStep> steps;
  for (size_t i = 0; i < 3; ++i) steps.push_back({&step[i], &together[i], paths[i]});
  std::vector<float> got;
  net.forward_batch(steps, got);
  ASSERT_EQ(got.size(), size_t(3 * V));
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(std::vector<float>(got.begin() + i * V, got.begin() + (i + 1) * V), std::vector<float>(want.begin() + i * V, want.begin() + (i + 1) * V))
        << "sequence " << i;
    EXPECT_EQ(together[size_t(i)].length(), alone[size_t(i)].length());
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

// bf16 rows across block edges come back as stored (the absorbed path reads them without widening);
// an f32 pool has none to give.
TEST(PagedLatentCache, ReadsBf16RowsAsStored) {
  LatentBlockPool blocks(4, 2, 3, 5, DType::BF16);
  PagedLatentCache paged(blocks);
  paged.block_table() = {2, 0, 3};
  std::vector<float> rows(7 * 5);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = 0.37f * float(i) - 3.0f;
  for (int64_t pos = 0; pos < 7; ++pos) paged.write(1, pos, &rows[size_t(pos * 5)]);
  std::vector<uint16_t> got(6 * 5);
  ASSERT_TRUE(paged.read_bf16(1, 1, 6, got.data()));
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], f32_to_bf16(rows[i + 5])) << "value " << i;

  LatentBlockPool f32_blocks(1, 1, 4, 8, DType::F32);
  PagedLatentCache f32_paged(f32_blocks);
  f32_paged.block_table() = {0};
  EXPECT_FALSE(f32_paged.read_bf16(0, 0, 1, got.data()));
  EXPECT_THROW(f32_blocks.read_bf16(0, 0, 0, 1, got.data()), Error);
}

}  // namespace
}  // namespace dsv2
