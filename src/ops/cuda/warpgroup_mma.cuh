// Hopper warpgroup matrix multiply-accumulate (wgmma, sm_90a) over shared-memory operands, and the
// tensor copies and barriers that fill them. Operand tiles use the 128-byte swizzle layout: rows of 64
// two-byte values (128 bytes), 16-byte piece c of row r stored at piece c ^ (r % 8), 8-row groups
// 1,024 bytes apart, each tile 1,024-byte aligned. A K-major tile's rows run along M (or N) and its 64
// values along k; an MN-major tile's rows run along k and its 64 values along N. A warpgroup (4
// consecutive warps) multiplies a 64-row A tile by an N-row B tile over 16 values of k per instruction;
// thread (warp w of the group, lane g·4 + q) holds d[4j + i] = D[16w + g + 8(i / 2)][8j + 2q + i % 2],
// j < N / 8.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

// The descriptor of a swizzled K-major tile whose (k-offset) start is `shared_byte_address`: start
// address and strides in 16-byte units (the leading offset unused by this layout; 1,024 bytes between
// 8-row groups), swizzle mode 1 (128 bytes) in bits 62-63.
__device__ __forceinline__ uint64_t swizzled_tile_descriptor(uint32_t shared_byte_address) {
  return uint64_t((shared_byte_address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
// The descriptor of a swizzled MN-major B operand starting at k row `shared_byte_address` (a multiple
// of 8 rows into its tiles): N spans tiles of 64 columns `tile_bytes` apart (the leading offset), 8-row
// groups of k are 1,024 bytes apart (the stride offset).
__device__ __forceinline__ uint64_t swizzled_mn_major_descriptor(uint32_t shared_byte_address, uint32_t tile_bytes) {
  return uint64_t((shared_byte_address & 0x3FFFF) >> 4) | (uint64_t((tile_bytes >> 4) & 0x3FFF) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// A set of swizzled tiles holding 64 rows of 64·n values (tile t: values 64t .. 64t + 63 of every row,
// kSwizzledTileBytes apart): the byte offset of value v of row r.
constexpr int kSwizzledTileBytes = 64 * 128;
__device__ __forceinline__ int swizzled_offset(int r, int v) {
  return (v / 64) * kSwizzledTileBytes + r * 128 + ((((v % 64) / 8) ^ (r % 8)) << 4) + (v % 8) * 2;
}

// The first 1,024-byte boundary (swizzled tiles' alignment) in a dynamic shared buffer: its pointer and
// its shared-memory address.
struct AlignedShared {
  unsigned char* base;
  uint32_t address;
};
__device__ __forceinline__ AlignedShared align_shared_1024(unsigned char* shared) {
  const uint32_t unaligned = shared_address(shared);
  const uint32_t skew = (1024 - unaligned % 1024) % 1024;
  return {shared + skew, unaligned + skew};
}
// Orders this thread's earlier shared-memory writes (cp.async included, once waited for) before later
// reads by the tensor cores' asynchronous proxy; then a barrier publishes them to the warpgroup.
__device__ __forceinline__ void fence_shared_for_async_proxy() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Before a warpgroup's first wgmma over registers that other instructions wrote.
__device__ __forceinline__ void warpgroup_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void warpgroup_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Waits until at most N of this warpgroup's committed wgmma groups are still running.
template <int N>
__device__ __forceinline__ void warpgroup_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of an accumulator across the asynchronous wgmma window.
__device__ __forceinline__ void fence_accumulator(float& r) { asm volatile("" : "+f"(r)::"memory"); }
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) fence_accumulator(d[i]);
}
// Keeps register A operands (N k-steps of 4 registers) unmoved until the wgmma that reads them is waited for.
template <int N>
__device__ __forceinline__ void fence_fragments(uint32_t (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[i][j])::"memory");
}

// Shared-memory barriers (mbarrier) that tensor copies complete: a phase ends when `count` arrivals
// and every expected byte have come; waiters name the phase's parity (0, 1, 0, ...).
__device__ __forceinline__ void barrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// Makes initialised barriers visible to the asynchronous proxy (before the block's barrier).
__device__ __forceinline__ void fence_barrier_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// One arrival that also expects `bytes` more from tensor copies before the phase can end.
__device__ __forceinline__ void barrier_expect_bytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void barrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void barrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
}
// Named block barriers (ids 1..15; 0 is __syncthreads'): `threads` (a multiple of 32) must reach
// barrier id, syncing threads waiting until they have, arriving ones going on.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// The box of a 2-D tensor map at (x = inner coordinate, y = row) into shared memory at dst; its bytes
// count toward barrier bar.
__device__ __forceinline__ void tensor_copy_2d(uint32_t dst, const void* tensor_map, int32_t x, int32_t y, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(tensor_map), "r"(x), "r"(y), "r"(bar)
      : "memory");
}

// d += A · B: A [64 × 16] at descriptor a (K-major), B [16 × 256] at descriptor b, K-major (B's rows
// are its N columns) or, with MN_MAJOR_B, MN-major; f32 sums; T is __nv_bfloat16 or __half. The
// instruction's text for operand type TYPE ("bf16", "f16") and B's transpose immediate TRANS_B ("0",
// "1"), with its scale-d predicate true (d accumulates), and its 128 accumulator operands, then the two
// descriptors (%128, %129).
#define DSV2_WGMMA_M64N256K16(TYPE, TRANS_B)                              \
  "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                               \
  "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " {"         \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
  "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
  "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63," \
  "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79," \
  "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95," \
  "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111," \
  "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127" \
  "}, %128, %129, p, 1, 1, 0, " TRANS_B ";\n}\n"
#define DSV2_WGMMA_ACCUMULATORS(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
template <typename T, bool MN_MAJOR_B = false>
__device__ __forceinline__ void warpgroup_mma_m64n256k16(float (&d)[128], uint64_t a, uint64_t b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if constexpr (MN_MAJOR_B)
      asm volatile(DSV2_WGMMA_M64N256K16("bf16", "1") : DSV2_WGMMA_ACCUMULATORS(d) : "l"(a), "l"(b));
    else
      asm volatile(DSV2_WGMMA_M64N256K16("bf16", "0") : DSV2_WGMMA_ACCUMULATORS(d) : "l"(a), "l"(b));
  } else {
    static_assert(std::is_same_v<T, __half>, "warpgroup_mma_m64n256k16 takes bf16 or f16");
    if constexpr (MN_MAJOR_B)
      asm volatile(DSV2_WGMMA_M64N256K16("f16", "1") : DSV2_WGMMA_ACCUMULATORS(d) : "l"(a), "l"(b));
    else
      asm volatile(DSV2_WGMMA_M64N256K16("f16", "0") : DSV2_WGMMA_ACCUMULATORS(d) : "l"(a), "l"(b));
  }
}

// d += A · Bᵀ for bf16 operands: A [64 × 16] at descriptor a, B [64 × 16] at descriptor b, both K-major.
__device__ __forceinline__ void warpgroup_mma_m64n64k16_bf16(float (&d)[32], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b));
}
// d += A · B for bf16 operands: A [64 × 16] from registers (warp w of the group holds rows 16w .. 16w + 15
// as mma.sync's m16n8k16 A fragment: a[0] row g, k 2q and 2q + 1; a[1] row g + 8; a[2], a[3] the same
// rows at k + 8), B [16 × 128] at descriptor b, MN-major.
__device__ __forceinline__ void warpgroup_mma_m64n128k16_bf16_registers_a(float (&d)[64], const uint32_t (&a)[4],
                                                                         uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
// s = A · Bᵀ over K_STEPS steps of 16 values of k, A and B each 64 rows in swizzled tiles of 64 values
// starting at shared addresses a_tiles and b_tiles (as swizzled_offset lays them out), issued as one
// committed wgmma group; s (s[4j + i]: row 16w + g + 8(i / 2), column 8j + 2q + i % 2) holds the
// products once the caller has waited for the group and fenced s.
template <int K_STEPS>
__device__ __forceinline__ void warpgroup_scores_m64n64_issue(float (&s)[32], uint32_t a_tiles, uint32_t b_tiles) {
#pragma unroll
  for (int i = 0; i < 32; ++i) s[i] = 0.0f;
  fence_accumulators(s);
  warpgroup_fence();
#pragma unroll
  for (int kk = 0; kk < K_STEPS; ++kk) {
    const uint32_t at = (kk / 4) * kSwizzledTileBytes + (kk % 4) * 32;
    warpgroup_mma_m64n64k16_bf16(s, swizzled_tile_descriptor(a_tiles + at), swizzled_tile_descriptor(b_tiles + at));
  }
  warpgroup_commit();
}
// The same, returning once the products are in s.
template <int K_STEPS>
__device__ __forceinline__ void warpgroup_scores_m64n64(float (&s)[32], uint32_t a_tiles, uint32_t b_tiles) {
  warpgroup_scores_m64n64_issue<K_STEPS>(s, a_tiles, b_tiles);
  warpgroup_wait<0>();
  fence_accumulators(s);
}

#undef DSV2_WGMMA_M64N256K16
#undef DSV2_WGMMA_ACCUMULATORS

}  // namespace dsv2::cuda
