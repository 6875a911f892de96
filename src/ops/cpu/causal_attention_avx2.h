// The prompt attention of causal_attention.h (attend_rows) on AVX2 + FMA, for CPUs without AVX-512:
// the AVX-512 kernel's structure at 8 lanes and 16 vector registers — scores in blocks of up to 4
// query rows × 2 keys (each key vector loaded once for the rows), the weighted sum 16 output values at
// a time with each value row loaded once for the rows that see it.
#pragma once
#include <cstdint>

namespace dsv2::cpu {

// attend_rows (1 to kAttendRows rows) with the AVX2 kernel; row i's result is the same bits for any
// number of rows. Callers check has_avx2() first.
void attend_rows_avx2(const float* q, int64_t q_stride, int64_t rows, const float* k_nope, int64_t k_stride,
                      const float* k_rope, int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0,
                      int64_t d_nope, int64_t d_rope, int64_t d_v, float scale, float* scores, float* out,
                      int64_t out_stride);

}  // namespace dsv2::cpu
