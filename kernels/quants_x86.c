/* quants_x86.c - AVX2 row kernels, byte-identical to the scalar ones.
 *
 * Compiled with -mavx2 (never -mfma: see CMakeLists.txt) and chosen at run time
 * by threads.c when the CPU has AVX2.
 *
 * K-quants (where SIMD pays: ~40 MB/s scalar): the scale searches are sequential
 * float sums, which must not be reordered. So instead of vectorising *within* a
 * sub-block we run the 8 sub-blocks of a super-block side by side, one per lane:
 * lane j does exactly the scalar operations of sub-block j, in the same order,
 * and per-lane branches become masks and blends. Inputs are transposed first
 * (xt[i] lane j = x[32*j + i]).
 *
 * Legacy types: per 32-value block, element-wise work (scale, round, clamp) is
 * exact in any order; the max/min reductions are order-free except for the sign
 * of zero, handled explicitly.
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

/* pl_nearest_int for 8 lanes: same magic-number trick, same result bit for bit. */
static inline __m256i nearest_int8(__m256 f) {
    const __m256 v = _mm256_add_ps(f, _mm256_set1_ps(12582912.f));
    const __m256i i = _mm256_castps_si256(v);
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}

static inline __m256i clamp8(__m256i v, int lo, int hi) {
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

static inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

static inline __m256 blend(__m256 a, __m256 b, __m256 mask) { return _mm256_blendv_ps(a, b, mask); }  /* mask ? b : a */

static inline __m256i blendi(__m256i a, __m256i b, __m256 mask) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), mask));
}

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

/* ================================================================ K-quants: 8 lanes = 8 sub-blocks */

/* xt[32]: transposed sub-blocks. Lane-parallel make_qkx2_quants (n = 32, use_mad = false).
 * Lt[32]: resulting L; returns scale per lane, *the_min per lane. */
static __m256 make_qkx2_quants_x8(int nmax, const __m256 *xt, const __m256 *wt, __m256i *Lt, __m256 *the_min,
                                  float rmin, float rdelta, int nstep) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 min = xt[0], max = xt[0];
    __m256 sum_w = wt[0];
    __m256 sum_x = _mm256_mul_ps(sum_w, xt[0]);
    for (int i = 1; i < 32; ++i) {
        min = _mm256_min_ps(xt[i], min);          /* x < min ? x : min, as the scalar if */
        max = _mm256_max_ps(xt[i], max);          /* x > max ? x : max                    */
        sum_w = _mm256_add_ps(sum_w, wt[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(wt[i], xt[i]));
    }
    min = blend(min, zero, _mm256_cmp_ps(min, zero, _CMP_GT_OQ));          /* if (min > 0) min = 0 */
    const __m256 flat = _mm256_cmp_ps(max, min, _CMP_EQ_OQ);               /* max == min: all-L-0 lanes */
    const __m256 fnmax = _mm256_set1_ps((float)nmax);

    __m256 iscale = _mm256_div_ps(fnmax, _mm256_sub_ps(max, min));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
    __m256 best_error = zero;
    for (int i = 0; i < 32; ++i) {
        Lt[i] = clamp8(nearest_int8(_mm256_mul_ps(iscale, _mm256_sub_ps(xt[i], min))), 0, nmax);
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(Lt[i])), min), xt[i]);
        diff = _mm256_mul_ps(diff, diff);
        best_error = _mm256_add_ps(best_error, _mm256_mul_ps(wt[i], diff));
    }
    __m256i Laux[32];
    __m256 Lf[32];
    for (int is = 0; is <= nstep; ++is) {
        /* same scalar numerator as the reference; min may have moved (best fit so far),
         * and the reference divides by the current max - min, so must we */
        const float num = rmin + rdelta*is + nmax;
        iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, min));
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < 32; ++i) {
            Laux[i] = clamp8(nearest_int8(_mm256_mul_ps(iscale, _mm256_sub_ps(xt[i], min))), 0, nmax);
            Lf[i] = _mm256_cvtepi32_ps(Laux[i]);
            const __m256 wl = _mm256_mul_ps(wt[i], Lf[i]);
            sum_l  = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, Lf[i]));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xt[i]));
        }
        const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        const __m256 dpos = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        if (!_mm256_movemask_ps(dpos)) continue;
        __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
        __m256 this_min   = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        const __m256 mpos = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_min   = blend(this_min, zero, mpos);
        this_scale = blend(this_scale, _mm256_div_ps(sum_xl, sum_l2), mpos);
        __m256 cur_error = zero;
        for (int i = 0; i < 32; ++i) {
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, Lf[i]), this_min), xt[i]);
            diff = _mm256_mul_ps(diff, diff);
            cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(wt[i], diff));
        }
        const __m256 better = _mm256_and_ps(dpos, _mm256_cmp_ps(cur_error, best_error, _CMP_LT_OQ));
        if (!_mm256_movemask_ps(better)) continue;
        for (int i = 0; i < 32; ++i) Lt[i] = blendi(Lt[i], Laux[i], better);
        best_error = blend(best_error, cur_error, better);
        scale = blend(scale, this_scale, better);
        min   = blend(min, this_min, better);
    }
    /* flat lanes: L = 0, the_min = -min, scale = 0 */
    for (int i = 0; i < 32; ++i) Lt[i] = blendi(Lt[i], _mm256_setzero_si256(), flat);
    *the_min = _mm256_xor_ps(min, _mm256_set1_ps(-0.0f));
    return blend(scale, zero, flat);
}

/* One super-block of Q4_K (nmax 15) or Q5_K (nmax 31): search, then scales/mins
 * packing and the final requantization, writing L[256]. */
static void qk_superblock_x8(const float *x, int nmax, float rmin, float rdelta, int nstep,
                             uint8_t *packed, pl_half *hd, pl_half *hdmin, uint8_t *L) {
    __m256 xt[32], wt[32];
    __m256i Lt[32];
    /* transpose: xt[i] = (x[i], x[32+i], ..., x[224+i]) */
    const __m256i idx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    for (int i = 0; i < 32; ++i) xt[i] = _mm256_i32gather_ps(x + i, idx, 4);

    __m256 sum_x2 = _mm256_setzero_ps();
    for (int l = 0; l < 32; ++l) sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(xt[l], xt[l]));
    const __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.f)));
    for (int l = 0; l < 32; ++l) wt[l] = _mm256_add_ps(av_x, abs8(xt[l]));

    __m256 vmins;
    const __m256 vscales = make_qkx2_quants_x8(nmax, xt, wt, Lt, &vmins, rmin, rdelta, nstep);
    float scales[8], mins[8];
    _mm256_storeu_ps(scales, vscales);
    _mm256_storeu_ps(mins, vmins);

    int32_t Ltmp[32][8];
    for (int i = 0; i < 32; ++i) _mm256_storeu_si256((__m256i *)Ltmp[i], Lt[i]);
    for (int j = 0; j < 8; ++j) for (int i = 0; i < 32; ++i) L[32*j + i] = (uint8_t)Ltmp[i][j];

    float max_scale = 0, max_min = 0;           /* sequential, as the reference */
    for (int j = 0; j < 8; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j]   > max_min)   max_min   = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f/max_scale : 0.f;
    const float inv_min   = max_min   > 0 ? 63.f/max_min   : 0.f;
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)pl_nearest_int(inv_scale*scales[j]);
        uint8_t lm = (uint8_t)pl_nearest_int(inv_min*mins[j]);
        ls = PL_MIN(63, ls);
        lm = PL_MIN(63, lm);
        if (j < 4) {
            packed[j] = ls;
            packed[j+4] = lm;
        } else {
            packed[j+4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j-4] |= (uint8_t)((ls >> 4) << 6);
            packed[j-0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *hd    = pl_fp32_to_fp16_1(max_scale/63.f);
    *hdmin = pl_fp32_to_fp16_1(max_min/63.f);

    /* requantize with the final scales: element-wise, so 8 values at a time */
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        if (j < 4) { sc = packed[j] & 63; m = packed[j + 4] & 63; }
        else {
            sc = (uint8_t)((packed[j+4] & 0xF) | ((packed[j-4] >> 6) << 4));
            m  = (uint8_t)((packed[j+4] >>  4) | ((packed[j-0] >> 6) << 4));
        }
        const float d = pl_fp16_to_fp32(*hd) * sc;
        if (!d) continue;
        const float dm = pl_fp16_to_fp32(*hdmin) * m;
        const __m256 vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(dm);
        for (int ii = 0; ii < 32; ii += 8) {
            const __m256 v = _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(x + 32*j + ii), vdm), vd);
            int32_t q[8];
            _mm256_storeu_si256((__m256i *)q, clamp8(nearest_int8(v), 0, nmax));
            for (int t = 0; t < 8; ++t) L[32*j + ii + t] = (uint8_t)q[t];
        }
    }
}

void pl_quantize_row_q4_K_avx2(const float *x, block_q4_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        qk_superblock_x8(x, 15, -1.f, 0.1f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        }
    }
}

void pl_quantize_row_q5_K_avx2(const float *x, block_q5_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        qk_superblock_x8(x, 31, -0.5f, 0.1f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K/8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j];
                if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
                int l2 = L[n + j + 32];
                if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 <<= 2; m2 <<= 2;
        }
    }
}

/* Q6_K: 16 sub-blocks of 16 -> two passes of 8 lanes. Lane-parallel
 * make_qx_quants(n = 16, nmax = 32, rmse_type = 1, qw = NULL). */
static __m256 make_qx_quants_x8(const __m256 *xt, __m256i *Lt) {
    const int nmax = 32;
    const __m256 zero = _mm256_setzero_ps();
    __m256 max = zero, amax = zero;
    for (int i = 0; i < 16; ++i) {
        const __m256 ax = abs8(xt[i]);
        const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = blend(amax, ax, gt);
        max  = blend(max, xt[i], gt);
    }
    const __m256 dead = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);   /* GROUP_MAX_EPS */
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 sumlx = zero, suml2 = zero;
    __m256 lf[16];
    for (int i = 0; i < 16; ++i) {
        const __m256i l = clamp8(nearest_int8(_mm256_mul_ps(iscale, xt[i])), -nmax, nmax - 1);
        Lt[i] = _mm256_add_epi32(l, _mm256_set1_epi32(nmax));
        lf[i] = _mm256_cvtepi32_ps(l);
        const __m256 w = _mm256_mul_ps(xt[i], xt[i]);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, xt[i]), lf[i]));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, lf[i]), lf[i]));
    }
    __m256 scale = blend(zero, _mm256_div_ps(sumlx, suml2), _mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    __m256i lc[16];
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float num = -(nmax + 0.1f*is);
        iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
        sumlx = suml2 = zero;
        for (int i = 0; i < 16; ++i) {
            lc[i] = clamp8(nearest_int8(_mm256_mul_ps(iscale, xt[i])), -nmax, nmax - 1);
            const __m256 l = _mm256_cvtepi32_ps(lc[i]);
            const __m256 w = _mm256_mul_ps(xt[i], xt[i]);
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, xt[i]), l));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, l), l));
        }
        const __m256 better = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                            _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
        if (!_mm256_movemask_ps(better)) continue;
        for (int i = 0; i < 16; ++i) Lt[i] = blendi(Lt[i], _mm256_add_epi32(lc[i], _mm256_set1_epi32(nmax)), better);
        const __m256 s = _mm256_div_ps(sumlx, suml2);
        scale = blend(scale, s, better);
        best  = blend(best, _mm256_mul_ps(s, sumlx), better);
    }
    for (int i = 0; i < 16; ++i) Lt[i] = blendi(Lt[i], _mm256_setzero_si256(), dead);
    return blend(scale, zero, dead);
}


void pl_quantize_row_q6_K_avx2(const float *x, block_q6_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    const __m256i idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    int8_t L[QK_K];
    float scales[QK_K/16];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        /* two groups of 8 sub-blocks of 16: xt[i] lane j = x[128*g + 16*j + i] */
        for (int g = 0; g < 2; g++) {
            __m256 xt[16];
            __m256i Lt[16];
            for (int ii = 0; ii < 16; ++ii) xt[ii] = _mm256_i32gather_ps(x + 128*g + ii, idx, 4);
            _mm256_storeu_ps(scales + 8*g, make_qx_quants_x8(xt, Lt));
            int32_t Ltmp[16][8];
            for (int ii = 0; ii < 16; ++ii) _mm256_storeu_si256((__m256i *)Ltmp[ii], Lt[ii]);
            for (int j = 0; j < 8; ++j) for (int ii = 0; ii < 16; ++ii) L[128*g + 16*j + ii] = (int8_t)Ltmp[ii][j];
        }
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K/16; ++ib) {
            const float abs_scale = fabsf(scales[ib]);
            if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scales[ib]; }
        }
        if (max_abs_scale < 1e-15f) {   /* GROUP_MAX_EPS */
            memset(&y[i], 0, sizeof(block_q6_K));
            continue;
        }
        const float iscale = -128.f/max_scale;
        y[i].d = pl_fp32_to_fp16_1(1/iscale);
        for (int ib = 0; ib < QK_K/16; ++ib) {
            y[i].scales[ib] = (int8_t)PL_MIN(127, pl_nearest_int(iscale*scales[ib]));
        }
        for (int j = 0; j < QK_K/16; ++j) {
            const float d = pl_fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            const __m256 vd = _mm256_set1_ps(d);
            for (int ii = 0; ii < 16; ii += 8) {
                int32_t q[8];
                const __m256i l = clamp8(nearest_int8(_mm256_div_ps(_mm256_loadu_ps(x + 16*j + ii), vd)), -32, 31);
                _mm256_storeu_si256((__m256i *)q, _mm256_add_epi32(l, _mm256_set1_epi32(32)));
                for (int t = 0; t < 8; ++t) L[16*j + ii + t] = (int8_t)q[t];
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l +  0] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l +  0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
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
