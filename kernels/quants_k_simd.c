/* quants_k_simd.c - Q4_K, Q5_K, Q6_K with 8 sub-blocks side by side (vec8.h lanes).
 *
 * Byte-identical to quants_k.c. The scale searches are sequential float sums that
 * must not be reordered, so instead of vectorising *within* a sub-block we run
 * 8 sub-blocks at once, one per lane: lane j performs exactly the scalar operations
 * of sub-block j, in the same order; per-lane branches become masks and selects.
 * Inputs are transposed first: xt[i], lane j = x[32*j + i] (Q6_K: x[16*j + i]).
 *
 * Compiled once per ISA (CMakeLists.txt): -DPL_VEC_AVX2 -mavx2 gives the *_avx2
 * functions, -DPL_VEC_NEON (arm64) the *_neon ones; threads.c picks at run time.
 */
#include "pl_internal.h"
#include "vec8.h"

#if defined(PL_VEC_AVX2)
#define PL_FN(name) name##_avx2
#else
#define PL_FN(name) name##_neon
#endif

/* ================================================================ Q4_K / Q5_K search */

/* make_qkx2_quants (n = 32, use_mad = false) for 8 sub-blocks: xt, wt [32] transposed
 * values and weights; Lt [32] result quants; returns scale, *the_min per lane. */
static v8f make_qkx2_quants_x8(int nmax, const v8f *xt, const v8f *wt, v8i *Lt, v8f *the_min,
                               float rmin, float rdelta, int nstep) {
    const v8f zero = v8_zero();
    v8f min = xt[0], max = xt[0];
    v8f sum_w = wt[0];
    v8f sum_x = v8_mul(sum_w, xt[0]);
    for (int i = 1; i < 32; ++i) {
        min = v8_sel(v8_lt(xt[i], min), xt[i], min);      /* if (x < min) min = x */
        max = v8_sel(v8_gt(xt[i], max), xt[i], max);      /* if (x > max) max = x */
        sum_w = v8_add(sum_w, wt[i]);
        sum_x = v8_add(sum_x, v8_mul(wt[i], xt[i]));
    }
    min = v8_sel(v8_gt(min, zero), zero, min);             /* if (min > 0) min = 0 */
    const v8m flat = v8_eq(max, min);                      /* max == min: L = 0, scale 0 */

    v8f iscale = v8_div(v8_set1((float)nmax), v8_sub(max, min));
    v8f scale = v8_div(v8_set1(1.0f), iscale);
    v8f best_error = zero;
    for (int i = 0; i < 32; ++i) {
        Lt[i] = v8_clampi(v8_nearest_int(v8_mul(iscale, v8_sub(xt[i], min))), 0, nmax);
        v8f diff = v8_sub(v8_add(v8_mul(scale, v8_i2f(Lt[i])), min), xt[i]);
        diff = v8_mul(diff, diff);
        best_error = v8_add(best_error, v8_mul(wt[i], diff));
    }
    v8i Laux[32];
    v8f Lf[32];
    /* hot loop: (nstep+1) candidate scales x 32 values x 8 lanes */
    for (int is = 0; is <= nstep; ++is) {
        /* the reference's scalar numerator; it divides by the *current* max - min
         * (min moves when a candidate wins), so this is recomputed every step */
        const float num = rmin + rdelta*is + nmax;
        iscale = v8_div(v8_set1(num), v8_sub(max, min));
        v8f sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < 32; ++i) {
            Laux[i] = v8_clampi(v8_nearest_int(v8_mul(iscale, v8_sub(xt[i], min))), 0, nmax);
            Lf[i] = v8_i2f(Laux[i]);
            const v8f wl = v8_mul(wt[i], Lf[i]);
            sum_l  = v8_add(sum_l, wl);
            sum_l2 = v8_add(sum_l2, v8_mul(wl, Lf[i]));
            sum_xl = v8_add(sum_xl, v8_mul(wl, xt[i]));
        }
        const v8f D = v8_sub(v8_mul(sum_w, sum_l2), v8_mul(sum_l, sum_l));
        const v8m dpos = v8_gt(D, zero);
        if (!v8_any(dpos)) continue;
        v8f this_scale = v8_div(v8_sub(v8_mul(sum_w, sum_xl), v8_mul(sum_x, sum_l)), D);
        v8f this_min   = v8_div(v8_sub(v8_mul(sum_l2, sum_x), v8_mul(sum_l, sum_xl)), D);
        const v8m mpos = v8_gt(this_min, zero);
        this_min   = v8_sel(mpos, zero, this_min);
        this_scale = v8_sel(mpos, v8_div(sum_xl, sum_l2), this_scale);
        v8f cur_error = zero;
        for (int i = 0; i < 32; ++i) {
            v8f diff = v8_sub(v8_add(v8_mul(this_scale, Lf[i]), this_min), xt[i]);
            diff = v8_mul(diff, diff);
            cur_error = v8_add(cur_error, v8_mul(wt[i], diff));
        }
        const v8m better = v8_and(dpos, v8_lt(cur_error, best_error));
        if (!v8_any(better)) continue;
        for (int i = 0; i < 32; ++i) Lt[i] = v8_seli(better, Laux[i], Lt[i]);
        best_error = v8_sel(better, cur_error, best_error);
        scale = v8_sel(better, this_scale, scale);
        min   = v8_sel(better, this_min, min);
    }
    for (int i = 0; i < 32; ++i) Lt[i] = v8_seli(flat, v8_zeroi(), Lt[i]);
    *the_min = v8_neg(min);
    return v8_sel(flat, zero, scale);
}

/* One Q4_K (nmax 15) / Q5_K (nmax 31) super-block: search, 6-bit scale/min packing
 * (scalar, as the reference), final requantization; writes L[256]. */
static void qk_superblock_x8(const float *x, int nmax, float rmin, float rdelta, int nstep,
                             uint8_t *packed, pl_half *hd, pl_half *hdmin, uint8_t *L) {
    v8f xt[32], wt[32];
    v8i Lt[32];
    for (int i = 0; i < 32; ++i) xt[i] = v8_load_strided(x + i, 32);

    v8f sum_x2 = v8_zero();
    for (int l = 0; l < 32; ++l) sum_x2 = v8_add(sum_x2, v8_mul(xt[l], xt[l]));
    const v8f av_x = v8_sqrt(v8_div(sum_x2, v8_set1(32.f)));
    for (int l = 0; l < 32; ++l) wt[l] = v8_add(av_x, v8_abs(xt[l]));

    v8f vmins;
    const v8f vscales = make_qkx2_quants_x8(nmax, xt, wt, Lt, &vmins, rmin, rdelta, nstep);
    float scales[8], mins[8];
    v8_store(scales, vscales);
    v8_store(mins, vmins);

    int32_t Ltmp[32][8];
    for (int i = 0; i < 32; ++i) v8_storei(Ltmp[i], Lt[i]);
    for (int j = 0; j < 8; ++j) for (int i = 0; i < 32; ++i) L[32*j + i] = (uint8_t)Ltmp[i][j];

    float max_scale = 0, max_min = 0;
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

    /* requantize with the final scales: element-wise, 8 values at a time */
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        if (j < 4) { sc = packed[j] & 63; m = packed[j + 4] & 63; }
        else {
            sc = (uint8_t)((packed[j+4] & 0xF) | ((packed[j-4] >> 6) << 4));
            m  = (uint8_t)((packed[j+4] >>  4) | ((packed[j-0] >> 6) << 4));
        }
        const float d = pl_fp16_to_fp32(*hd) * sc;
        if (!d) continue;                       /* keep the search's L, as the reference */
        const float dm = pl_fp16_to_fp32(*hdmin) * m;
        const v8f vd = v8_set1(d), vdm = v8_set1(dm);
        for (int ii = 0; ii < 32; ii += 8) {
            int32_t q[8];
            v8_storei(q, v8_clampi(v8_nearest_int(v8_div(v8_add(v8_loadu(x + 32*j + ii), vdm), vd)), 0, nmax));
            for (int t = 0; t < 8; ++t) L[32*j + ii + t] = (uint8_t)q[t];
        }
    }
}

void PL_FN(pl_quantize_row_q4_K)(const float *x, block_q4_K *y, int64_t k) {
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

void PL_FN(pl_quantize_row_q5_K)(const float *x, block_q5_K *y, int64_t k) {
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

/* ================================================================ Q6_K search */

/* make_qx_quants(n = 16, nmax = 32, rmse_type = 1, qw = NULL) for 8 sub-blocks. */
static v8f make_qx_quants_x8(const v8f *xt, v8i *Lt) {
    const int nmax = 32;
    const v8f zero = v8_zero();
    v8f max = zero, amax = zero;
    for (int i = 0; i < 16; ++i) {
        const v8f ax = v8_abs(xt[i]);
        const v8m gt = v8_gt(ax, amax);              /* if (ax > amax) { amax = ax; max = x; } */
        amax = v8_sel(gt, ax, amax);
        max  = v8_sel(gt, xt[i], max);
    }
    const v8m dead = v8_lt(amax, v8_set1(1e-15f));   /* GROUP_MAX_EPS: all L = 0, scale 0 */
    v8f iscale = v8_div(v8_set1((float)-nmax), max);
    v8f sumlx = zero, suml2 = zero;
    for (int i = 0; i < 16; ++i) {
        const v8i l = v8_clampi(v8_nearest_int(v8_mul(iscale, xt[i])), -nmax, nmax - 1);
        Lt[i] = v8_addi(l, nmax);
        const v8f lf = v8_i2f(l);
        const v8f w = v8_mul(xt[i], xt[i]);
        sumlx = v8_add(sumlx, v8_mul(v8_mul(w, xt[i]), lf));
        suml2 = v8_add(suml2, v8_mul(v8_mul(w, lf), lf));
    }
    v8f scale = v8_sel(v8_ne(suml2, zero), v8_div(sumlx, suml2), zero);
    v8f best = v8_mul(scale, sumlx);
    v8i lc[16];
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float num = -(nmax + 0.1f*is);
        iscale = v8_div(v8_set1(num), max);
        sumlx = suml2 = zero;
        for (int i = 0; i < 16; ++i) {
            lc[i] = v8_clampi(v8_nearest_int(v8_mul(iscale, xt[i])), -nmax, nmax - 1);
            const v8f l = v8_i2f(lc[i]);
            const v8f w = v8_mul(xt[i], xt[i]);
            sumlx = v8_add(sumlx, v8_mul(v8_mul(w, xt[i]), l));
            suml2 = v8_add(suml2, v8_mul(v8_mul(w, l), l));
        }
        const v8m better = v8_and(v8_gt(suml2, zero), v8_gt(v8_mul(sumlx, sumlx), v8_mul(best, suml2)));
        if (!v8_any(better)) continue;
        for (int i = 0; i < 16; ++i) Lt[i] = v8_seli(better, v8_addi(lc[i], nmax), Lt[i]);
        const v8f s = v8_div(sumlx, suml2);
        scale = v8_sel(better, s, scale);
        best  = v8_sel(better, v8_mul(s, sumlx), best);
    }
    for (int i = 0; i < 16; ++i) Lt[i] = v8_seli(dead, v8_zeroi(), Lt[i]);
    return v8_sel(dead, zero, scale);
}

void PL_FN(pl_quantize_row_q6_K)(const float *x, block_q6_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    int8_t L[QK_K];
    float scales[QK_K/16];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        /* two groups of 8 sub-blocks of 16: xt[ii] lane j = x[128*g + 16*j + ii] */
        for (int g = 0; g < 2; g++) {
            v8f xt[16];
            v8i Lt[16];
            for (int ii = 0; ii < 16; ++ii) xt[ii] = v8_load_strided(x + 128*g + ii, 16);
            v8_store(scales + 8*g, make_qx_quants_x8(xt, Lt));
            int32_t Ltmp[16][8];
            for (int ii = 0; ii < 16; ++ii) v8_storei(Ltmp[ii], Lt[ii]);
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
            const v8f vd = v8_set1(d);
            for (int ii = 0; ii < 16; ii += 8) {
                int32_t q[8];
                v8_storei(q, v8_addi(v8_clampi(v8_nearest_int(v8_div(v8_loadu(x + 16*j + ii), vd)), -32, 31), 32));
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
