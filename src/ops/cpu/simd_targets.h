// Function attributes that compile one function for an instruction set beyond the build's baseline;
// callers check the CPU at run time (has_avx512(), has_avx512_vnni(), has_avx512_bf16(), has_amx_bf16(), has_avx2())
// before calling such a function.
#pragma once

#define DSV2_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DSV2_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define DSV2_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))
#define DSV2_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#define DSV2_AMX_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16")))

// GCC 12 reports the AVX-512 intrinsics' internal _mm512_undefined_* values as uninitialized in the
// files that use them; the warnings are about the compiler's own headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
