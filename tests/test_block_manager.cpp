// The block manager: allocation, freeing, reference counts, prefix sharing (and extending a held
// prefix), LRU eviction order, running out of blocks.
#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "core/error.h"
#include "engine/block_manager.h"

namespace dsv2 {
namespace {

std::vector<int32_t> iota_ids(int n, int start = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Allocates ceil(n / bs) blocks for `ids` and registers the full ones, as a sequence would after
// computing them.
std::vector<BlockId> fill_and_register(BlockManager& m, const std::vector<int32_t>& ids) {
  std::vector<BlockId> table;
  const int bs = m.block_size();
  uint64_t parent = kRootBlockHash;
  for (size_t at = 0; at < ids.size(); at += size_t(bs)) {
    auto b = m.allocate();
    EXPECT_TRUE(b.has_value());
    table.push_back(*b);
    if (at + size_t(bs) <= ids.size()) parent = m.register_full_block(*b, parent, std::span(ids).subspan(at, size_t(bs)));
  }
  return table;
}

TEST(BlockManager, AllocatesEveryBlockOnceThenRunsOut) {
  BlockManager m(4, 16);
  std::set<BlockId> seen;
  for (int i = 0; i < 4; ++i) {
    auto b = m.allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(seen.insert(*b).second);
    EXPECT_EQ(m.ref_count(*b), 1);
  }
  EXPECT_EQ(m.used_blocks(), 4);
  EXPECT_EQ(m.free_blocks(), 0);
  EXPECT_FALSE(m.allocate().has_value());
  m.release(2);
  EXPECT_EQ(m.free_blocks(), 1);
  EXPECT_EQ(m.allocate(), std::optional<BlockId>(2));
}

TEST(BlockManager, ReleasingAnUnreferencedBlockIsAnError) {
  BlockManager m(2, 4);
  EXPECT_THROW(m.release(0), Error);
  auto b = m.allocate();
  m.release(*b);
  EXPECT_THROW(m.release(*b), Error);
  EXPECT_THROW(BlockManager(0, 16), Error);
  EXPECT_THROW(BlockManager(4, 0), Error);
}

TEST(BlockManager, SharedPrefixReusesFullBlocksOnly) {
  BlockManager m(8, 4);
  std::vector<int32_t> a = iota_ids(10);  // 2 full blocks + 2 tokens
  std::vector<BlockId> ta = fill_and_register(m, a);
  ASSERT_EQ(ta.size(), 3u);
  EXPECT_EQ(m.cached_blocks(), 2);

  std::vector<int32_t> b = iota_ids(9);  // same first 9 tokens
  b.push_back(7);
  std::vector<BlockId> hit = m.acquire_cached_prefix(b, int64_t(b.size()) - 1);
  ASSERT_EQ(hit.size(), 2u);
  EXPECT_EQ(hit[0], ta[0]);
  EXPECT_EQ(hit[1], ta[1]);
  EXPECT_EQ(m.ref_count(ta[0]), 2);
  EXPECT_EQ(m.prefix_hit_tokens(), 8);
  EXPECT_EQ(m.prefix_lookup_tokens(), 8);
  EXPECT_DOUBLE_EQ(m.prefix_hit_rate(), 1.0);

  // A different first token shares nothing: the hash chains through every earlier block.
  std::vector<int32_t> c = a;
  c[0] = 5;
  EXPECT_TRUE(m.acquire_cached_prefix(c, 100).empty());
  // The same second block after a different first block is not a hit either.
  EXPECT_DOUBLE_EQ(m.prefix_hit_rate(), 0.5);

  // max_tokens caps the prefix (one token must be left to compute).
  std::vector<BlockId> capped = m.acquire_cached_prefix(a, 7);
  ASSERT_EQ(capped.size(), 1u);
  m.release_all(capped);
  m.release_all(hit);
  EXPECT_EQ(m.ref_count(ta[0]), 1);
}

TEST(BlockManager, AHeldPrefixExtendsWithBlocksRegisteredSince) {
  BlockManager m(8, 4);
  const std::vector<int32_t> ids = iota_ids(13);
  std::vector<BlockId> computing = {*m.allocate()};  // another sequence computes ids block by block
  m.register_full_block(computing[0], kRootBlockHash, std::span(ids).first(4));
  std::vector<BlockId> prefix = m.acquire_cached_prefix(ids, 12);
  ASSERT_EQ(prefix.size(), 1u);
  computing.push_back(*m.allocate());
  computing.push_back(*m.allocate());
  uint64_t parent = chain_block_hash(kRootBlockHash, std::span(ids).first(4));
  parent = m.register_full_block(computing[1], parent, std::span(ids).subspan(4, 4));
  m.register_full_block(computing[2], parent, std::span(ids).subspan(8, 4));
  m.extend_cached_prefix(prefix, ids, 11);  // at most 11 tokens: 2 full blocks
  EXPECT_EQ(prefix, std::vector<BlockId>(computing.begin(), computing.begin() + 2));
  m.extend_cached_prefix(prefix, ids, 12);
  EXPECT_EQ(prefix, computing);
  EXPECT_EQ(m.ref_count(computing[2]), 2);
  EXPECT_EQ(m.prefix_lookup_tokens(), 12);  // looked up once
  EXPECT_EQ(m.prefix_hit_tokens(), 12);
}

TEST(BlockManager, CachedBlocksSurviveReleaseUntilEvictedLeastRecentFirst) {
  BlockManager m(4, 2);
  std::vector<int32_t> first = iota_ids(2, 10), second = iota_ids(2, 20), third = iota_ids(2, 30);
  auto t1 = fill_and_register(m, first);
  auto t2 = fill_and_register(m, second);
  auto t3 = fill_and_register(m, third);
  m.release_all(t2);  // released first: evicted first
  m.release_all(t1);
  m.release_all(t3);
  EXPECT_EQ(m.used_blocks(), 0);
  EXPECT_EQ(m.free_blocks(), 4);
  EXPECT_EQ(m.cached_blocks(), 3);

  // Reusing `first` takes it out of the LRU.
  std::vector<int32_t> again = first;
  again.push_back(1);
  auto hit = m.acquire_cached_prefix(again, 2);
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0], t1[0]);

  auto empty = m.allocate();  // the never-used block goes before any cached one
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(m.cached_blocks(), 3);
  auto evict1 = m.allocate();
  EXPECT_EQ(evict1, std::optional<BlockId>(t2[0]));
  EXPECT_EQ(m.cached_blocks(), 2);
  auto evict2 = m.allocate();
  EXPECT_EQ(evict2, std::optional<BlockId>(t3[0]));
  EXPECT_FALSE(m.allocate().has_value());  // t1 is referenced again
  // The evicted prefixes are gone from the cache.
  std::vector<int32_t> second_again = second;
  second_again.push_back(1);
  EXPECT_TRUE(m.acquire_cached_prefix(second_again, 2).empty());
}

TEST(BlockManager, DuplicatePrefixRegistrationKeepsTheFirstBlock) {
  BlockManager m(4, 2);
  std::vector<int32_t> ids = iota_ids(2);
  auto a = fill_and_register(m, ids);
  auto b = fill_and_register(m, ids);  // computed concurrently by another sequence
  EXPECT_EQ(m.cached_blocks(), 1);
  m.release_all(b);  // unregistered: straight back to empty
  m.release_all(a);
  EXPECT_EQ(m.free_blocks(), 4);
  std::vector<int32_t> probe = ids;
  probe.push_back(0);
  auto hit = m.acquire_cached_prefix(probe, 2);
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0], a[0]);
}

}  // namespace
}  // namespace dsv2
