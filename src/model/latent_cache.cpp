#include "model/latent_cache.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace dsv2 {

LatentCache::LatentCache(int64_t n_layers, int64_t width, int64_t capacity, DType dtype)
    : n_layers_(n_layers), width_(width), capacity_(capacity), dtype_(dtype) {
  check(capacity > 0, "latent cache capacity must be > 0 tokens");
  size_t n = size_t(n_layers * capacity * width);
  if (dtype == DType::F32) {
    f32_.assign(n, NAN);
  } else {
    half_.assign(n, dtype == DType::BF16 ? f32_to_bf16(NAN) : f32_to_f16(NAN));
  }
}

void LatentCache::write(int64_t layer, int64_t pos, const float* row) {
  check(pos >= 0 && pos < capacity_, "latent cache: position " + std::to_string(pos) + " is past its capacity of " +
                                         std::to_string(capacity_) + " tokens");
  if (dtype_ == DType::F32) {
    convert_from_f32(DType::F32, row, f32_.data() + offset(layer, pos), size_t(width_));
  } else {
    convert_from_f32(dtype_, row, half_.data() + offset(layer, pos), size_t(width_));
  }
}

void LatentCache::read(int64_t layer, int64_t pos0, int64_t n, float* dst) const {
  const size_t count = size_t(n * width_);
  if (dtype_ == DType::F32) {
    convert_to_f32(DType::F32, f32_.data() + offset(layer, pos0), dst, count);
  } else {
    convert_to_f32(dtype_, half_.data() + offset(layer, pos0), dst, count);
  }
}

void LatentCache::set_length(int64_t n) {
  check(n >= 0 && n <= capacity_, "latent cache: length " + std::to_string(n) + " out of range");
  length_ = n;
}

}  // namespace dsv2
