#include "ops/cpu/ops_cpu.h"

#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/qgemv_avx512.h"

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

namespace {

// Each thread takes tiles of kTileRows weight rows (kept in L2 while every group of up to
// kGemvMaxTokens tokens streams over them); each row is converted in registers, never stored.
constexpr int64_t kRowBlock = 16;
constexpr int64_t kTileRows = 64;

template <class GroupKernel>  // GroupKernel(t0, n_tokens, r0, r1): rows [r0, r1) for tokens [t0, t0 + n_tokens)
void tiled_rows(ThreadPool& pool, int64_t T, int64_t N, const GroupKernel& kernel) {
  pool.parallel_for(N, kRowBlock, [&](int64_t begin, int64_t end) {
    for (int64_t r0 = begin; r0 < end; r0 += kTileRows) {
      const int64_t r1 = std::min(end, r0 + kTileRows);
      for (int64_t t0 = 0; t0 < T; t0 += kGemvMaxTokens) kernel(t0, std::min(kGemvMaxTokens, T - t0), r0, r1);
    }
  });
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y) {
  const int64_t K = W.cols, N = W.rows;
  if (is_quantized(W.dtype) && has_avx512_vnni()) {
    thread_local QuantizedActivations this_thread_activations;  // reused across calls
    QuantizedActivations& xq = this_thread_activations;          // (the workers see this thread's buffer)
    prepare_activations(W.dtype, T, K, xq);
    pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1) { quantize_activations(x, t0, t1, xq); });
    tiled_rows(pool, T, N, [&](int64_t t0, int64_t n, int64_t r0, int64_t r1) { qgemv_rows_avx512(xq, t0, n, W, r0, r1, y + t0 * N); });
    return;
  }
  if (!is_quantized(W.dtype) && has_avx512()) {
    tiled_rows(pool, T, N, [&](int64_t t0, int64_t n, int64_t r0, int64_t r1) { gemv_rows_avx512(x + t0 * K, n, W, r0, r1, y + t0 * N); });
    return;
  }
  matmul_portable(pool, x, T, W, y);
}

void matmul_portable(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y) {
  const int64_t K = W.cols, N = W.rows;
  pool.parallel_for(N, kRowBlock, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(size_t(kRowBlock * K));
    for (int64_t o0 = begin; o0 < end; o0 += kRowBlock) {
      const int64_t nr = std::min(kRowBlock, end - o0);
      matrix_rows_to_f32(W, o0, nr, rows.data());
      for (int64_t t = 0; t < T; ++t) {
        const float* xt = x + t * K;
        float* yt = y + t * N + o0;
        for (int64_t r = 0; r < nr; ++r) yt[r] = dot(xt, rows.data() + r * K, K);
      }
    }
  });
}

}  // namespace dsv2::cpu
