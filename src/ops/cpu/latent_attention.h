// One chunk of absorbed MLA attention (spec §5.3) for one query token and all heads: every cached
// latent of the chunk is read once for all heads (blocks of 4 keys × 4 heads of scores in registers,
// then 4 heads × 64 latent values of the weighted sum in registers across the chunk's keys). A
// running state (m, l, acc) takes consecutive chunks (online softmax); states of disjoint key ranges
// are merged by the caller.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv2 {
class ThreadPool;
}

namespace dsv2::cpu {

// The whole absorbed attention of one query token over keys [0, n), all heads:
// o_lat[h] = Σ_s softmax_s(score[h, s]) · c_s   o_lat: [nh, d_c]
// The keys are cut into groups of kLatentKeyGroup attended in parallel; each group runs its chunks of
// kLatentKeyChunk keys in order through one online-softmax state (latent_attention_update) and the
// groups' states are merged in group order, so the result does not depend on the thread count.
// lat: [n, width] f32 rows, or bf16 rows in the second form. partial: scratch kept across calls.
// bf16_scores (bf16 rows): the scores as bf16 dot products (latent_attention_update_bf16_dot).
constexpr int64_t kLatentKeyChunk = 256, kLatentKeyGroup = 1024;
void latent_attention(ThreadPool& pool, const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* o_lat,
                      std::vector<float>& partial);
void latent_attention(ThreadPool& pool, const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* o_lat,
                      std::vector<float>& partial, bool bf16_scores = false);

// keys s in [0, n): lat rows [n, width] = [c_s (d_c) ; k_pe_s (d_rope)], width >= d_c + d_rope.
// score[h, s] = scale · (q_lat[h] · c_s + q_pe[h] · k_pe_s)     q_lat: [nh, d_c], q_pe: [nh] rows of stride q_pe_stride
// scratch: [nh, n] floats.
// Online-softmax update: (m, l, acc) hold the state of the keys before this chunk (m[h] = −inf for
// none: then l and acc are not read) and, after the call, of those keys and the chunk's:
// m' = max(m, max_s score), l' = e^{m − m'} l + Σ_s e^{score − m'}, acc' = e^{m − m'} acc + Σ_s e^{score − m'} c_s.
// By cpu_isa(): AVX-512 where nh is a multiple of 4, d_c of 64 and d_rope of 16; AVX2
// (latent_attention_avx2.h) where nh is a multiple of 4, d_c of 16 and d_rope of 8; else portable.
void latent_attention_update(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                             int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc,
                             float* scratch);

// The same over a bf16 cache: lat [n, width] bf16 rows, widened to f32 (exactly) as they are read.
void latent_attention_update_bf16(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch);

// The same over a bf16 cache in bf16, for models whose activations are bf16 (--activations bf16), as
// transformers runs a bf16 model: q_lat and q_pe rounded to bf16, each score's products summed in f32,
// and each softmax weight rounded to bf16 before it is summed into l and multiplies its latent (products
// exact, sums in f32). AVX512-BF16 (vdpbf16ps: the scores 32 values an instruction, the weighted sum two
// keys an instruction, the rows read without widening) when cpu_isa() is AVX-512 or AMX on a CPU with it,
// nh is a multiple of 4, d_c of 64, d_rope of 16 and width = d_c + d_rope of 32; else the query rounded
// to bf16 and the update above with the weights rounded (the AVX-512, AVX2 or portable form).
void latent_attention_update_bf16_dot(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                      float* l, float* acc, float* scratch);

// The portable forms of the same (the references for the AVX-512 ones).
void latent_attention_update_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                      float* l, float* acc, float* scratch);
void latent_attention_update_bf16_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                           int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale,
                                           float* m, float* l, float* acc, float* scratch);
void latent_attention_update_bf16_dot_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride,
                                               const uint16_t* lat, int64_t width, int64_t n, int64_t nh, int64_t d_c,
                                               int64_t d_rope, float scale, float* m, float* l, float* acc, float* scratch);

}  // namespace dsv2::cpu
