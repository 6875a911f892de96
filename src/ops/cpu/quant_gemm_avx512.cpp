#include "ops/cpu/quant_gemm_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int kPanelRows = 16;              // rows per panel: the lanes of a vector
constexpr int kQuads = kQuantBlock / 4;     // 4-value groups per block: vpdpbusd's products per lane
constexpr int kTokenGroup = 8;              // tokens sharing each weight vector
// Weight rows are prefetched this far ahead of the step into L1, in each row of the 16 read side by side
// (rows of a panel are adjacent: a distance of a whole row would fetch what the next row reads anyway);
// the decode kernel also fetches the same step of the next panel's rows into L2, so that a panel's
// first bytes do not wait on memory.
constexpr int64_t kPrefetchBytes = 512;

// Where block b's values 4j .. 4j + 3 lie in a token's activations (QuantizedActivations' layout):
// Q8_0 in value order; Q4_0 in steps of 4 blocks, [values 0..15 of each | values 16..31 of each].
template <DType F>
constexpr int64_t block_base(int64_t b) {
  return F == DType::Q8_0 ? b * kQuantBlock : b / 4 * 4 * kQuantBlock + 16 * (b % 4);
}
template <DType F>
constexpr int64_t quad_offset(int j) {
  return F == DType::Q8_0 || j < 4 ? 4 * j : 64 + 4 * (j - 4);
}
// The unsigned bytes of block b of a row, values 0 .. 31 in order: Q8_0 q + 128, Q4_0 q + 8.
template <DType F>
DSV2_VNNI inline __m256i block_bytes(const uint8_t* row, int64_t b) {
  if constexpr (F == DType::Q8_0) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * kQuantBlock));
    return _mm256_xor_si256(q, _mm256_set1_epi8(char(0x80)));
  } else {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * quant_row_bytes(F, kQuantBlock)));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low4), _mm_and_si128(q, low4));
  }
}

// A tile's panels: words [panel][block][quad][16 rows] (4 unsigned bytes each, as block_bytes), scales
// [panel][block][16 rows] (f32; rows past the tile repeat its last row, never stored).
struct PackedTile {
  std::vector<uint32_t> words;
  std::vector<float> scales;
};

template <DType F>
DSV2_VNNI void pack_tile(const Matrix& W, int64_t r0, int64_t r1, PackedTile& p) {
  const int64_t nb = quant_blocks(W.cols), panels = (r1 - r0 + kPanelRows - 1) / kPanelRows;
  p.words.resize(size_t(panels * nb * kQuads * kPanelRows));
  p.scales.resize(size_t(panels * nb * kPanelRows));
  // Qwords of two transposed halves that make quad j (low 128 bits of each half) or j + 4 (high).
  const __m512i low_lanes = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
  const __m512i high_lanes = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
  const int64_t stored = quant_row_bytes(F, kQuantBlock);  // bytes per block
  for (int64_t g = 0; g < panels; ++g) {
    const int64_t g0 = r0 + g * kPanelRows, nr = std::min<int64_t>(kPanelRows, r1 - g0);
    const uint8_t* row[kPanelRows];
    for (int r = 0; r < kPanelRows; ++r) {
      const int64_t src = g0 + std::min<int64_t>(r, nr - 1);
      row[r] = static_cast<const uint8_t*>(W.row(src));
      const uint16_t* s = W.row_scales(src);
      for (int64_t b = 0; b < nb; ++b) p.scales[size_t((g * nb + b) * kPanelRows + r)] = _cvtsh_ss(s[b]);
    }
    uint32_t* out = &p.words[size_t(g * nb * kQuads * kPanelRows)];
    for (int64_t b = 0; b < nb; ++b) {
      if (b * stored % 64 == 0)
        for (int r = 0; r < kPanelRows; ++r)
          _mm_prefetch(reinterpret_cast<const char*>(row[r] + b * stored + kPrefetchBytes), _MM_HINT_T0);
      // v[i]: row i's 8 quads in the low half, row i + 8's in the high half; an 8×8 transpose of 4-byte
      // words within each half (unpacks, then halves of 128 bits paired) gives quad j of all 16 rows.
      __m512i v[8], t[8], s[8];
      for (int i = 0; i < 8; ++i)
        v[i] = _mm512_inserti64x4(_mm512_castsi256_si512(block_bytes<F>(row[i], b)), block_bytes<F>(row[i + 8], b), 1);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        s[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);      // quad 0 (and 4) of rows i .. i+3
        s[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);  // quad 1 (and 5)
        s[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);  // quad 2 (and 6)
        s[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);  // quad 3 (and 7)
      }
      for (int j = 0; j < 4; ++j) {
        const __m512i q_lo = _mm512_permutex2var_epi64(s[j], low_lanes, s[j + 4]);
        const __m512i q_hi = _mm512_permutex2var_epi64(s[j], high_lanes, s[j + 4]);
        _mm512_storeu_si512(out + (b * kQuads + j) * kPanelRows, q_lo);
        _mm512_storeu_si512(out + (b * kQuads + j + 4) * kPanelRows, q_hi);
      }
    }
  }
}

inline int32_t four_bytes(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// TT tokens from t0 against panel g: for each block, the 16 rows' exact block sums for each token
// (the block's offset, −128 or −8 · Σ xq, plus the unsigned bytes · xq over its 8 quads), then one
// fma per token.
template <DType F, int TT>
DSV2_VNNI void panel_times_tokens(const PackedTile& p, int64_t g, int64_t nb, const QuantizedActivations& xq,
                                  int64_t t0, float* y, int64_t N, int64_t row0, int64_t nr) {
  const uint32_t* words = &p.words[size_t(g * nb * kQuads * kPanelRows)];
  const float* scales = &p.scales[size_t(g * nb * kPanelRows)];
  const int8_t* x[TT];
  const int32_t* offset[TT];
  const float* xscale[TT];
  for (int t = 0; t < TT; ++t) {
    x[t] = xq.values_of(t0 + t);
    offset[t] = xq.block_offsets_of(t0 + t);
    xscale[t] = xq.scales_of(t0 + t);
  }
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i sum[TT];
    for (int t = 0; t < TT; ++t) sum[t] = _mm512_set1_epi32(offset[t][b]);
#pragma GCC unroll 8
    for (int j = 0; j < kQuads; ++j) {
      const __m512i w = _mm512_loadu_si512(words + (b * kQuads + j) * kPanelRows);
      for (int t = 0; t < TT; ++t)
        sum[t] = _mm512_dpbusd_epi32(sum[t], w, _mm512_set1_epi32(four_bytes(x[t] + block_base<F>(b) + quad_offset<F>(j))));
    }
    const __m512 dw = _mm512_loadu_ps(scales + b * kPanelRows);
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(xscale[t][b])), acc[t]);
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < TT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * N + row0, keep, acc[t]);
}

// Row r's partial sums are the 16 lanes of v[r]; returns, row r in lane r of each, the sums of lanes
// 4k .. 4k + 3 in quarter[k] (k < 4), by a tree of exact integer additions over transposed lanes.
DSV2_VNNI inline void sum_row_quarters(const __m512i (&v)[kPanelRows], __m512i (&quarter)[4]) {
  __m512i a[8], b[4], u[4];
  for (int i = 0; i < 8; ++i)  // per 128 bits: rows 2i, 2i + 1, two partial sums each
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // 128 bits k: rows 4i .. 4i + 3, the sum of their lanes 4k .. 4k + 3
    b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
  // A 4 × 4 transpose of 128-bit pieces: quarter[k] gathers piece k of b[0 .. 3].
  u[0] = _mm512_shuffle_i32x4(b[0], b[1], _MM_SHUFFLE(1, 0, 1, 0));
  u[1] = _mm512_shuffle_i32x4(b[0], b[1], _MM_SHUFFLE(3, 2, 3, 2));
  u[2] = _mm512_shuffle_i32x4(b[2], b[3], _MM_SHUFFLE(1, 0, 1, 0));
  u[3] = _mm512_shuffle_i32x4(b[2], b[3], _MM_SHUFFLE(3, 2, 3, 2));
  quarter[0] = _mm512_shuffle_i32x4(u[0], u[2], _MM_SHUFFLE(2, 0, 2, 0));
  quarter[1] = _mm512_shuffle_i32x4(u[0], u[2], _MM_SHUFFLE(3, 1, 3, 1));
  quarter[2] = _mm512_shuffle_i32x4(u[1], u[3], _MM_SHUFFLE(2, 0, 2, 0));
  quarter[3] = _mm512_shuffle_i32x4(u[1], u[3], _MM_SHUFFLE(3, 1, 3, 1));
}

// Blocks per 64-byte step of a stored row.
template <DType F>
constexpr int step_blocks() {
  return F == DType::Q8_0 ? 2 : 4;
}

// T tokens from t0 against rows g0 .. g0 + nr − 1 (nr <= 16) as stored, into y: [T, N] (those tokens'
// rows): per 64-byte step (Q8_0: two blocks, Q4_0: four) each row's lanes of the unsigned bytes · xq
// from the step's lane offsets (Q4_0: low nibbles with the first half of the step's activations, high
// nibbles with the second), summed per block by sum_row_quarters, then one fma per block and token,
// in block order.
template <DType F, int T>
DSV2_VNNI void gemv_panel(const QuantizedActivations& xq, int64_t t0, const Matrix& W, int64_t g0, int64_t nr, float* y) {
  constexpr int SB = step_blocks<F>();
  const int64_t stored = quant_row_bytes(F, kQuantBlock);  // bytes per block
  const int64_t nb = quant_blocks(W.cols), N = W.rows;
  const uint8_t *row[kPanelRows], *next[kPanelRows];
  alignas(64) int32_t scale_offset[kPanelRows];  // bytes from row g0's scales to row r's
  for (int r = 0; r < kPanelRows; ++r) {
    const int64_t src = std::min<int64_t>(r, nr - 1);
    row[r] = static_cast<const uint8_t*>(W.row(g0 + src));
    next[r] = static_cast<const uint8_t*>(W.row(std::min(g0 + kPanelRows + r, N - 1)));
    scale_offset[r] = int32_t(src * nb * 2);
  }
  const __m512i scale_index = _mm512_load_si512(scale_offset);
  const uint16_t* scales = W.row_scales(g0);
  // The next panel's scales, [16, nb] f16 in one piece, fetched into L1 a share per step (the gather
  // below waits on 16 rows' lines that no hardware prefetcher follows).
  const char* next_scales = reinterpret_cast<const char*>(W.row_scales(std::min(g0 + kPanelRows, N - 1)));
  const int8_t* x[T];
  const int32_t* offset[T];
  const float* xscale[T];
  for (int t = 0; t < T; ++t) {
    x[t] = xq.values_of(t0 + t);
    offset[t] = xq.lane_offsets_of(t0 + t);
    xscale[t] = xq.scales_of(t0 + t);
  }
  const __m512i plus128 = _mm512_set1_epi8(char(0x80)), low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += SB) {
    const int n = int(std::min<int64_t>(SB, nb - b));  // blocks of this step
    for (int r = 0; r < kPanelRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(row[r] + b * stored + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(next[r] + b * stored), _MM_HINT_T1);
    }
    for (int k = 0; k < SB; k += 2) _mm_prefetch(next_scales + (b + k) * 2 * kPanelRows, _MM_HINT_T0);
    __m512 dw[SB] = {};  // the 16 rows' scales of blocks b .. b + n − 1
    if (n == SB) {
      for (int k = 0; k < SB; k += 2) {
        const __m512i pair = _mm512_i32gather_epi32(scale_index, scales + b + k, 1);
        dw[k] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(pair));
        dw[k + 1] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(pair, 16)));
      }
    } else {
      for (int k = 0; k < n; ++k) {
        alignas(64) float last[kPanelRows];
        for (int r = 0; r < kPanelRows; ++r) last[r] = _cvtsh_ss(scales[scale_offset[r] / 2 + b + k]);
        dw[k] = _mm512_load_ps(last);
      }
    }
    const __mmask64 present = n == SB ? ~__mmask64(0) : __mmask64((1ull << (n * stored)) - 1);
    for (int t = 0; t < T; ++t) {
      __m512i v[kPanelRows];
      const __m512i lane_offset = _mm512_loadu_si512(offset[t] + b * 16 / SB);
      const int8_t* xs = x[t] + b * kQuantBlock;
      for (int r = 0; r < kPanelRows; ++r) {
        const uint8_t* p = row[r] + b * stored;
        const __m512i w = n == SB ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(present, p);
        if constexpr (F == DType::Q8_0) {
          v[r] = _mm512_dpbusd_epi32(lane_offset, _mm512_xor_si512(w, plus128), _mm512_loadu_si512(xs));
        } else {
          const __m512i lo = _mm512_and_si512(w, low4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low4);
          v[r] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(lane_offset, lo, _mm512_loadu_si512(xs)), hi,
                                     _mm512_loadu_si512(xs + 64));
        }
      }
      __m512i quarter[4];
      sum_row_quarters(v, quarter);
      __m512i block_sum[SB];  // the 16 rows' sums of blocks b .. b + SB − 1
      if constexpr (F == DType::Q8_0) {
        block_sum[0] = _mm512_add_epi32(quarter[0], quarter[1]);
        block_sum[1] = _mm512_add_epi32(quarter[2], quarter[3]);
      } else {
        for (int k = 0; k < SB; ++k) block_sum[k] = quarter[k];
      }
      for (int k = 0; k < n; ++k)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(block_sum[k]), _mm512_mul_ps(dw[k], _mm512_set1_ps(xscale[t][b + k])),
                                 acc[t]);
    }
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + t * N + g0, keep, acc[t]);
}

template <DType F>
void gemv_rows(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  with_count<kGemvMaxTokens>(T, [&](auto n) {
    for (int64_t g0 = r0; g0 < r1; g0 += kPanelRows)
      gemv_panel<F, decltype(n)::value>(xq, t0, W, g0, std::min<int64_t>(kPanelRows, r1 - g0), y);
  });
}

template <DType F>
void gemm_tile(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  thread_local PackedTile packed;
  pack_tile<F>(W, r0, r1, packed);
  const int64_t nb = quant_blocks(W.cols), N = W.rows, panels = (r1 - r0 + kPanelRows - 1) / kPanelRows;
  for (int64_t t0 = 0; t0 < T; t0 += kTokenGroup) {
    with_count<kTokenGroup>(T - t0, [&](auto n) {
      for (int64_t g = 0; g < panels; ++g) {
        const int64_t row0 = r0 + g * kPanelRows;
        panel_times_tokens<F, decltype(n)::value>(packed, g, nb, xq, t0, y, N, row0,
                                                  std::min<int64_t>(kPanelRows, r1 - row0));
      }
    });
  }
}

// The plain C++ statement of the order: S_b from the stored q (Q8_0: the byte as int8; Q4_0: the nibble
// minus 8) and the activation bytes where block_base / quad_offset place them.
template <DType F>
void rows_canonical(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  const int64_t nb = quant_blocks(W.cols), N = W.rows, stored = quant_row_bytes(F, kQuantBlock);
  for (int64_t t = 0; t < T; ++t) {
    const int8_t* x = xq.values_of(t);
    const float* xscale = xq.scales_of(t);
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* q = static_cast<const uint8_t*>(W.row(r));
      const uint16_t* ws = W.row_scales(r);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t sum = 0;
        for (int v = 0; v < kQuantBlock; ++v) {
          const uint8_t byte = q[b * stored + (F == DType::Q8_0 ? v : v % 16)];
          const int32_t w = F == DType::Q8_0 ? int32_t(int8_t(byte)) : int32_t((byte >> (v < 16 ? 0 : 4)) & 0x0f) - 8;
          sum += w * int32_t(x[block_base<F>(b) + quad_offset<F>(v / 4) + v % 4]);
        }
        acc = std::fma(float(sum), f16_to_f32(ws[b]) * xscale[b], acc);
      }
      y[t * N + r] = acc;
    }
  }
}

// Checks that xq was prepared for W, then calls fn with W's format as a compile-time constant.
template <typename Fn>
void with_format(const QuantizedActivations& xq, const Matrix& W, Fn&& fn) {
  check(W.dtype == DType::Q8_0 || W.dtype == DType::Q4_0, "quantized matmul: Q8_0 or Q4_0 weights");
  check(xq.weights == W.dtype && xq.cols == W.cols, "quantized matmul: activations prepared for another matrix");
  if (W.dtype == DType::Q8_0) {
    fn(std::integral_constant<DType, DType::Q8_0>{});
  } else {
    fn(std::integral_constant<DType, DType::Q4_0>{});
  }
}

}  // namespace

void quant_gemv_rows_avx512(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0,
                            int64_t r1, float* y) {
  with_format(xq, W, [&](auto f) { gemv_rows<decltype(f)::value>(xq, t0, T, W, r0, r1, y); });
}

void quant_gemm_tile_avx512(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  with_format(xq, W, [&](auto f) { gemm_tile<decltype(f)::value>(xq, T, W, r0, r1, y); });
}

void quant_rows_canonical(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  with_format(xq, W, [&](auto f) { rows_canonical<decltype(f)::value>(xq, T, W, r0, r1, y); });
}

}  // namespace dsv2::cpu
