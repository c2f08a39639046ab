/* quants_k.c - Q4_K, Q5_K, Q6_K: 256-value super-blocks of 8 (or 16) sub-blocks.
 *
 * Re-implements llama.cpp's quantize_row_q{4,5,6}_K_ref and the helpers they use
 * (make_qkx2_quants, make_qx_quants with rmse_type 1) from ggml-quants.c: the
 * code llama_model_quantize reaches through ggml_quantize_chunk ->
 * quantize_q4_K(..., quant_weights = NULL) -> quantize_row_q4_K_ref. (With an
 * importance matrix llama.cpp switches to quantize_row_q4_K_impl, a different
 * search; we never take that path.)
 *
 * The searches below try many candidate scales and keep the best by a float
 * error sum, so one differently-rounded operation can flip a choice and change a
 * whole sub-block. Hence: same operations, same order, same types (L is uint8_t
 * for Q4_K/Q5_K and int8_t for Q6_K, as in the reference), and no FMA contraction
 * (-ffp-contract=off, see CMakeLists.txt).
 */
#include "pl_internal.h"

#define GROUP_MAX_EPS 1e-15f   /* ggml-quants.c: below this a group counts as all-zero */

/* ================================================================ helpers */

/* Fit x[i] ~ scale*L[i] - min with L in [0, nmax] and min >= 0, minimising the
 * weighted squared error; tries nstep+1 scales around nmax/(max-min) and, for each,
 * solves the 2x2 least-squares system for (scale, min). Returns scale; *the_min = min.
 * n = 32 here. ggml-quants.c: make_qkx2_quants (use_mad = false). */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights,
                              uint8_t *L, float *the_min, uint8_t *Laux,
                              float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax/(max - min);
    float scale = 1/iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = pl_nearest_int(iscale*(x[i] - min));
        L[i] = (uint8_t)PL_MAX(0, PL_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) { *the_min = -min; return scale; }

    /* hot loop: (nstep+1) x n. Sums are accumulated strictly in index order;
     * reordering them (or letting the compiler vectorise the reduction) would
     * change the rounding and with it which candidate wins. */
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta*is + nmax)/(max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = pl_nearest_int(iscale*(x[i] - min));
            l = PL_MAX(0, PL_MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l  += w*l;
            sum_l2 += w*l*l;
            sum_xl += w*l*x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l)/D;
            float this_min   = (sum_l2 * sum_x - sum_l * sum_xl)/D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Symmetric fit x[i] ~ scale*(L[i] - nmax), L in [0, 2*nmax), weights x^2; tries 18
 * scales around -nmax/max and keeps the best by sumlx^2/suml2.
 * ggml-quants.c: make_qx_quants with rmse_type = 1 and qw = NULL (the Q6_K path). */
static float make_qx_quants_rmse1(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = pl_nearest_int(iscale * x[i]);
        l = PL_MAX(-nmax, PL_MIN(nmax-1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w*x[i]*l;
        suml2 += w*l*l;
    }
    float scale = suml2 ? sumlx/suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f*is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = pl_nearest_int(iscale * x[i]);
            l = PL_MAX(-nmax, PL_MIN(nmax-1, l));
            const float w = x[i] * x[i];
            sumlx += w*x[i]*l;
            suml2 += w*l*l;
        }
        if (suml2 > 0 && sumlx*sumlx > best*suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = pl_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + PL_MAX(-nmax, PL_MIN(nmax-1, l)));
            }
            scale = sumlx/suml2; best = scale*sumlx;
        }
    }
    return scale;
}

/* 6-bit scale j and min j of a Q4_K/Q5_K super-block (12-byte packing). */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63; *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j+4] & 0xF) | ((q[j-4] >> 6) << 4));
        *m = (uint8_t)((q[j+4] >>  4) | ((q[j-0] >> 6) << 4));
    }
}

/* Quantize the 8 sub-block (scale, min) pairs to 6 bits against their maxima and
 * pack them; returns nothing, writes scales[12], *d, *dmin. Shared by Q4_K and Q5_K. */
static void pack_scales_mins_k4(const float *scales, const float *mins, float max_scale, float max_min,
                                uint8_t *packed, pl_half *d, pl_half *dmin) {
    const float inv_scale = max_scale > 0 ? 63.f/max_scale : 0.f;
    const float inv_min   = max_min   > 0 ? 63.f/max_min   : 0.f;
    for (int j = 0; j < QK_K/32; ++j) {
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
    *d    = pl_fp32_to_fp16_1(max_scale/63.f);
    *dmin = pl_fp32_to_fp16_1(max_min/63.f);
}

/* With the final 6-bit scales and fp16 super-scales fixed, re-quantize every value:
 * l = round((x + dm)/d) clamped to [0, nmax]. Sub-blocks whose d is 0 keep the L the
 * search produced (as the reference does). */
static void requantize_k4(const float *x, const uint8_t *packed, pl_half hd, pl_half hdmin,
                          int nmax, uint8_t *L) {
    for (int j = 0; j < QK_K/32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, packed, &sc, &m);
        const float d = pl_fp16_to_fp32(hd) * sc;
        if (!d) continue;
        const float dm = pl_fp16_to_fp32(hdmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = pl_nearest_int((x[32*j + ii] + dm)/d);
            l = PL_MAX(0, PL_MIN(nmax, l));
            L[32*j + ii] = (uint8_t)l;
        }
    }
}

/* ================================================================ Q4_K */
/* Per 32-value sub-block: weights w = rms(x) + |x|, asymmetric fit (scale, min);
 * then the 8 scales and 8 mins are themselves quantized to 6 bits. */
void pl_quantize_row_q4_K(const float *x, block_q4_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    uint8_t L[QK_K];          /* final 4-bit quants of the super-block */
    uint8_t Laux[32];         /* candidate quants inside the search    */
    float weights[32];
    float mins[QK_K/32], scales[QK_K/32];

    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K/32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32*j + l] * x[32*j + l];
            const float av_x = sqrtf(sum_x2/32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            scales[j] = make_qkx2_quants(32, 15, x + 32*j, weights, L + 32*j, &mins[j], Laux, -1.f, 0.1f, 20);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j]   > max_min)   max_min   = mins[j];
        }
        pack_scales_mins_k4(scales, mins, max_scale, max_min, y[i].scales, &y[i].d, &y[i].dmin);
        requantize_k4(x, y[i].scales, y[i].d, y[i].dmin, 15, L);

        /* 64 values per 32 bytes: low nibble = first 32, high nibble = next 32 */
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        }
    }
}

void pl_dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k) {
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d   = pl_fp16_to_fp32(x[i].d);
        const float min = pl_fp16_to_fp32(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64, q += 32, is += 2) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l]  >> 4) - m2;
        }
    }
}

/* ================================================================ Q5_K */
/* Q4_K with 5-bit quants (nmax 31) and a narrower scale search (rmin -0.5, 16 steps). */
void pl_quantize_row_q5_K(const float *x, block_q5_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    uint8_t L[QK_K];
    uint8_t Laux[32];
    float weights[32];
    float mins[QK_K/32], scales[QK_K/32];

    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K/32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32*j + l] * x[32*j + l];
            const float av_x = sqrtf(sum_x2/32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            scales[j] = make_qkx2_quants(32, 31, x + 32*j, weights, L + 32*j, &mins[j], Laux, -0.5f, 0.1f, 15);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j]   > max_min)   max_min   = mins[j];
        }
        pack_scales_mins_k4(scales, mins, max_scale, max_min, y[i].scales, &y[i].d, &y[i].dmin);
        requantize_k4(x, y[i].scales, y[i].d, y[i].dmin, 31, L);

        /* low 4 bits like Q4_K; bit 4 of value n+j goes to qh[j], bit (2*(n/64)) or +1 */
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

void pl_dequantize_row_q5_K(const block_q5_K *x, float *y, int64_t k) {
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d   = pl_fp16_to_fp32(x[i].d);
        const float min = pl_fp16_to_fp32(x[i].dmin);
        int is = 0;
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64, ql += 32, is += 2) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l]  >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 <<= 2; u2 <<= 2;
        }
    }
}

/* ================================================================ Q6_K */
/* 16 sub-blocks of 16, symmetric 6-bit quants, 8-bit signed sub-block scales. */
void pl_quantize_row_q6_K(const float *x, block_q6_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    int8_t L[QK_K];
    float scales[QK_K/16];

    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K/16; ++ib) {
            const float scale = make_qx_quants_rmse1(16, 32, x + 16*ib, L + 16*ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scale; }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {   /* all (near) zero: an all-zero block */
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
            for (int ii = 0; ii < 16; ++ii) {
                int l = pl_nearest_int(x[16*j + ii]/d);
                l = PL_MAX(-32, PL_MIN(31, l));
                L[16*j + ii] = (int8_t)(l + 32);
            }
        }
        /* 128 values per 64 ql bytes + 32 qh bytes: value l, l+32, l+64, l+96 share them */
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

void pl_dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k) {
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = pl_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l/16;
                const int8_t q1 = (int8_t)((ql[l +  0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l +  0]  >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32]  >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l +  0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}
