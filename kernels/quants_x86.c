/* quants_x86.c - AVX2 row kernels for the legacy types, byte-identical to the scalar ones.
 *
 * Compiled with -mavx2 (never -mfma: see CMakeLists.txt) and chosen at run time
 * by threads.c when the CPU has AVX2. (The K-quants' AVX2/NEON code is
 * quants_k_simd.c.)
 *
 * Per 32-value block, the element-wise work (scale, round, clamp) is exact in any
 * order; the max/min reductions are order-free except for the sign of zero,
 * handled explicitly.
 */
#include "pl_internal.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#include <float.h>

int pl_have_avx2(void) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* ================================================================ vector helpers */

static inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* ================================================================ legacy: one block = 4 vectors */

/* The value of largest magnitude, sign kept; the first one in index order on ties
 * (the scalar loop updates only on a strictly larger |x|). 0 if all are zero. */
static inline float signed_absmax32(const float *x, const __m256 *v) {
    const __m256 a = _mm256_max_ps(_mm256_max_ps(abs8(v[0]), abs8(v[1])), _mm256_max_ps(abs8(v[2]), abs8(v[3])));
    const float amax = hmax8(a);
    if (!(amax > 0.0f)) return 0.0f;
    /* first index whose |x| equals the maximum: one bit per value, lowest set bit */
    const __m256 va = _mm256_set1_ps(amax);
    uint32_t hits = 0;
    for (int t = 0; t < 4; t++) {
        hits |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(abs8(v[t]), va, _CMP_EQ_OQ)) << (8*t);
    }
    return hits ? x[__builtin_ctz(hits)] : 0.0f;   /* no hit only for NaN input */
}

/* trunc(v) as int32 for v >= 0 (the scalar code casts a non-negative float). */
static inline __m256i trunc8(__m256 v) { return _mm256_cvttps_epi32(v); }

/* 32 int32 values 0..15 in q[0..3] -> 16 bytes: lo nibble q[j], hi nibble q[16+j]. */
static inline void pack_nibbles(const __m256i *q, uint8_t *out) {
    const __m256i lo = _mm256_packus_epi32(q[0], q[1]);            /* 16-bit, lanes interleaved */
    const __m256i hi = _mm256_packus_epi32(q[2], q[3]);
    const __m256i b = _mm256_packus_epi16(lo, _mm256_slli_epi16(hi, 4));   /* lo bytes | hi<<4 bytes */
    /* undo the 128-bit lane interleave of pack: order 0..7 | 16..23 | 8..15 | 24..31 in 32-bit units */
    const __m256i p = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    const __m128i l = _mm256_castsi256_si128(p), h = _mm256_extracti128_si256(p, 1);
    _mm_storeu_si128((__m128i *)out, _mm_or_si128(l, h));
}

void pl_quantize_row_q4_0_avx2(const float *x, block_q4_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        __m256 v[4];
        for (int t = 0; t < 4; t++) v[t] = _mm256_loadu_ps(x + 8*t);
        const float max = signed_absmax32(x, v);
        const float d  = max / -8;
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(8.5f);
        __m256i q[4];
        for (int t = 0; t < 4; t++) {
            q[t] = _mm256_min_epi32(trunc8(_mm256_add_ps(_mm256_mul_ps(v[t], vid), half)), _mm256_set1_epi32(15));
        }
        pack_nibbles(q, y[i].qs);
    }
}

void pl_quantize_row_q8_0_avx2(const float *x, block_q8_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        __m256 v[4];
        for (int t = 0; t < 4; t++) v[t] = _mm256_loadu_ps(x + 8*t);
        const __m256 a = _mm256_max_ps(_mm256_max_ps(abs8(v[0]), abs8(v[1])), _mm256_max_ps(abs8(v[2]), abs8(v[3])));
        const float amax = hmax8(a);
        const float d  = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int t = 0; t < 4; t++) {
            /* roundf (half away from zero), exactly: t = trunc(s); |s - t| is exact;
             * step away from zero when it is >= 0.5 */
            const __m256 s = _mm256_mul_ps(v[t], vid);
            const __m256 tr = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 frac = abs8(_mm256_sub_ps(s, tr));
            const __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                            _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(s, sign)));
            /* the scalar float -> int8_t conversion keeps the low byte of the int32
             * truncation (0x80000000 for inf/nan when 1/d overflows): do the same */
            q[t] = _mm256_and_si256(_mm256_cvttps_epi32(_mm256_add_ps(tr, up)), _mm256_set1_epi32(0xFF));
        }
        const __m256i w01 = _mm256_packus_epi32(q[0], q[1]);
        const __m256i w23 = _mm256_packus_epi32(q[2], q[3]);
        const __m256i b = _mm256_packus_epi16(w01, w23);
        const __m256i p = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p);
    }
}


/* Exact min and max of a block as the scalar loops find them. Vector min/max are
 * order-free except that +0 and -0 compare equal (the scalar loop keeps the first
 * one it saw): returns 0 when either result is zero, and the caller then uses the
 * scalar code for that block. */
static inline int minmax32(const __m256 *v, float *min, float *max) {
    const __m256 mn = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
    const __m256 mx = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    *min = hmin8(mn);
    *max = hmax8(mx);
    return *min != 0.0f && *max != 0.0f;
}

/* qh of a 5-bit block: bit k = bit 4 of quant k. */
static inline uint32_t high_bits32(const __m256i *q) {
    uint32_t qh = 0;
    for (int t = 0; t < 4; t++) {
        qh |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q[t], 27))) << (8*t);
    }
    return qh;
}

void pl_quantize_row_q4_1_avx2(const float *x, block_q4_1 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        __m256 v[4];
        for (int t = 0; t < 4; t++) v[t] = _mm256_loadu_ps(x + 8*t);
        float min, max;
        if (!minmax32(v, &min, &max)) { pl_quantize_row_q4_1(x, y + i, QK32); continue; }
        const float d  = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        y[i].m = pl_fp32_to_fp16_1(min);
        const __m256 vid = _mm256_set1_ps(id), vmin = _mm256_set1_ps(min), half = _mm256_set1_ps(0.5f);
        __m256i q[4];
        for (int t = 0; t < 4; t++) {
            const __m256 s = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[t], vmin), vid), half);
            q[t] = _mm256_min_epi32(trunc8(s), _mm256_set1_epi32(15));
        }
        pack_nibbles(q, y[i].qs);
    }
}

void pl_quantize_row_q5_0_avx2(const float *x, block_q5_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        __m256 v[4];
        for (int t = 0; t < 4; t++) v[t] = _mm256_loadu_ps(x + 8*t);
        const float max = signed_absmax32(x, v);
        const float d  = max / -16;
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(16.5f);
        __m256i q[4], lo[4];
        for (int t = 0; t < 4; t++) {
            q[t] = _mm256_min_epi32(trunc8(_mm256_add_ps(_mm256_mul_ps(v[t], vid), half)), _mm256_set1_epi32(31));
            lo[t] = _mm256_and_si256(q[t], _mm256_set1_epi32(0x0F));
        }
        pack_nibbles(lo, y[i].qs);
        const uint32_t qh = high_bits32(q);
        memcpy(y[i].qh, &qh, 4);
    }
}

void pl_quantize_row_q5_1_avx2(const float *x, block_q5_1 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        __m256 v[4];
        for (int t = 0; t < 4; t++) v[t] = _mm256_loadu_ps(x + 8*t);
        float min, max;
        if (!minmax32(v, &min, &max)) { pl_quantize_row_q5_1(x, y + i, QK32); continue; }
        const float d  = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        y[i].m = pl_fp32_to_fp16_1(min);
        const __m256 vid = _mm256_set1_ps(id), vmin = _mm256_set1_ps(min), half = _mm256_set1_ps(0.5f);
        __m256i q[4], lo[4];
        for (int t = 0; t < 4; t++) {
            q[t] = trunc8(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[t], vmin), vid), half));   /* no clamp, as the reference */
            lo[t] = _mm256_and_si256(q[t], _mm256_set1_epi32(0x0F));
        }
        pack_nibbles(lo, y[i].qs);
        const uint32_t qh = high_bits32(q);
        memcpy(y[i].qh, &qh, 4);
    }
}

#else   /* not x86: never selected */
int pl_have_avx2(void) { return 0; }
#endif
