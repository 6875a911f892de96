// The absorbed attention's per-head projections read kv_b_proj in its stored format: for every format
// (F32, BF16, F16, Q8_0, Q4_0) and every code path this CPU runs (AVX-512, AVX2, portable), the results
// equal the float64 products with the matrix's f32 values (its dequantization) to f32 rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "ops/cpu/head_projections.h"
#include "ops/cpu/ops_cpu.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::randn;

TEST(HeadProjections, EqualTheProductsWithTheStoredValuesInEveryFormat) {
  std::mt19937 rng(21);
  ThreadPool pool(1);
  const int64_t nh = 3, d_nope = 20, d_v = 7, q_stride = 26;  // q rows [q_nope (20) | q_rope (6)]
  const std::vector<cpu::CpuIsa> isas = test::supported_isas();
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    for (int64_t d_c : {32, 48, 512, 40, 36}) {  // 40: not a multiple of 16 (AVX2 or portable); 36: nor of 8
      std::vector<float> f32;  // kv_b's values
      std::vector<uint8_t> f32_store, store;
      const Matrix kv_b = test::stored_matrix(t, nh * (d_nope + d_v), d_c, rng, f32, f32_store, store, pool);
      const std::vector<float> q = randn(size_t(nh * q_stride), rng), o_lat = randn(size_t(nh * d_c), rng);
      std::vector<double> want_lat(size_t(nh * d_c), 0.0), want_out(size_t(nh * d_v), 0.0);
      for (int64_t h = 0; h < nh; ++h) {
        for (int64_t i = 0; i < d_nope; ++i)
          for (int64_t c = 0; c < d_c; ++c)
            want_lat[size_t(h * d_c + c)] += double(q[size_t(h * q_stride + i)]) * f32[size_t((h * (d_nope + d_v) + i) * d_c + c)];
        for (int64_t j = 0; j < d_v; ++j)
          for (int64_t c = 0; c < d_c; ++c)
            want_out[size_t(h * d_v + j)] +=
                double(f32[size_t((h * (d_nope + d_v) + d_nope + j) * d_c + c)]) * o_lat[size_t(h * d_c + c)];
      }
      for (cpu::CpuIsa isa : isas) {
        test::IsaScope scope(isa);
        const std::string at = std::string(dtype_name(t)) + " d_c=" + std::to_string(d_c) + " " + cpu::cpu_isa_name(isa);
        std::vector<float> q_lat(size_t(nh * d_c), NAN), out(size_t(nh * d_v), NAN);
        cpu::absorb_query_heads(kv_b, d_nope, d_v, q.data(), q_stride, 0, 2, q_lat.data());  // heads split in two calls
        cpu::absorb_query_heads(kv_b, d_nope, d_v, q.data(), q_stride, 2, nh, q_lat.data());
        cpu::expand_latent_heads(kv_b, d_nope, d_v, o_lat.data(), 0, 1, out.data());
        cpu::expand_latent_heads(kv_b, d_nope, d_v, o_lat.data(), 1, nh, out.data());
        for (size_t i = 0; i < q_lat.size(); ++i) EXPECT_NEAR(q_lat[i], want_lat[i], 1e-5 * (1 + std::fabs(want_lat[i]))) << at;
        for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want_out[i], 2e-5 * (1 + std::fabs(want_out[i]))) << at;
      }
    }
  }
}

}  // namespace
}  // namespace dsv2
