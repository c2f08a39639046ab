/* vec8.h - 8 float lanes, the few operations the lane-parallel K-quant searches need.
 *
 * One implementation per ISA: AVX2 (one __m256) and NEON (two float32x4_t). Every
 * operation is the exact IEEE single-precision operation of the scalar code, lane by
 * lane: add, sub, mul, div, sqrt are correctly rounded on both; no fused multiply-add
 * is ever used (and -ffp-contract=off keeps the compiler from making one).
 * Comparisons are ordered (false when a NaN is involved), like C's < and >.
 */
#ifndef PL_VEC8_H
#define PL_VEC8_H

#include <stdint.h>

#if defined(PL_VEC_AVX2)
#include <immintrin.h>

typedef __m256  v8f;   /* 8 floats             */
typedef __m256i v8i;   /* 8 int32              */
typedef __m256  v8m;   /* 8 lane masks (all-1) */

static inline v8f v8_set1(float x)          { return _mm256_set1_ps(x); }
static inline v8f v8_zero(void)             { return _mm256_setzero_ps(); }
static inline v8f v8_add(v8f a, v8f b)      { return _mm256_add_ps(a, b); }
static inline v8f v8_sub(v8f a, v8f b)      { return _mm256_sub_ps(a, b); }
static inline v8f v8_mul(v8f a, v8f b)      { return _mm256_mul_ps(a, b); }
static inline v8f v8_div(v8f a, v8f b)      { return _mm256_div_ps(a, b); }
static inline v8f v8_sqrt(v8f a)            { return _mm256_sqrt_ps(a); }
static inline v8f v8_abs(v8f a)             { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline v8f v8_neg(v8f a)             { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
static inline v8m v8_lt(v8f a, v8f b)       { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline v8m v8_gt(v8f a, v8f b)       { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline v8m v8_eq(v8f a, v8f b)       { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
static inline v8m v8_ne(v8f a, v8f b)       { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }  /* C's != : true for NaN */
static inline v8m v8_and(v8m a, v8m b)      { return _mm256_and_ps(a, b); }
static inline int v8_any(v8m m)             { return _mm256_movemask_ps(m) != 0; }
static inline v8f v8_sel(v8m m, v8f y, v8f n)  { return _mm256_blendv_ps(n, y, m); }
static inline v8i v8_seli(v8m m, v8i y, v8i n) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(n), _mm256_castsi256_ps(y), m));
}
static inline v8i v8_zeroi(void)            { return _mm256_setzero_si256(); }
static inline v8i v8_addi(v8i a, int b)     { return _mm256_add_epi32(a, _mm256_set1_epi32(b)); }
static inline v8i v8_clampi(v8i a, int lo, int hi) {
    return _mm256_min_epi32(_mm256_max_epi32(a, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}
static inline v8f v8_i2f(v8i a)             { return _mm256_cvtepi32_ps(a); }
/* pl_nearest_int, lane-wise: same magic-number trick, same bits */
static inline v8i v8_nearest_int(v8f f) {
    const __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}
/* lane j = p[j*stride] */
static inline v8f v8_load_strided(const float *p, int stride) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    return _mm256_i32gather_ps(p, idx, 4);
}
static inline v8f  v8_loadu(const float *p)          { return _mm256_loadu_ps(p); }
static inline void v8_store(float *p, v8f a)         { _mm256_storeu_ps(p, a); }
static inline void v8_storei(int32_t *p, v8i a)      { _mm256_storeu_si256((__m256i *)p, a); }

#elif defined(PL_VEC_NEON)
#include <arm_neon.h>

typedef struct { float32x4_t lo, hi; } v8f;
typedef struct { int32x4_t   lo, hi; } v8i;
typedef struct { uint32x4_t  lo, hi; } v8m;

#define PL_V8F(op, a, b) ((v8f){ op((a).lo, (b).lo), op((a).hi, (b).hi) })
static inline v8f v8_set1(float x)          { const float32x4_t v = vdupq_n_f32(x); return (v8f){ v, v }; }
static inline v8f v8_zero(void)             { return v8_set1(0.0f); }
static inline v8f v8_add(v8f a, v8f b)      { return PL_V8F(vaddq_f32, a, b); }
static inline v8f v8_sub(v8f a, v8f b)      { return PL_V8F(vsubq_f32, a, b); }
static inline v8f v8_mul(v8f a, v8f b)      { return PL_V8F(vmulq_f32, a, b); }
static inline v8f v8_div(v8f a, v8f b)      { return PL_V8F(vdivq_f32, a, b); }
static inline v8f v8_sqrt(v8f a)            { return (v8f){ vsqrtq_f32(a.lo), vsqrtq_f32(a.hi) }; }
static inline v8f v8_abs(v8f a)             { return (v8f){ vabsq_f32(a.lo), vabsq_f32(a.hi) }; }
static inline v8f v8_neg(v8f a)             { return (v8f){ vnegq_f32(a.lo), vnegq_f32(a.hi) }; }
static inline v8m v8_lt(v8f a, v8f b)       { return (v8m){ vcltq_f32(a.lo, b.lo), vcltq_f32(a.hi, b.hi) }; }
static inline v8m v8_gt(v8f a, v8f b)       { return (v8m){ vcgtq_f32(a.lo, b.lo), vcgtq_f32(a.hi, b.hi) }; }
static inline v8m v8_eq(v8f a, v8f b)       { return (v8m){ vceqq_f32(a.lo, b.lo), vceqq_f32(a.hi, b.hi) }; }
static inline v8m v8_ne(v8f a, v8f b)       { const v8m e = v8_eq(a, b); return (v8m){ vmvnq_u32(e.lo), vmvnq_u32(e.hi) }; }
static inline v8m v8_and(v8m a, v8m b)      { return (v8m){ vandq_u32(a.lo, b.lo), vandq_u32(a.hi, b.hi) }; }
static inline int v8_any(v8m m)             { return vmaxvq_u32(vorrq_u32(m.lo, m.hi)) != 0; }
static inline v8f v8_sel(v8m m, v8f y, v8f n)  { return (v8f){ vbslq_f32(m.lo, y.lo, n.lo), vbslq_f32(m.hi, y.hi, n.hi) }; }
static inline v8i v8_seli(v8m m, v8i y, v8i n) { return (v8i){ vbslq_s32(m.lo, y.lo, n.lo), vbslq_s32(m.hi, y.hi, n.hi) }; }
static inline v8i v8_zeroi(void)            { const int32x4_t z = vdupq_n_s32(0); return (v8i){ z, z }; }
static inline v8i v8_addi(v8i a, int b)     { const int32x4_t v = vdupq_n_s32(b); return (v8i){ vaddq_s32(a.lo, v), vaddq_s32(a.hi, v) }; }
static inline v8i v8_clampi(v8i a, int lo, int hi) {
    const int32x4_t l = vdupq_n_s32(lo), h = vdupq_n_s32(hi);
    return (v8i){ vminq_s32(vmaxq_s32(a.lo, l), h), vminq_s32(vmaxq_s32(a.hi, l), h) };
}
static inline v8f v8_i2f(v8i a)             { return (v8f){ vcvtq_f32_s32(a.lo), vcvtq_f32_s32(a.hi) }; }
static inline int32x4_t pl_nearest_int4(float32x4_t f) {
    const int32x4_t i = vreinterpretq_s32_f32(vaddq_f32(f, vdupq_n_f32(12582912.f)));
    return vsubq_s32(vandq_s32(i, vdupq_n_s32(0x007fffff)), vdupq_n_s32(0x00400000));
}
static inline v8i v8_nearest_int(v8f f)     { return (v8i){ pl_nearest_int4(f.lo), pl_nearest_int4(f.hi) }; }
static inline v8f v8_load_strided(const float *p, int stride) {
    const float t[8] = { p[0], p[stride], p[2*stride], p[3*stride], p[4*stride], p[5*stride], p[6*stride], p[7*stride] };
    return (v8f){ vld1q_f32(t), vld1q_f32(t + 4) };
}
static inline v8f  v8_loadu(const float *p)          { return (v8f){ vld1q_f32(p), vld1q_f32(p + 4) }; }
static inline void v8_store(float *p, v8f a)         { vst1q_f32(p, a.lo); vst1q_f32(p + 4, a.hi); }
static inline void v8_storei(int32_t *p, v8i a)      { vst1q_s32(p, a.lo); vst1q_s32(p + 4, a.hi); }

#else
#error "vec8.h: define PL_VEC_AVX2 or PL_VEC_NEON"
#endif

#endif /* PL_VEC8_H */
