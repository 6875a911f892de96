// Storage dtypes of checkpoint tensors and the conversions to and from f32.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace dsv2 {

// F32, F16, BF16: plain elements. Q8_0 and Q4_0: weight matrices quantized in blocks of kQuantBlock
// consecutive values along a row, each block with one f16 scale (core/quant.h); only a Matrix has them.
// F8_E4M3: FP8 weights of the GPU backend (1 sign, 4 exponent, 3 mantissa bits, no infinities, max 448),
// each 128×128 tile of a matrix with one f32 scale (core/fp8.h).
enum class DType { F32, F16, BF16, Q8_0, Q4_0, F8_E4M3 };

inline bool is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0; }

// Bytes per stored element: F32 4, F16/BF16 2; Q8_0/Q4_0 1 (their values as safetensors holds
// them: I8 values, U8 bytes of two 4-bit values); F8_E4M3 1.
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : is_quantized(t) || t == DType::F8_E4M3 ? 1 : 2; }

// The value of an FP8 E4M3 byte (its tile scale not applied); 0x7f and 0xff are NaN.
float f8_e4m3_to_f32(uint8_t b);

// Names as safetensors writes them ("F32", "F16", "BF16", "F8_E4M3"; a quantized matrix's values: "I8", "U8").
const char* safetensors_dtype_name(DType t);
// Short names used on the command line ("f32", "f16", "bf16", "int8", "q4", "fp8").
const char* dtype_name(DType t);
// Parses a command-line dtype name; throws Error naming `what` on anything else.
DType parse_dtype_name(const std::string& name, const std::string& what);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// dst[i] = f32(src[i]) for n elements of a plain dtype `t`.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// Writes n f32 values as plain dtype `t` (rounded to nearest even).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace dsv2
