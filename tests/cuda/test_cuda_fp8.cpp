// FP8 weights on the GPU: the tile quantizer bit for bit against the host reference (core/fp8.h),
// the widening for cuBLAS, the GEMV's batch invariance, and the errors of FP8 matrices without scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "cuda/cuda_test_util.h"

namespace dsv2 {
namespace {

using cuda::DeviceBuffer;
using namespace cuda_test;

TEST(CudaFp8, QuantizerMatchesHostReference) {
  std::mt19937 rng(21);
  for (DType source : {DType::BF16, DType::F16, DType::F32}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 8}, {130, 300}, {256, 2048}, {1408, 640}}) {
      std::vector<float> x;
      auto bytes = make_weights(source, size_t(rows * cols), rng, x, 0.05f);
      for (int64_t c = 0; c < std::min<int64_t>(cols, 128); ++c) x[size_t(c)] = 0.0f;  // a row of zeros, not a tile
      if (rows > 128)  // a tile of zeros (scale 1)
        for (int64_t r = 128; r < std::min<int64_t>(rows, 256); ++r)
          for (int64_t c = 0; c < std::min<int64_t>(cols, 128); ++c) x[size_t(r * cols + c)] = 0.0f;
      convert_from_f32(source, x.data(), bytes.data(), x.size());
      const Fp8Matrix want = quantize_fp8_tiles(x.data(), rows, cols);
      DeviceBuffer dsrc = upload(bytes), dcodes(size_t(rows * cols)), dscales(want.scales.size() * 4),
                   dwide(size_t(rows * cols) * 2);
      DSV2_CUDA_CHECK(cudaMemset(dcodes.get(), 0x7f, size_t(rows * cols)));  // NaN codes
      cuda::quantize_fp8(dsrc.get(), source, rows, cols, dcodes.get(), dscales.get<float>(), nullptr);
      std::vector<uint8_t> codes(size_t(rows * cols));
      DSV2_CUDA_CHECK(cudaMemcpy(codes.data(), dcodes.get(), codes.size(), cudaMemcpyDeviceToHost));
      EXPECT_EQ(codes, want.codes) << dtype_name(source) << " " << rows << "x" << cols;
      EXPECT_EQ(download(dscales, want.scales.size()), want.scales) << dtype_name(source) << " " << rows << "x" << cols;
      // Widened for cuBLAS: each value times its scale, rounded to bf16.
      cuda::widen_fp8({DType::F8_E4M3, dcodes.get(), rows, cols, dscales.get<float>()}, dwide.get(), nullptr);
      std::vector<float> values(x.size()), wide(x.size());
      dequantize_fp8_tiles(want, rows, cols, values.data());
      std::vector<uint16_t> wide_bits(x.size());
      DSV2_CUDA_CHECK(cudaMemcpy(wide_bits.data(), dwide.get(), wide_bits.size() * 2, cudaMemcpyDeviceToHost));
      convert_to_f32(DType::BF16, wide_bits.data(), wide.data(), wide.size());
      EXPECT_EQ(wide, rounded(DType::BF16, values)) << rows << "x" << cols;
    }
  }
}

// Several matrices one after another (a layer's experts) widen in one launch as each would alone: 130 rows
// (a partial tile row per matrix), 48 (vectorised) and 40 (scalar) columns.
TEST(CudaFp8, MatricesWidenTogetherAsAlone) {
  std::mt19937 rng(23);
  for (int64_t cols : {48, 40}) {
    const int64_t mats = 3, rows = 130;
    std::vector<float> values, scales;
    auto codes = make_matrices(DType::F8_E4M3, mats, rows, cols, rng, values, &scales);
    DeviceBuffer dcodes = upload(codes), dscales = upload(scales), together(size_t(mats * rows * cols) * 2),
                 alone(size_t(rows * cols) * 2);
    cuda::widen_fp8_matrices(dcodes.get(), dscales.get<float>(), mats, rows, cols, together.get(), nullptr);
    std::vector<uint16_t> all(size_t(mats * rows * cols)), one(size_t(rows * cols));
    DSV2_CUDA_CHECK(cudaMemcpy(all.data(), together.get(), all.size() * 2, cudaMemcpyDeviceToHost));
    const int64_t n_scales = fp8_tiles(rows) * fp8_tiles(cols);
    for (int64_t m = 0; m < mats; ++m) {
      cuda::widen_fp8({DType::F8_E4M3, dcodes.get<uint8_t>() + m * rows * cols, rows, cols, dscales.get<float>() + m * n_scales},
                      alone.get(), nullptr);
      DSV2_CUDA_CHECK(cudaMemcpy(one.data(), alone.get(), one.size() * 2, cudaMemcpyDeviceToHost));
      EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + m * rows * cols)) << "matrix " << m << ", cols " << cols;
      std::vector<float> want(values.begin() + m * rows * cols, values.begin() + (m + 1) * rows * cols), got(one.size());
      convert_to_f32(DType::BF16, one.data(), got.data(), got.size());
      EXPECT_EQ(got, rounded(DType::BF16, want)) << "matrix " << m;
    }
  }
}

// A token's outputs are the same bits alone and in any batch of up to 8 (one or two matrices).
TEST(CudaFp8, GemvIsBatchInvariant) {
  std::mt19937 rng(22);
  const int64_t N = 640, K = 2048;
  std::vector<float> w, scales;
  auto wb = make_matrices(DType::F8_E4M3, 1, N, K, rng, w, &scales);
  DeviceBuffer dw = upload(wb), ds = upload(scales);
  const cuda::DeviceMatrix W{DType::F8_E4M3, dw.get(), N, K, ds.get<float>()};
  const std::vector<float> x = test::randn(size_t(8 * K), rng);
  DeviceBuffer dx = upload(x);
  std::vector<float> alone;
  for (int64_t t = 0; t < 8; ++t) {
    DeviceBuffer dy = nan_buffer(size_t(N));
    cuda::linear(nullptr, dx.get<float>() + t * K, K, 1, W, dy.get<float>(), nullptr, nullptr);
    const std::vector<float> row = download(dy, size_t(N));
    alone.insert(alone.end(), row.begin(), row.end());
  }
  for (int64_t T = 2; T <= 8; ++T) {
    DeviceBuffer dy = nan_buffer(size_t(T * N)), dy2 = nan_buffer(size_t(T * N));
    cuda::linear(nullptr, dx.get<float>(), K, T, W, dy.get<float>(), nullptr, nullptr);
    EXPECT_EQ(download(dy, size_t(T * N)), std::vector<float>(alone.begin(), alone.begin() + T * N)) << "T=" << T;
    cuda::linear_pair(nullptr, dx.get<float>(), K, T, W, dy.get<float>(), W, dy2.get<float>(), nullptr, nullptr);
    EXPECT_EQ(download(dy2, size_t(T * N)), std::vector<float>(alone.begin(), alone.begin() + T * N)) << "pair, T=" << T;
  }
}

TEST(CudaFp8, MatricesWithoutScalesAreErrors) {
  DeviceBuffer w(64 * 64), x(64 * 40 * 4), y(64 * 40 * 4), lowp(64 * 40 * 2);
  const cuda::DeviceMatrix no_scales{DType::F8_E4M3, w.get(), 64, 64};
  EXPECT_THROW(cuda::linear(nullptr, x.get<float>(), 64, 1, no_scales, y.get<float>(), nullptr, nullptr), Error);
  DeviceBuffer scales(4);
  const cuda::DeviceMatrix no_scratch{DType::F8_E4M3, w.get(), 64, 64, scales.get<float>()};
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  EXPECT_THROW(cuda::linear(blas, x.get<float>(), 64, 40, no_scratch, y.get<float>(), lowp.get(), nullptr), Error);
  cublasDestroy(blas);
  EXPECT_THROW(cuda::swiglu_gate_up(x.get<float>(), 1, no_scales, no_scales, y.get<float>(), nullptr), Error);
  EXPECT_THROW(cuda::moe_experts(x.get<float>(), 1, 64, 64, 1, 1, nullptr, nullptr, {DType::F8_E4M3, w.get(), w.get(), w.get()},
                                 y.get<float>(), y.get<float>(), y.get<float>(), nullptr),
               Error);
  EXPECT_THROW(cuda::widen_fp8({DType::BF16, w.get(), 64, 64}, y.get(), nullptr), Error);
  EXPECT_THROW(cuda::quantize_fp8(w.get(), DType::BF16, 0, 64, w.get(), scales.get<float>(), nullptr), Error);
  DSV2_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace dsv2
