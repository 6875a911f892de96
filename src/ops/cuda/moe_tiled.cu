// Routed experts for prompt chunks as grouped GEMMs on the tensor cores, without a host round trip:
// the (token, slot) pairs are sorted by expert on the device, each expert's rows are cut into tiles of
// kTileRows, and one launch per projection computes every (tile, column block) product with 128 × 128
// output blocks (mma.sync m16n8k16, f32 sums, a cp.async ring of 64-value steps of k). The gate and up
// projections run in one GEMM whose epilogue forms silu(gate)·up; the down projection writes f32 rows
// that combine_sorted weights and adds.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kTileRows = 128;   // sorted rows (tokens) per output block
constexpr int kTileCols = 128;   // output columns per block (gate/up: 64 features of each)
constexpr int kStep = 64;        // values of k per pipeline step: a 128-byte row piece
constexpr int kStages = 3;       // steps in the shared-memory ring (kStages − 1 in flight); 96 KB, two blocks an SM
constexpr int kThreads = 256;    // 8 warps: 2 along the rows × 4 along the columns, 64 × 32 outputs each
constexpr int kSortThreads = 1024;

// Shared memory per stage: the A rows [kTileRows][kStep] and the B rows [kTileCols][kStep], 2 bytes a
// value; each 128-byte row's 16-byte pieces are stored XOR-swizzled by the row (piece c of row r at
// c ^ (r % 8)), so the 8 rows an ldmatrix reads at one piece fall in 8 different bank groups.
constexpr int kStageValues = (kTileRows + kTileCols) * kStep;
constexpr size_t kSharedBytes = size_t(kStages) * kStageValues * 2;

__device__ __forceinline__ int swizzled(int row, int piece) { return row * kStep + ((piece ^ (row % 8)) * 8); }

// One block: counts per expert, offsets, the tile list, then each pair's sorted slot. The order of an
// expert's pairs among its rows is the order the atomics give; every product row depends on its own
// inputs alone, so the results do not depend on it.
// tiles[0] = number of tiles; tile t at tiles[1 + 3t ..]: expert, first sorted row, rows (<= kTileRows).
__global__ void __launch_bounds__(kSortThreads)
    sort_pairs_kernel(const int32_t* __restrict__ ids, int64_t n_pairs, int64_t K, int32_t E, int32_t* __restrict__ rows,
                      int32_t* __restrict__ slot_of, int32_t* __restrict__ tiles) {
  start_after_previous_kernel();
  extern __shared__ int32_t counts[];  // [E] counts, [E] offsets, [E] tile starts, [E] fill
  int32_t *offset = counts + E, *tile_start = counts + 2 * E, *fill = counts + 3 * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = fill[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) atomicAdd(&counts[ids[p]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t rows_so_far = 0, tiles_so_far = 0;
    for (int e = 0; e < E; ++e) {
      offset[e] = rows_so_far;
      tile_start[e] = tiles_so_far;
      rows_so_far += counts[e];
      tiles_so_far += (counts[e] + kTileRows - 1) / kTileRows;
    }
    tiles[0] = tiles_so_far;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    for (int32_t r = 0, t = tile_start[e]; r < counts[e]; r += kTileRows, ++t) {
      tiles[1 + 3 * t] = e;
      tiles[2 + 3 * t] = offset[e] + r;
      tiles[3 + 3 * t] = min(kTileRows, counts[e] - r);
    }
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int32_t e = ids[p], s = offset[e] + atomicAdd(&fill[e], 1);
    slot_of[p] = s;
    rows[s] = int32_t(p / K);
  }
}

// xs[s] = x[rows[s]] rounded to AT, one block per sorted row, 8 values per thread at a time (H % 8 == 0).
template <typename AT>
__global__ void pack_sorted_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int64_t H,
                                        AT* __restrict__ xs) {
  start_after_previous_kernel();
  const float4* src = reinterpret_cast<const float4*>(x + int64_t(rows[blockIdx.x]) * H);
  uint4* dst = reinterpret_cast<uint4*>(xs + int64_t(blockIdx.x) * H);
  for (int64_t c = threadIdx.x; c < H / 8; c += blockDim.x) {
    const float4 lo = src[2 * c], hi = src[2 * c + 1];
    uint4 out;
    AT* v = reinterpret_cast<AT*>(&out);
    from_f32(lo.x, v + 0), from_f32(lo.y, v + 1), from_f32(lo.z, v + 2), from_f32(lo.w, v + 3);
    from_f32(hi.x, v + 4), from_f32(hi.y, v + 5), from_f32(hi.z, v + 6), from_f32(hi.w, v + 7);
    dst[c] = out;
  }
}

// For tile t = blockIdx.x / column_blocks (expert e, sorted rows row0 .. row0 + n − 1 of `in`, [*, D])
// and column block c = blockIdx.x % column_blocks (consecutive blocks share a tile's inputs; an
// expert's tiles are neighbours, so its weights are read from memory about once):
//   GATE_UP: out[row0 + j, f] = silu(a_e[f] · in_j) · (b_e[f] · in_j), rounded to AT, f in [64c, 64c + 64)
//   else:    out[row0 + j, f] = a_e[f] · in_j, f32,                               f in [128c, 128c + 128)
// a, b: [E, R, D] weights; out: [*, R]. D % 8 == 0 (k past D reads zeros), R % 8 == 0.
// Warp (wm, wn) = (warp / 4, warp % 4) owns rows 64·wm .. + 64 and four 8-column tiles: for GATE_UP the
// gate and up columns of the same 16 features (B rows 16·wn and 64 + 16·wn), else B rows 32·wn .. + 32.
template <typename AT, bool GATE_UP>
__global__ void __launch_bounds__(kThreads, 2)
    tiled_experts_kernel(const AT* __restrict__ in, int64_t D, int64_t R, const int32_t* __restrict__ tiles,
                         int column_blocks, const AT* __restrict__ a, const AT* __restrict__ b, void* out) {
  extern __shared__ __align__(128) unsigned char shared[];
  AT* const ring = reinterpret_cast<AT*>(shared);  // [stage][A rows | B rows][kStep], swizzled
  start_after_previous_kernel();
  const int t = blockIdx.x / column_blocks, c = blockIdx.x % column_blocks;
  if (t >= tiles[0]) return;
  const int32_t e = tiles[1 + 3 * t], row0 = tiles[2 + 3 * t], n = tiles[3 + 3 * t];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp / 4, wn = warp % 4;
  const int g = lane / 4, q = lane % 4;
  // This thread's 4 A and 4 B row pieces per step: row (threadIdx.x / 8) + 32·i, piece threadIdx.x % 8.
  const int piece = threadIdx.x % 8, row_base = threadIdx.x / 8;
  const AT* a_src[4];
  const AT* b_src[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = row_base + 32 * i;
    a_src[i] = in + (int64_t(row0) + min(r, n - 1)) * D + piece * 8;  // rows past n: the last row, not written
    const int64_t f = GATE_UP ? int64_t(c) * 64 + (r % 64) : int64_t(c) * kTileCols + r;
    const AT* w = GATE_UP && r >= 64 ? b : a;
    b_src[i] = w + (int64_t(e) * R + min(f, R - 1)) * D + piece * 8;  // columns past R: the last, not written
  }
  const int steps = int((D + kStep - 1) / kStep);
  auto issue = [&](int i) {
    if (i < steps) {
      AT* stage = ring + (i % kStages) * kStageValues;
      const int64_t k = int64_t(i) * kStep + piece * 8;
      const bool valid = k < D;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = row_base + 32 * j;
        copy_async_or_zero<16>(stage + swizzled(r, piece), a_src[j] + (valid ? int64_t(i) * kStep : 0), valid);
        copy_async_or_zero<16>(stage + kTileRows * kStep + swizzled(r, piece), b_src[j] + (valid ? int64_t(i) * kStep : 0),
                               valid);
      }
    }
    copy_async_commit();
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) issue(i);
  float acc[4][4][4] = {};  // [m16 tile][n8 tile][fragment]
  // The B rows of this warp's two 16-row pairs of n8 tiles.
  const int b_row[2] = {GATE_UP ? 16 * wn : 32 * wn, GATE_UP ? 64 + 16 * wn : 32 * wn + 16};
  for (int i = 0; i < steps; ++i) {
    copy_async_wait<kStages - 2>();
    __syncthreads();
    issue(i + kStages - 1);
    const AT* sa = ring + (i % kStages) * kStageValues;
    const AT* sb = sa + kTileRows * kStep;
#pragma unroll
    for (int kk = 0; kk < kStep / 16; ++kk) {
      uint32_t af[4][4], bf[2][4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
        load_matrices_x4(af[mt], sa + swizzled(64 * wm + 16 * mt + lane % 16, 2 * kk + lane / 16));
#pragma unroll
      for (int p = 0; p < 2; ++p)
        load_matrices_x4(bf[p], sb + swizzled(b_row[p] + lane % 8 + 8 * (lane / 16), 2 * kk + (lane / 8) % 2));
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
          mma_16x8x16<AT>(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt / 2][2 * (nt % 2)],
                          bf[nt / 2][2 * (nt % 2) + 1]);
    }
  }
  // acc[mt][nt][i]: row 64·wm + 16·mt + g + 8·(i / 2), column 2q + (i % 2) of n8 tile nt.
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 64 * wm + 16 * mt + g + 8 * h;
      if (j >= n) continue;
      if constexpr (GATE_UP) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const int64_t f = int64_t(c) * 64 + 16 * wn + 8 * nt + 2 * q;
          if (f >= R) continue;
          float v[2];
#pragma unroll
          for (int s = 0; s < 2; ++s) {
            const float gt = acc[mt][nt][2 * h + s], up = acc[mt][nt + 2][2 * h + s];
            v[s] = gt / (1.0f + expf(-gt)) * up;
          }
          AT pair[2];
          from_f32(v[0], pair), from_f32(v[1], pair + 1);
          *reinterpret_cast<uint32_t*>(static_cast<AT*>(out) + (int64_t(row0) + j) * R + f) =
              *reinterpret_cast<const uint32_t*>(pair);
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int64_t f = int64_t(c) * kTileCols + 32 * wn + 8 * nt + 2 * q;
          if (f >= R) continue;
          *reinterpret_cast<float2*>(static_cast<float*>(out) + (int64_t(row0) + j) * R + f) =
              make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
        }
      }
    }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename AT>
void run_tiled(const MoeTiledScratch& s, int64_t pairs, int64_t D, int64_t R, int64_t E, const void* in, const void* a,
               const void* b, void* out, bool gate_up, cudaStream_t stream) {
  static const bool opted_in = [] {  // the kernels' dynamic shared-memory limit, raised once per type
    for (auto kernel : {tiled_experts_kernel<AT, true>, tiled_experts_kernel<AT, false>})
      DSV2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSharedBytes)));
    return true;
  }();
  (void)opted_in;
  const int column_blocks = int(gate_up ? (R + 63) / 64 : (R + kTileCols - 1) / kTileCols);
  const unsigned blocks = unsigned(moe_tiles_capacity(pairs, E) * column_blocks);
  launch_overlapped(gate_up ? tiled_experts_kernel<AT, true> : tiled_experts_kernel<AT, false>, blocks, kThreads,
                    kSharedBytes, stream, static_cast<const AT*>(in), D, R, s.tiles, column_blocks,
                    static_cast<const AT*>(a), static_cast<const AT*>(b), out);
}

}  // namespace

int64_t moe_tiles_capacity(int64_t pairs, int64_t E) { return pairs / kTileRows + E; }

bool tiled_experts_supported(DType dtype, int64_t H, int64_t I, int64_t E) {
  return (dtype == DType::BF16 || dtype == DType::F16) && H % 8 == 0 && I % 8 == 0 && E >= 1 &&
         4 * E * int64_t(sizeof(int32_t)) <= 48 * 1024;
}

void moe_tiled_sort(const float* x, int64_t T, int64_t H, int64_t K, int64_t E, const int32_t* expert_ids, DType dtype,
                    const MoeTiledScratch& s, cudaStream_t stream) {
  check(dtype == DType::BF16 || dtype == DType::F16, "tiled experts: bf16 or f16 inputs");
  check(H % 8 == 0 && aligned16(x) && aligned16(s.xs), "tiled experts: H a multiple of 8, rows 16-byte aligned");
  check(4 * E * int64_t(sizeof(int32_t)) <= 48 * 1024, "tiled experts: at most 3,072 experts");
  const int64_t pairs = T * K;
  launch_overlapped(sort_pairs_kernel, 1, kSortThreads, size_t(4 * E) * sizeof(int32_t), stream, expert_ids, pairs, K,
                    int32_t(E), s.rows, s.slot_of, s.tiles);
  if (dtype == DType::BF16)
    launch_overlapped(pack_sorted_rows_kernel<__nv_bfloat16>, unsigned(pairs), 256, 0, stream, x, s.rows, H,
                      static_cast<__nv_bfloat16*>(s.xs));
  else
    launch_overlapped(pack_sorted_rows_kernel<__half>, unsigned(pairs), 256, 0, stream, x, s.rows, H,
                      static_cast<__half*>(s.xs));
}

void moe_tiled_gate_up(const MoeTiledScratch& s, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                       const void* gate, const void* up, cudaStream_t stream) {
  check(tiled_experts_supported(dtype, H, I, E) && aligned16(gate) && aligned16(up) && aligned16(s.hs),
        "tiled experts: bf16 or f16 weights, 16-byte aligned, sizes multiples of 8");
  if (dtype == DType::BF16)
    run_tiled<__nv_bfloat16>(s, pairs, H, I, E, s.xs, gate, up, s.hs, true, stream);
  else
    run_tiled<__half>(s, pairs, H, I, E, s.xs, gate, up, s.hs, true, stream);
}

void moe_tiled_down(const MoeTiledScratch& s, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                    const void* down, cudaStream_t stream) {
  check(tiled_experts_supported(dtype, H, I, E) && aligned16(down) && aligned16(s.y),
        "tiled experts: bf16 or f16 weights, 16-byte aligned, sizes multiples of 8");
  if (dtype == DType::BF16)
    run_tiled<__nv_bfloat16>(s, pairs, I, H, E, s.hs, down, nullptr, s.y, false, stream);
  else
    run_tiled<__half>(s, pairs, I, H, E, s.hs, down, nullptr, s.y, false, stream);
}

}  // namespace dsv2::cuda
