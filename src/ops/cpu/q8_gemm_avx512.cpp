#include "ops/cpu/q8_gemm_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int kPanelRows = 16;              // rows per panel: the lanes of a vector
constexpr int kQuads = kQuantBlock / 4;     // 4-value groups per block: vpdpbusd's products per lane
constexpr int kTokenGroup = 8;              // tokens sharing each weight vector
// Weight rows are prefetched this far ahead of the step, in each row of the 16 read side by side
// (rows of a panel are adjacent: a distance of a whole row would fetch what the next row reads anyway).
constexpr int64_t kPrefetchBytes = 512;

// A tile's panels: words [panel][block][quad][16 rows] (4 bytes of q + 128 each), scales
// [panel][block][16 rows] (f32; rows past the tile repeat its last row, never stored).
struct PackedTile {
  std::vector<uint32_t> words;
  std::vector<float> scales;
};

DSV2_VNNI void pack_tile(const Matrix& W, int64_t r0, int64_t r1, PackedTile& p) {
  const int64_t nb = quant_blocks(W.cols), panels = (r1 - r0 + kPanelRows - 1) / kPanelRows;
  p.words.resize(size_t(panels * nb * kQuads * kPanelRows));
  p.scales.resize(size_t(panels * nb * kPanelRows));
  // Qwords of two transposed halves that make quad j (low 128 bits of each half) or j + 4 (high).
  const __m512i low_lanes = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
  const __m512i high_lanes = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
  const __m512i plus128 = _mm512_set1_epi8(char(0x80));
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
      if (b % 2 == 0)
        for (int r = 0; r < kPanelRows; ++r)
          _mm_prefetch(reinterpret_cast<const char*>(row[r] + b * kQuantBlock + kPrefetchBytes), _MM_HINT_T0);
      // v[i]: row i's 8 quads in the low half, row i + 8's in the high half; an 8×8 transpose of 4-byte
      // words within each half (unpacks, then halves of 128 bits paired) gives quad j of all 16 rows.
      __m512i v[8], t[8], s[8];
      for (int i = 0; i < 8; ++i) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[i] + b * kQuantBlock));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[i + 8] + b * kQuantBlock));
        v[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      }
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
        _mm512_storeu_si512(out + (b * kQuads + j) * kPanelRows, _mm512_xor_si512(q_lo, plus128));
        _mm512_storeu_si512(out + (b * kQuads + j + 4) * kPanelRows, _mm512_xor_si512(q_hi, plus128));
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
// (the block's offset, −128 · Σ xq, plus (q + 128) · xq over its 8 quads), then one fma per token.
template <int TT>
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
        sum[t] = _mm512_dpbusd_epi32(sum[t], w, _mm512_set1_epi32(four_bytes(x[t] + b * kQuantBlock + 4 * j)));
    }
    const __m512 dw = _mm512_loadu_ps(scales + b * kPanelRows);
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(xscale[t][b])), acc[t]);
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < TT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * N + row0, keep, acc[t]);
}

// Lanes 0..7 of v[r] add up to row r's first block sum and lanes 8..15 to its second: returns both
// for the 16 rows, row r in lane r, by a tree of exact integer additions over transposed lanes.
DSV2_VNNI inline void sum_row_halves(const __m512i (&v)[kPanelRows], __m512i& first, __m512i& second) {
  __m512i a[8], b[4], z[2];
  for (int i = 0; i < 8; ++i)  // per 128 bits: rows 2i, 2i + 1, two partial sums each
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128 bits: rows 4i .. 4i + 3, one sum each
    b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 2; ++i)  // rows 8i .. 8i + 3 first, second; rows 8i + 4 .. 8i + 7 first, second
    z[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  first = _mm512_shuffle_i32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0));
  second = _mm512_shuffle_i32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1));
}

// T tokens from t0 against rows g0 .. g0 + nr − 1 (nr <= 16) as stored, into y: [T, N] (those tokens'
// rows): per 64-byte step (two blocks)
// each row's lanes of (q + 128) · xq from the step's lane offsets, summed per block by sum_row_halves,
// then one fma per block and token, in block order.
template <int T>
DSV2_VNNI void gemv_panel(const QuantizedActivations& xq, int64_t t0, const Matrix& W, int64_t g0, int64_t nr, float* y) {
  const int64_t nb = quant_blocks(W.cols), N = W.rows;
  const uint8_t* row[kPanelRows];
  alignas(64) int32_t scale_offset[kPanelRows];  // bytes from row g0's scales to row r's
  for (int r = 0; r < kPanelRows; ++r) {
    const int64_t src = std::min<int64_t>(r, nr - 1);
    row[r] = static_cast<const uint8_t*>(W.row(g0 + src));
    scale_offset[r] = int32_t(src * nb * 2);
  }
  const __m512i scale_index = _mm512_load_si512(scale_offset);
  const uint16_t* scales = W.row_scales(g0);
  const int8_t* x[T];
  const int32_t* offset[T];
  const float* xscale[T];
  for (int t = 0; t < T; ++t) {
    x[t] = xq.values_of(t0 + t);
    offset[t] = xq.lane_offsets_of(t0 + t);
    xscale[t] = xq.scales_of(t0 + t);
  }
  const __m512i plus128 = _mm512_set1_epi8(char(0x80));
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += 2) {
    const bool two = b + 1 < nb;
    for (int r = 0; r < kPanelRows; ++r)
      _mm_prefetch(reinterpret_cast<const char*>(row[r] + b * kQuantBlock + kPrefetchBytes), _MM_HINT_T0);
    __m512 dw0, dw1 = _mm512_setzero_ps();  // the 16 rows' scales of blocks b and b + 1
    if (two) {
      const __m512i pair = _mm512_i32gather_epi32(scale_index, scales + b, 1);
      dw0 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(pair));
      dw1 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(pair, 16)));
    } else {
      alignas(64) float last[kPanelRows];
      for (int r = 0; r < kPanelRows; ++r) last[r] = _cvtsh_ss(scales[scale_offset[r] / 2 + b]);
      dw0 = _mm512_load_ps(last);
    }
    for (int t = 0; t < T; ++t) {
      __m512i v[kPanelRows];
      const __m512i lane_offset = _mm512_loadu_si512(offset[t] + b * 8), xv = _mm512_loadu_si512(x[t] + b * kQuantBlock);
      for (int r = 0; r < kPanelRows; ++r) {
        const uint8_t* p = row[r] + b * kQuantBlock;
        const __m512i w = two ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(__mmask64(0xffffffffull), p);
        v[r] = _mm512_dpbusd_epi32(lane_offset, _mm512_xor_si512(w, plus128), xv);
      }
      __m512i first, second;
      sum_row_halves(v, first, second);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(first), _mm512_mul_ps(dw0, _mm512_set1_ps(xscale[t][b])), acc[t]);
      if (two)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(second), _mm512_mul_ps(dw1, _mm512_set1_ps(xscale[t][b + 1])), acc[t]);
    }
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + t * N + g0, keep, acc[t]);
}

}  // namespace

void q8_gemv_rows_avx512(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                         float* y) {
  with_count<kGemvMaxTokens>(T, [&](auto n) {
    for (int64_t g0 = r0; g0 < r1; g0 += kPanelRows)
      gemv_panel<decltype(n)::value>(xq, t0, W, g0, std::min<int64_t>(kPanelRows, r1 - g0), y);
  });
}

void q8_gemm_tile_avx512(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  thread_local PackedTile packed;
  pack_tile(W, r0, r1, packed);
  const int64_t nb = quant_blocks(W.cols), N = W.rows, panels = (r1 - r0 + kPanelRows - 1) / kPanelRows;
  for (int64_t t0 = 0; t0 < T; t0 += kTokenGroup) {
    with_count<kTokenGroup>(T - t0, [&](auto n) {
      for (int64_t g = 0; g < panels; ++g) {
        const int64_t row0 = r0 + g * kPanelRows;
        panel_times_tokens<decltype(n)::value>(packed, g, nb, xq, t0, y, N, row0,
                                               std::min<int64_t>(kPanelRows, r1 - row0));
      }
    });
  }
}

void q8_rows_canonical(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  const int64_t nb = quant_blocks(W.cols), N = W.rows;
  for (int64_t t = 0; t < T; ++t) {
    const int8_t* x = xq.values_of(t);
    const float* xscale = xq.scales_of(t);
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* q = static_cast<const int8_t*>(W.row(r));
      const uint16_t* ws = W.row_scales(r);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t sum = 0;
        for (int64_t i = b * kQuantBlock; i < (b + 1) * kQuantBlock; ++i) sum += int32_t(q[i]) * int32_t(x[i]);
        acc = std::fma(float(sum), f16_to_f32(ws[b]) * xscale[b], acc);
      }
      y[t * N + r] = acc;
    }
  }
}

}  // namespace dsv2::cpu
