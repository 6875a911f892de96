#include "core/dtype.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace dsv2 {

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "I8";
    case DType::Q4_0: return "U8";
    case DType::F8_E4M3: return "F8_E4M3";
  }
  return "?";
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8_0: return "int8";
    case DType::Q4_0: return "q4";
    case DType::F8_E4M3: return "fp8";
  }
  return "?";
}

DType parse_dtype_name(const std::string& name, const std::string& what) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  throw Error(what + ": unknown dtype '" + name + "' (expected f32, f16 or bf16)");
}

float f8_e4m3_to_f32(uint8_t b) {
  const float sign = b & 0x80u ? -1.0f : 1.0f;
  const int exp = (b >> 3) & 0xf, mant = b & 0x7;
  if (exp == 0xf && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) return sign * std::ldexp(float(mant), -9);  // subnormal: mant/8 · 2^-6
  return sign * std::ldexp(1.0f + float(mant) / 8.0f, exp - 7);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;         // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;        // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                              // below the smallest normal: subnormal
    if (abs < 0x33000000u) return sign;                 // rounds to zero
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;                         // value = half * 2^-24; shift in [14, 24]
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return sign | uint16_t(half);
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return sign | uint16_t((rounded - (uint32_t(127 - 15) << 23)) >> 13);
}

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  check(!is_quantized(t) && t != DType::F8_E4M3, std::string("convert_to_f32: ") + dtype_name(t) + " needs its scales");
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::F8_E4M3:
      return;  // rejected above
  }
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  check(!is_quantized(t) && t != DType::F8_E4M3, std::string("convert_from_f32: ") + dtype_name(t) + " needs its scales");
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::F8_E4M3:
      return;  // rejected above
  }
}

}  // namespace dsv2
