#include "engine/paged_latent_cache.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace dsv2 {

LatentBlockPool::LatentBlockPool(int32_t n_blocks, int64_t n_layers, int32_t block_size, int64_t width, DType dtype)
    : n_blocks_(n_blocks), block_size_(block_size), n_layers_(n_layers), width_(width), dtype_(dtype) {
  check(n_blocks > 0 && block_size > 0, "latent block pool: needs blocks > 0 and block size > 0, got " +
                                            std::to_string(n_blocks) + " blocks of " + std::to_string(block_size));
  const size_t n = size_t(n_blocks) * size_t(n_layers) * size_t(block_size) * size_t(width);
  if (dtype == DType::F32) {
    f32_.assign(n, NAN);
  } else {
    half_.assign(n, dtype == DType::BF16 ? f32_to_bf16(NAN) : f32_to_f16(NAN));
  }
}

void LatentBlockPool::write(BlockId block, int64_t layer, int32_t slot, const float* row) {
  if (dtype_ == DType::F32) {
    convert_from_f32(DType::F32, row, f32_.data() + offset(block, layer, slot), size_t(width_));
  } else {
    convert_from_f32(dtype_, row, half_.data() + offset(block, layer, slot), size_t(width_));
  }
}

void LatentBlockPool::read(BlockId block, int64_t layer, int32_t slot0, int32_t n, float* dst) const {
  const size_t count = size_t(n) * size_t(width_);
  if (dtype_ == DType::F32) {
    convert_to_f32(DType::F32, f32_.data() + offset(block, layer, slot0), dst, count);
  } else {
    convert_to_f32(dtype_, half_.data() + offset(block, layer, slot0), dst, count);
  }
}

void LatentBlockPool::read_bf16(BlockId block, int64_t layer, int32_t slot0, int32_t n, uint16_t* dst) const {
  check(dtype_ == DType::BF16, "latent block pool: bf16 rows read from a " + std::string(dtype_name(dtype_)) + " pool");
  const uint16_t* src = half_.data() + offset(block, layer, slot0);
  std::copy(src, src + size_t(n) * size_t(width_), dst);
}

void PagedLatentCache::write(int64_t layer, int64_t pos, const float* row) {
  check(pos >= 0 && pos < capacity(), "paged latent cache: position " + std::to_string(pos) +
                                          " is past the blocks of the sequence (" + std::to_string(capacity()) + " tokens)");
  const int32_t bs = pool_.block_size();
  pool_.write(table_[size_t(pos / bs)], layer, int32_t(pos % bs), row);
}

// Calls read_run(block, slot0, count, first row index) for the runs of rows pos0 .. pos0+n-1 that lie in one block.
template <typename ReadRun>
static void for_each_run(const std::vector<BlockId>& table, int32_t bs, int64_t pos0, int64_t n, ReadRun read_run) {
  for (int64_t pos = pos0; pos < pos0 + n;) {
    const int32_t slot = int32_t(pos % bs);
    const int32_t count = int32_t(std::min<int64_t>(bs - slot, pos0 + n - pos));
    read_run(table[size_t(pos / bs)], slot, count, pos - pos0);
    pos += count;
  }
}

void PagedLatentCache::read(int64_t layer, int64_t pos0, int64_t n, float* dst) const {
  for_each_run(table_, pool_.block_size(), pos0, n, [&](BlockId block, int32_t slot, int32_t count, int64_t row) {
    pool_.read(block, layer, slot, count, dst + row * pool_.width());
  });
}

bool PagedLatentCache::read_bf16(int64_t layer, int64_t pos0, int64_t n, uint16_t* dst) const {
  if (pool_.dtype() != DType::BF16) return false;
  for_each_run(table_, pool_.block_size(), pos0, n, [&](BlockId block, int32_t slot, int32_t count, int64_t row) {
    pool_.read_bf16(block, layer, slot, count, dst + row * pool_.width());
  });
  return true;
}

void PagedLatentCache::set_length(int64_t n) {
  check(n >= 0 && n <= capacity(), "paged latent cache: length " + std::to_string(n) + " out of range");
  length_ = n;
}

}  // namespace dsv2
