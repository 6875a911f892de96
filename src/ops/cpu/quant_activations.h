// The activations of a matmul with block-quantized weights (Q8_0, Q4_0; core/quant.h), quantized to
// int8 per block of 32 (QuantizedActivations) and laid out for 64-byte steps of vpdpbusd (u8 × s8 →
// int32, 4 products per lane); the AVX-512 dequantization of quantized rows. The kernels that use
// them: quant_gemm_avx512.h (AVX-512 VNNI), gemv_avx2.h (AVX2).
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace dsv2::cpu {

// True when the CPU has AVX-512 F, BW, VL and VNNI (checked once).
bool has_avx512_vnni();

// The activations of T tokens prepared for a matrix of format `weights` with `cols` columns, laid out
// for the kernel's 64-byte steps. vpdpbusd multiplies unsigned by signed bytes: the weights take the
// unsigned side (Q8_0 as w + 128, Q4_0 as stored, q + 8) and the activations the signed side;
// lane_offset removes what the + 128 or + 8 adds (-128 or -8 times the lane's Σ x_q).
//   Q8_0: a step is 2 blocks in value order; lane l of a step covers values 4l .. 4l+3.
//   Q4_0: a step is 4 blocks (64 bytes of weights), the activations in nibble order, per 4 blocks
//     [values 0..15 of each block | values 16..31 of each block], so that the low and the high nibbles
//     of the weight bytes each meet their activations in place; lane l covers 4 values of block l/4
//     in each half.
struct QuantizedActivations {
  DType weights = DType::Q8_0;
  int64_t cols = 0, padded = 0;              // padded: values per token, whole steps (0 past cols)
  int64_t scale_blocks = 0;                  // blocks per token in block_scale, a multiple of 16
  std::vector<int8_t> values;                // [T, padded]
  std::vector<int32_t> lane_offset;          // [T, lanes_per_token()]
  std::vector<float> block_scale;            // [T, scale_blocks]: each block's scale (0 past cols)
  std::vector<int32_t> block_offset;         // [T, scale_blocks]: −128 (Q8_0) or −8 (Q4_0) · Σ of the block's values
  int64_t lanes_per_token() const { return padded / (weights == DType::Q8_0 ? 4 : 8); }
  // Token t's rows of the arrays above.
  const int8_t* values_of(int64_t t) const { return &values[size_t(t * padded)]; }
  const int32_t* lane_offsets_of(int64_t t) const { return &lane_offset[size_t(t * lanes_per_token())]; }
  const float* scales_of(int64_t t) const { return &block_scale[size_t(t * scale_blocks)]; }
  const int32_t* block_offsets_of(int64_t t) const { return &block_offset[size_t(t * scale_blocks)]; }
};

// Quantizes x: [T, cols] for W's format. Portable code; rows of tokens may be split over threads by
// calling it on [t_begin, t_end) after `prepare_activations`.
void prepare_activations(DType weights, int64_t T, int64_t cols, QuantizedActivations& out);
void quantize_activations(const float* x, int64_t t_begin, int64_t t_end, QuantizedActivations& out);

// out: [n, W.cols] = rows [r0, r0 + n) of a quantized W as f32, as dequantize_row gives them.
// Needs has_avx512_vnni().
void dequantize_rows_avx512(const Matrix& W, int64_t r0, int64_t n, float* out);

}  // namespace dsv2::cpu
