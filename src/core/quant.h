// Block-quantized weight rows: a row of K values is cut into ceil(K / 32) blocks of 32 consecutive
// values (the last one zero-padded), each stored as small integers and one f16 scale d:
//   Q8_0: int8 q in [-127, 127], value = d · q; 32 bytes per block.            (8.5 bits per value)
//   Q4_0: 4-bit q in [-8, 7] stored as q + 8, value = d · q; 16 bytes per block: byte j holds
//         value j in its low nibble and value j + 16 in its high nibble.      (4.5 bits per value)
// Both are symmetric (no offset). Q8_0: d maps the block's largest magnitude to 127. Q4_0: d maps the
// value of largest magnitude, with its sign, to -8, or is the least-squares scale of those codes
// (Σ q·x / Σ q², codes then recomputed) when that has the smaller squared error.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace dsv2 {

constexpr int64_t kQuantBlock = 32;

inline int64_t quant_blocks(int64_t cols) { return (cols + kQuantBlock - 1) / kQuantBlock; }
// Bytes of one quantized row's values (every block whole, padding included), without its scales.
inline int64_t quant_row_bytes(DType t, int64_t cols) {
  return quant_blocks(cols) * (t == DType::Q8_0 ? kQuantBlock : kQuantBlock / 2);
}

// Round to nearest even for |v| < 2^22, in plain float arithmetic (no libm call): adding 1.5 · 2^23
// leaves no fraction bits.
inline int round_small(float v) { return int((v + 0x1.8p23f) - 0x1.8p23f); }

// x: [cols] -> q: [quant_row_bytes(t, cols)] bytes, scales: [quant_blocks(cols)] f16.
void quantize_row(DType t, const float* x, int64_t cols, void* q, uint16_t* scales);
// The inverse: out: [cols] (the padding is dropped).
void dequantize_row(DType t, const void* q, const uint16_t* scales, int64_t cols, float* out);

}  // namespace dsv2
