// The AVX2 kernels (gemv_avx2.h), called directly, against the reference at many shapes (T = 1..17,
// rows with tails of 1..7 values and of part of a block, odd row counts and row ranges), bit for bit the
// same for a token alone and in any batch; and the ISA choice (cpu_isa, set_cpu_isa) that lets an
// AVX-512 machine run them through cpu::matmul. Outputs are poisoned with NaN first.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/quant.h"
#include "model/quantize.h"
#include "ops/cpu/gemv_avx2.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/gemm_bf16_amx.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/simd_exp.h"
#include "ops/ref/ops_ref.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::randn;

using test::IsaScope;
using test::stored_matrix;

// y = x · Wᵀ by calling the AVX2 kernel as matmul_group does: groups of up to kGemvMaxTokens tokens, here
// over row ranges that split the rows at odd places (a tile boundary may fall anywhere).
void avx2_matmul(const float* x, int64_t T, const Matrix& W, float* y) {
  const int64_t K = W.cols, N = W.rows;
  const int64_t cuts[] = {0, N / 3, N / 3 + (N - N / 3) / 2 + 1, N};
  cpu::QuantizedActivations xq;
  if (is_quantized(W.dtype)) {
    cpu::prepare_activations(W.dtype, T, K, xq);
    cpu::quantize_activations(x, 0, T, xq);
  }
  for (int c = 0; c + 1 < 4; ++c) {
    const int64_t r0 = std::min(cuts[c], N), r1 = std::min(cuts[c + 1], N);
    if (r0 >= r1) continue;
    for (int64_t t0 = 0; t0 < T; t0 += cpu::kGemvMaxTokens) {
      const int64_t n = std::min(cpu::kGemvMaxTokens, T - t0);
      if (is_quantized(W.dtype)) {
        cpu::qgemv_rows_avx2(xq, t0, n, W, r0, r1, y + t0 * N);
      } else {
        cpu::gemv_rows_avx2(x + t0 * K, n, W, r0, r1, y + t0 * N);
      }
    }
  }
}

TEST(Avx2, FloatWeightsMatchTheReferenceAndATokenGetsTheSameBitsAloneOrInABatch) {
  if (!cpu::has_avx2()) GTEST_SKIP() << "no AVX2 + FMA + F16C";
  std::mt19937 rng(11);
  ThreadPool pool(2);
  double worst = 0;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t K : {1, 7, 8, 9, 16, 33, 48, 100, 200, 2064}) {
      for (int64_t N : {1, 3, 5, 37, 67}) {
        std::vector<float> deq;
        std::vector<uint8_t> f32_store, store;
        const Matrix W = stored_matrix(dt, N, K, rng, deq, f32_store, store, pool);
        for (int64_t T = 1; T <= 17; ++T) {
          const std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN), alone(size_t(N), NAN);
          ref::matmul(x.data(), T, W, want.data());
          avx2_matmul(x.data(), T, W, got.data());
          // f32 sums of K products against the f64 reference: ~sqrt(K) ulps of Σ|x·w| (relative ~1e-6 at
          // K = 2064); a wrong index, tail or lane is O(1).
          const double err = test::rel_l2(got.data(), want.data(), got.size());
          worst = std::max(worst, err);
          ASSERT_LE(err, 1e-5) << dtype_name(dt) << " T=" << T << " K=" << K << " N=" << N;
          for (int64_t t = 0; t < T; ++t) {
            avx2_matmul(&x[size_t(t * K)], 1, W, alone.data());
            ASSERT_EQ(0, std::memcmp(alone.data(), &got[size_t(t * N)], size_t(N) * 4))
                << dtype_name(dt) << " token " << t << " of T=" << T << " K=" << K << " N=" << N;
          }
        }
      }
    }
  }
  std::printf("worst relative L2 of the AVX2 f32-activation kernel: %.2e\n", worst);
}

TEST(Avx2, QuantizedWeightsStayWithinTheActivationRoundingAndAreBatchInvariant) {
  if (!cpu::has_avx2()) GTEST_SKIP() << "no AVX2 + FMA + F16C";
  std::mt19937 rng(12);
  ThreadPool pool(2);
  double worst_rel_l2 = 0;
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 32, 48, 64, 96, 160, 200, 288, 544, 1000, 2064, 2080}) {
      for (int64_t N : {1, 3, 17, 67, 130}) {
        std::vector<float> deq;
        std::vector<uint8_t> f32_store, store;
        const Matrix W = stored_matrix(dt, N, K, rng, deq, f32_store, store, pool);
        for (int64_t T = 1; T <= 17; ++T) {
          const std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN), alone(size_t(N), NAN);
          ref::matmul(x.data(), T, W, want.data());
          avx2_matmul(x.data(), T, W, got.data());
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t o = 0; o < N; ++o) {
              const double err = std::fabs(double(got[size_t(t * N + o)]) - want[size_t(t * N + o)]);
              ASSERT_LE(err, test::activation_rounding_bound(&x[size_t(t * K)], &deq[size_t(o * K)], K))
                  << dtype_name(dt) << " T=" << T << " K=" << K << " N=" << N << " token " << t << " row " << o;
            }
            if (N >= 64) worst_rel_l2 = std::max(worst_rel_l2, test::rel_l2(&got[size_t(t * N)], &want[size_t(t * N)], size_t(N)));
            avx2_matmul(&x[size_t(t * K)], 1, W, alone.data());
            ASSERT_EQ(0, std::memcmp(alone.data(), &got[size_t(t * N)], size_t(N) * 4))
                << dtype_name(dt) << " token " << t << " of T=" << T << " K=" << K << " N=" << N;
          }
        }
      }
    }
  }
  std::printf("worst relative L2 of the AVX2 quantized kernels (N >= 64): %.2e\n", worst_rel_l2);
  EXPECT_LE(worst_rel_l2, 2e-2);  // as Quant.FastMatmulMatchesReference: the activation rounding alone
}

// Through cpu::matmul and matmul_group at each ISA level this CPU has: the forced level's kernel runs
// (the AVX2 results equal the direct calls' bits), each matches the reference, and a token's outputs
// are the same alone or batched.
TEST(CpuIsa, EveryLevelRunsItsKernelsThroughMatmul) {
  std::mt19937 rng(13);
  ThreadPool pool(2);
  for (cpu::CpuIsa isa : test::supported_isas()) {
    IsaScope scope(isa);
    EXPECT_EQ(cpu::cpu_isa(), isa);
    for (DType dt : {DType::BF16, DType::F32, DType::Q8_0, DType::Q4_0}) {
      const int64_t K = 200, N = 37, T = 9;
      std::vector<float> deq;
      std::vector<uint8_t> f32_store, store;
      const Matrix W = stored_matrix(dt, N, K, rng, deq, f32_store, store, pool);
      const std::vector<float> x = randn(size_t(T * K), rng);
      std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN), grouped(size_t(T * N), NAN), alone(size_t(N), NAN);
      ref::matmul(x.data(), T, W, want.data());
      cpu::matmul(pool, x.data(), T, W, got.data());
      cpu::matmul_group(pool, {{x.data(), T, &W, grouped.data()}});
      EXPECT_EQ(0, std::memcmp(grouped.data(), got.data(), got.size() * 4)) << cpu::cpu_isa_name(isa) << " " << dtype_name(dt);
      EXPECT_LE(test::rel_l2(got.data(), want.data(), got.size()), is_quantized(dt) ? 2e-2 : 1e-5)
          << cpu::cpu_isa_name(isa) << " " << dtype_name(dt);
      if (isa == cpu::CpuIsa::Avx2) {
        std::vector<float> direct(size_t(T * N), NAN);
        avx2_matmul(x.data(), T, W, direct.data());
        EXPECT_EQ(0, std::memcmp(direct.data(), got.data(), got.size() * 4)) << dtype_name(dt);
      }
      for (int64_t t = 0; t < T; ++t) {
        cpu::matmul(pool, &x[size_t(t * K)], 1, W, alone.data());
        ASSERT_EQ(0, std::memcmp(alone.data(), &got[size_t(t * N)], size_t(N) * 4))
            << cpu::cpu_isa_name(isa) << " " << dtype_name(dt) << " token " << t;
      }
    }
  }
}

TEST(Avx2, DequantizationEqualsTheReference) {
  if (!cpu::has_avx2()) GTEST_SKIP() << "no AVX2 + FMA + F16C";
  std::mt19937 rng(14);
  ThreadPool pool(2);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t K : {5, 8, 9, 16, 17, 24, 32, 48, 100, 512}) {
      std::vector<float> deq;
      std::vector<uint8_t> f32_store, store;
      const Matrix W = stored_matrix(t, 7, K, rng, deq, f32_store, store, pool);
      std::vector<float> got(size_t(5 * K + 1), NAN);  // one past the end stays NaN
      cpu::dequantize_rows_avx2(W, 2, 5, got.data());
      EXPECT_EQ(0, std::memcmp(got.data(), &deq[size_t(2 * K)], size_t(5 * K) * 4)) << dtype_name(t) << " K=" << K;
      EXPECT_TRUE(std::isnan(got.back())) << "wrote past the rows, K=" << K;
      IsaScope scope(cpu::CpuIsa::Avx2);
      std::vector<float> via(size_t(5 * K), NAN);
      cpu::rows_to_f32(W, 2, 5, via.data());
      EXPECT_EQ(0, std::memcmp(via.data(), got.data(), via.size() * 4)) << dtype_name(t) << " K=" << K;
    }
  }
}

TEST(CpuIsa, NamesAndLevels) {
  EXPECT_STREQ(cpu::cpu_isa_name(cpu::CpuIsa::Portable), "portable");
  EXPECT_STREQ(cpu::cpu_isa_name(cpu::CpuIsa::Avx2), "avx2");
  EXPECT_STREQ(cpu::cpu_isa_name(cpu::CpuIsa::Avx512), "avx512");
  EXPECT_STREQ(cpu::cpu_isa_name(cpu::CpuIsa::Amx), "amx");
  EXPECT_TRUE(cpu::cpu_supports(cpu::CpuIsa::Portable));
  EXPECT_EQ(cpu::cpu_supports(cpu::CpuIsa::Amx), cpu::has_avx512() && cpu::has_amx_bf16());
  EXPECT_EQ(cpu::cpu_supports(cpu::CpuIsa::Avx512), cpu::has_avx512());
  EXPECT_EQ(cpu::cpu_supports(cpu::CpuIsa::Avx2), cpu::has_avx2());
}

// e^x of 8 or 16 lanes at a time (simd_exp.h) at 2^20 points evenly over the clamped range [-87, 88]
// and at its ends: within 3 ulp of the float64 value (2.63 seen), and the same bits at both widths.
DSV2_AVX2 void exp8_all(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; i += 8) _mm256_storeu_ps(y + i, cpu::exp_avx2(_mm256_loadu_ps(x + i)));
}
DSV2_AVX512 void exp16_all(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(y + i, cpu::exp_avx512(_mm512_loadu_ps(x + i)));
}

TEST(CpuIsa, SimdExpIsWithinThreeUlpAndTheSameAtBothWidths) {
  if (!cpu::has_avx2()) GTEST_SKIP() << "no AVX2";
  constexpr size_t kPoints = size_t(1) << 20;
  std::vector<float> x(kPoints);
  for (size_t i = 0; i < kPoints; ++i) x[i] = float(-87.0 + 175.0 * double(i) / double(kPoints - 1));
  x.back() = 88.0f;
  std::vector<float> y8(x.size()), y16(x.size());
  exp8_all(x.data(), y8.data(), x.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    const double ulp = std::nextafter(float(want), INFINITY) - float(want);
    worst = std::max(worst, std::fabs(y8[i] - want) / ulp);
  }
  EXPECT_LE(worst, 3.0) << "worst error in ulp";
  if (!cpu::cpu_supports(cpu::CpuIsa::Avx512)) return;
  exp16_all(x.data(), y16.data(), x.size());
  EXPECT_EQ(std::memcmp(y8.data(), y16.data(), x.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace dsv2
