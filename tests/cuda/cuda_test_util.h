// Helpers of the GPU tests: device buffers from host vectors (and back), NaN-poisoned outputs,
// random weights in any stored dtype (FP8 through the host reference quantizer), a paged latent cache
// with shuffled blocks and NaN in its unused slots, and a routed-expert problem with its f32 reference.
#pragma once
#include <algorithm>
#include <cstddef>
#include <numeric>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/fp8.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"
#include "ops/ref/ops_ref.h"
#include "test_util.h"

namespace dsv2::cuda_test {

using cuda::DeviceBuffer;

template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  DSV2_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}
inline std::vector<float> download(const DeviceBuffer& b, size_t n) {
  std::vector<float> v(n);
  DSV2_CUDA_CHECK(cudaMemcpy(v.data(), b.get(), n * 4, cudaMemcpyDeviceToHost));
  return v;
}
inline DeviceBuffer nan_buffer(size_t floats) {
  DeviceBuffer b(floats * 4);
  DSV2_CUDA_CHECK(cudaMemset(b.get(), 0xff, floats * 4));
  return b;
}

// `mats` random [rows, cols] matrices one after another, stored in `dtype`; `as_f32` receives the
// values the device sees (FP8: quantized per tile by the host reference, the scales applied) and,
// for FP8, `scales` each matrix's tile scales one after another.
inline std::vector<std::byte> make_matrices(DType dtype, int64_t mats, int64_t rows, int64_t cols, std::mt19937& rng,
                                            std::vector<float>& as_f32, std::vector<float>* scales = nullptr,
                                            float scale = 1.0f) {
  const size_t n = size_t(mats * rows * cols);
  std::vector<float> v = test::randn(n, rng, scale);
  std::vector<std::byte> bytes(n * dtype_size(dtype));
  as_f32.resize(n);
  if (dtype == DType::F8_E4M3) {
    if (scales) scales->clear();
    for (int64_t m = 0; m < mats; ++m) {
      const size_t at = size_t(m * rows * cols);
      const Fp8Matrix q = quantize_fp8_tiles(&v[at], rows, cols);
      std::copy(q.codes.begin(), q.codes.end(), reinterpret_cast<uint8_t*>(bytes.data()) + at);
      dequantize_fp8_tiles(q, rows, cols, &as_f32[at]);
      if (scales) scales->insert(scales->end(), q.scales.begin(), q.scales.end());
    }
    return bytes;
  }
  convert_from_f32(dtype, v.data(), bytes.data(), n);
  convert_to_f32(dtype, bytes.data(), as_f32.data(), n);
  return bytes;
}
// One matrix of n values (any shape but FP8's).
inline std::vector<std::byte> make_weights(DType dtype, size_t n, std::mt19937& rng, std::vector<float>& as_f32,
                                           float scale = 1.0f) {
  return make_matrices(dtype, 1, 1, int64_t(n), rng, as_f32, nullptr, scale);
}

// v rounded to `dtype` and back (what a kernel that feeds the tensor cores in `dtype` sees).
inline std::vector<float> rounded(DType dtype, std::vector<float> v) {
  std::vector<std::byte> bytes(v.size() * dtype_size(dtype));
  convert_from_f32(dtype, v.data(), bytes.data(), v.size());
  convert_to_f32(dtype, bytes.data(), v.data(), v.size());
  return v;
}

// A paged latent cache of `layers` layers on the device, `sequences` block-table rows of `max_blocks`
// blocks each (plus `spare_blocks` no row names), its blocks handed out in shuffled order and every
// slot NaN until store() fills it.
struct ShuffledPagedCache {
  cuda::PagedLatentCache cache;
  int64_t max_blocks;
  std::vector<int32_t> tables;  // [sequences, max_blocks]
  std::vector<std::byte> image;  // the cache's bytes, uploaded by upload()
  DeviceBuffer data;

  ShuffledPagedCache(DType dtype, int64_t layers, int64_t sequences, int64_t max_blocks, int64_t block, int64_t width,
                     std::mt19937& rng, int64_t spare_blocks = 0)
      : cache{nullptr, dtype, layers, sequences * max_blocks + spare_blocks, block, width}, max_blocks(max_blocks) {
    std::vector<int32_t> order(size_t(cache.n_blocks));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    tables.assign(order.begin(), order.begin() + sequences * max_blocks);
    image.assign(size_t(layers * cache.n_blocks * block * width) * dtype_size(dtype), std::byte{0xff});
  }
  // Sequence `seq`'s positions 0 .. rows.size() / width − 1 in `layer`; `rows` ([len, width]) becomes
  // what the cache holds (rounded to its dtype).
  void store(int64_t layer, int64_t seq, std::vector<float>& rows) {
    const int64_t width = cache.width, block = cache.block_size, len = int64_t(rows.size()) / width;
    const size_t row_bytes = size_t(width) * dtype_size(cache.dtype);
    std::vector<std::byte> stored(rows.size() * dtype_size(cache.dtype));
    convert_from_f32(cache.dtype, rows.data(), stored.data(), rows.size());
    convert_to_f32(cache.dtype, stored.data(), rows.data(), rows.size());
    for (int64_t t = 0; t < len; ++t) {
      const int64_t slot = layer * cache.n_blocks * block + int64_t(tables[size_t(seq * max_blocks + t / block)]) * block + t % block;
      std::copy_n(stored.begin() + long(size_t(t) * row_bytes), row_bytes, image.begin() + long(size_t(slot) * row_bytes));
    }
  }
  // The stored rows to the device (cache.data points there).
  void upload() {
    data = cuda_test::upload(image);
    cache.data = data.get();
  }
};

// A routed-expert problem's shape: T tokens of H values, E experts of intermediate size I, K a token.
struct MoeShape {
  int64_t T, H, I, E, K;
};

// A routed-expert problem: K distinct experts per token as the router picks them, weights in dtype.
struct MoeProblem : MoeShape {
  DType dtype;
  std::vector<float> gate, up, down, x, gw, residual;  // weights as the device sees them
  std::vector<std::byte> gate_bytes, up_bytes, down_bytes;
  std::vector<float> gate_scales, up_scales, down_scales;  // FP8
  std::vector<int32_t> ids;

  MoeProblem(const MoeShape& s, DType dt, std::mt19937& rng) : MoeShape(s), dtype(dt) {
    gate_bytes = make_matrices(dt, E, I, H, rng, gate, &gate_scales, 0.2f);
    up_bytes = make_matrices(dt, E, I, H, rng, up, &up_scales, 0.2f);
    down_bytes = make_matrices(dt, E, H, I, rng, down, &down_scales, 0.2f);
    x = test::randn(size_t(T * H), rng);
    gw = test::randn(size_t(T * K), rng);
    residual = test::randn(size_t(T * H), rng);
    ids.resize(size_t(T * K));
    std::vector<int32_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t t = 0; t < T; ++t) {
      std::shuffle(order.begin(), order.end(), rng);
      std::copy_n(order.begin(), K, ids.begin() + t * K);
    }
  }
  // residual + Σ_k gw · down_e(silu(gate_e x) ⊙ up_e x). `round`: the expert inputs x and h rounded to
  // the tensor cores' type first (and FP8 weights with their scales to bf16), as the tensor-core path does.
  std::vector<float> reference(bool round) const {
    const DType mma = dtype == DType::F16 ? DType::F16 : DType::BF16;
    const bool round_weights = round && dtype == DType::F8_E4M3;
    const std::vector<float> xin = round ? rounded(mma, x) : x;
    const std::vector<float> wg = round_weights ? rounded(mma, gate) : gate, wu = round_weights ? rounded(mma, up) : up,
                             wd = round_weights ? rounded(mma, down) : down;
    std::vector<float> routed(size_t(T * H), 0.0f);
    for (int64_t p = 0; p < T * K; ++p) {
      const int64_t e = ids[size_t(p)], t = p / K;
      std::vector<float> g(static_cast<size_t>(I)), u(static_cast<size_t>(I)), y(static_cast<size_t>(H));
      ref::matmul(&xin[size_t(t * H)], 1, Matrix{DType::F32, &wg[size_t(e * I * H)], I, H}, g.data());
      ref::matmul(&xin[size_t(t * H)], 1, Matrix{DType::F32, &wu[size_t(e * I * H)], I, H}, u.data());
      ref::silu_mul(g.data(), u.data(), g.data(), I);
      if (round) g = rounded(mma, g);
      ref::matmul(g.data(), 1, Matrix{DType::F32, &wd[size_t(e * H * I)], H, I}, y.data());
      for (int64_t j = 0; j < H; ++j) routed[size_t(t * H + j)] += gw[size_t(p)] * y[size_t(j)];
    }
    std::vector<float> want = residual;
    for (size_t i = 0; i < want.size(); ++i) want[i] += routed[i];
    return want;
  }
};

// A MoeProblem's experts on the device.
struct DeviceExperts {
  DeviceBuffer gate, up, down, gate_scales, up_scales, down_scales;
  explicit DeviceExperts(const MoeProblem& p)
      : gate(upload(p.gate_bytes)), up(upload(p.up_bytes)), down(upload(p.down_bytes)), gate_scales(upload(p.gate_scales)),
        up_scales(upload(p.up_scales)), down_scales(upload(p.down_scales)) {}
  cuda::ExpertWeights weights(DType dtype) const {
    const bool fp8 = dtype == DType::F8_E4M3;
    return {dtype,
            gate.get(),
            up.get(),
            down.get(),
            fp8 ? gate_scales.get<float>() : nullptr,
            fp8 ? up_scales.get<float>() : nullptr,
            fp8 ? down_scales.get<float>() : nullptr};
  }
};

}  // namespace dsv2::cuda_test
