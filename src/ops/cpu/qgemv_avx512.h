// y[t, o] = Σ_i x[t, i] · W[o, i] for a block-quantized W (Q8_0, Q4_0; core/quant.h) and up to
// kGemvMaxTokens tokens with AVX-512 VNNI: the activations are quantized to int8 per block of 32
// first (QuantizedActivations), then each pair of weight blocks (64 values) meets every token in one
// vpdpbusd (u8 × s8 → int32, 4 products per lane); the int32 lane sums are scaled by
// d_weight · d_activation of their block and summed in f32.
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace dsv2::cpu {

// True when the CPU has AVX-512 F, BW, VL and VNNI (checked once).
bool has_avx512_vnni();

// The activations of T tokens prepared for a matrix of format `weights` with `cols` columns, padded to
// an even number of blocks (`padded` values per token). vpdpbusd multiplies unsigned by signed bytes:
// Q8_0 (signed weights) takes the activations as x_q + 128 (unsigned; the kernel subtracts 128 · Σ w),
// Q4_0 (weights stored as q + 8, unsigned) takes them signed and `lane_offset` removes the + 8.
struct QuantizedActivations {
  DType weights = DType::Q8_0;
  int64_t tokens = 0, cols = 0, padded = 0;
  std::vector<uint8_t> values;        // [T, padded]: the int8 activations (as x_q + 128 for Q8_0), 0 past cols
  std::vector<float> lane_scale;      // [T, padded / 4]: the scale of the block holding values 4i .. 4i+3
  std::vector<int32_t> lane_offset;   // Q4_0: [T, padded / 4] = -8 · Σ of x_q over values 4i .. 4i+3
};

// Quantizes x: [T, cols] for W's format. Portable code; rows of tokens may be split over threads by
// calling it on [t_begin, t_end) after `prepare_activations`.
void prepare_activations(DType weights, int64_t T, int64_t cols, QuantizedActivations& out);
void quantize_activations(const float* x, int64_t t_begin, int64_t t_end, QuantizedActivations& out);

// Rows [row_begin, row_end) of y = x · Wᵀ for tokens [t0, t0 + T) of xq, T <= kGemvMaxTokens.
// y: [T, W.rows] (the rows of those tokens). Needs has_avx512_vnni().
void qgemv_rows_avx512(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t row_begin,
                       int64_t row_end, float* y);

}  // namespace dsv2::cpu
