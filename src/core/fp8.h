// FP8 (E4M3) weights on the host: the reference of the GPU's tile quantization (ops/cuda/fp8.cu),
// bit for bit. A matrix [rows, cols] has one f32 scale per kFp8TileSize×kFp8TileSize tile:
// scale = max|tile| / 448 (1 for a tile of zeros), value = fp8(x / scale) · scale.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv2 {

constexpr int64_t kFp8TileSize = 128;
constexpr float kFp8Max = 448.0f;  // the largest finite E4M3 value
// Tiles along a dimension of n values (the last one partial).
constexpr int64_t fp8_tiles(int64_t n) { return (n + kFp8TileSize - 1) / kFp8TileSize; }

// x rounded to the nearest E4M3 value (ties to the even code), saturated to ±448; NaN stays NaN (0x7f).
uint8_t f32_to_f8_e4m3(float x);

// The tile quantization of a row-major [rows, cols] matrix: codes [rows·cols], scales
// [ceil(rows/128), ceil(cols/128)].
struct Fp8Matrix {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
};
Fp8Matrix quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols);
// out[r, c] = f8_e4m3_to_f32(codes[r, c]) · scale of its tile.
void dequantize_fp8_tiles(const Fp8Matrix& q, int64_t rows, int64_t cols, float* out);

}  // namespace dsv2
