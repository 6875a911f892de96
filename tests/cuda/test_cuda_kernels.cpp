// CUDA kernels against the CPU reference on fresh random inputs at many shapes. Outputs and unused
// cache slots hold NaN before each run; block tables are shuffled.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <numeric>
#include <random>

#include "model/config.h"
#include "model/moe_router.h"
#include "model/rope.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"
#include "ops/ref/ops_ref.h"
#include "cuda/cuda_test_util.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using cuda::DeviceBuffer;
using namespace cuda_test;

using test::randn;

// write_latents: each token's query rotary parts rotated, its latent normalised, its rotary key
// rotated, the row stored at its position's cache slot. V2's YaRN RoPE at positions up to 150,000.
TEST(CudaKernels, WriteLatentsRotatesAndCaches) {
  std::mt19937 rng(12);
  ModelConfig cfg = preset_config("v2");
  RotaryEmbedding rope(cfg);
  const int64_t T = 5, heads = 3, stride = 192, d_c = cfg.kv_lora_rank, d_rope = cfg.qk_rope_head_dim;
  const int64_t width = d_c + d_rope, block_size = 64;
  const std::vector<int32_t> pos = {0, 7, 4095, 4096, 150000};
  std::vector<float> q = randn(size_t(T * heads * stride), rng), q_want = q;
  for (int64_t t = 0; t < T; ++t) rope.rotate(&q_want[size_t(t * heads * stride + 128)], heads, stride, pos[size_t(t)]);
  std::vector<float> kv = randn(size_t(T * width), rng), norm = randn(size_t(d_c), rng), rows_want(kv.size());
  for (int64_t t = 0; t < T; ++t) {
    ref::rms_norm(&kv[size_t(t * width)], norm.data(), &rows_want[size_t(t * width)], 1, d_c, 1e-6f);
    std::copy_n(&kv[size_t(t * width + d_c)], d_rope, &rows_want[size_t(t * width + d_c)]);
    rope.rotate(&rows_want[size_t(t * width + d_c)], 1, d_rope, pos[size_t(t)]);
  }
  // Token t is sequence t, whose every block is block 4 - t of a 5-block cache.
  const int64_t max_blocks = 150000 / block_size + 1;
  std::vector<int32_t> seq(static_cast<size_t>(T)), tables(size_t(T * max_blocks));
  for (int64_t t = 0; t < T; ++t) {
    seq[size_t(t)] = int32_t(t);
    std::fill_n(tables.begin() + t * max_blocks, max_blocks, int32_t(4 - t));
  }
  DeviceBuffer dq = upload(q), dkv = upload(kv), dnorm = upload(norm), dpos = upload(pos), dseq = upload(seq),
               dtables = upload(tables), dfreq = upload(rope.inv_freq()), dcache = nan_buffer(size_t(5 * block_size * width));
  cuda::PagedLatentCache cache{dcache.get(), DType::F32, 1, 5, block_size, width};
  const cuda::QueryRope query{dq.get<float>() + 128, heads * stride, heads, stride};
  cuda::write_latents(dkv.get<float>(), T, dnorm.get<float>(), 1e-6f, d_c, d_rope, dseq.get<int32_t>(), dpos.get<int32_t>(),
                      dfreq.get<float>(), rope.amplitude(), cache, 0, dtables.get<int32_t>(), max_blocks, query, nullptr);
  const std::vector<float> q_got = download(dq, q.size()), cached = download(dcache, size_t(5 * block_size * width));
  for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(q_got[i], q_want[i], 2e-4 * (1 + std::fabs(q_want[i]))) << i;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = &cached[size_t(((4 - t) * block_size + pos[size_t(t)] % block_size) * width)];
    EXPECT_LE(test::rel_l2(row, &rows_want[size_t(t * width)], size_t(width)), 1e-5) << "token " << t;
  }
}

TEST(CudaKernels, LinearMatchesReference) {
  std::mt19937 rng(1);
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  for (DType dt : {DType::BF16, DType::F16, DType::F32, DType::F8_E4M3}) {
    for (int64_t T : {1, 3, 8, 9, 40}) {
      // Shapes with tails; {4100, 1048}: whole-row warps whose lanes run ahead several steps of K;
      // {200, 1408}: FP8 rows of 16-byte loads over 11 scale tiles (K not a multiple of 16 takes scalar loads).
      for (auto [N, K] :
           {std::pair<int64_t, int64_t>{1, 8}, {37, 20}, {64, 48}, {300, 256}, {129, 1000}, {4100, 1048}, {200, 1408}}) {
        std::vector<float> w, w_scales;
        auto wb = make_matrices(dt, 1, N, K, rng, w, &w_scales);
        DeviceBuffer dws = upload(w_scales), widened(size_t((N + 37) * K) * 2);
        // The matrix as the kernels take it (FP8: with its scales and widening scratch).
        auto matrix = [&](const DeviceBuffer& data, int64_t rows, const DeviceBuffer& scales) {
          const bool fp8 = dt == DType::F8_E4M3;
          return cuda::DeviceMatrix{dt, data.get(), rows, K, fp8 ? scales.get<float>() : nullptr, fp8 ? widened.get() : nullptr};
        };
        std::vector<float> x = randn(size_t(T * K), rng);
        // GEMV: f32 products of the stored weights. cuBLAS with 2-byte or FP8 weights: x rounded to bf16
        // (f16 for F16 weights), FP8 weights widened to bf16 with their scales, f32 sums.
        const bool rounds = T > cuda::kGemvMaxTokens && dt != DType::F32;
        const DType operand = dt == DType::F16 ? DType::F16 : DType::BF16;
        const std::vector<float> x_seen = rounds ? rounded(operand, x) : x, w_seen = rounds ? rounded(operand, w) : w;
        std::vector<float> want(size_t(T * N));
        ref::matmul(x_seen.data(), T, Matrix{DType::F32, w_seen.data(), N, K}, want.data());
        DeviceBuffer dw = upload(wb), dx = upload(x), dy = nan_buffer(size_t(T * N)), lowp(size_t(T * K) * 2);
        cuda::linear(blas, dx.get<float>(), K, T, matrix(dw, N, dws), dy.get<float>(), lowp.get(), nullptr);
        std::vector<float> got = download(dy, size_t(T * N));
        EXPECT_LE(test::rel_l2(got.data(), want.data(), got.size()), 1e-5) << dtype_name(dt) << " T=" << T << " N=" << N << " K=" << K;
        // Two matrices in one launch (the second 37 rows longer): each output as linear() gives it.
        std::vector<float> w2, w2_scales;
        auto w2b = make_matrices(dt, 1, N + 37, K, rng, w2, &w2_scales);
        DeviceBuffer dw2 = upload(w2b), dw2s = upload(w2_scales), dy1 = nan_buffer(size_t(T * N)), dy2 = nan_buffer(size_t(T * (N + 37))),
                     dy2_alone = nan_buffer(size_t(T * (N + 37)));
        cuda::linear_pair(blas, dx.get<float>(), K, T, matrix(dw, N, dws), dy1.get<float>(), matrix(dw2, N + 37, dw2s),
                          dy2.get<float>(), lowp.get(), nullptr);
        cuda::linear(blas, dx.get<float>(), K, T, matrix(dw2, N + 37, dw2s), dy2_alone.get<float>(), lowp.get(), nullptr);
        EXPECT_EQ(download(dy1, size_t(T * N)), got) << "pair, " << dtype_name(dt) << " T=" << T << " N=" << N;
        EXPECT_EQ(download(dy2, size_t(T * (N + 37))), download(dy2_alone, size_t(T * (N + 37))))
            << "pair, " << dtype_name(dt) << " T=" << T << " N=" << N;
        // Added into a residual: the same sums plus one addition each.
        std::vector<float> residual = randn(size_t(T * N), rng), sum(residual.size());
        DeviceBuffer dr = upload(residual);
        cuda::linear_accumulate(blas, dx.get<float>(), K, T, matrix(dw, N, dws), dr.get<float>(), lowp.get(), nullptr);
        for (size_t i = 0; i < sum.size(); ++i) sum[i] = residual[i] + got[i];
        std::vector<float> got_sum = download(dr, sum.size());
        if (T <= cuda::kGemvMaxTokens) {
          EXPECT_EQ(got_sum, sum) << dtype_name(dt) << " T=" << T << " N=" << N << " K=" << K;
        } else {
          EXPECT_LE(test::rel_l2(got_sum.data(), sum.data(), sum.size()), 1e-5) << dtype_name(dt) << " T=" << T;
        }
      }
    }
  }
  cublasDestroy(blas);
}

TEST(CudaKernels, NormSiluArgmax) {
  std::mt19937 rng(2);
  const int64_t T = 5;
  // Rows held in registers (multiples of 4 up to 4,096) and the general kernel (longer or odd rows).
  for (int64_t D : {96, 2048, 4096, 5120, 97}) {
    std::vector<float> x = randn(size_t(T * D), rng), w = randn(size_t(D), rng);
    std::vector<float> want(x.size());
    ref::rms_norm(x.data(), w.data(), want.data(), T, D, 1e-6f);
    DeviceBuffer dx = upload(x), dw = upload(w), dy = nan_buffer(x.size());
    cuda::rms_norm(dx.get<float>(), D, dw.get<float>(), dy.get<float>(), D, T, D, 1e-6f, nullptr);
    EXPECT_LE(test::rel_l2(download(dy, x.size()).data(), want.data(), x.size()), 1e-6) << "D=" << D;
  }

  std::vector<float> g = randn(1000, rng), u = randn(1000, rng), s_want(1000);
  ref::silu_mul(g.data(), u.data(), s_want.data(), 1000);
  DeviceBuffer dg = upload(g), du = upload(u), ds = nan_buffer(1000);
  cuda::silu_mul(dg.get<float>(), du.get<float>(), ds.get<float>(), 1000, nullptr);
  EXPECT_LE(test::rel_l2(download(ds, 1000).data(), s_want.data(), 1000), 1e-6);

  const int64_t V = 102400;
  std::vector<float> logits = randn(size_t(3 * V), rng);
  logits[size_t(V + 77)] = 100.0f;
  logits[size_t(V + 99)] = 100.0f;  // a tie: the lower index wins
  DeviceBuffer dl = upload(logits), di(12), scratch(size_t(cuda::argmax_scratch_floats(3)) * 4);
  cuda::argmax_rows(dl.get<float>(), 3, V, di.get<int32_t>(), scratch.get<float>(), nullptr);
  std::vector<int32_t> ids(3);
  DSV2_CUDA_CHECK(cudaMemcpy(ids.data(), di.get(), 12, cudaMemcpyDeviceToHost));
  for (int64_t r = 0; r < 3; ++r) {
    int64_t want_id = std::max_element(logits.begin() + r * V, logits.begin() + (r + 1) * V) - (logits.begin() + r * V);
    EXPECT_EQ(ids[size_t(r)], want_id);
  }
}

// f16 → bf16: every f16 value as the host's conversion rounds it (to nearest even), the f16 range's
// extremes and subnormals among random values; nothing past n is written.
TEST(CudaKernels, F16ToBf16RoundsToNearestEven) {
  std::mt19937 rng(21);
  std::vector<float> v = randn(4093, rng, 30.0f);
  for (float special : {65504.0f, -65504.0f, 6e-8f, -3e-5f, 0.0f, 1.0f / 3.0f}) v.push_back(special);
  std::vector<std::byte> f16(v.size() * 2), want(v.size() * 2);
  convert_from_f32(DType::F16, v.data(), f16.data(), v.size());
  convert_to_f32(DType::F16, f16.data(), v.data(), v.size());  // the f16 values, exactly
  convert_from_f32(DType::BF16, v.data(), want.data(), v.size());
  DeviceBuffer src = upload(f16), out(v.size() * 2 + 16);
  DSV2_CUDA_CHECK(cudaMemset(out.get(), 0xff, v.size() * 2 + 16));
  cuda::f16_to_bf16(src.get(), int64_t(v.size()), out.get(), nullptr);
  std::vector<std::byte> got(v.size() * 2 + 16);
  DSV2_CUDA_CHECK(cudaMemcpy(got.data(), out.get(), got.size(), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_TRUE(got[2 * i] == want[2 * i] && got[2 * i + 1] == want[2 * i + 1]) << "value " << i << ": " << v[i];
  for (size_t i = v.size() * 2; i < got.size(); ++i) ASSERT_EQ(got[i], std::byte{0xff}) << "wrote past n";
}

// The L2 prefetch reads only: the bytes around and inside its ranges (unaligned ends, an empty and a
// null range, ranges longer than the grid's pieces) are unchanged, and too many ranges are an error.
TEST(CudaKernels, L2PrefetchChangesNothing) {
  std::mt19937 rng(12);
  const std::vector<float> data = randn(size_t(40) << 20 >> 2, rng);  // 40 MB
  DeviceBuffer d = upload(data);
  const char* base = static_cast<const char*>(d.get());
  const cuda::ByteRange ranges[] = {{base + 3, 1000}, {base + 4096, 0}, {nullptr, 64}, {base + 8192, (size_t(36) << 20) + 5}};
  cuda::prefetch_to_l2(ranges, 4, nullptr);
  DSV2_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(0, std::memcmp(download(d, data.size()).data(), data.data(), data.size() * 4));
  std::vector<cuda::ByteRange> many(size_t(cuda::kMaxL2Ranges + 1), cuda::ByteRange{base, 16});
  EXPECT_THROW(cuda::prefetch_to_l2(many.data(), int(many.size()), nullptr), Error);
}

TEST(CudaKernels, RouterMatchesReference) {
  std::mt19937 rng(3);
  struct Case { TopkMethod m; int64_t E, K, groups, keep; bool norm; double scale; };
  for (const Case& c : {Case{TopkMethod::Greedy, 64, 6, 1, 1, false, 1.0}, Case{TopkMethod::GroupLimitedGreedy, 160, 6, 8, 3, false, 16.0},
                        Case{TopkMethod::Greedy, 8, 3, 1, 1, true, 2.5}, Case{TopkMethod::GroupLimitedGreedy, 256, 8, 8, 4, true, 1.0}}) {
    ModelConfig cfg = preset_config("v2");
    cfg.topk_method = c.m;
    cfg.n_routed_experts = c.E;
    cfg.num_experts_per_tok = c.K;
    cfg.n_group = c.groups;
    cfg.topk_group = c.keep;
    cfg.norm_topk_prob = c.norm;
    cfg.routed_scaling_factor = c.scale;
    const int64_t T = 33;
    std::vector<float> logits = randn(size_t(T * c.E), rng, 2.0f);
    DeviceBuffer dl = upload(logits), di(size_t(T * c.K) * 4), dw = nan_buffer(size_t(T * c.K));
    cuda::route_tokens({c.E, c.K, c.groups, c.keep, c.m == TopkMethod::GroupLimitedGreedy, c.norm, float(c.scale)},
                       dl.get<float>(), T, di.get<int32_t>(), dw.get<float>(), nullptr);
    std::vector<int32_t> ids(size_t(T * c.K));
    DSV2_CUDA_CHECK(cudaMemcpy(ids.data(), di.get(), ids.size() * 4, cudaMemcpyDeviceToHost));
    std::vector<float> w = download(dw, size_t(T * c.K));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> p(logits.begin() + t * c.E, logits.begin() + (t + 1) * c.E);
      ref::softmax(p.data(), c.E);
      std::vector<int32_t> want_ids(size_t(c.K));
      std::vector<float> want_w(size_t(c.K));
      route_token(cfg, p.data(), want_ids.data(), want_w.data());
      for (int64_t k = 0; k < c.K; ++k) {
        EXPECT_EQ(ids[size_t(t * c.K + k)], want_ids[size_t(k)]) << "E=" << c.E << " t=" << t;
        EXPECT_NEAR(w[size_t(t * c.K + k)], want_w[size_t(k)], 1e-5 * (1 + std::fabs(want_w[size_t(k)])));
      }
    }
  }
}

TEST(CudaKernels, MoeExpertsMatchReference) {
  std::mt19937 rng(4);
  // 11 tokens x 3 slots over 6 experts: every expert gets several tokens (more than one group of 8 for
  // some). 1096 and 600: rows long enough for lanes to run ahead, with tails; one token (its own kernels),
  // also with rows of a length that rules out 16-byte loads (70); 12 tokens over 64 experts: most have none.
  for (const MoeShape& c : {MoeShape{11, 72, 40, 6, 3}, MoeShape{3, 1096, 600, 4, 2}, MoeShape{1, 1096, 600, 8, 6},
                            MoeShape{1, 70, 36, 8, 6}, MoeShape{12, 64, 48, 64, 6}}) {
    for (DType dt : {DType::BF16, DType::F32, DType::F8_E4M3}) {
      const MoeProblem pr(c, dt, rng);
      const int64_t T = c.T, H = c.H, I = c.I, K = c.K;
      const std::vector<float> want = pr.reference(false);
      const DeviceExperts experts(pr);
      DeviceBuffer dx = upload(pr.x), di = upload(pr.ids), dgw = upload(pr.gw);
      DeviceBuffer dh = nan_buffer(size_t(T * K * I)), dy = nan_buffer(size_t(T * K * H)), dout = upload(pr.residual);
      cuda::moe_experts(dx.get<float>(), T, H, I, K, c.E, di.get<int32_t>(), dgw.get<float>(), experts.weights(dt),
                        dh.get<float>(), dy.get<float>(), dout.get<float>(), nullptr);
      EXPECT_LE(test::rel_l2(download(dout, want.size()).data(), want.data(), want.size()), 1e-5)
          << dtype_name(dt) << " T=" << T << " H=" << H;
    }
  }
}

// The tensor-core form for decode batches of more than 8 tokens: the same sums over inputs rounded to
// the weight dtype (bf16 for FP8, whose weights are widened with their scales to bf16). Shapes with k tails (72, 200), row tiles past the end (40, 200), more tokens per
// expert than one pass takes (40 and 80 tokens on 2 experts: passes of 32), and experts without tokens
// (64 experts).
TEST(CudaKernels, GroupedExpertsMatchReference) {
  std::mt19937 rng(7);
  for (const MoeShape& c : {MoeShape{11, 72, 40, 6, 3}, MoeShape{40, 128, 200, 2, 2}, MoeShape{80, 64, 48, 2, 2},
                            MoeShape{9, 200, 64, 64, 6}, MoeShape{64, 256, 176, 64, 6}}) {
    for (DType dt : {DType::BF16, DType::F16, DType::F8_E4M3}) {
      const MoeProblem pr(c, dt, rng);
      const int64_t T = c.T, H = c.H, I = c.I, E = c.E, K = c.K;
      const std::vector<float> want = pr.reference(true);
      const DeviceExperts experts(pr);
      DeviceBuffer dx = upload(pr.x), di = upload(pr.ids), dgw = upload(pr.gw), dout = upload(pr.residual);
      DeviceBuffer xs(size_t(E * T * H) * 2), hs(size_t(E * T * I) * 2), y = nan_buffer(size_t(E * T * H)),
          counts(size_t(E) * 4), slots(size_t(T * K) * 4);
      DSV2_CUDA_CHECK(cudaMemset(xs.get(), 0xff, size_t(E * T * H) * 2));  // NaN in both 2-byte types
      DSV2_CUDA_CHECK(cudaMemset(hs.get(), 0xff, size_t(E * T * I) * 2));
      const cuda::MoeGroupedScratch scratch{xs.get(), hs.get(), y.get<float>(), counts.get<int32_t>(), slots.get<int32_t>()};
      ASSERT_TRUE(cuda::grouped_experts_supported(experts.weights(dt), H, I));
      cuda::moe_experts_grouped(dx.get<float>(), T, H, I, K, E, di.get<int32_t>(), dgw.get<float>(), experts.weights(dt),
                                scratch, dout.get<float>(), nullptr);
      EXPECT_LE(test::rel_l2(download(dout, want.size()).data(), want.data(), want.size()), 2e-4)
          << dtype_name(dt) << " T=" << T << " H=" << H << " I=" << I;
      std::vector<int32_t> got_counts(static_cast<size_t>(E));
      DSV2_CUDA_CHECK(cudaMemcpy(got_counts.data(), counts.get(), size_t(E) * 4, cudaMemcpyDeviceToHost));
      for (int64_t e = 0; e < E; ++e)
        EXPECT_EQ(got_counts[size_t(e)], std::count(pr.ids.begin(), pr.ids.end(), int32_t(e))) << "expert " << e;
    }
  }
  // F32 weights and sizes that are not multiples of 8 take the CUDA-core kernels; called directly, a clear error.
  DeviceBuffer w(64 * 70 * 4);
  EXPECT_FALSE(cuda::grouped_experts_supported({DType::F32, w.get(), w.get(), w.get()}, 64, 64));
  EXPECT_FALSE(cuda::grouped_experts_supported({DType::BF16, w.get(), w.get(), w.get()}, 70, 64));
  EXPECT_FALSE(cuda::grouped_experts_supported({DType::F8_E4M3, w.get(), w.get(), w.get()}, 64, 64));  // no scales
  const cuda::MoeGroupedScratch none{w.get(), w.get(), nullptr, nullptr, nullptr};
  EXPECT_THROW(cuda::moe_experts_grouped(nullptr, 1, 70, 64, 1, 1, nullptr, nullptr, {DType::BF16, w.get(), w.get(), w.get()},
                                         none, nullptr, nullptr),
               Error);
}

// combine_sorted, 4 values a thread (H % 4 == 0, aligned rows) and one (H = 70, or rows 4 bytes off their
// 16-byte alignment): out[t] += Σ_k w[t, k] · y[slot_of[t·K + k]] in slot order, against the host's sums,
// and the same bits both ways.
TEST(CudaKernels, CombineSortedMatchesReference) {
  std::mt19937 rng(13);
  for (int64_t H : {72, 70}) {
    const int64_t T = 5, K = 3;
    const std::vector<float> y = test::randn(size_t(T * K * H), rng), w = test::randn(size_t(T * K), rng),
                             residual = test::randn(size_t(T * H), rng);
    std::vector<int32_t> slot_of(static_cast<size_t>(T * K));
    std::iota(slot_of.begin(), slot_of.end(), 0);
    std::shuffle(slot_of.begin(), slot_of.end(), rng);
    std::vector<float> want(residual);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < H; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += double(w[size_t(t * K + k)]) * y[size_t(slot_of[size_t(t * K + k)] * H + j)];
        want[size_t(t * H + j)] += float(acc);
      }
    DeviceBuffer dw = upload(w), ds = upload(slot_of);
    std::vector<float> got[2];
    for (int64_t offset : {0, 1}) {  // 1: y and out 4 bytes past a 16-byte boundary
      std::vector<float> y_at(size_t(offset), 0.0f), out_at(size_t(offset), 0.0f);
      y_at.insert(y_at.end(), y.begin(), y.end());
      out_at.insert(out_at.end(), residual.begin(), residual.end());
      DeviceBuffer dy = upload(y_at), dout = upload(out_at);
      cuda::combine_sorted(dy.get<float>() + offset, ds.get<int32_t>(), dw.get<float>(), T, H, K, dout.get<float>() + offset,
                           nullptr);
      const std::vector<float> all = download(dout, out_at.size());
      got[offset].assign(all.begin() + offset, all.end());
      EXPECT_LE(test::rel_l2(got[offset].data(), want.data(), want.size()), 1e-6) << "H=" << H << " offset=" << offset;
    }
    EXPECT_EQ(got[0], got[1]) << "H=" << H;
  }
}

// The tiled grouped GEMMs of prompt chunks: the same sums as GroupedExpertsMatchReference's, over the
// pairs sorted by expert on the device. Experts with several 128-row tiles and a partial last one
// (700 tokens × 3 of 8 experts), k and column tails (D = 72, 200; 40 and 200 columns: a partial
// column block), mostly empty experts (5 tokens × 2 of 64), and FP8 experts widened to bf16 first as
// the model does. The sort itself: each pair's slot is a distinct row holding its token, and the tiles
// cover each expert's rows in order.
TEST(CudaKernels, TiledExpertsMatchReference) {
  std::mt19937 rng(11);
  for (const MoeShape& c : {MoeShape{700, 64, 48, 8, 3}, MoeShape{200, 72, 40, 6, 3}, MoeShape{300, 128, 200, 64, 6},
                            MoeShape{5, 200, 64, 64, 2}, MoeShape{150, 256, 176, 4, 2}}) {
    for (DType dt : {DType::BF16, DType::F16, DType::F8_E4M3}) {
      const MoeProblem pr(c, dt, rng);
      const int64_t T = c.T, H = c.H, I = c.I, E = c.E, K = c.K, P = T * K;
      const std::vector<float> want = pr.reference(true);
      const DeviceExperts experts(pr);
      const cuda::ExpertWeights w = experts.weights(dt);
      const DType mma = dt == DType::F16 ? DType::F16 : DType::BF16;
      DeviceBuffer dx = upload(pr.x), di = upload(pr.ids), dgw = upload(pr.gw), dout = upload(pr.residual);
      DeviceBuffer xs(size_t(P * H) * 2), hs(size_t(P * I) * 2), y = nan_buffer(size_t(P * H)), rows(size_t(P) * 4),
          slots(size_t(P) * 4), tiles(size_t(1 + 3 * cuda::moe_tiles_capacity(P, E)) * 4);
      DSV2_CUDA_CHECK(cudaMemset(xs.get(), 0xff, size_t(P * H) * 2));  // NaN in both 2-byte types
      DSV2_CUDA_CHECK(cudaMemset(hs.get(), 0xff, size_t(P * I) * 2));
      const cuda::MoeTiledScratch s{xs.get(), hs.get(), y.get<float>(), rows.get<int32_t>(), slots.get<int32_t>(),
                                    tiles.get<int32_t>()};
      ASSERT_TRUE(cuda::tiled_experts_supported(mma, H, I, E));
      DeviceBuffer wide_gate, wide_up, wide_down;
      const void *gate = w.gate, *up = w.up, *down = w.down;
      if (dt == DType::F8_E4M3) {
        wide_gate = DeviceBuffer(size_t(E * I * H) * 2), wide_up = DeviceBuffer(size_t(E * I * H) * 2),
        wide_down = DeviceBuffer(size_t(E * H * I) * 2);
        cuda::widen_fp8_matrices(w.gate, w.gate_scales, E, I, H, wide_gate.get(), nullptr);
        cuda::widen_fp8_matrices(w.up, w.up_scales, E, I, H, wide_up.get(), nullptr);
        cuda::widen_fp8_matrices(w.down, w.down_scales, E, H, I, wide_down.get(), nullptr);
        gate = wide_gate.get(), up = wide_up.get(), down = wide_down.get();
      }
      cuda::moe_tiled_sort(dx.get(), DType::F32, T, H, K, E, di.get<int32_t>(), mma, s, nullptr);
      cuda::moe_tiled_gate_up(s, P, H, I, E, mma, gate, up, nullptr);
      cuda::moe_tiled_down(s, P, H, I, E, mma, down, nullptr);
      cuda::combine_sorted(s.y, s.slot_of, dgw.get<float>(), T, H, K, dout.get<float>(), nullptr);
      const std::vector<float> got = download(dout, want.size());
      EXPECT_LE(test::rel_l2(got.data(), want.data(), want.size()), 2e-4)
          << dtype_name(dt) << " T=" << T << " H=" << H << " I=" << I << " E=" << E;
      // The inputs rounded beforehand (as the model does for the router and the shared experts too):
      // the same bits.
      DeviceBuffer x_rounded(size_t(T * H) * 2), dout2 = upload(pr.residual);
      cuda::round_rows(dx.get<float>(), H, T, H, mma, x_rounded.get(), nullptr);
      cuda::moe_tiled_sort(x_rounded.get(), mma, T, H, K, E, di.get<int32_t>(), mma, s, nullptr);
      cuda::moe_tiled_gate_up(s, P, H, I, E, mma, gate, up, nullptr);
      cuda::moe_tiled_down(s, P, H, I, E, mma, down, nullptr);
      cuda::combine_sorted(s.y, s.slot_of, dgw.get<float>(), T, H, K, dout2.get<float>(), nullptr);
      EXPECT_EQ(download(dout2, want.size()), got) << dtype_name(dt) << " T=" << T << ": rounded inputs";

      std::vector<int32_t> got_rows(static_cast<size_t>(P)), got_slots(static_cast<size_t>(P)),
          got_tiles(size_t(1 + 3 * cuda::moe_tiles_capacity(P, E)));
      DSV2_CUDA_CHECK(cudaMemcpy(got_rows.data(), rows.get(), size_t(P) * 4, cudaMemcpyDeviceToHost));
      DSV2_CUDA_CHECK(cudaMemcpy(got_slots.data(), slots.get(), size_t(P) * 4, cudaMemcpyDeviceToHost));
      DSV2_CUDA_CHECK(cudaMemcpy(got_tiles.data(), tiles.get(), got_tiles.size() * 4, cudaMemcpyDeviceToHost));
      std::vector<int32_t> seen(static_cast<size_t>(P), 0), expert_of_row(static_cast<size_t>(P), -1);
      for (int64_t p = 0; p < P; ++p) {
        const int32_t slot = got_slots[size_t(p)];
        ASSERT_TRUE(slot >= 0 && slot < P) << "pair " << p;
        ++seen[size_t(slot)];
        EXPECT_EQ(got_rows[size_t(slot)], p / K) << "pair " << p;
        expert_of_row[size_t(slot)] = pr.ids[size_t(p)];
      }
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), P) << "every sorted row holds one pair";
      int32_t next_row = 0;
      for (int32_t t = 0; t < got_tiles[0]; ++t) {
        const int32_t e = got_tiles[size_t(1 + 3 * t)], row0 = got_tiles[size_t(2 + 3 * t)], n = got_tiles[size_t(3 + 3 * t)];
        EXPECT_EQ(row0, next_row) << "tile " << t;
        ASSERT_TRUE(n >= 1 && n <= 128 && row0 + n <= P) << "tile " << t;
        for (int32_t r = row0; r < row0 + n; ++r) EXPECT_EQ(expert_of_row[size_t(r)], e) << "row " << r;
        next_row = row0 + n;
      }
      EXPECT_EQ(next_row, P) << "the tiles cover every sorted row";
    }
  }
  DeviceBuffer wbuf(64 * 70 * 4);
  EXPECT_FALSE(cuda::tiled_experts_supported(DType::F32, 64, 64, 8));
  EXPECT_FALSE(cuda::tiled_experts_supported(DType::BF16, 70, 64, 8));
  const cuda::MoeTiledScratch none{wbuf.get(), wbuf.get(), nullptr, nullptr, nullptr, nullptr};
  EXPECT_THROW(cuda::moe_tiled_gate_up(none, 8, 70, 64, 8, DType::BF16, wbuf.get(), wbuf.get(), nullptr), Error);
  EXPECT_THROW(cuda::moe_tiled_sort(wbuf.get(), DType::F32, 1, 64, 1, 8, nullptr, DType::F32, none, nullptr), Error);
  EXPECT_THROW(cuda::moe_tiled_sort(wbuf.get(), DType::F16, 1, 64, 1, 8, nullptr, DType::BF16, none, nullptr), Error);
}

TEST(CudaKernels, SwigluGateUpMatchesReference) {
  std::mt19937 rng(9);
  // 72/40: vectorised rows shorter than a warp's step; 1096/600: lanes run ahead, with tails; 70: rows
  // not a multiple of the vector width (scalar loads).
  for (auto [H, I] : {std::pair<int64_t, int64_t>{72, 40}, {1096, 600}, {70, 33}}) {
    for (DType dt : {DType::BF16, DType::F32, DType::F8_E4M3}) {
      for (int64_t T : {1, 3, 8}) {
        std::vector<float> gate, up, gate_scales, up_scales;
        auto gb = make_matrices(dt, 1, I, H, rng, gate, &gate_scales, 0.2f);
        auto ub = make_matrices(dt, 1, I, H, rng, up, &up_scales, 0.2f);
        std::vector<float> x = randn(size_t(T * H), rng), g(size_t(T * I)), u(size_t(T * I));
        ref::matmul(x.data(), T, Matrix{DType::F32, gate.data(), I, H}, g.data());
        ref::matmul(x.data(), T, Matrix{DType::F32, up.data(), I, H}, u.data());
        ref::silu_mul(g.data(), u.data(), g.data(), T * I);
        DeviceBuffer dx = upload(x), dg = upload(gb), du = upload(ub), dh = nan_buffer(size_t(T * I)),
                     dgs = upload(gate_scales), dus = upload(up_scales);
        cuda::swiglu_gate_up(dx.get<float>(), T, {dt, dg.get(), I, H, dgs.get<float>()}, {dt, du.get(), I, H, dus.get<float>()},
                             dh.get<float>(), nullptr);
        EXPECT_LE(test::rel_l2(download(dh, g.size()).data(), g.data(), g.size()), 1e-5)
            << dtype_name(dt) << " T=" << T << " H=" << H << " I=" << I;
      }
    }
  }
  DeviceBuffer dx(4 * 9 * 8), dw(2 * 8 * 8);
  EXPECT_THROW(cuda::swiglu_gate_up(dx.get<float>(), 9, {DType::BF16, dw.get(), 8, 8}, {DType::BF16, dw.get(), 8, 8},
                                    dx.get<float>(), nullptr),
               Error);
}

// o_lat = Σ_t softmax_t(scale·(q_lat·c_t + q_rope·k_pe_t))·c_t in f64 over the L rows [c_t | k_pe_t] of
// lat ([L, d_c + d_rope]): q_lat [d_c], q_rope [d_rope] -> [d_c].
std::vector<double> reference_latent_attention(const std::vector<double>& q_lat, const float* q_rope,
                                               const std::vector<float>& lat, int64_t L, int64_t d_rope, double scale) {
  const int64_t dc = int64_t(q_lat.size()), width = dc + d_rope;
  std::vector<double> o_lat(static_cast<size_t>(dc), 0.0), s(static_cast<size_t>(L));
  double mx = -1e300;
  for (int64_t t = 0; t < L; ++t) {
    double acc = 0;
    for (int64_t j = 0; j < dc; ++j) acc += q_lat[size_t(j)] * lat[size_t(t * width + j)];
    for (int64_t i = 0; i < d_rope; ++i) acc += double(q_rope[i]) * lat[size_t(t * width + dc + i)];
    s[size_t(t)] = acc * scale;
    mx = std::max(mx, s[size_t(t)]);
  }
  double sum = 0;
  for (auto& v : s) sum += v = std::exp(v - mx);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t j = 0; j < dc; ++j) o_lat[size_t(j)] += s[size_t(t)] / sum * lat[size_t(t * width + j)];
  return o_lat;
}

// Reference attention in f64, in the absorbed order (the same sums as the decompressed form, fast
// enough for real shapes): score_t = (W_UK[h]ᵀ q_nope)·c_t + q_rope·k_pe_t, out = W_UV[h]·Σ_t p_t c_t.
std::vector<float> reference_attention(const cuda::MlaShape& m, const std::vector<float>& q /*[nh, d_qk]*/,
                                       const std::vector<float>& kvb_w /*[nh·(d_nope + d_v), d_c]*/,
                                       const std::vector<float>& lat /*[L, d_c + d_rope]*/, int64_t L) {
  const int64_t nh = m.n_heads, dn = m.d_nope, dr = m.d_rope, dv = m.d_v, dc = m.d_c;
  std::vector<float> out(size_t(nh * dv));
  for (int64_t h = 0; h < nh; ++h) {
    std::vector<double> q_lat(static_cast<size_t>(dc), 0.0);
    for (int64_t i = 0; i < dn; ++i)
      for (int64_t j = 0; j < dc; ++j) q_lat[size_t(j)] += double(kvb_w[size_t((h * (dn + dv) + i) * dc + j)]) * q[size_t(h * (dn + dr) + i)];
    const std::vector<double> o_lat =
        reference_latent_attention(q_lat, &q[size_t(h * (dn + dr) + dn)], lat, L, dr, m.softmax_scale);
    for (int64_t j = 0; j < dv; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < dc; ++k) acc += double(kvb_w[size_t((h * (dn + dv) + dn + j) * dc + k)]) * o_lat[size_t(k)];
      out[size_t(h * dv + j)] = float(acc);
    }
  }
  return out;
}

// Decode attention over a paged cache whose blocks are shuffled and whose unused slots hold NaN, at
// the tiny fixtures' shape, V2-Lite's (16 heads, 576-wide latents; 12 sequences: the GEMM form of
// the absorption; 4 sequences of up to 20,000 keys), 20 heads (a partial group of 16) and V2's 128
// heads. Lengths cross split and chunk edges; some sequences end before the last split. An f32 cache is attended in f32 (exact
// for up to 8 sequences); a bf16 cache on the tensor cores, with the query and probabilities in bf16.
TEST(CudaKernels, AbsorbedAttentionOverAShuffledPagedCache) {
  std::mt19937 rng(5);
  struct Case {
    cuda::MlaShape m;
    int64_t block, max_len;
    std::vector<int64_t> lens;
  };
  const float lite_scale = 1.0f / std::sqrt(192.0f);
  const std::vector<Case> cases = {
      {{3, 16, 8, 12, 24, 0.3f}, 16, 700, {1, 9, 300, 600}},
      {{16, 128, 64, 128, 512, lite_scale}, 64, 4100, {1, 63, 64, 65, 130, 500, 1000, 4000, 2, 700, 129, 257}},
      {{20, 128, 64, 128, 512, lite_scale}, 32, 300, {5, 100, 300}},
      {{128, 128, 64, 128, 512, lite_scale}, 64, 400, {70, 333}},
      // Long contexts: 128 splits of over 128 keys, which the tensor-core kernel walks in 64-key chunks.
      {{16, 128, 64, 128, 512, lite_scale}, 64, 20000, {20000, 9000, 3, 129}},
  };
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  for (const Case& c : cases) {
    const cuda::MlaShape& m = c.m;
    const int64_t width = m.d_c + m.d_rope, block = c.block, B = int64_t(c.lens.size()), max_len = c.max_len;
    const int64_t max_blocks = (max_len + block - 1) / block;
    for (DType cache_dtype : {DType::F32, DType::BF16}) {
      ShuffledPagedCache paged(cache_dtype, 1, B, max_blocks, block, width, rng);
      std::vector<float> kvb_w;
      auto kvb_bytes = make_weights(DType::BF16, size_t(m.n_heads * (m.d_nope + m.d_v) * m.d_c), rng, kvb_w, 0.3f / std::sqrt(float(m.d_c) / 24.0f));
      DeviceBuffer dkvb = upload(kvb_bytes), dtables = upload(paged.tables);
      std::vector<std::vector<float>> lat(static_cast<size_t>(B));  // what the cache holds
      for (int64_t b = 0; b < B; ++b) {
        lat[size_t(b)] = randn(size_t(c.lens[size_t(b)] * width), rng);
        paged.store(0, b, lat[size_t(b)]);
      }
      paged.upload();
      const cuda::PagedLatentCache& cache = paged.cache;
      std::vector<float> q = randn(size_t(B * m.n_heads * (m.d_nope + m.d_rope)), rng);
      std::vector<int32_t> seq_lens(c.lens.begin(), c.lens.end());
      DeviceBuffer dq = upload(q), dlens = upload(seq_lens), dqlat = nan_buffer(size_t(B * m.n_heads * m.d_c)),
                   dolat = nan_buffer(size_t(B * m.n_heads * m.d_c)),
                   dscores = nan_buffer(size_t(cuda::absorbed_attention_scratch_floats(B, m.n_heads, m.d_c, max_len))),
                   dout = nan_buffer(size_t(B * m.n_heads * m.d_v)), lowp(size_t(B * m.n_heads * m.d_c) * 2);
      const cuda::DeviceMatrix kvb{DType::BF16, dkvb.get(), m.n_heads * (m.d_nope + m.d_v), m.d_c};
      DeviceBuffer wuk_t(size_t(m.n_heads * m.d_c * m.d_nope) * 2);
      cuda::transpose_wuk(kvb, m.n_heads, m.d_nope, m.d_v, wuk_t.get(), nullptr);
      cuda::attend_absorbed(blas, m, dq.get<float>(), kvb, wuk_t.get(), cache, 0, dtables.get<int32_t>(), max_blocks,
                            dlens.get<int32_t>(), B, max_len, dqlat.get<float>(), dolat.get<float>(), dscores.get<float>(),
                            dout.get<float>(), lowp.get(), nullptr);
      std::vector<float> got = download(dout, size_t(B * m.n_heads * m.d_v));
      // f32 sums throughout: 1e-5. Inputs of the absorption GEMMs or of the tensor-core attention in bf16: 1e-2.
      const double tol = cache_dtype == DType::F32 && B <= cuda::kGemvMaxTokens ? 1e-5 : 1e-2;
      for (int64_t b = 0; b < B; ++b) {
        std::vector<float> qb(q.begin() + b * m.n_heads * (m.d_nope + m.d_rope), q.begin() + (b + 1) * m.n_heads * (m.d_nope + m.d_rope));
        std::vector<float> want = reference_attention(m, qb, kvb_w, lat[size_t(b)], c.lens[size_t(b)]);
        EXPECT_LE(test::rel_l2(&got[size_t(b * m.n_heads * m.d_v)], want.data(), want.size()), tol)
            << dtype_name(cache_dtype) << " heads " << m.n_heads << " sequence " << b << " length " << c.lens[size_t(b)];
      }
    }
  }
  cublasDestroy(blas);
}

// Both tensor-core decode attention kernels, each named, against o_lat in f64 over a shuffled paged bf16
// cache whose unused slots hold NaN: V2-Lite's 16 heads (long sequences in 128 splits, and 12 sequences
// split by the batch), 64, 100 (a partial group of 64) and V2's 128 heads, and 136 sequences in one
// split each (the kernels' direct output). Lengths cross chunk, block and split edges.
TEST(CudaKernels, DecodeAttentionKernelsMatchReference) {
  std::mt19937 rng(17);
  struct Case {
    int64_t heads, block;
    std::vector<int64_t> lens;
  };
  std::vector<Case> cases = {{16, 64, {20000, 3}},
                             {16, 16, {1, 63, 64, 65, 130, 500, 1000, 2100, 2, 700, 129, 257}},
                             {64, 32, {1, 17, 300, 1000, 2048, 5, 64, 129, 700}},
                             {100, 64, {333, 1}},
                             {128, 64, {1, 63, 64, 65, 500, 4000}}};
  cases.push_back({64, 64, std::vector<int64_t>(136, 0)});
  for (size_t i = 0; i < cases.back().lens.size(); ++i) cases.back().lens[i] = 1 + int64_t(i * 37 % 130);
  constexpr int64_t d_c = 512, d_rope = 64, d_nope = 128, width = d_c + d_rope;
  for (const Case& c : cases) {
    const cuda::MlaShape m{c.heads, d_nope, d_rope, d_nope, d_c, 1.0f / std::sqrt(192.0f)};
    const int64_t nh = m.n_heads, B = int64_t(c.lens.size()), block = c.block;
    const int64_t max_len = *std::max_element(c.lens.begin(), c.lens.end()), max_blocks = (max_len + block - 1) / block;
    ShuffledPagedCache paged(DType::BF16, 1, B, max_blocks, block, width, rng);
    std::vector<std::vector<float>> lat(static_cast<size_t>(B));  // what the cache holds
    for (int64_t b = 0; b < B; ++b) {
      lat[size_t(b)] = randn(size_t(c.lens[size_t(b)] * width), rng);
      paged.store(0, b, lat[size_t(b)]);
    }
    paged.upload();
    const cuda::PagedLatentCache& cache = paged.cache;
    // Queries of the scale a model's absorbed queries have (scores of a few units).
    const std::vector<float> q = randn(size_t(B * nh * (d_nope + d_rope)), rng, 2.0f),
                             q_lat = randn(size_t(B * nh * d_c), rng, 0.3f);
    std::vector<int32_t> seq_lens(c.lens.begin(), c.lens.end());
    DeviceBuffer dq = upload(q), dqlat = upload(q_lat), dlens = upload(seq_lens), dtables = upload(paged.tables);
    // o_lat[b, h] in f64.
    std::vector<double> want;
    want.reserve(size_t(B * nh * d_c));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < nh; ++h) {
        const std::vector<double> ql(q_lat.begin() + (b * nh + h) * d_c, q_lat.begin() + (b * nh + h + 1) * d_c);
        const std::vector<double> o = reference_latent_attention(
            ql, &q[size_t((b * nh + h) * (d_nope + d_rope) + d_nope)], lat[size_t(b)], c.lens[size_t(b)], d_rope,
            m.softmax_scale);
        want.insert(want.end(), o.begin(), o.end());
      }
    using K = cuda::DecodeAttentionKernel;
    for (auto kernel : {K::warp_mma, K::warpgroup_mma}) {
      DeviceBuffer dolat = nan_buffer(size_t(B * nh * d_c)),
                   dpartials = nan_buffer(size_t(cuda::absorbed_attention_scratch_floats(B, nh, d_c, max_len)));
      cuda::attend_latents(m, dq.get<float>(), dqlat.get<float>(), cache, 0, dtables.get<int32_t>(), max_blocks,
                           dlens.get<int32_t>(), B, max_len, dpartials.get<float>(), dolat.get<float>(), nullptr, kernel);
      const std::vector<float> got = download(dolat, size_t(B * nh * d_c));
      for (int64_t b = 0; b < B; ++b) {
        const size_t at = size_t(b * nh * d_c), n = size_t(nh * d_c);
        const std::vector<float> w(want.begin() + long(at), want.begin() + long(at + n));
        EXPECT_LE(test::rel_l2(&got[at], w.data(), n), 1e-2)
            << (kernel == K::warp_mma ? "warp_mma" : "warpgroup_mma") << " heads " << nh << " sequence " << b << " length " << c.lens[size_t(b)];
      }
    }
  }
  // A cache the warpgroup kernel does not take (d_c 256) is an error when named.
  const cuda::MlaShape narrow{16, 128, 64, 128, 256, 0.1f};
  cuda::PagedLatentCache cache{nullptr, DType::BF16, 1, 1, 64, 320};
  DeviceBuffer data(64 * 320 * 2), buf(4096 * 4);
  cache.data = data.get();
  EXPECT_THROW(cuda::attend_latents(narrow, buf.get<float>(), buf.get<float>(), cache, 0, buf.get<int32_t>(), 1,
                                    buf.get<int32_t>(), 1, 64, buf.get<float>(), buf.get<float>(), nullptr,
                                    cuda::DecodeAttentionKernel::warpgroup_mma),
               Error);
}

}  // namespace
}  // namespace dsv2
