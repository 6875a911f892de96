// y[t, o] = Σ_i x[t, i] · W[o, i] for up to kGemvMaxTokens tokens with AVX2 + FMA + F16C (CPUs without
// AVX-512): BF16/F16/F32 weights against f32 activations, and Q8_0/Q4_0 weights against activations
// quantized to int8 per block of 32 (QuantizedActivations of quant_activations.h, the same layout).
#pragma once
#include <cstdint>

#include "model/weights.h"
#include "ops/cpu/quant_activations.h"

namespace dsv2::cpu {

// True when the CPU has AVX2, FMA and F16C (checked once).
bool has_avx2();

// Rows [r0, r1) of y = x · Wᵀ for a BF16, F16 or F32 W.   x: [T, W.cols], y: [T, W.rows], T <= kGemvMaxTokens.
// Each (token, row) sum has two accumulators of 8 lanes (values 0..7 and 8..15 of each step of 16; the
// last K % 16 values to the first, a part of 8 zero-filled), added and reduced by a fixed tree: a token's
// result is the same bits whatever T and whichever tile computed it. (Not the AVX-512 kernel's order: results differ from it by rounding.)
// Needs has_avx2().
void gemv_rows_avx2(const float* x, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y);

// Rows [r0, r1) of y = x · Wᵀ for a Q8_0/Q4_0 W and tokens [t0, t0 + T) of xq (prepared for W's format),
// T <= kGemvMaxTokens; y: [T, W.rows]. Integer products per block with vpmaddubsw (unsigned × signed
// bytes into int16 pairs) and vpmaddwd: Q8_0 as |w| × (x with w's sign), which cannot saturate since
// |w|, |x| <= 127; Q4_0 as stored (q + 8) × x, the + 8 removed by xq.lane_offset. Each block's int32
// lane sums times d_weight · d_activation are accumulated in f32, per token in one accumulator: the same
// bits whatever T. Needs has_avx2().
void qgemv_rows_avx2(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                     float* y);

// out: [n, W.cols] = rows [r0, r0 + n) of a quantized W as f32, as dequantize_row gives them (the same
// bits). Needs has_avx2().
void dequantize_rows_avx2(const Matrix& W, int64_t r0, int64_t n, float* out);

}  // namespace dsv2::cpu
