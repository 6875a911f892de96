// Block-quantized weights (core/quant.h): round-trip error bounds, the reference matmul over them,
// and the fast kernels (AVX-512 VNNI, portable) against the reference at many shapes (row tails,
// odd block and row counts, T = 1..7 and prefill-sized T), outputs poisoned with NaN first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/quant.h"
#include "model/quantize.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/quant_activations.h"
#include "ops/cpu/quant_gemm_avx512.h"
#include "ops/ref/ops_ref.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::randn;

// A random [rows, cols] matrix quantized to `t`; its f32 values stay in `f32`, its blocks in `store`.
Matrix make_quantized(DType t, int64_t rows, int64_t cols, std::mt19937& rng, std::vector<float>& f32,
                      std::vector<uint8_t>& store, ThreadPool& pool) {
  f32 = randn(size_t(rows * cols), rng);
  Matrix W{DType::F32, f32.data(), rows, cols};
  quantize_matrix(W, t, store, pool);
  return W;
}

// Q8_0 rounds each value to the nearest step: error <= step / 2, and the block's largest magnitude is
// exact up to the f16 scale. Q4_0 keeps the scale of the smaller squared error between the largest
// magnitude at -8 steps and the least-squares refit, so its bound is on the block's RMS error: rounding
// alone gives ~0.29 step, clamping one +8 to +7 adds ~0.18.
TEST(Quant, RoundTripErrorIsWithinTheStepOfEachBlock) {
  std::mt19937 rng(1);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t cols : {1, 31, 32, 33, 100, 256}) {
      std::vector<float> x = randn(size_t(cols), rng);
      std::vector<float> back(static_cast<size_t>(cols));
      x[0] = 40.0f;  // one outlier: its block gets a coarse step, the others do not
      std::vector<uint8_t> q(size_t(quant_row_bytes(t, cols)));
      std::vector<uint16_t> d(size_t(quant_blocks(cols)));
      quantize_row(t, x.data(), cols, q.data(), d.data());
      dequantize_row(t, q.data(), d.data(), cols, back.data());
      for (int64_t b = 0; b < quant_blocks(cols); ++b) {
        const float step = std::fabs(f16_to_f32(d[size_t(b)]));
        const int64_t i0 = b * kQuantBlock, i1 = std::min(cols, i0 + kQuantBlock);
        double sq = 0;
        for (int64_t i = i0; i < i1; ++i) {
          const double e = std::fabs(back[size_t(i)] - x[size_t(i)]);
          sq += e * e;
          if (t == DType::Q8_0) {
            ASSERT_LE(e, 0.5 * step * 1.001 + 1e-6) << "cols=" << cols << " i=" << i;
          }
        }
        if (t == DType::Q4_0) {
          EXPECT_LE(std::sqrt(sq / double(i1 - i0)), 0.5 * step) << "cols=" << cols << " block " << b;
        }
      }
      if (t == DType::Q8_0) {
        EXPECT_NEAR(back[0], 40.0f, 40.0f * 1e-3f);
      }
    }
  }
}

TEST(Quant, ReferenceMatmulIsTheDequantizedMatmul) {
  std::mt19937 rng(2);
  ThreadPool pool(2);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    std::vector<float> f32;
    std::vector<uint8_t> store;
    Matrix W = make_quantized(t, 9, 70, rng, f32, store, pool);
    std::vector<float> deq(size_t(9 * 70));
    matrix_rows_to_f32(W, 0, 9, deq.data());
    std::vector<float> x = randn(size_t(3 * 70), rng), want(27, NAN), got(27, NAN);
    ref::matmul(x.data(), 3, Matrix{DType::F32, deq.data(), 9, 70}, want.data());
    ref::matmul(x.data(), 3, W, got.data());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]);
    // And quantization error against the unquantized matrix is that of the format.
    ref::matmul(x.data(), 3, Matrix{DType::F32, f32.data(), 9, 70}, want.data());
    EXPECT_LE(test::rel_l2(got.data(), want.data(), got.size()), t == DType::Q8_0 ? 1e-2 : 1.5e-1);
  }
}

// The VNNI kernels round each activation to a step of d = (its block's largest |x|) / 127, so each
// output may differ from the reference by at most Σ_i |w_i| · d_i / 2 (test::activation_rounding_bound).
// The test holds every output to that bound (a wrong block, scale or lane breaks it by O(1)) and
// reports the relative L2 error seen.
TEST(Quant, FastMatmulMatchesReference) {
  if (!cpu::has_avx512_vnni()) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(3);
  ThreadPool pool(2);
  double worst_rel_l2 = 0;
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 32, 48, 64, 96, 160, 544, 1000, 2080}) {
      for (int64_t N : {1, 3, 17, 64, 67, 130}) {
        std::vector<float> f32;
        std::vector<uint8_t> store;
        Matrix W = make_quantized(t, N, K, rng, f32, store, pool);
        std::vector<float> deq(size_t(N * K));
        matrix_rows_to_f32(W, 0, N, deq.data());
        for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 16}) {
          std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN);
          ref::matmul(x.data(), T, W, want.data());
          cpu::matmul(pool, x.data(), T, W, got.data());
          for (int64_t tok = 0; tok < T; ++tok) {
            for (int64_t o = 0; o < N; ++o) {
              const double err = std::fabs(double(got[size_t(tok * N + o)]) - want[size_t(tok * N + o)]);
              ASSERT_LE(err, test::activation_rounding_bound(&x[size_t(tok * K)], &deq[size_t(o * K)], K))
                  << dtype_name(t) << " T=" << T << " K=" << K << " N=" << N << " token " << tok << " row " << o;
            }
            if (N >= 64) worst_rel_l2 = std::max(worst_rel_l2, test::rel_l2(&got[size_t(tok * N)], &want[size_t(tok * N)], size_t(N)));
          }
        }
      }
    }
  }
  std::printf("worst relative L2 of the VNNI kernels (N >= 64): %.2e\n", worst_rel_l2);
  EXPECT_LE(worst_rel_l2, 2e-2);  // ~3e-3 at K >= 544; up to ~1e-2 at K = 5
}

// The Q8_0 and Q4_0 kernels form every output in the one order quant_gemm_avx512.h states: bit for bit
// its plain C++ statement, at any token count (1 .. 20: token groups and their tails), for row ranges
// starting at any row (panel tails), odd block counts (Q4_0: steps of 4 blocks cut short) and blocks
// cut by the row end; so a token's outputs are the same alone, in a decode batch and in a prompt.
TEST(Quant, QuantizedKernelsEqualTheirOrderOfSumsBitForBit) {
  if (!cpu::has_avx512_vnni()) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(8);
  ThreadPool pool(2);
  for (DType format : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 32, 48, 64, 96, 160, 544, 1000, 2080}) {
      for (int64_t N : {1, 3, 16, 17, 64, 70}) {
        std::vector<float> f32;
        std::vector<uint8_t> store;
        const Matrix W = make_quantized(format, N, K, rng, f32, store, pool);
        for (int64_t T : {1, 2, 5, 8, 9, 17, 20}) {
          const std::string at = std::string(dtype_name(format)) + " K=" + std::to_string(K) + " N=" +
                                 std::to_string(N) + " T=" + std::to_string(T);
          const std::vector<float> x = randn(size_t(T * K), rng);
          cpu::QuantizedActivations xq;
          cpu::prepare_activations(format, T, K, xq);
          cpu::quantize_activations(x.data(), 0, T, xq);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN);
          cpu::quant_rows_canonical(xq, T, W, 0, N, want.data());
          // The order itself is the matmul: each output within the activations' rounding of the
          // product with the dequantized weights (test::activation_rounding_bound).
          std::vector<float> deq(size_t(N * K)), exact(size_t(T * N));
          matrix_rows_to_f32(W, 0, N, deq.data());
          ref::matmul(x.data(), T, Matrix{DType::F32, deq.data(), N, K}, exact.data());
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < N; ++r)
              ASSERT_LE(std::fabs(want[size_t(t * N + r)] - exact[size_t(t * N + r)]),
                        test::activation_rounding_bound(&x[size_t(t * K)], &deq[size_t(r * K)], K))
                  << at;
          const int64_t first = N > 3 ? 3 : 0;  // tiles from an odd row; rows before it by another call
          if (first > 0) cpu::quant_gemm_tile_avx512(xq, T, W, 0, first, got.data());
          for (int64_t r0 = first; r0 < N; r0 += cpu::kQuantTileRows)
            cpu::quant_gemm_tile_avx512(xq, T, W, r0, std::min(N, r0 + cpu::kQuantTileRows), got.data());
          ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << "tiles, " << at;
          // The decode kernel on groups of up to kGemvMaxTokens tokens, rows cut at the same places.
          std::vector<float> rows(size_t(T * N), NAN);
          for (int64_t t0 = 0; t0 < T; t0 += cpu::kGemvMaxTokens) {
            const int64_t n = std::min(cpu::kGemvMaxTokens, T - t0);
            if (first > 0) cpu::quant_gemv_rows_avx512(xq, t0, n, W, 0, first, &rows[size_t(t0 * N)]);
            cpu::quant_gemv_rows_avx512(xq, t0, n, W, first, N, &rows[size_t(t0 * N)]);
          }
          ASSERT_EQ(0, std::memcmp(rows.data(), want.data(), rows.size() * 4)) << "rows, " << at;
        }
      }
    }
  }
}

// Activations prepared for one matrix are refused by another's kernel (a clear error, not wrong sums).
TEST(Quant, QuantizedKernelsRefuseActivationsOfAnotherMatrix) {
  if (!cpu::has_avx512_vnni()) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(9);
  ThreadPool pool(1);
  std::vector<float> f32;
  std::vector<uint8_t> store;
  const Matrix W = make_quantized(DType::Q4_0, 16, 64, rng, f32, store, pool);
  const std::vector<float> x = randn(64, rng);
  cpu::QuantizedActivations xq;
  cpu::prepare_activations(DType::Q8_0, 1, 64, xq);
  cpu::quantize_activations(x.data(), 0, 1, xq);
  std::vector<float> y(16);
  EXPECT_THROW(cpu::quant_gemv_rows_avx512(xq, 0, 1, W, 0, 16, y.data()), dsv2::Error);
  EXPECT_THROW(cpu::quant_gemm_tile_avx512(xq, 1, W, 0, 16, y.data()), dsv2::Error);
}

TEST(Quant, FastDequantizationEqualsTheReference) {
  if (!cpu::has_avx512_vnni()) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(6);
  ThreadPool pool(2);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 16, 17, 32, 48, 100, 512}) {
      std::vector<float> f32;
      std::vector<uint8_t> store;
      const Matrix W = make_quantized(t, 7, K, rng, f32, store, pool);
      std::vector<float> want(size_t(5 * K + 1), NAN), got(size_t(5 * K + 1), NAN);  // one past the end stays NaN
      matrix_rows_to_f32(W, 2, 5, want.data());
      cpu::rows_to_f32(W, 2, 5, got.data());
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), size_t(5 * K) * 4)) << dtype_name(t) << " K=" << K;
      EXPECT_TRUE(std::isnan(got.back())) << "wrote past the rows, K=" << K;
    }
  }
}

TEST(Quant, PortableMatmulMatchesReference) {
  std::mt19937 rng(4);
  ThreadPool pool(2);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 33, 96, 1000}) {
      for (int64_t N : {1, 17, 40}) {
        std::vector<float> f32;
        std::vector<uint8_t> store;
        Matrix W = make_quantized(t, N, K, rng, f32, store, pool);
        for (int64_t T : {1, 4, 7}) {
          std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN);
          ref::matmul(x.data(), T, W, want.data());
          cpu::matmul_portable(pool, x.data(), T, W, got.data());
          // The same dequantized weights in f32 sums against the f64 reference (as Ops.CpuMatmul...).
          ASSERT_LE(test::rel_l2(got.data(), want.data(), got.size()), 1e-5) << dtype_name(t) << " T=" << T << " K=" << K << " N=" << N;
        }
      }
    }
  }
}

TEST(Quant, MatmulGroupEqualsEachMatmulAlone) {
  // Mixed formats, activation roundings, shapes and token counts (one job without tokens, one with many
  // more than the rest, so that the threads' shares of the work split jobs) in one parallel region.
  std::mt19937 rng(5);
  ThreadPool pool(2);
  struct Spec {
    DType t;
    int64_t N, K, T;
    ActivationFormat activations = ActivationFormat::F32;
  };
  const std::vector<Spec> specs = {{DType::Q8_0, 37, 96, 1},   {DType::Q4_0, 130, 2080, 6}, {DType::BF16, 17, 33, 3},
                                   {DType::Q4_0, 5, 48, 0},    {DType::Q8_0, 64, 544, 9},
                                   {DType::BF16, 300, 64, 41}, {DType::BF16, 77, 200, 5, ActivationFormat::BF16},
                                   {DType::BF16, 250, 48, 40, ActivationFormat::BF16}};
  std::vector<std::vector<float>> f32(specs.size()), x(specs.size()), alone(specs.size()), grouped(specs.size());
  std::vector<std::vector<uint8_t>> store(specs.size());
  std::vector<Matrix> W(specs.size());
  std::vector<cpu::MatmulJob> jobs;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    if (s.t == DType::BF16) {
      f32[i] = randn(size_t(s.N * s.K), rng);
      store[i].resize(f32[i].size() * 2);
      convert_from_f32(DType::BF16, f32[i].data(), store[i].data(), f32[i].size());
      W[i] = Matrix{DType::BF16, store[i].data(), s.N, s.K};
      W[i].activations = s.activations;
    } else {
      W[i] = make_quantized(s.t, s.N, s.K, rng, f32[i], store[i], pool);
    }
    x[i] = randn(size_t(s.T * s.K), rng);
    alone[i].assign(size_t(s.T * s.N), NAN);
    grouped[i].assign(size_t(s.T * s.N), NAN);
    cpu::matmul(pool, x[i].data(), s.T, W[i], alone[i].data());
  }
  for (size_t i = 0; i < specs.size(); ++i) jobs.push_back({x[i].data(), specs[i].T, &W[i], grouped[i].data()});
  cpu::matmul_group(pool, jobs);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(0, std::memcmp(grouped[i].data(), alone[i].data(), grouped[i].size() * 4)) << i;
}

TEST(Quant, ModelBytesPerDecodeTokenCountScales) {
  // One Q8_0 block of 32 values: 32 bytes and a 2-byte scale; Q4_0: 16 + 2.
  EXPECT_EQ((Matrix{DType::Q8_0, nullptr, 3, 64}.bytes()), size_t(3 * (64 + 4)));
  EXPECT_EQ((Matrix{DType::Q4_0, nullptr, 3, 48}.bytes()), size_t(3 * (32 + 4)));  // 48 values: two blocks, one padded
  EXPECT_EQ((Matrix{DType::BF16, nullptr, 3, 48}.bytes()), size_t(3 * 96));
}

}  // namespace
}  // namespace dsv2
