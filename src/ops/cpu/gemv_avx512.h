// y[t, o] = Σ_i x[t, i] · W[o, i] for up to kGemvMaxTokens tokens with AVX-512: each BF16/F16/F32
// weight row is converted in registers and multiplied with every token as it streams from memory.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace dsv2::cpu {

constexpr int64_t kGemvMaxTokens = 4;

// True when the CPU has AVX-512 F and BW (checked once).
bool has_avx512();

// Rows [row_begin, row_end) of y = x · Wᵀ.   x: [T, W.cols], y: [T, W.rows], T <= kGemvMaxTokens.
// Needs has_avx512().
void gemv_rows_avx512(const float* x, int64_t T, const Matrix& W, int64_t row_begin, int64_t row_end, float* y);

}  // namespace dsv2::cpu
