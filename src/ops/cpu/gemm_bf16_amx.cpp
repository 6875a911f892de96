#include "ops/cpu/gemm_bf16_amx.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int64_t kRows = 16;   // weight rows per tile (the tile's 16 rows)
constexpr int64_t kStep = 32;   // values per tile step: 64 bytes of bf16, 16 pairs
constexpr int64_t kBlockTokens = kAmxTokenBlock;

// Tile registers: accumulators C(r, t) = tmm(2r + t) for row blocks r and token blocks t of a 2 × 2
// tile group, weight tiles A(r) = tmm(4 + r), token tiles B(t) = tmm(6 + t).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// Tiles for token blocks of n tokens: C and B rows of 4n bytes (n f32 sums, n value pairs).
DSV2_AMX_BF16 void configure_tiles(int64_t n) {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.rows[i] = 16;
  for (int i : {0, 1, 2, 3, 6, 7}) cfg.bytes_per_row[i] = uint16_t(4 * n);
  for (int i : {4, 5}) cfg.bytes_per_row[i] = 64;
  // ldtilecfg reads the whole 64 bytes; the barrier keeps GCC from dropping the stores it cannot see.
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// Where a block of 16 weight rows comes from: tile step s at base + s · step (elements), rows
// stride_bytes apart.
struct WeightTiles {
  const uint16_t* base;
  int64_t step, stride_bytes;
};
// A token block: step s at base + s · step, rows (value pairs) 4n bytes apart.
struct TokenTiles {
  const uint16_t* base;
  int64_t step, stride_bytes;
};

// Sums of RB row blocks × TB token blocks over `steps` tile steps, stored to c[2r + t] as
// [16 rows][16 tokens] (the first n tokens filled).
template <int RB, int TB>
DSV2_AMX_BF16 void tile_group(const WeightTiles* a, const TokenTiles* b, int64_t steps, float (*c)[kRows * 16]) {
  _tile_zero(0);
  if constexpr (TB > 1) _tile_zero(1);
  if constexpr (RB > 1) _tile_zero(2);
  if constexpr (RB > 1 && TB > 1) _tile_zero(3);
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, a[0].base + s * a[0].step, a[0].stride_bytes);
    _tile_loadd(6, b[0].base + s * b[0].step, b[0].stride_bytes);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (TB > 1) {
      _tile_loadd(7, b[1].base + s * b[1].step, b[1].stride_bytes);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (RB > 1) {
      _tile_loadd(5, a[1].base + s * a[1].step, a[1].stride_bytes);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (TB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c[0], 64);
  if constexpr (TB > 1) _tile_stored(1, c[1], 64);
  if constexpr (RB > 1) _tile_stored(2, c[2], 64);
  if constexpr (RB > 1 && TB > 1) _tile_stored(3, c[3], 64);
}

// Rows [r, r + n) (n <= 16) of W as one packed block: [steps][16 rows][32 values], zeros past K and
// past the n rows.
DSV2_AMX_BF16 void pack_rows(const uint16_t* w, int64_t K, int64_t r, int64_t n, int64_t steps, uint16_t* out) {
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t k = s * kStep;
    const __mmask32 m = K - k >= kStep ? ~__mmask32(0) : __mmask32((1u << (K - k)) - 1);
    for (int64_t i = 0; i < kRows; ++i) {
      const __m512i v = i < n ? _mm512_maskz_loadu_epi16(m, w + (r + i) * K + k) : _mm512_setzero_si512();
      _mm512_storeu_si512(out + (s * kRows + i) * kStep, v);
    }
  }
}

}  // namespace

bool has_amx_bf16() {
  static const bool yes = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    if (!tile || !bf16 || !has_avx512()) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // Linux uapi asm/prctl.h
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return yes;
}

DSV2_AMX_BF16 void gemm_bf16_rows_amx(const Bf16Activations& xb, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                                      float* y) {
  const auto* w = static_cast<const uint16_t*>(W.data);
  const int64_t K = W.cols, N = W.rows, P = xb.padded, steps = P / kStep;
  // Weight tiles straight from the rows where whole (K a multiple of 32, 16 rows) and the tokens few
  // (decode: the bytes are read once anyway); else a packed copy per 16 rows, contiguous 1 KB tiles.
  thread_local std::vector<uint16_t> packed;
  const int64_t n_blocks = (r1 - r0 + kRows - 1) / kRows, block_values = steps * kRows * kStep;
  const bool direct = K % kStep == 0 && T <= kBlockTokens;
  if (packed.size() < size_t(n_blocks * block_values)) packed.resize(size_t(n_blocks * block_values));
  std::vector<WeightTiles> a{size_t(n_blocks)};
  for (int64_t i = 0; i < n_blocks; ++i) {
    const int64_t r = r0 + i * kRows, n = std::min(kRows, r1 - r);
    if (direct && n == kRows) {
      a[size_t(i)] = {w + r * K, kStep, K * 2};
      continue;
    }
    uint16_t* dst = packed.data() + i * block_values;
    pack_rows(w, K, r, n, steps, dst);
    a[size_t(i)] = {dst, kRows * kStep, kStep * 2};
  }
  alignas(64) float c[4][kRows * 16];
  // Tile c of row block rb, token block tb (n tokens) into y.
  const auto store = [&](int64_t rb, int64_t tb, int64_t n, const float* tile) {
    const int64_t r = r0 + rb * kRows, rows = std::min(kRows, r1 - r);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < rows; ++i) y[(tb * kBlockTokens + t) * N + r + i] = tile[i * 16 + t];
  };
  const auto tokens = [&](int64_t tb, int64_t n) {
    return TokenTiles{xb.values.data() + tb * kBlockTokens * P, kStep * n, 4 * n};
  };
  // One token block of n tokens against every row block, two row blocks at a time.
  const auto one_token_block = [&](int64_t tb, int64_t n) {
    const TokenTiles b[1] = {tokens(tb, n)};
    int64_t rb = 0;
    for (; rb + 2 <= n_blocks; rb += 2) {
      tile_group<2, 1>(&a[size_t(rb)], b, steps, c);
      store(rb, tb, n, c[0]);
      store(rb + 1, tb, n, c[2]);
    }
    if (rb < n_blocks) {
      tile_group<1, 1>(&a[size_t(rb)], b, steps, c);
      store(rb, tb, n, c[0]);
    }
  };
  // Pairs of full token blocks (2 × 2 tile groups), an odd full one, then the last T % 16 tokens.
  const int64_t full = T / kBlockTokens, tail = T % kBlockTokens;
  int64_t tb = 0;
  if (full > 0) {
    configure_tiles(kBlockTokens);
    for (; tb + 2 <= full; tb += 2) {
      const TokenTiles b[2] = {tokens(tb, kBlockTokens), tokens(tb + 1, kBlockTokens)};
      int64_t rb = 0;
      for (; rb + 2 <= n_blocks; rb += 2) {
        tile_group<2, 2>(&a[size_t(rb)], b, steps, c);
        for (int q = 0; q < 4; ++q) store(rb + q / 2, tb + q % 2, kBlockTokens, c[q]);
      }
      if (rb < n_blocks) {
        tile_group<1, 2>(&a[size_t(rb)], b, steps, c);
        for (int q = 0; q < 2; ++q) store(rb, tb + q, kBlockTokens, c[q]);
      }
    }
    if (tb < full) one_token_block(tb++, kBlockTokens);
  }
  if (tail > 0) {
    configure_tiles(tail);
    one_token_block(tb, tail);
  }
  _tile_release();
}

}  // namespace dsv2::cpu
