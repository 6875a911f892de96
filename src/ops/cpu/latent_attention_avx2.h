// The chunk update of latent_attention.h (latent_attention_update) on AVX2 + FMA, for CPUs without
// AVX-512: 8 lanes and 16 vector registers, so the register blocks are half the AVX-512 kernel's —
// scores in blocks of 3 keys × 4 heads, the weighted sum in blocks of 4 heads × 16 latent values across
// the chunk's keys. Every cached latent is still read once for all heads.
#pragma once
#include <cstdint>

namespace dsv2::cpu {

// The shapes the AVX2 update takes: nh a multiple of 4, d_c of 16, d_rope of 8.
bool latent_attention_avx2_fits(int64_t nh, int64_t d_c, int64_t d_rope);

// latent_attention_update over f32 rows, and over bf16 rows (widened to f32 exactly as they are read);
// bf16_weights: the softmax weights rounded to bf16 before they are summed and used
// (latent_attention_update_bf16_dot's fallback). Callers check has_avx2() and latent_attention_avx2_fits first.
void latent_attention_update_avx2(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch, bool bf16_weights);
void latent_attention_update_avx2(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch, bool bf16_weights);

}  // namespace dsv2::cpu
