// Warp-level tensor-core and asynchronous-copy primitives (sm_80+ PTX) shared by the MoE and MLA
// kernels. Fragment layouts are those of mma.m16n8k16: lane (g = lane/4, q = lane%4) holds A rows g
// and g + 8 at k = 2q, 2q+1 (a0, a1) and 2q+8, 2q+9 (a2, a3); B column g at the same k (b0, b1); and
// D rows g, g + 8 at columns 2q, 2q+1.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace dsv2::cuda {

// d += a·b (16×16 by 16×8, f32 accumulation) for bf16 or f16 inputs.
template <typename WT>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<WT, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<WT, __half>, "mma_16x8x16 takes bf16 or f16");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8×8 matrices of 2-byte values from shared memory; lanes 8i .. 8i+7 give the 16-byte rows of
// matrix i, and r[i] receives lane (g, q)'s piece of it: row g, columns 2q, 2q+1 (with `trans`: rows
// 2q, 2q+1 of column g).
__device__ __forceinline__ void load_matrices_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void load_matrices_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// Two floats rounded to bf16 in one register (lo in the low half): an mma operand or a 4-byte store.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// One step of a flash attention's online softmax for a thread's two rows of an mma accumulator (rows g
// and g + 8: a row's columns lie in the 4 lanes of a quad), mx holding the maxima of the step's scores
// over this thread's columns (base-2 units): mx becomes the row maxima, m_run rises to them, and
// correction is the factor that rescales what was summed before (0 on the first step), applied to l_run.
__device__ __forceinline__ void online_softmax_step(float (&mx)[2], float (&m_run)[2], float (&l_run)[2],
                                                    float (&correction)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    correction[r] = exp2f(m_run[r] - m_new);
    m_run[r] = m_new;
    l_run[r] *= correction[r];
  }
}

// 16 bytes global -> shared without passing through registers. A thread's copies issued since its
// last copy_async_commit() form a group; copy_async_wait<N>() waits until at most N of its groups are
// still in flight (then a barrier makes every thread's copies visible to the block).
__device__ __forceinline__ void copy_async16(void* shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(shared_dst)), "l"(global_src));
}
// BYTES (8 or 16) from global to shared, or zeros where !valid (then nothing is read from src).
template <int BYTES>
__device__ __forceinline__ void copy_async_or_zero(void* shared_dst, const void* global_src, bool valid) {
  static_assert(BYTES == 8 || BYTES == 16, "cp.async copies 8 or 16 bytes here");
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(shared_address(shared_dst)), "l"(global_src),
                 "r"(valid ? 16 : 0));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(shared_address(shared_dst)), "l"(global_src),
                 "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

}  // namespace dsv2::cuda
