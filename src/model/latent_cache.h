// The MLA latent KV cache of one sequence: per layer and token only the normalised latent c
// (kv_lora_rank values) and the rotated shared key k_pe' (qk_rope_head_dim values), 576 values
// for the released models. Stored as f32 (exact) or bf16 (half the memory).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace dsv2 {

// What the forward needs of a sequence's latent cache, wherever its rows live: one contiguous
// buffer (LatentCache below) or blocks of a shared pool (engine/paged_latent_cache.h).
class LatentStorage {
 public:
  virtual ~LatentStorage() = default;
  virtual int64_t n_layers() const = 0;
  virtual int64_t width() const = 0;     // kv_lora_rank + qk_rope_head_dim
  virtual int64_t capacity() const = 0;  // tokens
  virtual int64_t length() const = 0;    // tokens committed
  // row: [width] = [c (kv_lora_rank) ; k_pe' (qk_rope_head_dim)]
  virtual void write(int64_t layer, int64_t pos, const float* row) = 0;
  // dst: [n, width], rows pos0 .. pos0+n-1 of `layer`.
  virtual void read(int64_t layer, int64_t pos0, int64_t n, float* dst) const = 0;
  // Marks tokens [0, n) as the sequence (after a forward wrote them, or to roll back).
  virtual void set_length(int64_t n) = 0;
  // Rows [0, capacity) of `layer` in place as one f32 array [capacity, width] when the storage holds
  // them so (the forward then reads the cache without copying it); nullptr otherwise.
  virtual const float* rows_in_place(int64_t layer) const { return nullptr; }
  // The same for storage that holds them as one bf16 array [capacity, width].
  virtual const uint16_t* bf16_rows_in_place(int64_t layer) const { return nullptr; }
  // dst: [n, width] bf16, rows pos0 .. pos0+n-1 of `layer` copied as stored, when the storage holds
  // bf16 rows (not in one array: else bf16_rows_in_place); false, with nothing read, otherwise.
  virtual bool read_bf16(int64_t layer, int64_t pos0, int64_t n, uint16_t* dst) const { return false; }
};

// One sequence's cache in one contiguous buffer.
class LatentCache : public LatentStorage {
 public:
  // Unwritten slots hold NaN so that reading one shows up in every result.
  LatentCache(int64_t n_layers, int64_t width, int64_t capacity, DType dtype);

  int64_t n_layers() const override { return n_layers_; }
  int64_t width() const override { return width_; }
  int64_t capacity() const override { return capacity_; }
  int64_t length() const override { return length_; }
  DType dtype() const { return dtype_; }
  size_t bytes_per_token() const { return size_t(n_layers_ * width_) * dtype_size(dtype_); }

  void write(int64_t layer, int64_t pos, const float* row) override;
  void read(int64_t layer, int64_t pos0, int64_t n, float* dst) const override;
  void set_length(int64_t n) override;
  const float* rows_in_place(int64_t layer) const override {
    return dtype_ == DType::F32 ? f32_.data() + offset(layer, 0) : nullptr;
  }
  const uint16_t* bf16_rows_in_place(int64_t layer) const override {
    return dtype_ == DType::BF16 ? half_.data() + offset(layer, 0) : nullptr;
  }

 private:
  size_t offset(int64_t layer, int64_t pos) const { return size_t((layer * capacity_ + pos) * width_); }
  int64_t n_layers_, width_, capacity_;
  int64_t length_ = 0;
  DType dtype_;
  std::vector<float> f32_;      // [layers, capacity, width] when dtype is F32
  std::vector<uint16_t> half_;  // same layout for BF16 / F16
};

}  // namespace dsv2
