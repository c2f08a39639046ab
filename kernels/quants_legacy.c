/* quants_legacy.c - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: one scale (and min) per 32 values.
 *
 * Re-implements the reference quantizers of llama.cpp (ggml-quants.c,
 * quantize_row_q{4_0,4_1,5_0,5_1,8_0}_ref), which are what llama_model_quantize
 * runs when no importance matrix is given. Bit-exactness needs the same float
 * operations in the same order, so every expression below keeps the reference's
 * shape (e.g. `max / -8`, then `1.0f/d`, then `x*id + 8.5f`); do not "simplify"
 * them. The file is compiled with -ffp-contract=off (see CMakeLists.txt): a fused
 * multiply-add rounds once where the reference rounds twice.
 */
#include "pl_internal.h"
#include <float.h>

/* ================================================================ Q4_0 */
/* 32 values -> d = max/-8 (max = the value of largest magnitude, sign kept),
 * q = clamp(round(x/d) + 8, 0, 15). */
void pl_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        float amax = 0.0f, max = 0.0f;
        /* strict '<': the first value reaching the largest magnitude wins, sign included */
        for (int j = 0; j < QK32; j++) {
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        }
        const float d  = max / -8;
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        /* low nibble: first half of the block, high nibble: second half */
        for (int j = 0; j < QK32/2; ++j) {
            const float x0 = x[j]*id;
            const float x1 = x[QK32/2 + j]*id;
            const uint8_t xi0 = PL_MIN(15, pl_f2i8(x0 + 8.5f));   /* truncation after +8.5 = round */
            const uint8_t xi1 = PL_MIN(15, pl_f2i8(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

void pl_dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, y += QK32) {
        const float d = pl_fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK32/2; ++j) {
            y[j]          = ((x[i].qs[j] & 0x0F) - 8)*d;
            y[j + QK32/2] = ((x[i].qs[j] >>   4) - 8)*d;
        }
    }
}

/* ================================================================ Q4_1 */
/* 32 values -> d = (max-min)/15, m = min, q = round((x-min)/d). */
void pl_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d  = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        y[i].m = pl_fp32_to_fp16_1(min);
        for (int j = 0; j < QK32/2; ++j) {
            const float x0 = (x[j] - min)*id;
            const float x1 = (x[QK32/2 + j] - min)*id;
            const uint8_t xi0 = PL_MIN(15, pl_f2i8(x0 + 0.5f));
            const uint8_t xi1 = PL_MIN(15, pl_f2i8(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

void pl_dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, y += QK32) {
        const float d = pl_fp16_to_fp32(x[i].d);
        const float m = pl_fp16_to_fp32(x[i].m);
        for (int j = 0; j < QK32/2; ++j) {
            y[j]          = (x[i].qs[j] & 0x0F)*d + m;
            y[j + QK32/2] = (x[i].qs[j] >>   4)*d + m;
        }
    }
}

/* ================================================================ Q5_0 */
/* Like Q4_0 with 5 bits: d = max/-16; the 5th bits of all 32 quants go into qh. */
void pl_quantize_row_q5_0(const float *x, block_q5_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK32; j++) {
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        }
        const float d  = max / -16;
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK32/2; ++j) {
            const float x0 = x[j]*id;
            const float x1 = x[QK32/2 + j]*id;
            const uint8_t xi0 = PL_MIN(31, pl_f2i8(x0 + 16.5f));
            const uint8_t xi1 = PL_MIN(31, pl_f2i8(x1 + 16.5f));
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);          /* bit j      <- value j      */
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK32/2);     /* bit j + 16 <- value j + 16 */
        }
        memcpy(y[i].qh, &qh, 4);   /* little-endian, as in the file format */
    }
}

void pl_dequantize_row_q5_0(const block_q5_0 *x, float *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, y += QK32) {
        const float d = pl_fp16_to_fp32(x[i].d);
        uint32_t qh; memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < QK32/2; ++j) {
            const uint8_t xh0 = ((qh >> (j +  0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))     ) & 0x10;
            y[j]          = (((x[i].qs[j] & 0x0F) | xh0) - 16)*d;
            y[j + QK32/2] = (((x[i].qs[j] >>   4) | xh1) - 16)*d;
        }
    }
}

/* ================================================================ Q5_1 */
void pl_quantize_row_q5_1(const float *x, block_q5_1 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d  = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        y[i].m = pl_fp32_to_fp16_1(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK32/2; ++j) {
            const float x0 = (x[j] - min)*id;
            const float x1 = (x[QK32/2 + j] - min)*id;
            const uint8_t xi0 = (uint8_t)pl_f2i8(x0 + 0.5f);   /* the reference does not clamp here */
            const uint8_t xi1 = (uint8_t)pl_f2i8(x1 + 0.5f);
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK32/2);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

void pl_dequantize_row_q5_1(const block_q5_1 *x, float *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, y += QK32) {
        const float d = pl_fp16_to_fp32(x[i].d);
        const float m = pl_fp16_to_fp32(x[i].m);
        uint32_t qh; memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < QK32/2; ++j) {
            const uint8_t xh0 = ((qh >> (j +  0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))     ) & 0x10;
            y[j]          = ((x[i].qs[j] & 0x0F) | xh0)*d + m;
            y[j + QK32/2] = ((x[i].qs[j] >>   4) | xh1)*d + m;
        }
    }
}

/* ================================================================ Q8_0 */
/* d = amax/127, q = roundf(x/d) (ties away from zero). */
void pl_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, x += QK32) {
        float amax = 0.0f;
        for (int j = 0; j < QK32; j++) amax = PL_MAX(amax, fabsf(x[j]));
        const float d  = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f/d : 0.0f;
        y[i].d = pl_fp32_to_fp16_1(d);
        for (int j = 0; j < QK32; ++j) y[i].qs[j] = pl_f2i8(roundf(x[j]*id));
    }
}

void pl_dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k) {
    const int64_t nb = k / QK32;
    for (int64_t i = 0; i < nb; i++, y += QK32) {
        const float d = pl_fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK32; ++j) y[j] = x[i].qs[j]*d;
    }
}
