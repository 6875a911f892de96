// A paged latent-cache block manager (plain CPU bookkeeping, no cache memory): fixed-size blocks of
// `block_size` token slots, reference counts, and prefix caching. A full block whose tokens have been
// computed can be registered under the chained hash of every token up to its end (hash(prev block's
// hash, its own ids)); a later sequence whose prompt starts with the same tokens takes those blocks
// instead of recomputing them. Blocks nobody references but that hold a registered prefix stay cached
// in an LRU list and are evicted (oldest released first) only when a fresh block is needed.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace dsv2 {

using BlockId = int32_t;

// The chained hash of a full block: covers `ids` and, through `parent`, every block before it.
uint64_t chain_block_hash(uint64_t parent, std::span<const int32_t> ids);
inline constexpr uint64_t kRootBlockHash = 0x9e3779b97f4a7c15ull;

class BlockManager {
 public:
  BlockManager(int32_t n_blocks, int32_t block_size);

  int32_t block_size() const { return block_size_; }
  int32_t total_blocks() const { return int32_t(ref_counts_.size()); }
  // Blocks referenced by at least one sequence.
  int32_t used_blocks() const { return total_blocks() - free_blocks(); }
  // Blocks no sequence references (empty, or cached and evictable).
  int32_t free_blocks() const { return int32_t(empty_.size() + evictable_.size()); }
  int32_t cached_blocks() const { return int32_t(by_hash_.size()); }
  int32_t ref_count(BlockId b) const { return ref_counts_.at(size_t(b)); }

  // Takes references on the cached blocks holding the longest prefix of `ids` made of full blocks,
  // at most max_tokens tokens (callers pass prompt length - 1 so that one token is left to compute).
  // Returns their ids in order; counts lookups and hits for the hit rate.
  std::vector<BlockId> acquire_cached_prefix(std::span<const int32_t> ids, int64_t max_tokens);
  // Appends to `prefix` (held blocks from acquire_cached_prefix over the same ids) references on the
  // cached blocks that now follow it, up to max_tokens tokens in all. Counts hits only: the tokens
  // were counted as looked up when the prefix was first acquired.
  void extend_cached_prefix(std::vector<BlockId>& prefix, std::span<const int32_t> ids, int64_t max_tokens);
  // A fresh block (reference count 1), evicting the least recently released cached block if no
  // empty block is left; nullopt when every block is referenced.
  std::optional<BlockId> allocate();
  // Drops one reference; at zero the block becomes evictable (if registered) or empty.
  void release(BlockId b);
  void release_all(std::span<const BlockId> blocks);
  // Registers full block `b` (referenced) as holding `ids` after the prefix hashed as `parent`;
  // returns its hash. If another block already holds that prefix, `b` stays unregistered.
  uint64_t register_full_block(BlockId b, uint64_t parent, std::span<const int32_t> ids);

  // Prefix cache statistics: tokens looked up and tokens found cached (full blocks).
  int64_t prefix_lookup_tokens() const { return lookup_tokens_; }
  int64_t prefix_hit_tokens() const { return hit_tokens_; }
  double prefix_hit_rate() const { return lookup_tokens_ == 0 ? 0.0 : double(hit_tokens_) / double(lookup_tokens_); }

 private:
  struct Registered {
    uint64_t hash;
    std::vector<int32_t> ids;  // the block's own tokens, compared on lookup so a hash collision cannot alias
    uint64_t parent;
  };
  void forget_registration(BlockId b);

  int32_t block_size_;
  std::vector<int32_t> ref_counts_;                      // [n_blocks]
  std::vector<BlockId> empty_;                           // unreferenced, holding nothing reusable
  std::list<BlockId> evictable_;                         // unreferenced, registered; front = least recently released
  std::vector<std::list<BlockId>::iterator> lru_slot_;   // [n_blocks] position in evictable_ when there
  std::vector<bool> in_lru_;                             // [n_blocks]
  std::vector<std::optional<Registered>> registration_;  // [n_blocks]
  std::unordered_map<uint64_t, BlockId> by_hash_;
  int64_t lookup_tokens_ = 0, hit_tokens_ = 0;
};

}  // namespace dsv2
