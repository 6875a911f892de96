#include <immintrin.h>

#include <vector>

#include "ops/cpu/simd_exp.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/joint_range.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/simd_targets.h"
#include "ops/ref/ops_ref.h"

namespace dsv2::cpu {

namespace {

constexpr int64_t kGrain = 4096;        // values per piece of work
constexpr int64_t kOnCaller = 4 * kGrain;  // up to which the calling thread does it alone (decode)

DSV2_AVX512 void silu_mul_avx512(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
  }
}

}  // namespace

void silu_mul_group(ThreadPool& pool, const std::vector<SiluMulJob>& jobs) {
  std::vector<int64_t> first(jobs.size() + 1, 0);  // job j owns [first[j], first[j + 1]) of the joint range
  for (size_t j = 0; j < jobs.size(); ++j) first[j + 1] = first[j] + jobs[j].n;
  const auto run = [&](int64_t begin, int64_t end) {
    split_by_job(first, begin, end, [&](size_t j, int64_t lo, int64_t hi) {
      (has_avx512() ? silu_mul_avx512 : ref::silu_mul)(jobs[j].gate + lo, jobs[j].up + lo, jobs[j].out + lo, hi - lo);
    });
  };
  if (first.back() <= kOnCaller) {
    run(0, first.back());
  } else {
    pool.parallel_for(first.back(), kGrain, run);
  }
}

}  // namespace dsv2::cpu
