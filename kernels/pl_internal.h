/* pl_internal.h - block layouts and scalar helpers shared by the kernel files.
 *
 * Block layouts mirror ggml-common.h (llama.cpp) byte for byte: they are the
 * on-disk GGUF format, so they are a fact of the file format, not a choice.
 * Sizes are checked by static asserts below and by tests/test_kernels.py
 * against gguf.GGML_QUANT_SIZES.
 */
#ifndef PL_INTERNAL_H
#define PL_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define QK32 32      /* block size of the legacy types (Q4_0 .. Q8_0)   */
#define QK_K 256     /* super-block size of the K-quants (Q4_K .. Q6_K) */

#define PL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PL_MAX(a, b) ((a) > (b) ? (a) : (b))

typedef uint16_t pl_half;   /* IEEE binary16 bits */

/* ---------------------------------------------------------------- blocks */
typedef struct { pl_half d;            uint8_t qs[QK32/2]; } block_q4_0;               /* 18 B */
typedef struct { pl_half d, m;         uint8_t qs[QK32/2]; } block_q4_1;               /* 20 B */
typedef struct { pl_half d; uint8_t qh[4]; uint8_t qs[QK32/2]; } block_q5_0;          /* 22 B */
typedef struct { pl_half d, m; uint8_t qh[4]; uint8_t qs[QK32/2]; } block_q5_1;       /* 24 B */
typedef struct { pl_half d;            int8_t  qs[QK32];   } block_q8_0;               /* 34 B */
typedef struct {
    pl_half d, dmin;          /* super-block scale for scales / for mins        */
    uint8_t scales[12];       /* 8 x (6-bit scale, 6-bit min), packed           */
    uint8_t qs[QK_K/2];       /* 4-bit quants                                   */
} block_q4_K;                                                                           /* 144 B */
typedef struct {
    pl_half d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K/8];       /* 5th bit of each quant                          */
    uint8_t qs[QK_K/2];       /* low 4 bits                                     */
} block_q5_K;                                                                           /* 176 B */
typedef struct {
    uint8_t ql[QK_K/2];       /* low 4 bits                                     */
    uint8_t qh[QK_K/4];       /* high 2 bits                                    */
    int8_t  scales[QK_K/16];  /* 16 x 8-bit sub-block scales                    */
    pl_half d;                /* super-block scale                              */
} block_q6_K;                                                                           /* 210 B */

_Static_assert(sizeof(block_q4_0) == 18,  "q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20,  "q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 22,  "q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24,  "q5_1 layout");
_Static_assert(sizeof(block_q8_0) == 34,  "q8_0 layout");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K layout");

/* ---------------------------------------------------------------- fp16 */
static inline uint32_t pl_f2u(float f)    { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float    pl_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* half -> float, exact for every input (normals, subnormals, inf, nan).
 * Branch-free form of the well-known conversion (Maratyszcza's FP16 library),
 * the same arithmetic ggml's software path uses. */
static inline float pl_fp16_to_fp32(pl_half h) {
    const uint32_t w     = (uint32_t)h << 16;
    const uint32_t sign  = w & 0x80000000u;
    const uint32_t two_w = w + w;
    /* normal: shift exponent+mantissa into place, rebias by 2^-112 */
    const float normalized   = pl_u2f((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    /* subnormal: mantissa as the low bits of 0.5's float, minus 0.5 */
    const float denormalized = pl_u2f((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t r = sign | (two_w < (1u << 27) ? pl_f2u(denormalized) : pl_f2u(normalized));
    return pl_u2f(r);
}

/* float -> half, round to nearest even. The float adder does the rounding:
 * adding a power of two chosen from the input's exponent leaves exactly the 10
 * (or fewer, for subnormals) mantissa bits a half can hold. */
static inline pl_half pl_fp32_to_fp16_1(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;   /* overflow -> inf, keep tiny */
    const uint32_t w      = pl_f2u(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign   = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = pl_u2f((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits     = pl_f2u(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t man_bits = bits & 0x00000FFFu;
    return (pl_half)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : exp_bits + man_bits));
}

/* Round to nearest int, ties to even, for |f| <= 2^22: adding 1.5 * 2^23 pushes the
 * fraction out of the mantissa so the FPU's own rounding does the work. ggml's
 * nearest_int; lrintf would also do but depends on the rounding mode. */
static inline int pl_nearest_int(float f) {
    const float v = f + 12582912.f;
    int32_t i; memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* float -> int8 as llama.cpp's reference casts it, `(int8_t)(x*id + 8.5f)`, pinned
 * to what the x86-64 build does: truncate through a 32-bit conversion (cvttss2si),
 * whose result for NaN or out-of-range input is INT32_MIN, then keep the low byte.
 * C leaves that case undefined and arm64 saturates instead; it happens when a
 * block's scale is so small that 1/d overflows to inf. Pinning it makes the bytes
 * the same on every platform (and equal to the x86-64 llama.cpp we test against). */
static inline int8_t pl_f2i8(float v) {
    const int32_t i = (v >= -2147483648.0f && v < 2147483648.0f) ? (int32_t)v : INT32_MIN;
    return (int8_t)(uint8_t)((uint32_t)i & 0xFFu);
}

/* ---------------------------------------------------------------- rows */
/* k = number of floats, a multiple of the block size. */
void pl_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t k);
void pl_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t k);
void pl_quantize_row_q5_0(const float *x, block_q5_0 *y, int64_t k);
void pl_quantize_row_q5_1(const float *x, block_q5_1 *y, int64_t k);
void pl_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t k);
void pl_quantize_row_q4_K(const float *x, block_q4_K *y, int64_t k);
void pl_quantize_row_q5_K(const float *x, block_q5_K *y, int64_t k);
void pl_quantize_row_q6_K(const float *x, block_q6_K *y, int64_t k);

void pl_dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k);
void pl_dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k);
void pl_dequantize_row_q5_0(const block_q5_0 *x, float *y, int64_t k);
void pl_dequantize_row_q5_1(const block_q5_1 *x, float *y, int64_t k);
void pl_dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k);
void pl_dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k);
void pl_dequantize_row_q5_K(const block_q5_K *x, float *y, int64_t k);
void pl_dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k);

/* SIMD variants, present when the build has them: quants_x86.c (legacy, AVX2) and
 * quants_k_simd.c (K-quants, compiled as *_avx2 on x86-64 and *_neon on arm64). */
int  pl_have_avx2(void);
void pl_quantize_row_q4_0_avx2(const float *x, block_q4_0 *y, int64_t k);
void pl_quantize_row_q4_1_avx2(const float *x, block_q4_1 *y, int64_t k);
void pl_quantize_row_q5_0_avx2(const float *x, block_q5_0 *y, int64_t k);
void pl_quantize_row_q5_1_avx2(const float *x, block_q5_1 *y, int64_t k);
void pl_quantize_row_q8_0_avx2(const float *x, block_q8_0 *y, int64_t k);
void pl_quantize_row_q4_K_avx2(const float *x, block_q4_K *y, int64_t k);
void pl_quantize_row_q5_K_avx2(const float *x, block_q5_K *y, int64_t k);
void pl_quantize_row_q6_K_avx2(const float *x, block_q6_K *y, int64_t k);
void pl_quantize_row_q4_K_neon(const float *x, block_q4_K *y, int64_t k);
void pl_quantize_row_q5_K_neon(const float *x, block_q5_K *y, int64_t k);
void pl_quantize_row_q6_K_neon(const float *x, block_q6_K *y, int64_t k);

#endif /* PL_INTERNAL_H */
