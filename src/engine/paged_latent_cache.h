// The CPU latent cache in pages: one pool of blocks shared by every sequence, and a per-sequence
// view that maps positions through its block table (position p lives in block table[p / block_size],
// slot p % block_size). The view is a LatentStorage, so DeepseekV2::forward runs over it unchanged.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "engine/block_manager.h"
#include "model/latent_cache.h"

namespace dsv2 {

class LatentBlockPool {
 public:
  // Unwritten slots hold NaN so that reading one shows up in every result.
  LatentBlockPool(int32_t n_blocks, int64_t n_layers, int32_t block_size, int64_t width, DType dtype);

  int32_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t n_layers() const { return n_layers_; }
  int64_t width() const { return width_; }
  DType dtype() const { return dtype_; }

  // row: [width] into (block, layer, slot).
  void write(BlockId block, int64_t layer, int32_t slot, const float* row);
  // dst: [n, width] from slots slot0 .. slot0+n-1 of (block, layer); they must lie in the block.
  void read(BlockId block, int64_t layer, int32_t slot0, int32_t n, float* dst) const;
  // The same rows copied as stored, for a BF16 pool.
  void read_bf16(BlockId block, int64_t layer, int32_t slot0, int32_t n, uint16_t* dst) const;

 private:
  // Layout [n_blocks, n_layers, block_size, width]: one block's rows of a layer are contiguous.
  size_t offset(BlockId block, int64_t layer, int32_t slot) const {
    return ((size_t(block) * size_t(n_layers_) + size_t(layer)) * size_t(block_size_) + size_t(slot)) * size_t(width_);
  }
  int32_t n_blocks_, block_size_;
  int64_t n_layers_, width_;
  DType dtype_;
  std::vector<float> f32_;      // when dtype is F32
  std::vector<uint16_t> half_;  // BF16 / F16
};

// One sequence's view of the pool. Capacity is what its block table covers; the owner (the
// scheduler) appends blocks before a forward that needs them.
class PagedLatentCache : public LatentStorage {
 public:
  explicit PagedLatentCache(LatentBlockPool& pool) : pool_(pool) {}

  std::vector<BlockId>& block_table() { return table_; }
  const std::vector<BlockId>& block_table() const { return table_; }

  int64_t n_layers() const override { return pool_.n_layers(); }
  int64_t width() const override { return pool_.width(); }
  int64_t capacity() const override { return int64_t(table_.size()) * pool_.block_size(); }
  int64_t length() const override { return length_; }
  void write(int64_t layer, int64_t pos, const float* row) override;
  void read(int64_t layer, int64_t pos0, int64_t n, float* dst) const override;
  bool read_bf16(int64_t layer, int64_t pos0, int64_t n, uint16_t* dst) const override;
  void set_length(int64_t n) override;

 private:
  LatentBlockPool& pool_;
  std::vector<BlockId> table_;  // [ceil(capacity / block_size)]
  int64_t length_ = 0;
};

}  // namespace dsv2
