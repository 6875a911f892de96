// The prompt attention on the GPU: its keys and values decompressed from a shuffled paged latent cache
// (decompress_keys_values), and its causal flash kernels, against references in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "ops/cuda/causal_attention_mma.h"
#include "ops/cuda/causal_attention_wgmma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/prompt_keys_values.h"
#include "cuda/cuda_test_util.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using cuda::DeviceBuffer;
using namespace cuda_test;

using test::randn;

const float kLiteScale = 0.25f / std::sqrt(192.0f);

// decompress_keys_values against kv_b_proj applied in double to the cached latents (rounded to bf16,
// as the GEMMs take them) over a shuffled paged cache whose unused slots hold NaN: f32 and bf16
// caches; V2-Lite's 16 heads, V2's 128, 3 heads and the default model's shape; contexts of one key and
// across the 16- and 64-row blocks. The rotary parts of the keys are the cached values exactly, the
// rest within bf16 rounding; nothing is written past the scratch's size for the context.
TEST(CudaKernels, DecompressKeysValuesMatchesReference) {
  std::mt19937 rng(17);
  struct Case {
    cuda::MlaShape m;
    int64_t block, L;
  };
  const cuda::MlaShape lite{16, 128, 64, 128, 512, kLiteScale}, v2{128, 128, 64, 128, 512, kLiteScale},
      odd{3, 128, 64, 128, 512, 0.2f}, small{4, 32, 16, 32, 64, 0.3f};
  const std::vector<Case> cases = {{lite, 64, 1},  {lite, 64, 1000}, {lite, 16, 129}, {v2, 64, 130},
                                   {odd, 16, 65}, {small, 16, 200},  {small, 64, 7}};
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  for (const Case& c : cases) {
    const cuda::MlaShape& m = c.m;
    ASSERT_TRUE(cuda::decompress_keys_values_supported(m));
    const int64_t nh = m.n_heads, dn = m.d_nope, dr = m.d_rope, dv = m.d_v, d_c = m.d_c, d_qk = dn + dr, L = c.L;
    const int64_t width = d_c + dr, n_blocks = (L + c.block - 1) / c.block;
    constexpr int64_t kSpareBlocks = 3;  // blocks the table does not name
    std::vector<float> w;
    const std::vector<std::byte> w_bytes =
        make_weights(DType::BF16, size_t(nh * (dn + dv) * d_c), rng, w, 1.0f / std::sqrt(float(d_c)));
    DeviceBuffer dw = upload(w_bytes);
    const cuda::DeviceMatrix W{DType::BF16, dw.get(), nh * (dn + dv), d_c};
    for (DType cache_dtype : {DType::F32, DType::BF16}) {
      // Two layers; the test reads layer 1 (layer 0 stays NaN).
      ShuffledPagedCache paged(cache_dtype, 2, 1, n_blocks, c.block, width, rng, kSpareBlocks);
      std::vector<float> lat = randn(size_t(L * width), rng);
      paged.store(1, 0, lat);  // lat: what the cache holds
      paged.upload();
      const cuda::PagedLatentCache& cache = paged.cache;
      DeviceBuffer dtable = upload(paged.tables);
      const std::vector<float> lat_bf16 = rounded(DType::BF16, lat);  // what the GEMMs and the keys take

      const size_t bytes = cuda::prompt_keys_values_bytes(m, L), guard = 64;
      DeviceBuffer scratch(bytes + guard);
      DSV2_CUDA_CHECK(cudaMemset(scratch.get(), 0xff, bytes + guard));
      cuda::decompress_keys_values(blas, m, cache, 1, dtable.get<int32_t>(), L, W, scratch.get(), nullptr);
      std::vector<std::byte> out(bytes + guard);
      DSV2_CUDA_CHECK(cudaMemcpy(out.data(), scratch.get(), bytes + guard, cudaMemcpyDeviceToHost));
      for (size_t i = bytes; i < bytes + guard; ++i) ASSERT_EQ(out[i], std::byte{0xff}) << "wrote past the context";
      std::vector<float> got(size_t(nh * L * (d_qk + dv)));
      convert_to_f32(DType::BF16, out.data(), got.data(), got.size());
      const float* keys = got.data();
      const float* values = keys + nh * L * d_qk;

      // Row r of head h's kv_b_proj block applied to latent j, in double.
      const auto product = [&](int64_t h, int64_t r, int64_t j) {
        double s = 0;
        for (int64_t k = 0; k < d_c; ++k) s += double(lat_bf16[size_t(j * width + k)]) * w[size_t((h * (dn + dv) + r) * d_c + k)];
        return s;
      };
      // bf16 rounding: half a unit in the last place, 2^-8 of the value; f32 sums: far under 1e-4 here.
      const auto near = [](float got_v, double want) { return std::abs(got_v - want) <= std::ldexp(std::abs(want), -8) + 1e-4; };
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t j = 0; j < L; ++j) {
          const float* key = keys + (h * L + j) * d_qk;
          const float* value = values + (h * L + j) * dv;
          for (int64_t i = 0; i < dn; ++i)
            ASSERT_TRUE(near(key[i], product(h, i, j))) << dtype_name(cache_dtype) << " heads " << nh << " L " << L
                                                        << " head " << h << " key " << j << " column " << i << ": " << key[i]
                                                        << " against " << product(h, i, j);
          for (int64_t i = 0; i < dr; ++i)
            ASSERT_EQ(key[dn + i], lat_bf16[size_t(j * width + d_c + i)]) << "rotary part, head " << h << " key " << j;
          for (int64_t i = 0; i < dv; ++i)
            ASSERT_TRUE(near(value[i], product(h, dn + i, j))) << dtype_name(cache_dtype) << " heads " << nh << " L " << L
                                                               << " head " << h << " value " << j << " column " << i;
        }
    }
  }
  cublasDestroy(blas);
}

// What decompress_keys_values cannot take is an error before anything runs.
TEST(CudaKernels, DecompressKeysValuesRejectsWhatItCannotTake) {
  const cuda::MlaShape lite{16, 128, 64, 128, 512, kLiteScale}, narrow_rope{16, 128, 4, 128, 512, kLiteScale},
      narrow_v{16, 128, 64, 124, 512, kLiteScale};
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  DeviceBuffer buf(1 << 20);
  const cuda::PagedLatentCache cache{buf.get(), DType::BF16, 1, 4, 64, 576};
  const cuda::DeviceMatrix W{DType::BF16, buf.get(), 16 * 256, 512};
  cuda::DeviceMatrix f32_w = W, short_w = W;
  f32_w.dtype = DType::F32;
  short_w.rows = 15 * 256;
  cuda::PagedLatentCache f16_cache = cache, wide_cache = cache, narrow_rope_cache = cache;
  f16_cache.dtype = DType::F16;
  wide_cache.width = 640;
  narrow_rope_cache.width = 516;
  cuda::DeviceMatrix narrow_v_w = W;
  narrow_v_w.rows = 16 * (128 + 124);
  const auto run = [&](const cuda::MlaShape& m, const cuda::PagedLatentCache& c, const cuda::DeviceMatrix& w, int64_t L) {
    cuda::decompress_keys_values(blas, m, c, 0, buf.get<int32_t>(), L, w, buf.get(), nullptr);
  };
  // 4 rotary values, 124 value columns: not whole 16-byte rows (cache and weights otherwise fitting).
  EXPECT_THROW(run(narrow_rope, narrow_rope_cache, W, 10), Error);
  EXPECT_THROW(run(narrow_v, cache, narrow_v_w, 10), Error);
  EXPECT_THROW(run(lite, cache, f32_w, 10), Error);
  EXPECT_THROW(run(lite, cache, short_w, 10), Error);
  EXPECT_THROW(run(lite, f16_cache, W, 10), Error);
  EXPECT_THROW(run(lite, wide_cache, W, 10), Error);
  EXPECT_THROW(run(lite, cache, W, 0), Error);
  cuda::PagedLatentCache misaligned = cache;
  misaligned.data = static_cast<char*>(buf.get()) + 8;
  EXPECT_THROW(run(lite, misaligned, W, 10), Error);
  cublasDestroy(blas);
}

// The tensor-core kernels' keys and values from kvb [L, nh, d_nope + d_v] and k_pe [L, d_rope]: bf16,
// head-major, where prompt_keys_values puts them.
std::vector<std::byte> keys_values_bf16(const cuda::MlaShape& m, const std::vector<float>& kvb,
                                        const std::vector<float>& k_pe, int64_t L) {
  const int64_t nh = m.n_heads, dn = m.d_nope, dr = m.d_rope, dv = m.d_v, d_qk = dn + dr;
  std::vector<float> packed(size_t(nh * L * (d_qk + dv)));
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t j = 0; j < L; ++j) {
      const float* row = &kvb[size_t((j * nh + h) * (dn + dv))];
      float* key = &packed[size_t((h * L + j) * d_qk)];
      float* value = &packed[size_t(nh * L * d_qk + (h * L + j) * dv)];
      std::copy(row, row + dn, key);
      std::copy(&k_pe[size_t(j * dr)], &k_pe[size_t((j + 1) * dr)], key + dn);
      std::copy(row + dn, row + dn + dv, value);
    }
  std::vector<std::byte> bytes(packed.size() * 2);
  convert_from_f32(DType::BF16, packed.data(), bytes.data(), packed.size());
  return bytes;
}

// Causal attention of T queries at positions pos0 .. pos0+T-1 over keys 0 .. pos0+T-1 in double:
// q: [T, nh, d_qk], kvb: [L, nh, d_nope + d_v], k_pe: [L, d_rope] -> [T, nh, d_v].
std::vector<float> reference_causal_attention(const cuda::MlaShape& m, const std::vector<float>& q,
                                              const std::vector<float>& kvb, const std::vector<float>& k_pe, int64_t T,
                                              int64_t pos0) {
  const int64_t nh = m.n_heads, dn = m.d_nope, dr = m.d_rope, dv = m.d_v, d_qk = dn + dr, L = pos0 + T;
  std::vector<float> out(size_t(T * nh * dv));
  std::vector<double> p(static_cast<size_t>(L));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < nh; ++h) {
      const float* qr = &q[size_t((t * nh + h) * d_qk)];
      const int64_t n = pos0 + t + 1;
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float* kr = &kvb[size_t((j * nh + h) * (dn + dv))];
        double s = 0;
        for (int64_t i = 0; i < dn; ++i) s += double(qr[i]) * kr[i];
        for (int64_t i = 0; i < dr; ++i) s += double(qr[dn + i]) * k_pe[size_t(j * dr + i)];
        p[size_t(j)] = s * m.softmax_scale;
        mx = std::max(mx, p[size_t(j)]);
      }
      for (int64_t j = 0; j < n; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
      for (int64_t c = 0; c < dv; ++c) {
        double o = 0;
        for (int64_t j = 0; j < n; ++j) o += p[size_t(j)] * kvb[size_t((j * nh + h) * (dn + dv) + dn + c)];
        out[size_t((t * nh + h) * dv + c)] = float(o / sum);
      }
    }
  return out;
}

// The prompt attention, exact (f32 GEMMs) and on the tensor cores (bf16 inputs and probabilities), at
// DeepSeek-V2's and the default model's head shapes, chunks from position 0 and after a cached context,
// single queries and tails of the 64-query and 64-key tiles. The output row past T stays NaN.
TEST(CudaKernels, CausalPrefillAttentionMatchesReference) {
  std::mt19937 rng(11);
  struct Case {
    cuda::MlaShape m;
    int64_t T, pos0;
  };
  const cuda::MlaShape lite{16, 128, 64, 128, 512, kLiteScale}, odd{3, 128, 64, 128, 512, 0.2f},
      small{4, 32, 16, 32, 64, 0.3f};
  const std::vector<Case> cases = {{lite, 1, 0},  {lite, 64, 0},   {lite, 130, 0},  {lite, 100, 37}, {lite, 33, 1000},
                                   {lite, 257, 64}, {odd, 65, 3},  {odd, 1, 500},   {small, 200, 0}, {small, 77, 129}};
  cublasHandle_t blas;
  DSV2_CUBLAS_CHECK(cublasCreate(&blas));
  for (const Case& c : cases) {
    const cuda::MlaShape& m = c.m;
    ASSERT_TRUE(cuda::causal_attention_mma_supported(m));
    const int64_t nh = m.n_heads, d_qk = m.d_nope + m.d_rope, T = c.T, L = c.pos0 + c.T;
    std::vector<float> q = randn(size_t(T * nh * d_qk), rng), kvb = randn(size_t(L * nh * (m.d_nope + m.d_v)), rng),
                       k_pe = randn(size_t(L * m.d_rope), rng);
    const std::vector<float> want = reference_causal_attention(m, q, kvb, k_pe, T, c.pos0);
    DeviceBuffer dq = upload(q), dkvb = upload(kvb), dkpe = upload(k_pe), dkv = upload(keys_values_bf16(m, kvb, k_pe, L));
    const cuda::PromptKeysValues kv = cuda::prompt_keys_values(m, L, dkv.get());
    const size_t out_n = size_t(T * nh * m.d_v), row = size_t(nh * m.d_v);
    using Kernel = cuda::PrefillAttentionKernel;
    for (int form = 0; form < 3; ++form) {  // f32, mma.sync, wgmma (V2's heads)
      const bool tensor_cores = form > 0;
      if (form == 2 && !cuda::causal_attention_wgmma_supported(m)) continue;
      DeviceBuffer dout = nan_buffer(out_n + row);  // one row more than written
      if (tensor_cores) {
        cuda::attend_decompressed_mma(m, dq.get<float>(), kv.keys, kv.values, T, c.pos0, dout.get<float>(), nullptr,
                                      form == 1 ? Kernel::warp_mma : Kernel::warpgroup_mma);
      } else {
        DeviceBuffer keys = nan_buffer(size_t(L * nh * d_qk)), scores = nan_buffer(size_t(nh * T * L));
        cuda::attend_decompressed(blas, m, dq.get<float>(), dkvb.get<float>(), dkpe.get<float>(), T, c.pos0,
                                  dout.get<float>(), keys.get<float>(), scores.get<float>(), nullptr);
      }
      const std::vector<float> got = download(dout, out_n + row);
      // Measured: tensor cores 1.7e-3 to 5.2e-3 relative L2 (bf16 inputs and probabilities).
      const double tol = tensor_cores ? 1e-2 : 1e-5;
      for (int64_t t = 0; t < T; ++t)
        ASSERT_LE(test::rel_l2(&got[size_t(t) * row], &want[size_t(t) * row], row), tol)
            << (form == 0 ? "f32" : form == 1 ? "mma.sync" : "wgmma") << " heads " << nh << " d_qk " << d_qk << " T " << T << " pos0 "
            << c.pos0 << " query " << t;
      for (size_t i = out_n; i < out_n + row; ++i) ASSERT_TRUE(std::isnan(got[i])) << "wrote past T";
      if (tensor_cores)
        std::printf("[ prefill attention ] %s heads %lld, d_qk %lld, T %lld after %lld: relative L2 %.3g\n",
                    form == 1 ? "mma.sync" : "wgmma", (long long)nh, (long long)d_qk, (long long)T, (long long)c.pos0,
                    test::rel_l2(got.data(), want.data(), out_n));
    }
  }
  cublasDestroy(blas);
}

}  // namespace
}  // namespace dsv2
