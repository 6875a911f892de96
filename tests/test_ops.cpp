// Fast CPU ops against the reference ops on fresh random inputs at many shapes (tails, odd
// sizes), outputs poisoned with NaN first so an unwritten element fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/cpu/causal_attention.h"
#include "ops/cpu/latent_attention.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/ref/ops_ref.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::randn;

// A weight matrix stored in `dtype`, with its bytes kept alive in `store`.
Matrix make_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng, std::vector<std::byte>& store) {
  std::vector<float> v = randn(size_t(rows * cols), rng);
  store.resize(v.size() * dtype_size(dtype));
  convert_from_f32(dtype, v.data(), store.data(), v.size());
  return Matrix{dtype, store.data(), rows, cols};
}

TEST(Ops, CpuMatmulMatchesReference) {
  std::mt19937 rng(1);
  ThreadPool pool(2);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t T : {1, 3, 17}) {
      for (int64_t K : {1, 7, 16, 33, 100}) {
        for (int64_t N : {1, 5, 16, 37}) {
          std::vector<std::byte> store;
          Matrix W = make_matrix(dt, N, K, rng, store);
          std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> want(size_t(T * N), NAN), got(size_t(T * N), NAN);
          ref::matmul(x.data(), T, W, want.data());
          cpu::matmul(pool, x.data(), T, W, got.data());
          // f32 sums of up to 100 products against the f64 reference: a few ulps of Σ|x·w|,
          // which cancellation can turn into ~1e-6 relative to the result; wrong indexing is O(1).
          double err = test::rel_l2(got.data(), want.data(), got.size());
          ASSERT_LE(err, 1e-5) << dtype_name(dt) << " T=" << T << " K=" << K << " N=" << N;
        }
      }
    }
  }
}

// Batch invariance: a token's outputs are the same bits whatever other tokens share its matmul (rows
// in tiles of 4 rows × 2 tokens or alone, token groups of up to 4, tails of K and of the rows).
TEST(Ops, CpuMatmulGivesATokenTheSameBitsAloneAndInABatch) {
  std::mt19937 rng(2);
  ThreadPool pool(2);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t T : {2, 3, 5, 9, 17}) {
      for (int64_t K : {7, 33, 100, 2064}) {
        for (int64_t N : {1, 5, 37, 130}) {
          std::vector<std::byte> store;
          const Matrix W = make_matrix(dt, N, K, rng, store);
          const std::vector<float> x = randn(size_t(T * K), rng);
          std::vector<float> batch(size_t(T * N), NAN), alone(size_t(N), NAN);
          cpu::matmul(pool, x.data(), T, W, batch.data());
          for (int64_t t = 0; t < T; ++t) {
            cpu::matmul(pool, &x[size_t(t * K)], 1, W, alone.data());
            ASSERT_EQ(0, std::memcmp(alone.data(), &batch[size_t(t * N)], size_t(N) * sizeof(float)))
                << dtype_name(dt) << " token " << t << " of T=" << T << " K=" << K << " N=" << N;
          }
        }
      }
    }
  }
}

TEST(Ops, DotAndAxpyMatchReference) {
  std::mt19937 rng(2);
  for (int64_t n : {0, 1, 15, 16, 17, 100, 1031}) {
    std::vector<float> a = randn(size_t(n), rng), b = randn(size_t(n), rng);
    EXPECT_NEAR(cpu::dot(a.data(), b.data(), n), ref::dot(a.data(), b.data(), n), 1e-5 * (1 + std::sqrt(double(n))));
    std::vector<float> y = b;
    cpu::axpy(0.5f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(y[size_t(i)], b[size_t(i)] + 0.5f * a[size_t(i)]);
  }
}

TEST(Ops, RmsNormFollowsTheFormula) {
  const float x[4] = {1, -2, 3, -4}, w[4] = {1, 0.5f, 2, -1};
  float y[4];
  ref::rms_norm(x, w, y, 1, 4, 1e-6f);
  const double r = 1.0 / std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], x[i] * r * w[i], 1e-6);
  // Two rows in place: each row normalised on its own.
  float xy[8] = {1, 1, 1, 1, 2, 2, 2, 2};
  const float ones[4] = {1, 1, 1, 1};
  ref::rms_norm(xy, ones, xy, 2, 4, 0.0f);
  for (float v : xy) EXPECT_NEAR(v, 1.0f, 1e-6);
}

TEST(Ops, SoftmaxAndSilu) {
  float x[3] = {1000, 1000, -INFINITY};  // large values must not overflow; -inf gets 0
  ref::softmax(x, 3);
  EXPECT_FLOAT_EQ(x[0], 0.5f);
  EXPECT_FLOAT_EQ(x[2], 0.0f);
  const float g[3] = {0, 1, -2}, u[3] = {3, 2, 1};
  float o[3];
  ref::silu_mul(g, u, o, 3);
  EXPECT_FLOAT_EQ(o[0], 0.0f);
  EXPECT_NEAR(o[1], 2.0 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(o[2], -2.0 / (1 + std::exp(2.0)), 1e-6);
}

// cpu::silu_mul_group against ref::silu_mul over jobs of many lengths (vector tails, a run split between
// the threads, one done in place), with gates from −200 to 200 (e^x clamped, 0 and −0, tiny and huge
// values): each output within 4 ulps of the reference's, or below 1e-35 (gates under −88, where e^(−g)
// is clamped below f32's overflow: silu(g) · u ≈ g · u · e^g, which the reference rounds to 0).
TEST(Ops, SiluMulGroupMatchesTheReference) {
  std::mt19937 rng(21);
  ThreadPool pool(2);
  std::vector<std::vector<float>> gate, up, out, want;
  for (int64_t n : {1, 15, 16, 17, 100, 40000, 3}) {
    std::vector<float> g = test::randn(size_t(n), rng, 8.0f), u = test::randn(size_t(n), rng);
    if (n == 100) {
      const float special[] = {0.0f, -0.0f, 200.0f, -200.0f, 88.5f, -88.5f, 1e-30f, -1e-30f, 20.0f, -20.0f};
      std::copy(std::begin(special), std::end(special), g.begin());
    }
    std::vector<float> w(static_cast<size_t>(n));
    ref::silu_mul(g.data(), u.data(), w.data(), n);
    gate.push_back(g), up.push_back(u), want.push_back(w), out.push_back(std::vector<float>(size_t(n), NAN));
  }
  std::vector<cpu::SiluMulJob> jobs;
  for (size_t j = 0; j < gate.size(); ++j) {
    float* dst = j == 4 ? gate[j].data() : out[j].data();  // the long one in place
    jobs.push_back({gate[j].data(), up[j].data(), dst, int64_t(gate[j].size())});
  }
  cpu::silu_mul_group(pool, jobs);
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t i = 0; i < jobs[j].n; ++i) {
      const float got = jobs[j].out[i], w = want[j][size_t(i)];
      EXPECT_LE(std::fabs(got - w), 4 * std::numeric_limits<float>::epsilon() * std::fabs(w) + 1e-35f)
          << "job " << j << " value " << i << ": gate " << (j == 4 ? NAN : gate[j][size_t(i)]) << " got " << got << " want " << w;
    }
}

}  // namespace
}  // namespace dsv2

namespace dsv2 {
namespace {

// One query row of the prompt attention against the formula in double, at the released shapes (d_nope
// 128, d_rope 64, d_v 128) and odd ones (tails of 8 and 16 lanes), at every ISA level this CPU runs and
// in the portable form.
TEST(Ops, AttendRowMatchesTheFormula) {
  std::mt19937 rng(12);
  struct Shape {
    int64_t d_nope, d_rope, d_v, n;
  };
  for (Shape sh : {Shape{128, 64, 128, 300}, Shape{128, 64, 128, 1}, Shape{16, 8, 12, 7}, Shape{16, 8, 16, 41},
                   Shape{24, 6, 200, 5}, Shape{3, 2, 5, 4}}) {
    // Keys and values interleaved in rows as the model stores them (k_nope | v), the rotary keys apart.
    const int64_t kv_stride = sh.d_nope + sh.d_v + 3, rope_stride = sh.d_rope + 1;
    const std::vector<float> q = randn(size_t(sh.d_nope + sh.d_rope), rng), kv = randn(size_t(sh.n * kv_stride), rng),
                             rope = randn(size_t(sh.n * rope_stride), rng);
    const float scale = 0.1f;
    std::vector<double> p(size_t(sh.n)), want(size_t(sh.d_v), 0.0);
    for (int64_t s = 0; s < sh.n; ++s) {
      double d = 0;
      for (int64_t j = 0; j < sh.d_nope; ++j) d += double(q[size_t(j)]) * kv[size_t(s * kv_stride + j)];
      for (int64_t j = 0; j < sh.d_rope; ++j) d += double(q[size_t(sh.d_nope + j)]) * rope[size_t(s * rope_stride + j)];
      p[size_t(s)] = scale * d;
    }
    const double mx = *std::max_element(p.begin(), p.end());
    double sum = 0;
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (int64_t s = 0; s < sh.n; ++s)
      for (int64_t j = 0; j < sh.d_v; ++j) want[size_t(j)] += p[size_t(s)] / sum * kv[size_t(s * kv_stride + sh.d_nope + j)];
    for (cpu::CpuIsa isa : test::supported_isas())
      for (bool portable : {false, true}) {
        test::IsaScope scope(isa);
        std::vector<float> scores(size_t(sh.n)), out(size_t(sh.d_v) + 1, NAN);
        out.back() = 7.0f;  // past the output: must stay
        (portable ? cpu::attend_row_portable : cpu::attend_row)(q.data(), kv.data(), kv_stride, rope.data(), rope_stride,
                                                                kv.data() + sh.d_nope, kv_stride, sh.n, sh.d_nope, sh.d_rope,
                                                                sh.d_v, scale, scores.data(), out.data());
        std::vector<float> wantf(want.begin(), want.end());
        // f32 sums of up to 192 products and 300 weighted values against f64: ~1e-6; wrong indexing is O(1).
        EXPECT_LE(test::rel_l2(out.data(), wantf.data(), wantf.size()), 1e-5)
            << "isa " << int(isa) << " d_nope " << sh.d_nope << " d_v " << sh.d_v << " n " << sh.n << " portable " << portable;
        EXPECT_EQ(out.back(), 7.0f);
      }
  }
}

// Query rows attended together (each key and value row loaded once for all of them) give each row the
// bits attend_row gives it alone over its own causal range, at the released shapes and odd ones, at
// every ISA level this CPU runs.
TEST(Ops, AttendRowsGiveEachRowItsAloneBits) {
  std::mt19937 rng(17);
  struct Shape {
    int64_t d_nope, d_rope, d_v, n0;
  };
  for (cpu::CpuIsa isa : test::supported_isas()) {
    test::IsaScope scope(isa);
    for (Shape sh : {Shape{128, 64, 128, 300}, Shape{128, 64, 128, 1}, Shape{16, 8, 12, 7}, Shape{24, 6, 200, 5},
                     Shape{3, 2, 5, 4}}) {
      for (int64_t rows = 1; rows <= cpu::kAttendRows; ++rows) {
        const int64_t n = sh.n0 + rows - 1, kv_stride = sh.d_nope + sh.d_v + 3, rope_stride = sh.d_rope + 1;
        const int64_t q_stride = sh.d_nope + sh.d_rope + 2, out_stride = sh.d_v + 1;
        const std::vector<float> q = randn(size_t(rows * q_stride), rng), kv = randn(size_t(n * kv_stride), rng),
                                 rope = randn(size_t(n * rope_stride), rng);
        std::vector<float> scores(size_t(rows * n)), got(size_t(rows * out_stride), NAN);
        cpu::attend_rows(q.data(), q_stride, rows, kv.data(), kv_stride, rope.data(), rope_stride, kv.data() + sh.d_nope,
                         kv_stride, sh.n0, sh.d_nope, sh.d_rope, sh.d_v, 0.1f, scores.data(), got.data(), out_stride);
        for (int64_t i = 0; i < rows; ++i) {
          std::vector<float> alone_scores(static_cast<size_t>(n)), want(static_cast<size_t>(sh.d_v));
          cpu::attend_row(q.data() + i * q_stride, kv.data(), kv_stride, rope.data(), rope_stride, kv.data() + sh.d_nope,
                          kv_stride, sh.n0 + i, sh.d_nope, sh.d_rope, sh.d_v, 0.1f, alone_scores.data(), want.data());
          EXPECT_EQ(std::vector<float>(got.begin() + i * out_stride, got.begin() + i * out_stride + sh.d_v), want)
              << "isa " << int(isa) << " d_nope " << sh.d_nope << " d_v " << sh.d_v << " n0 " << sh.n0 << " rows " << rows
              << " row " << i;
        }
      }
    }
  }
  EXPECT_THROW(cpu::attend_rows(nullptr, 0, 5, nullptr, 0, nullptr, 0, nullptr, 0, 1, 1, 1, 1, 1.0f, nullptr, nullptr, 0), Error);
}

TEST(Ops, LatentAttentionChunkMatchesTheFormula) {
  std::mt19937 rng(11);
  struct Shape {
    int64_t nh, d_c, d_rope, n;
  };
  // The AVX-512 kernel takes nh a multiple of 4 (blocks of 4 keys, then single keys), the AVX2 one also
  // {8, 48, 8} (blocks of 3 keys), the rest the portable one; each at every level the CPU has.
  for (Shape sh : {Shape{16, 512, 64, 256}, Shape{16, 512, 64, 37}, Shape{8, 64, 16, 3}, Shape{4, 128, 32, 17},
                   Shape{128, 512, 64, 5}, Shape{8, 48, 8, 29}, Shape{5, 64, 16, 1}, Shape{7, 128, 32, 6}, Shape{3, 48, 16, 100},
                   Shape{2, 20, 6, 9}}) {
    const int64_t width = sh.d_c + sh.d_rope + 3, q_pe_stride = sh.d_rope + 5;  // padded rows
    std::vector<float> q_lat = randn(size_t(sh.nh * sh.d_c), rng), q_pe = randn(size_t(sh.nh * q_pe_stride), rng),
                       lat = randn(size_t(sh.n * width), rng);
    const float scale = 0.08f;
    for (cpu::CpuIsa isa : test::supported_isas()) {
      test::IsaScope scope(isa);
      const std::string kernel = cpu::cpu_isa_name(isa);
      std::vector<float> m(size_t(sh.nh)), l(size_t(sh.nh)), acc(size_t(sh.nh * sh.d_c)), scratch(size_t(sh.nh * sh.n));
      std::fill(m.begin(), m.end(), -INFINITY);  // an empty state
      cpu::latent_attention_update(q_lat.data(), q_pe.data(), q_pe_stride, lat.data(), width, sh.n, sh.nh, sh.d_c, sh.d_rope,
                                   scale, m.data(), l.data(), acc.data(), scratch.data());
      for (int64_t h = 0; h < sh.nh; ++h) {
        std::vector<double> score(size_t(sh.n));
        for (int64_t s = 0; s < sh.n; ++s) {
          double d = 0;
          for (int64_t j = 0; j < sh.d_c; ++j) d += double(q_lat[size_t(h * sh.d_c + j)]) * lat[size_t(s * width + j)];
          for (int64_t j = 0; j < sh.d_rope; ++j) d += double(q_pe[size_t(h * q_pe_stride + j)]) * lat[size_t(s * width + sh.d_c + j)];
          score[size_t(s)] = scale * d;
        }
        const double mx = *std::max_element(score.begin(), score.end());
        EXPECT_NEAR(m[size_t(h)], mx, 1e-5 * (1 + std::abs(mx))) << "nh " << sh.nh << " n " << sh.n << " " << kernel;
        double sum = 0;
        std::vector<double> a(size_t(sh.d_c), 0.0);
        for (int64_t s = 0; s < sh.n; ++s) {
          const double p = std::exp(score[size_t(s)] - mx);
          sum += p;
          for (int64_t j = 0; j < sh.d_c; ++j) a[size_t(j)] += p * lat[size_t(s * width + j)];
        }
        EXPECT_NEAR(l[size_t(h)], sum, 1e-5 * sum);
        double err = 0, ref = 0;
        for (int64_t j = 0; j < sh.d_c; ++j) {
          err += std::pow(acc[size_t(h * sh.d_c + j)] - a[size_t(j)], 2);
          ref += a[size_t(j)] * a[size_t(j)];
        }
        EXPECT_LE(std::sqrt(err / ref), 1e-5) << "nh " << sh.nh << " d_c " << sh.d_c << " n " << sh.n << " " << kernel;
      }
    }
  }
}

// The online-softmax state over consecutive chunks of different lengths equals the softmax over all
// the keys; l and acc of an empty state (m = −inf) are never read (poisoned with NaN).
TEST(Ops, LatentAttentionUpdateOverChunksMatchesTheFormula) {
  std::mt19937 rng(12);
  struct Shape {
    int64_t nh, d_c, d_rope;
    std::vector<int64_t> chunks;
  };
  for (const Shape& sh : {Shape{16, 512, 64, {256, 256, 100}}, Shape{16, 512, 64, {1, 37, 256}}, Shape{8, 64, 16, {5, 3, 16, 17}},
                          Shape{6, 64, 16, {9, 4}}, Shape{3, 20, 6, {2, 7}}}) {
    int64_t n = 0;
    for (int64_t c : sh.chunks) n += c;
    const int64_t width = sh.d_c + sh.d_rope + 1, q_pe_stride = sh.d_rope + 3;
    std::vector<float> q_lat = randn(size_t(sh.nh * sh.d_c), rng), q_pe = randn(size_t(sh.nh * q_pe_stride), rng),
                       lat = randn(size_t(n * width), rng);
    for (float& x : q_lat) x *= 2;  // wide score ranges: later chunks raise the maximum
    // The bf16 rows are the f32 ones rounded: the f32 rows then hold the rounded values, so both
    // variants have the same exact answer.
    std::vector<uint16_t> lat_bf16(lat.size());
    for (size_t i = 0; i < lat.size(); ++i) lat[i] = bf16_to_f32(lat_bf16[i] = f32_to_bf16(lat[i]));
    const float scale = 0.1f;
    std::vector<double> want(size_t(sh.nh * sh.d_c), 0.0);
    for (int64_t h = 0; h < sh.nh; ++h) {
      std::vector<double> score(static_cast<size_t>(n));
      for (int64_t s = 0; s < n; ++s) {
        double d = 0;
        for (int64_t j = 0; j < sh.d_c; ++j) d += double(q_lat[size_t(h * sh.d_c + j)]) * lat[size_t(s * width + j)];
        for (int64_t j = 0; j < sh.d_rope; ++j) d += double(q_pe[size_t(h * q_pe_stride + j)]) * lat[size_t(s * width + sh.d_c + j)];
        score[size_t(s)] = scale * d;
      }
      const double mx = *std::max_element(score.begin(), score.end());
      double sum = 0;
      for (double& x : score) sum += (x = std::exp(x - mx));
      for (int64_t s = 0; s < n; ++s)
        for (int64_t j = 0; j < sh.d_c; ++j) want[size_t(h * sh.d_c + j)] += score[size_t(s)] / sum * lat[size_t(s * width + j)];
    }
    for (cpu::CpuIsa isa : test::supported_isas())
      for (bool bf16 : {false, true}) {  // every level × f32 / bf16 rows
        test::IsaScope scope(isa);
        std::vector<float> m(size_t(sh.nh), -INFINITY), l(size_t(sh.nh), NAN), acc(size_t(sh.nh * sh.d_c), NAN), scratch;
        int64_t s0 = 0;
        for (int64_t c : sh.chunks) {
          scratch.assign(size_t(sh.nh * c), NAN);
          if (bf16) {
            cpu::latent_attention_update_bf16(
                q_lat.data(), q_pe.data(), q_pe_stride, lat_bf16.data() + s0 * width, width, c, sh.nh, sh.d_c, sh.d_rope, scale,
                m.data(), l.data(), acc.data(), scratch.data());
          } else {
            cpu::latent_attention_update(
                q_lat.data(), q_pe.data(), q_pe_stride, lat.data() + s0 * width, width, c, sh.nh, sh.d_c, sh.d_rope, scale,
                m.data(), l.data(), acc.data(), scratch.data());
          }
          s0 += c;
        }
        std::vector<float> got(acc.size()), wantf(want.begin(), want.end());
        for (int64_t h = 0; h < sh.nh; ++h)
          for (int64_t j = 0; j < sh.d_c; ++j) got[size_t(h * sh.d_c + j)] = acc[size_t(h * sh.d_c + j)] / l[size_t(h)];
        // f32 sums of up to 576 products, exp to ~1 ulp and 612 weighted values against f64: ~1e-6;
        // a wrong rescaling between chunks or wrong indexing is O(1e-1).
        EXPECT_LE(test::rel_l2(got.data(), wantf.data(), wantf.size()), 1e-5)
            << "nh " << sh.nh << " n " << n << " " << cpu::cpu_isa_name(isa) << " bf16 " << bf16;
      }
  }
}

// Attention in bf16 (--activations bf16): at every ISA level the update (AVX512-BF16, or the query
// rounded to bf16 and the f32 update with the weights rounded) equals its portable twin to f32 rounding,
// over chunks of several lengths with tails (odd ones: a key pair's second half missing), and stays near
// the f32-score update; the twin rounds the weights too (it differs from the query-rounded f32 update by
// more than f32 rounding). Width 80 is not a multiple of 32: there AVX-512 also rounds the query.
TEST(Ops, LatentAttentionBf16ScoresMatchTheRoundedQuery) {
  std::mt19937 rng(21);
  struct Shape {
    int64_t nh, d_c, d_rope;
    std::vector<int64_t> chunks;
  };
  for (const Shape& sh : {Shape{16, 512, 64, {256, 100}}, Shape{16, 512, 64, {1, 37, 3}}, Shape{8, 64, 32, {5, 3, 16, 17}},
                          Shape{4, 64, 16, {9, 4}}}) {
    int64_t n = 0;
    for (int64_t c : sh.chunks) n += c;
    const int64_t width = sh.d_c + sh.d_rope, q_pe_stride = sh.d_rope + 3;
    std::vector<float> q_lat = randn(size_t(sh.nh * sh.d_c), rng), q_pe = randn(size_t(sh.nh * q_pe_stride), rng);
    std::vector<uint16_t> lat(size_t(n * width));
    for (uint16_t& v : lat) v = f32_to_bf16(std::normal_distribution<float>()(rng));
    const float scale = 0.15f;
    using Update = void (*)(const float*, const float*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                            float, float*, float*, float*, float*);
    for (cpu::CpuIsa isa : test::supported_isas()) {
      test::IsaScope scope(isa);
      std::vector<std::vector<float>> out;
      // The query rounded to bf16 by hand, for the portable update with f32 weights (the fourth result).
      std::vector<float> q_lat16(q_lat.size()), q_pe16(q_pe.size());
      for (size_t i = 0; i < q_lat.size(); ++i) q_lat16[i] = bf16_to_f32(f32_to_bf16(q_lat[i]));
      for (size_t i = 0; i < q_pe.size(); ++i) q_pe16[i] = bf16_to_f32(f32_to_bf16(q_pe[i]));
      const Update query_rounded = [](const float* ql, const float* qp, int64_t qps, const uint16_t* rows, int64_t w, int64_t cnt,
                                      int64_t heads, int64_t dc, int64_t dr, float sc, float* mm, float* ll, float* aa, float* sp) {
        cpu::latent_attention_update_bf16_portable(ql, qp, qps, rows, w, cnt, heads, dc, dr, sc, mm, ll, aa, sp);
      };
      for (Update update : {Update(cpu::latent_attention_update_bf16_dot), Update(cpu::latent_attention_update_bf16_dot_portable),
                            Update(cpu::latent_attention_update_bf16), query_rounded}) {
        const bool by_hand = update == query_rounded;
        std::vector<float> m(size_t(sh.nh), -INFINITY), l(size_t(sh.nh), NAN), acc(size_t(sh.nh * sh.d_c), NAN), scratch;
        int64_t s0 = 0;
        for (int64_t c : sh.chunks) {
          scratch.assign(size_t(sh.nh * c), NAN);
          update((by_hand ? q_lat16 : q_lat).data(), (by_hand ? q_pe16 : q_pe).data(), q_pe_stride, lat.data() + s0 * width,
                 width, c, sh.nh, sh.d_c, sh.d_rope, scale, m.data(), l.data(), acc.data(), scratch.data());
          s0 += c;
        }
        for (int64_t h = 0; h < sh.nh; ++h)
          for (int64_t j = 0; j < sh.d_c; ++j) acc[size_t(h * sh.d_c + j)] /= l[size_t(h)];
        out.push_back(acc);
      }
      const std::string at = "nh " + std::to_string(sh.nh) + " d_c " + std::to_string(sh.d_c) + " n " + std::to_string(n) + " " +
                             cpu::cpu_isa_name(isa);
      EXPECT_LE(test::rel_l2(out[0].data(), out[1].data(), out[1].size()), 1e-5) << at;
      EXPECT_LE(test::rel_l2(out[0].data(), out[2].data(), out[2].size()), 2e-2) << at;
      EXPECT_GT(test::rel_l2(out[0].data(), out[2].data(), out[2].size()), 0.0) << "the query was not rounded, " << at;
      EXPECT_GT(test::rel_l2(out[1].data(), out[3].data(), out[3].size()), 1e-4) << "the weights were not rounded, " << at;
    }
  }
}

// The whole decode attention over several key groups (a partial last one) equals the softmax formula
// and gives the same bits on 1 and 2 threads, for f32 and bf16 rows.
TEST(Ops, LatentAttentionOverKeyGroupsMatchesTheFormulaOnAnyThreadCount) {
  std::mt19937 rng(13);
  const int64_t nh = 8, d_c = 64, d_rope = 16, width = d_c + d_rope, n = 2 * cpu::kLatentKeyGroup + 300;
  std::vector<float> q_lat = randn(size_t(nh * d_c), rng), q_pe = randn(size_t(nh * d_rope), rng), lat = randn(size_t(n * width), rng);
  std::vector<uint16_t> lat_bf16(lat.size());
  for (size_t i = 0; i < lat.size(); ++i) lat[i] = bf16_to_f32(lat_bf16[i] = f32_to_bf16(lat[i]));
  const float scale = 0.3f;
  std::vector<float> want(size_t(nh * d_c));
  for (int64_t h = 0; h < nh; ++h) {
    std::vector<double> p(static_cast<size_t>(n)), a(size_t(d_c), 0.0);
    for (int64_t s = 0; s < n; ++s) {
      double d = 0;
      for (int64_t j = 0; j < d_c; ++j) d += double(q_lat[size_t(h * d_c + j)]) * lat[size_t(s * width + j)];
      for (int64_t j = 0; j < d_rope; ++j) d += double(q_pe[size_t(h * d_rope + j)]) * lat[size_t(s * width + d_c + j)];
      p[size_t(s)] = scale * d;
    }
    const double mx = *std::max_element(p.begin(), p.end());
    double sum = 0;
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (int64_t s = 0; s < n; ++s)
      for (int64_t j = 0; j < d_c; ++j) a[size_t(j)] += p[size_t(s)] / sum * lat[size_t(s * width + j)];
    for (int64_t j = 0; j < d_c; ++j) want[size_t(h * d_c + j)] = float(a[size_t(j)]);
  }
  for (bool bf16 : {false, true}) {
    std::vector<std::vector<float>> outs;
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      std::vector<float> o(size_t(nh * d_c), NAN), partial;
      if (bf16) {
        cpu::latent_attention(pool, q_lat.data(), q_pe.data(), d_rope, lat_bf16.data(), width, n, nh, d_c, d_rope, scale, o.data(),
                              partial);
      } else {
        cpu::latent_attention(pool, q_lat.data(), q_pe.data(), d_rope, lat.data(), width, n, nh, d_c, d_rope, scale, o.data(), partial);
      }
      // f32 sums over 2,348 keys against f64: ~1e-6.
      EXPECT_LE(test::rel_l2(o.data(), want.data(), want.size()), 1e-5) << "threads " << threads << " bf16 " << bf16;
      outs.push_back(o);
    }
    EXPECT_EQ(outs[0], outs[1]) << "bf16 " << bf16;
  }
}

}  // namespace
}  // namespace dsv2
