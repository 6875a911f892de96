#include "engine/block_manager.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace dsv2 {

uint64_t chain_block_hash(uint64_t parent, std::span<const int32_t> ids) {
  // FNV-1a over the parent hash and the ids, finished with a splitmix64 mix.
  uint64_t h = 0xcbf29ce484222325ull ^ parent;
  auto mix_in = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix_in(parent);
  for (int32_t id : ids) mix_in(uint64_t(uint32_t(id)));
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

BlockManager::BlockManager(int32_t n_blocks, int32_t block_size)
    : block_size_(block_size),
      ref_counts_(size_t(std::max(n_blocks, 0)), 0),
      lru_slot_(size_t(std::max(n_blocks, 0))),
      in_lru_(size_t(std::max(n_blocks, 0)), false),
      registration_(size_t(std::max(n_blocks, 0))) {
  check(n_blocks > 0, "the block manager needs at least one block, got " + std::to_string(n_blocks));
  check(block_size > 0, "the block size must be > 0 tokens, got " + std::to_string(block_size));
  // Hand out low ids first: pop_back takes the last element.
  for (BlockId b = n_blocks - 1; b >= 0; --b) empty_.push_back(b);
}

std::vector<BlockId> BlockManager::acquire_cached_prefix(std::span<const int32_t> ids, int64_t max_tokens) {
  const int64_t usable = std::min<int64_t>(int64_t(ids.size()), std::max<int64_t>(max_tokens, 0));
  lookup_tokens_ += usable / block_size_ * block_size_;
  std::vector<BlockId> found;
  extend_cached_prefix(found, ids, max_tokens);
  return found;
}

void BlockManager::extend_cached_prefix(std::vector<BlockId>& prefix, std::span<const int32_t> ids, int64_t max_tokens) {
  const int64_t usable = std::min<int64_t>(int64_t(ids.size()), std::max<int64_t>(max_tokens, 0));
  const int64_t full = usable / block_size_;
  uint64_t parent = prefix.empty() ? kRootBlockHash : registration_[size_t(prefix.back())]->hash;
  for (int64_t i = int64_t(prefix.size()); i < full; ++i) {
    auto block_ids = ids.subspan(size_t(i * block_size_), size_t(block_size_));
    const uint64_t h = chain_block_hash(parent, block_ids);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const Registered& reg = *registration_[size_t(it->second)];
    if (reg.parent != parent || !std::equal(reg.ids.begin(), reg.ids.end(), block_ids.begin(), block_ids.end())) break;
    const BlockId b = it->second;
    if (ref_counts_[size_t(b)]++ == 0 && in_lru_[size_t(b)]) {
      evictable_.erase(lru_slot_[size_t(b)]);
      in_lru_[size_t(b)] = false;
    }
    prefix.push_back(b);
    hit_tokens_ += block_size_;
    parent = h;
  }
}

std::optional<BlockId> BlockManager::allocate() {
  BlockId b;
  if (!empty_.empty()) {
    b = empty_.back();
    empty_.pop_back();
  } else if (!evictable_.empty()) {
    b = evictable_.front();
    evictable_.pop_front();
    in_lru_[size_t(b)] = false;
    forget_registration(b);
  } else {
    return std::nullopt;
  }
  ref_counts_[size_t(b)] = 1;
  return b;
}

void BlockManager::release(BlockId b) {
  check(b >= 0 && b < total_blocks() && ref_counts_[size_t(b)] > 0,
        "block manager: release of block " + std::to_string(b) + " that is not referenced");
  if (--ref_counts_[size_t(b)] > 0) return;
  if (registration_[size_t(b)]) {
    lru_slot_[size_t(b)] = evictable_.insert(evictable_.end(), b);
    in_lru_[size_t(b)] = true;
  } else {
    empty_.push_back(b);
  }
}

void BlockManager::release_all(std::span<const BlockId> blocks) {
  for (BlockId b : blocks) release(b);
}

uint64_t BlockManager::register_full_block(BlockId b, uint64_t parent, std::span<const int32_t> ids) {
  check(int64_t(ids.size()) == block_size_, "block manager: only full blocks are registered");
  check(b >= 0 && b < total_blocks() && ref_counts_[size_t(b)] > 0, "block manager: registering an unreferenced block");
  const uint64_t h = chain_block_hash(parent, ids);
  if (registration_[size_t(b)] || by_hash_.count(h)) return h;
  registration_[size_t(b)] = Registered{h, std::vector<int32_t>(ids.begin(), ids.end()), parent};
  by_hash_.emplace(h, b);
  return h;
}

void BlockManager::forget_registration(BlockId b) {
  auto& reg = registration_[size_t(b)];
  if (!reg) return;
  by_hash_.erase(reg->hash);
  reg.reset();
}

}  // namespace dsv2
