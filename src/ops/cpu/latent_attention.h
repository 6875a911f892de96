// One chunk of absorbed MLA attention (spec §5.3) for one query token and all heads: every cached
// latent of the chunk is read once for all heads. The partial (m, l, acc) of each chunk is merged by
// the caller (online softmax over chunks).
#pragma once
#include <cstdint>

namespace dsv2::cpu {

// keys s in [0, n): lat rows [n, width] = [c_s (d_c) ; k_pe_s (d_rope)], width >= d_c + d_rope.
// score[h, s] = scale · (q_lat[h] · c_s + q_pe[h] · k_pe_s)     q_lat: [nh, d_c], q_pe: [nh] rows of stride q_pe_stride
// m[h] = max_s score[h, s];  l[h] = Σ_s exp(score[h, s] − m[h]);  acc[h] = Σ_s exp(score[h, s] − m[h]) · c_s   acc: [nh, d_c]
// scratch: [nh, n] floats. AVX-512 when the CPU has it, d_c is a multiple of 64 and d_rope of 16; else portable.
void latent_attention_chunk(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                            int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc,
                            float* scratch);

// The portable form of the same (the reference for the AVX-512 one).
void latent_attention_chunk_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                     int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                     float* l, float* acc, float* scratch);

}  // namespace dsv2::cpu
