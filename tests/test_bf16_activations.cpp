// Activations rounded to bf16 (--activations bf16): the AMX, AVX512-BF16, AVX2 and portable kernels
// against the reference at many shapes, the last three against each other, and each against itself at
// every token count (bit for bit); then the mode end to end on the BF16 golden fixture and on the trained
// default model, against the exact f32 activations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/thread_pool.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "model/quantize.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_bf16_amx.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/ref/ops_ref.h"
#include "model_logits.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::randn;

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// For each shape and each level this CPU has of AVX512-BF16 (or portable) and AMX: cpu::matmul with BF16
// activations against the f64 reference over the bf16-rounded activations (f32 sums of ≤ 2080 exact
// products: a few ulps of Σ|x·w|, ≤ 1e-5 relative; wrong indexing or a missed tail is O(1)); below AMX the
// portable kernel gives the same bits; at every level each token alone (T = 1, other tiles) gives the
// same bits as inside the batch.
TEST(Bf16Activations, KernelsMatchReferenceAndAreBatchInvariant) {
  std::mt19937 rng(7);
  ThreadPool pool(2);
  std::vector<int64_t> token_counts = {31, 32, 33, 64};
  for (int64_t T = 1; T <= 17; ++T) token_counts.push_back(T);
  int64_t shapes = 0;
  for (cpu::CpuIsa isa : test::supported_isas()) {
    test::IsaScope scope(isa);
    for (int64_t K : {1, 31, 48, 200, 2048 + 16}) {
      for (int64_t N : {1, 7, 37, 130}) {
        std::vector<float> wf = randn(size_t(N * K), rng);
        std::vector<uint16_t> wb(wf.size());
        convert_from_f32(DType::BF16, wf.data(), wb.data(), wf.size());
        Matrix W{DType::BF16, wb.data(), N, K};
        W.activations = ActivationFormat::BF16;
        for (int64_t T : token_counts) {
          if (K > 200 && T % 4 != 1 && T < 31) continue;  // long rows: a few token counts suffice
          std::vector<float> x = randn(size_t(T * K), rng), xr(x.size());
          for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN), portable(size_t(T * N), NAN);
          ref::matmul(xr.data(), T, Matrix{DType::BF16, wb.data(), N, K}, want.data());
          cpu::matmul(pool, x.data(), T, W, got.data());
          const std::string shape = std::string(cpu::cpu_isa_name(isa)) + " T=" + std::to_string(T) +
                                    " K=" + std::to_string(K) + " N=" + std::to_string(N);
          ASSERT_LE(test::rel_l2(got.data(), want.data(), got.size()), 1e-5) << shape;

          if (isa != cpu::CpuIsa::Amx) {
            cpu::Bf16Activations xb;
            cpu::prepare_bf16_activations(T, K, xb);
            cpu::round_activations_to_bf16(x.data(), 0, T, xb);
            cpu::gemm_bf16_rows_portable(xb, 0, T, W, 0, N, portable.data());
            ASSERT_TRUE(same_bits(portable.data(), got.data(), got.size())) << "portable vs fast, " << shape;
          }

          std::vector<float> alone(size_t(N), NAN);
          for (int64_t t = 0; t < T; ++t) {
            cpu::matmul(pool, &x[size_t(t * K)], 1, W, alone.data());
            ASSERT_TRUE(same_bits(alone.data(), &got[size_t(t * N)], size_t(N))) << "token " << t << " alone, " << shape;
          }
          ++shapes;
        }
      }
    }
  }
  std::printf("%lld shapes, AVX2 %s, AVX512-BF16 %s, AMX %s\n", (long long)shapes,
              cpu::cpu_supports(cpu::CpuIsa::Avx2) ? "used" : "absent", cpu::has_avx512_bf16() ? "used" : "absent",
              cpu::cpu_supports(cpu::CpuIsa::Amx) ? "used" : "absent");
}

// The AMX kernel on its own over row ranges that start and end inside its 16-row blocks, K with and
// without a tail of 32, tokens in full and partial blocks of 16 (direct and packed weight tiles): every
// output against the f64 reference (within 1e-5 of the row's Σ|x·w|), nothing written outside the rows,
// and each token's outputs the same bits at every token count.
TEST(Bf16Activations, AmxKernelCoversEveryTileFormAndRange) {
  if (!cpu::cpu_supports(cpu::CpuIsa::Amx)) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  std::mt19937 rng(5);
  const int64_t N = 70, max_T = 50;
  for (int64_t K : {32, 40, 64, 1000, 2048}) {
    std::vector<float> wf = randn(size_t(N * K), rng, 0.1f);
    std::vector<uint16_t> wb(wf.size());
    convert_from_f32(DType::BF16, wf.data(), wb.data(), wf.size());
    const Matrix W{DType::BF16, wb.data(), N, K};
    const std::vector<float> x = randn(size_t(max_T * K), rng, 3.0f);
    std::vector<double> want(size_t(max_T * N)), mag(want.size());
    for (int64_t t = 0; t < max_T; ++t)
      for (int64_t r = 0; r < N; ++r)
        for (int64_t i = 0; i < K; ++i) {
          const double p = double(bf16_to_f32(wb[size_t(r * K + i)])) * bf16_to_f32(f32_to_bf16(x[size_t(t * K + i)]));
          want[size_t(t * N + r)] += p;
          mag[size_t(t * N + r)] += std::fabs(p);
        }
    std::vector<float> first;  // the outputs at the first T and range: every other run gives their bits
    for (int64_t T : {max_T, int64_t(1), int64_t(2), int64_t(15), int64_t(16), int64_t(17), int64_t(31), int64_t(32), int64_t(48)}) {
      cpu::Bf16Activations xb;
      cpu::prepare_bf16_activations(T, K, xb, cpu::kAmxTokenBlock);
      cpu::round_activations_to_bf16(x.data(), 0, T, xb);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, N}, {0, 64}, {3, 29}, {16, 70}, {69, 70}}) {
        std::vector<float> got(size_t(T * N), NAN);
        cpu::gemm_bf16_rows_amx(xb, T, W, r0, r1, got.data());
        if (first.empty()) first = got;
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = 0; r < N; ++r) {
            const size_t o = size_t(t * N + r);
            const std::string where = "K=" + std::to_string(K) + " T=" + std::to_string(T) + " token " + std::to_string(t) +
                                      " row " + std::to_string(r) + " of [" + std::to_string(r0) + ", " + std::to_string(r1) + ")";
            if (r < r0 || r >= r1) {
              ASSERT_TRUE(std::isnan(got[o])) << "written outside the rows: " << where;
              continue;
            }
            ASSERT_LE(std::fabs(got[o] - want[o]), 1e-5 * mag[o]) << where;
            ASSERT_TRUE(same_bits(&got[o], &first[o], 1)) << "not the bits of T=" << max_T << ": " << where;
          }
      }
    }
  }
}

// Rounding into both layouts (token rows; blocks of 16 tokens with value pairs side by side) gives
// f32_to_bf16's bits at every slot and zeros in the padding: K with odd tails, a last block of fewer
// tokens, ties to even, NaN, infinities and subnormals, tokens rounded in two ranges (as two threads do).
TEST(Bf16Activations, RoundingFillsEitherLayoutWithTheScalarBits) {
  std::mt19937 rng(9);
  for (int64_t K : {1, 15, 17, 33, 200}) {
    for (int64_t block : {int64_t(0), cpu::kAmxTokenBlock}) {
      const int64_t T = 21;
      std::vector<float> x = randn(size_t(T * K), rng);
      const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x7fc00001u, 0xff800001u, 0x7f800000u, 0x00000001u, 0x80400000u, 0x7f7fffffu};
      for (size_t i = 0; i < std::size(special) && i < x.size(); ++i) std::memcpy(&x[i * 3 % x.size()], &special[i], 4);
      cpu::Bf16Activations xb;
      cpu::prepare_bf16_activations(T, K, xb, block);
      cpu::round_activations_to_bf16(x.data(), 0, 5, xb);
      cpu::round_activations_to_bf16(x.data(), 5, T, xb);
      std::vector<uint16_t> want(xb.values.size(), 0);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < K; ++i) {
          size_t at = size_t(t * xb.padded + i);
          if (block > 0) {
            const int64_t b = t / block, n = std::min(block, T - b * block);
            at = size_t(b * block * xb.padded + (i / 2) * 2 * n + (t - b * block) * 2 + i % 2);
          }
          want[at] = f32_to_bf16(x[size_t(t * K + i)]);
        }
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(xb.values[i], want[i]) << "K=" << K << " block " << block << " slot " << i;
    }
  }
}

// The AVX512-BF16 kernels on their own, every tile form (4 or 1 rows × 1 … 4 tokens; prefill: × 1 … 6) against
// the portable one, rows past the range left as they were (NaN).
TEST(Bf16Activations, EveryTileFormGivesThePortableBits) {
  if (!cpu::has_avx512_bf16()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  std::mt19937 rng(3);
  for (int64_t K : {5, 32, 33, 96, 1000}) {
    const int64_t N = 11;  // two tiles of 4 rows, then 3 single rows
    std::vector<float> wf = randn(size_t(N * K), rng, 0.1f);
    std::vector<uint16_t> wb(wf.size());
    convert_from_f32(DType::BF16, wf.data(), wb.data(), wf.size());
    const Matrix W{DType::BF16, wb.data(), N, K};
    for (int64_t T = 1; T <= 4; ++T) {
      std::vector<float> x = randn(size_t(T * K), rng, 3.0f), fast(size_t(T * N), NAN), portable(size_t(T * N), NAN);
      cpu::Bf16Activations xb;
      cpu::prepare_bf16_activations(T, K, xb);
      cpu::round_activations_to_bf16(x.data(), 0, T, xb);
      cpu::gemm_bf16_rows_avx512(xb, 0, T, W, 0, N, fast.data());
      cpu::gemm_bf16_rows_portable(xb, 0, T, W, 0, N, portable.data());
      ASSERT_TRUE(same_bits(fast.data(), portable.data(), fast.size())) << "T=" << T << " K=" << K;
    }
    for (int64_t T = 5; T <= 13; ++T) {  // the prefill kernel: groups of 6 tokens and every remainder
      std::vector<float> x = randn(size_t(T * K), rng, 3.0f), fast(size_t(T * N), NAN), portable(size_t(T * N), NAN);
      cpu::Bf16Activations xb;
      cpu::prepare_bf16_activations(T, K, xb);
      cpu::round_activations_to_bf16(x.data(), 0, T, xb);
      cpu::gemm_bf16_tokens_avx512(xb, T, W, 1, N, fast.data());  // rows 1 .. N - 1: tiles of 4, then 2 single rows
      cpu::gemm_bf16_rows_portable(xb, 0, T, W, 1, N, portable.data());
      ASSERT_TRUE(same_bits(fast.data(), portable.data(), fast.size())) << "prefill T=" << T << " K=" << K;
    }
  }
}

// The AVX2 kernel on its own against the portable one: K with and without a tail of 32 (and shorter
// than a step), 1 to 9 tokens (passes of 4 and their remainders), a row range inside the matrix (the
// rows outside it keep their NaN), tokens taken from inside the rounded batch.
TEST(Bf16Activations, Avx2KernelGivesThePortableBits) {
  if (!cpu::cpu_supports(cpu::CpuIsa::Avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(5);
  for (int64_t K : {1, 5, 31, 32, 33, 96, 1000}) {
    const int64_t N = 9, r0 = 2, r1 = 8;
    std::vector<float> wf = randn(size_t(N * K), rng, 0.1f);
    std::vector<uint16_t> wb(wf.size());
    convert_from_f32(DType::BF16, wf.data(), wb.data(), wf.size());
    const Matrix W{DType::BF16, wb.data(), N, K};
    const int64_t batch = 11;
    std::vector<float> x = randn(size_t(batch * K), rng, 3.0f);
    cpu::Bf16Activations xb;
    cpu::prepare_bf16_activations(batch, K, xb);
    cpu::round_activations_to_bf16(x.data(), 0, batch, xb);
    for (int64_t T = 1; T <= 9; ++T) {
      const int64_t t0 = batch - T;
      std::vector<float> fast(size_t(T * N), NAN), portable(size_t(T * N), NAN);
      cpu::gemm_bf16_rows_avx2(xb, t0, T, W, r0, r1, fast.data());
      cpu::gemm_bf16_rows_portable(xb, t0, T, W, r0, r1, portable.data());
      ASSERT_TRUE(same_bits(fast.data(), portable.data(), fast.size())) << "T=" << T << " K=" << K;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < N; ++r)
          ASSERT_EQ(std::isnan(fast[size_t(t * N + r)]), r < r0 || r >= r1) << "T=" << T << " K=" << K << " row " << r;
    }
  }
}

// v2_like (the BF16 fixture: hidden 48, random weights), both attention paths. Measured mean relative L2
// against the f32 mode 9.3e-3 (prefill) and 7.8e-3 (decode), the same against transformers' float64
// reference (the f32 mode is ≤ 2e-6 from it): tolerance 2e-2. A kernel that drops a step or a row gives O(1).
TEST(Bf16Activations, GoldenFixtureStaysCloseToF32Activations) {
  const test::Golden g = test::load_golden("v2_like");
  ThreadPool pool(2);
  LoadedModel exact = load_model(g.dir), rounded = load_model(g.dir);
  set_activation_format(rounded, ActivationFormat::BF16);
  for (AttentionPath path : {AttentionPath::Decompressed, AttentionPath::Absorbed}) {
    const std::vector<float> want = test::all_position_logits(exact, g.ids, path, pool);
    const std::vector<float> got = test::all_position_logits(rounded, g.ids, path, pool);
    const double vs_f32 = test::position_errors(got, want, g.vocab).mean;
    const double vs_ref = test::position_errors(got, g.logits, g.vocab).mean;
    std::printf("v2_like %s: bf16 activations vs f32 %.2e, vs reference %.2e\n",
                path == AttentionPath::Decompressed ? "prefill" : "decode", vs_f32, vs_ref);
    EXPECT_LE(vs_f32, 2e-2);
    EXPECT_LE(vs_ref, 2e-2);
  }
}

// The mode applies to BF16 Linear matrices only; the router keeps f32 activations.
TEST(Bf16Activations, SetOnTheBf16LinearMatricesOnly) {
  const test::Golden g = test::load_golden("v2_like");
  LoadedModel m = load_model(g.dir);
  set_activation_format(m, ActivationFormat::BF16);
  for (auto& [name, W] : linear_matrices(m.config, m.weights)) EXPECT_EQ(W->activations, ActivationFormat::BF16) << name;
  for (const LayerWeights& L : m.weights.layers) EXPECT_EQ(L.router.activations, ActivationFormat::F32);
  LoadedModel f32 = load_model(test::load_golden("lite_like").dir);
  test::expect_contains(test::error_of([&] { set_activation_format(f32, ActivationFormat::BF16); }),
                        "--activations bf16 needs BF16 weights; this model's Linear matrices are f32");
}

// The trained default model (BF16) on 256 tokens of tests/data/brown_tail.txt, prefill path. Measured:
// mean relative L2 against f32 activations 2.0e-3, perplexity 151.24 against 151.02 (+0.15%);
// tolerances 1e-2 and 1%.
TEST(Bf16Activations, DefaultModelStaysCloseToF32Activations) {
  const std::string dir = std::string(DSV2_SOURCE_DIR) + "/models/default";
  const std::vector<int32_t> ids = test::default_model_text_ids(256);
  ThreadPool pool(2);
  LoadedModel exact = load_model(dir), rounded = load_model(dir);
  set_activation_format(rounded, ActivationFormat::BF16);
  const int64_t V = exact.config.vocab_size;
  const std::vector<float> want = test::all_position_logits(exact, ids, AttentionPath::Decompressed, pool);
  const std::vector<float> got = test::all_position_logits(rounded, ids, AttentionPath::Decompressed, pool);
  const double rel = test::position_errors(got, want, V).mean;
  const double ppl = std::exp(test::mean_nll(got, ids, V)), base = std::exp(test::mean_nll(want, ids, V));
  std::printf("default model, bf16 activations: mean relative L2 %.2e, perplexity %.3f (f32 activations %.3f)\n", rel, ppl, base);
  EXPECT_LE(rel, 1e-2);
  EXPECT_LE(std::fabs(ppl / base - 1), 1e-2);
}

}  // namespace
}  // namespace dsv2
