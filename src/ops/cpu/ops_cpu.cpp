#include "ops/cpu/ops_cpu.h"

#include "ops/cpu/gemv_avx512.h"

#include <algorithm>
#include <vector>

namespace dsv2::cpu {

#define DSV2_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))

DSV2_MULTIVERSION float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

DSV2_MULTIVERSION void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void matmul(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y) {
  constexpr int64_t kRowBlock = 16;  // weight rows converted together, reused across all T tokens
  const int64_t K = W.cols, N = W.rows;
  if (has_avx512()) {
    // Each thread takes tiles of kTileRows weight rows (kept in L2 while every group of up to
    // kGemvMaxTokens tokens streams over them); each row is converted in registers, never stored.
    constexpr int64_t kTileRows = 64;
    pool.parallel_for(N, kRowBlock, [&](int64_t begin, int64_t end) {
      for (int64_t r0 = begin; r0 < end; r0 += kTileRows) {
        const int64_t r1 = std::min(end, r0 + kTileRows);
        for (int64_t t0 = 0; t0 < T; t0 += kGemvMaxTokens)
          gemv_rows_avx512(x + t0 * K, std::min(kGemvMaxTokens, T - t0), W, r0, r1, y + t0 * N);
      }
    });
    return;
  }
  pool.parallel_for(N, kRowBlock, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(size_t(kRowBlock * K));
    for (int64_t o0 = begin; o0 < end; o0 += kRowBlock) {
      const int64_t nr = std::min(kRowBlock, end - o0);
      convert_to_f32(W.dtype, W.row(o0), rows.data(), size_t(nr * K));
      for (int64_t t = 0; t < T; ++t) {
        const float* xt = x + t * K;
        float* yt = y + t * N + o0;
        for (int64_t r = 0; r < nr; ++r) yt[r] = dot(xt, rows.data() + r * K, K);
      }
    }
  });
}

}  // namespace dsv2::cpu
