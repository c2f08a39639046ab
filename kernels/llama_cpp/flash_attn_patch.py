"""The ggml-cpu edits: flash attention jumps over masked KV cells, and a faster one-row kernel.

``ggml_compute_forward_flash_attn_ext_f16_one_chunk`` (ggml/src/ggml-cpu/ops.cpp; the
kernel below 64 query rows, and the split-KV kernel of one row) loops over every cell below
the pool's highest used one for every query row and head, converting each cell's fp16 mask
value and skipping it when it is -inf. In a unified KV pool of eight sequences most cells are
another sequence's, so most of that loop is the test. The edit replaces the one-cell skip by
a jump to the next cell whose mask is not -inf, comparing 32 (AVX-512BW) or 16 (AVX2) mask
values at a time, else one at a time. A masked cell contributes nothing to the sum.

The jump is taken only when ``slope > 0`` (always, without ALiBi's ``max_bias``): then a
cell's ``slope * mask`` is -inf exactly when its fp16 mask is -inf (0xFC00).

**The one-row kernel** (``ROW_HELPER``, ``ggml_fa_rows_f16``). For fp16 K and V without
softcap, ALiBi or sinks, and head sizes :data:`ROW_HEADS`, on a CPU with AVX-512 (F, DQ) or
AVX2 with FMA and F16C, a row no longer takes its cells one at a time (a dot product through
a function pointer, a scalar ``expf``, an fp16 accumulator rounded after every cell). It
takes its unmasked cells :data:`ROW_BLOCK` at a time: fp32 dot products against the fp32
query (stock converts the query to fp16), one running-max update and one vector exp (ggml's
``ggml_v_expf``) per block, V accumulated in fp32. Query heads that share a KV head (GQA) go
together, up to :data:`ROW_GROUP`: each K and V row is converted from fp16 once for all of
them, which was most of the work. The rows are taken in the order (KV head, query row, head
in group), a bijection of the caller's index range, so a thread's range holds whole groups;
the split-KV path (one row, KV split over threads) calls it once for all heads instead of
once per head. The sums change (more exact ones: ``tests/test_llama_cpp_patch.py`` compares
the kernel with attention computed in numpy), so this build's results differ from the stock
build's in the last bits. A row's arithmetic is the same whichever heads go with it, and
its cells are taken in its own order, so its result depends on its own query and cells
only, as before.

``ggml_compute_forward_flash_attn_ext_tiled`` (64 query rows or more) gets four edits, none
of which changes a bit of the result:

- **Masked tiles, jumped over.** It skipped a 64-cell KV tile only after converting and
  testing its 64 x 64 mask values. It now finds, with the same helper, the first cell any row
  of the Q tile sees and goes straight to that cell's tile. Skipped tiles are the ones skipped
  before.
- **Only the tile's rows.** A Q tile that ends at a head's last row (or a thread's share of
  the rows) is zero-padded to 64 rows, and both GEMMs and the softmax ran over all 64. They
  now run over the tile's rows; a GEMM row depends only on its own row.
- **Few rows, row by row.** When at most :data:`SPARSE_ROWS` rows of the Q tile see a KV
  tile (another sequence's decode row beside a prompt chunk), the two GEMMs run for those
  rows alone, one row at a time, instead of for the whole tile: the same arithmetic per row.
- **K rows converted with SIMD.** The K tile was converted to fp32 one value at a time
  through a 256 KB lookup table (ggml-cpu's ``GGML_CPU_FP16_TO_FP32`` on x86); each K row is
  now converted at once (``ggml_cpu_fp16_to_fp32``), then stored transposed as before. The
  conversion is exact either way.
"""

from __future__ import annotations

from pathlib import Path

OPS = Path("ggml") / "src" / "ggml-cpu" / "ops.cpp"

HELPER_ANCHOR = "static void ggml_compute_forward_flash_attn_ext_f16_one_chunk(\n"

HELPER = """\
// prometheus-lite (kernels/llama_cpp/flash_attn_patch.py): the first cell in [ic, end) whose
// fp16 mask is not -inf (0xFC00). In a unified KV pool most cells a row visits belong to other
// sequences and are masked; jumping over them computes the same result in less time.
static inline int64_t ggml_fa_next_unmasked(const ggml_fp16_t * mp, int64_t ic, int64_t end) {
    const uint16_t * m = (const uint16_t *) mp;
#if defined(__AVX512BW__) && defined(__GNUC__)
    const __m512i ninf = _mm512_set1_epi16((short) 0xFC00);
    for (; ic + 32 <= end; ic += 32) {
        const __m512i  v  = _mm512_loadu_si512((const void *) (m + ic));
        const __mmask32 ne = _mm512_cmpneq_epi16_mask(v, ninf);
        if (ne) {
            return ic + __builtin_ctz((unsigned) ne);
        }
    }
#elif defined(__AVX2__) && defined(__GNUC__)
    const __m256i ninf = _mm256_set1_epi16((short) 0xFC00);
    for (; ic + 16 <= end; ic += 16) {
        const unsigned eq = (unsigned) _mm256_movemask_epi8(
            _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *) (m + ic)), ninf));
        if (eq != 0xFFFFFFFFu) {
            return ic + __builtin_ctz(~eq) / 2;
        }
    }
#endif
    while (ic < end && m[ic] == 0xFC00) {
        ++ic;
    }
    return ic;
}

"""

INCLUDE_ANCHOR = '#include "ops.h"\n'
INCLUDE = """\
#if (defined(__AVX512F__) || defined(__AVX2__)) && defined(__GNUC__)
#include <immintrin.h>
#endif
"""

SKIP_OLD = """\
        for (int64_t ic = ic_start; ic < ic_end; ++ic) {
            const float mv = mp ? slope*GGML_CPU_FP16_TO_FP32(mp[ic]) : 0.0f;
            if (mv == -INFINITY) {
                continue;
            }
"""

SKIP_NEW = """\
        for (int64_t ic = ic_start; ic < ic_end; ++ic) {
            const float mv = mp ? slope*GGML_CPU_FP16_TO_FP32(mp[ic]) : 0.0f;
            if (mv == -INFINITY) {
                if (slope > 0.0f) {
                    // the loop's ++ic lands on the next unmasked cell
                    ic = ggml_fa_next_unmasked(mp, ic + 1, ic_end) - 1;
                }
                continue;
            }
"""


# Rows of a Q tile at most that a KV tile may have for its GEMMs to run row by row, and the
# largest head size whose K rows are converted at once (the row buffer is on the stack).
SPARSE_ROWS = 4
PACK_MAX_D = 1024

HELPER += f"""\
#define GGML_FA_SPARSE_ROWS {SPARSE_ROWS}
#define GGML_FA_PACK_MAX_D  {PACK_MAX_D}

"""

_MASK_ROW = (
    "const ggml_fp16_t * mp_row = (const ggml_fp16_t *)((const char *) mask->data + "
    "(iq1 + tq)*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]);"
)

# (old, new) pairs in ggml_compute_forward_flash_attn_ext_tiled, each matching once.
TILED = [
    (
        """\
            // skip the tile entirely if all the masks are -inf
            if (mask) {
                bool can_skip = true;
                for (int tq = 0; tq < tile_rows; tq++) {
""",
        f"""\
            // prometheus-lite: jump over the KV tiles that every row of this Q tile masks (a
            // unified pool holds other sequences' cells); the loop's += lands on the tile that
            // holds the first cell some row sees.
            if (mask && slope > 0.0f) {{
                int64_t next = nek1;
                for (int tq = 0; tq < tile_rows && next > ic; tq++) {{
                    {_MASK_ROW}
                    next = ggml_fa_next_unmasked(mp_row, ic, next);
                }}
                if (next - ic >= KV_TILE_SZ) {{
                    ic += (next - ic) / KV_TILE_SZ * KV_TILE_SZ - KV_TILE_SZ;
                    continue;
                }}
            }}

            // skip the tile entirely if all the masks are -inf
            int  n_active = tile_rows; // prometheus-lite: rows that see a cell of this KV tile
            bool active[Q_TILE_SZ];
            if (mask) {{
                bool can_skip = true;
                n_active = 0;
                for (int tq = 0; tq < tile_rows; tq++) {{
                    bool row_active = false;
""",
    ),
    (
        """\
                        if (mask32[tq * KV_TILE_SZ + tk] != -INFINITY) {
                            can_skip = false;
                        }
                    }
""",
        """\
                        if (mask32[tq * KV_TILE_SZ + tk] != -INFINITY) {
                            can_skip = false;
                            row_active = true;
                        }
                    }
                    active[tq] = row_active;
                    n_active += row_active;
""",
    ),
    (
        """\
            // Pack K tile transposed: K_f32[dk][kv] so KV_TILE is contiguous (SIMD dim)
""",
        """\
            // prometheus-lite: when only a few rows see this KV tile (another sequence's decode
            // row beside a prompt chunk), the GEMMs below run for those rows alone; a GEMM row
            // depends only on its own row, so they get the same bits.
            const bool sparse = n_active <= GGML_FA_SPARSE_ROWS && n_active < tile_rows;

            // Pack K tile transposed: K_f32[dk][kv] so KV_TILE is contiguous (SIMD dim)
""",
    ),
    (
        """\
                if (kv_type == GGML_TYPE_F16) {
                    const ggml_fp16_t * k_f16 = (const ggml_fp16_t *)k_data;
                    for (int64_t dk = 0; dk < DK; dk++) {
                        K_f32[dk * KV_TILE_SZ + tk] = GGML_CPU_FP16_TO_FP32(k_f16[dk]);
                    }
                } else {
""",
        """\
                if (kv_type == GGML_TYPE_F16 && DK <= GGML_FA_PACK_MAX_D) {
                    // prometheus-lite: the row converted at once (SIMD), then stored transposed;
                    // a lookup in the 256 KB fp16 table per value cost more than the GEMMs.
                    float k_row[GGML_FA_PACK_MAX_D];
                    ggml_cpu_fp16_to_fp32((const ggml_fp16_t *)k_data, k_row, DK);
                    for (int64_t dk = 0; dk < DK; dk++) {
                        K_f32[dk * KV_TILE_SZ + tk] = k_row[dk];
                    }
                } else if (kv_type == GGML_TYPE_F16) {
                    const ggml_fp16_t * k_f16 = (const ggml_fp16_t *)k_data;
                    for (int64_t dk = 0; dk < DK; dk++) {
                        K_f32[dk * KV_TILE_SZ + tk] = GGML_CPU_FP16_TO_FP32(k_f16[dk]);
                    }
                } else {
""",
    ),
    (
        "            simd_gemm(KQ, (const float *)Q_q, K_f32, Q_TILE_SZ, DK, KV_TILE_SZ);\n",
        """\
            if (sparse) {
                for (int tq = 0; tq < tile_rows; tq++) {
                    if (active[tq]) {
                        simd_gemm(KQ + tq * KV_TILE_SZ, (const float *)Q_q + tq * DK, K_f32, 1, DK, KV_TILE_SZ);
                    }
                }
            } else {
                simd_gemm(KQ, (const float *)Q_q, K_f32, tile_rows, DK, KV_TILE_SZ);
            }
""",
    ),
    (
        "            simd_gemm(VKQ32, KQ, V32, Q_TILE_SZ, KV_TILE_SZ, DV);\n",
        """\
            if (sparse) {
                for (int tq = 0; tq < tile_rows; tq++) {
                    if (active[tq] && !skip[tq]) {
                        simd_gemm(VKQ32 + tq * DV, KQ + tq * KV_TILE_SZ, V32, 1, KV_TILE_SZ, DV);
                    }
                }
            } else {
                simd_gemm(VKQ32, KQ, V32, tile_rows, KV_TILE_SZ, DV);
            }
""",
    ),
    # Only the tile's rows: the GEMMs, scaling and softmax stop at tile_rows.
    ("ggml_vec_scale_f32(Q_TILE_SZ * KV_TILE_SZ, KQ, scale);",
     "ggml_vec_scale_f32(tile_rows * KV_TILE_SZ, KQ, scale);"),
    ("ggml_vec_tanh_f32(Q_TILE_SZ * KV_TILE_SZ, KQ, KQ);",
     "ggml_vec_tanh_f32(tile_rows * KV_TILE_SZ, KQ, KQ);"),
    ("ggml_vec_scale_f32(Q_TILE_SZ * KV_TILE_SZ, KQ, logit_softcap);",
     "ggml_vec_scale_f32(tile_rows * KV_TILE_SZ, KQ, logit_softcap);"),
    (
        """\
            for (int tq = 0; tq < Q_TILE_SZ; tq++) {
                float * kq_row = KQ + tq * KV_TILE_SZ;
""",
        """\
            for (int tq = 0; tq < tile_rows; tq++) {
                float * kq_row = KQ + tq * KV_TILE_SZ;
""",
    ),
]


# The one-row kernel's fp16 path, rewritten (ggml_fa_rows_f16): the rows' unmasked cells in
# blocks of ROW_BLOCK, for query heads that share a KV head (GQA) up to ROW_GROUP at once,
# head sizes ROW_HEADS, where the CPU has AVX-512 (F, DQ) or AVX2 with FMA and F16C; anything
# else keeps the stock loop.
ROW_BLOCK = 16
ROW_GROUP = 4
ROW_HEADS = (64, 96, 128)

_ROW_CASES = "".join(
    f"        case {d}: switch (G) {{\n"
    + "".join(f"            case {g}: ggml_fa_rows_f16<{d}, {g}>(q, scale, k, nbk, v, nbv, mp, "
              "ic, end, M, S, out); return true;\n" for g in range(1, ROW_GROUP + 1))
    + "            default: return false;\n        }\n"
    for d in ROW_HEADS
)
_ROW_BUILT = "".join(f"        case {d}:\n" for d in ROW_HEADS)

ROW_HELPER = f"""\
// prometheus-lite (kernels/llama_cpp/flash_attn_patch.py): query rows' attention over fp16 K and
// V, the kernel below 64 rows. The stock loop takes one row and one cell at a time: a dot
// product through a function pointer, a scalar expf, and an fp16 accumulator rounded after
// every cell. This takes the row's unmasked cells {ROW_BLOCK} at a time: their scores (fp32
// dot products), one running-max update and one vector exp per block, then V accumulated in
// fp32; and G query heads that share a KV head (GQA) at once, each K and V row converted from
// fp16 once for all G. A row's arithmetic is the same whatever G, and its cells are taken in
// its own order: its result depends on its own query and cells only.
#if defined(__GNUC__) && ((defined(__AVX512F__) && defined(__AVX512DQ__)) || \\
    (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)))
#define GGML_FA_ROW_SIMD  1
#define GGML_FA_ROW_BLOCK {ROW_BLOCK}
#define GGML_FA_ROW_GROUP {ROW_GROUP}
#define GGML_FA_ROW_MAX_D {max(ROW_HEADS)}
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define GGML_FA_ROW_VL 16
typedef __m512 ggml_fa_v;
static inline ggml_fa_v ggml_fa_load_h(const ggml_fp16_t * p) {{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p));
}}
static inline ggml_fa_v ggml_fa_loadu(const float * p) {{ return _mm512_loadu_ps(p); }}
static inline void ggml_fa_storeu(float * p, ggml_fa_v a) {{ _mm512_storeu_ps(p, a); }}
static inline ggml_fa_v ggml_fa_set1(float x) {{ return _mm512_set1_ps(x); }}
static inline ggml_fa_v ggml_fa_sub(ggml_fa_v a, ggml_fa_v b) {{ return _mm512_sub_ps(a, b); }}
static inline ggml_fa_v ggml_fa_mul(ggml_fa_v a, ggml_fa_v b) {{ return _mm512_mul_ps(a, b); }}
static inline ggml_fa_v ggml_fa_fma(ggml_fa_v a, ggml_fa_v b, ggml_fa_v c) {{
    return _mm512_fmadd_ps(a, b, c);
}}
static inline float ggml_fa_hsum(ggml_fa_v a) {{ return _mm512_reduce_add_ps(a); }}
#else
#define GGML_FA_ROW_VL 8
typedef __m256 ggml_fa_v;
static inline ggml_fa_v ggml_fa_load_h(const ggml_fp16_t * p) {{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p));
}}
static inline ggml_fa_v ggml_fa_loadu(const float * p) {{ return _mm256_loadu_ps(p); }}
static inline void ggml_fa_storeu(float * p, ggml_fa_v a) {{ _mm256_storeu_ps(p, a); }}
static inline ggml_fa_v ggml_fa_set1(float x) {{ return _mm256_set1_ps(x); }}
static inline ggml_fa_v ggml_fa_sub(ggml_fa_v a, ggml_fa_v b) {{ return _mm256_sub_ps(a, b); }}
static inline ggml_fa_v ggml_fa_mul(ggml_fa_v a, ggml_fa_v b) {{ return _mm256_mul_ps(a, b); }}
static inline ggml_fa_v ggml_fa_fma(ggml_fa_v a, ggml_fa_v b, ggml_fa_v c) {{
    return _mm256_fmadd_ps(a, b, c);
}}
static inline float ggml_fa_hsum(ggml_fa_v a) {{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}}
#endif

// Attention of G fp32 query rows q[g] (head size D) that share their KV head, over the cells
// [ic, end) of fp16 K and V (cell i at k + i*nbk and v + i*nbv) whose fp16 mask (mp, shared by
// the G rows; NULL: none) is not -inf: per row, the running max M[g], the sum of
// exp(score - max) S[g], and the unnormalised output out[g*D ..], as the stock loop leaves them
// (M -inf, S 0, out 0 when no cell is seen).
template <int D, int G>
static void ggml_fa_rows_f16(const float * const * q, float scale,
        const char * k, size_t nbk, const char * v, size_t nbv,
        const ggml_fp16_t * mp, int64_t ic, int64_t end,
        float * M, float * S, float * out) {{
    constexpr int VL = GGML_FA_ROW_VL;
    constexpr int NV = D / VL;
    constexpr int B  = GGML_FA_ROW_BLOCK;
    static_assert(D % VL == 0 && B % VL == 0, "head size and block must fill whole vectors");
    ggml_fa_v qv[G][NV], acc[G][NV];
    for (int g = 0; g < G; ++g) {{
        for (int i = 0; i < NV; ++i) {{
            qv[g][i]  = ggml_fa_loadu(q[g] + i*VL);
            acc[g][i] = ggml_fa_set1(0.0f);
        }}
        M[g] = -INFINITY;
        S[g] = 0.0f;
    }}
    alignas(64) float sc[G][B];
    alignas(64) float pr[G][B];
    int64_t idx[B];
    while (ic < end) {{
        int n = 0;
        for (; n < B && ic < end; ++ic) {{
            if (mp) {{
                ic = ggml_fa_next_unmasked(mp, ic, end);
                if (ic >= end) {{
                    break;
                }}
            }}
            idx[n++] = ic;
        }}
        if (n == 0) {{
            break;
        }}
        for (int j = 0; j < n; ++j) {{
            const ggml_fp16_t * kr = (const ggml_fp16_t *) (k + idx[j]*nbk);
            ggml_fa_v kv[NV];
            for (int i = 0; i < NV; ++i) {{
                kv[i] = ggml_fa_load_h(kr + i*VL);
            }}
            const float mv = mp ? GGML_CPU_FP16_TO_FP32(mp[idx[j]]) : 0.0f;
            for (int g = 0; g < G; ++g) {{
                ggml_fa_v s = ggml_fa_mul(kv[0], qv[g][0]);
                for (int i = 1; i < NV; ++i) {{
                    s = ggml_fa_fma(kv[i], qv[g][i], s);
                }}
                sc[g][j] = ggml_fa_hsum(s)*scale + mv;
            }}
        }}
        for (int g = 0; g < G; ++g) {{
            float mb = sc[g][0];
            for (int j = 1; j < n; ++j) {{
                mb = sc[g][j] > mb ? sc[g][j] : mb;
            }}
            for (int j = n; j < B; ++j) {{
                sc[g][j] = mb; // lanes past the block's cells: computed, never used
            }}
            if (mb > M[g]) {{
                const float ms = expf(M[g] - mb); // 0 for the first block (M is -inf)
                for (int i = 0; i < NV; ++i) {{
                    acc[g][i] = ggml_fa_mul(acc[g][i], ggml_fa_set1(ms));
                }}
                S[g] *= ms;
                M[g] = mb;
            }}
            for (int j = 0; j < B; j += VL) {{
                const ggml_fa_v x = ggml_fa_sub(ggml_fa_loadu(sc[g] + j), ggml_fa_set1(M[g]));
                ggml_fa_storeu(pr[g] + j, ggml_v_expf(x));
            }}
        }}
        for (int j = 0; j < n; ++j) {{
            const ggml_fp16_t * vr = (const ggml_fp16_t *) (v + idx[j]*nbv);
            ggml_fa_v vv[NV];
            for (int i = 0; i < NV; ++i) {{
                vv[i] = ggml_fa_load_h(vr + i*VL);
            }}
            for (int g = 0; g < G; ++g) {{
                const ggml_fa_v p = ggml_fa_set1(pr[g][j]);
                for (int i = 0; i < NV; ++i) {{
                    acc[g][i] = ggml_fa_fma(vv[i], p, acc[g][i]);
                }}
                S[g] += pr[g][j];
            }}
        }}
    }}
    for (int g = 0; g < G; ++g) {{
        for (int i = 0; i < NV; ++i) {{
            ggml_fa_storeu(out + g*D + i*VL, acc[g][i]);
        }}
    }}
}}

// Whether ggml_fa_rows_f16 is built for head size D.
static inline bool ggml_fa_rows_f16_built(int64_t D) {{
    switch (D) {{
{_ROW_BUILT}            return true;
        default: return false;
    }}
}}

// ggml_fa_rows_f16 for head size D and 1 <= G <= GGML_FA_ROW_GROUP rows; false otherwise.
static inline bool ggml_fa_rows_f16_any(int64_t D, int64_t G, const float * const * q,
        float scale, const char * k, size_t nbk, const char * v, size_t nbv,
        const ggml_fp16_t * mp, int64_t ic, int64_t end, float * M, float * S, float * out) {{
    switch (D) {{
{_ROW_CASES}        default: return false;
    }}
}}
#endif

"""

# In ggml_compute_forward_flash_attn_ext_f16_one_chunk: the rows [ir0, ir1) through
# ggml_fa_rows_f16 for fp16 K and V without softcap, ALiBi or sinks. With GQA (and a mask
# shared by the heads) the rows are taken in the order (iq3, KV head, iq1, head in group), a
# bijection of the same index range, so a range holds whole groups, up to its ends; each row's
# result is written as the stock loop writes it (partials at its own index, or dst).
ROW_OLD = """\
    int ith = params->ith;

    for (int ir = ir0; ir < ir1; ++ir) {
        // q indices
        const int iq3 = ir/(neq2*neq1);
"""
ROW_NEW = """\
    int ith = params->ith;

#if defined(GGML_FA_ROW_SIMD)
    // prometheus-lite: the rows in blocks of cells, GQA heads together (ggml_fa_rows_f16)
    if (!params->use_ref && k->type == GGML_TYPE_F16 && v->type == GGML_TYPE_F16 && DK == DV &&
        ggml_fa_rows_f16_built(DK) && logit_softcap == 0.0f && max_bias == 0.0f && !sinks) {
        const bool    grouped = rk2 > 1 && rk3 == 1 && (!mask || mask->ne[2] == 1);
        const int64_t R       = grouped ? rk2 : 1; // query heads per KV head, in the order taken
        for (int64_t p = ir0; p < ir1; ) {
            const int64_t iq3 = p/(neq2*N);
            int64_t r = p - iq3*neq2*N;
            const int64_t grp = r/(N*R); // the KV head when grouped, else the query head
            r -= grp*N*R;
            const int64_t iq1 = r/R;
            const int64_t j   = r - iq1*R;
            const int64_t iq2 = grp*R + j; // the first of the rows taken here
            const int64_t G   = std::min({(int64_t) GGML_FA_ROW_GROUP, R - j, (int64_t) ir1 - p});

            const ggml_fp16_t * mp = mask ? (ggml_fp16_t *)((char *) mask->data + iq1*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]) : NULL;
            const float * qs[GGML_FA_ROW_GROUP];
            for (int64_t g = 0; g < G; ++g) {
                qs[g] = (const float *) ((char *) q->data + (iq1*nbq1 + (iq2 + g)*nbq2 + iq3*nbq3));
            }
            float Ms[GGML_FA_ROW_GROUP];
            float Ss[GGML_FA_ROW_GROUP];
            float out[GGML_FA_ROW_GROUP*GGML_FA_ROW_MAX_D];
            ggml_fa_rows_f16_any(DK, G, qs, scale,
                (const char *) k->data + (iq2/rk2)*nbk2 + (iq3/rk3)*nbk3, nbk1,
                (const char *) v->data + (iq2/rv2)*nbv2 + (iq3/rv3)*nbv3, nbv1,
                mp, ic_start, ic_end, Ms, Ss, out);

            for (int64_t g = 0; g < G; ++g) {
                float * o = out + g*DV;
                if (write_partials) {
                    // partials layout: [M, S, VKQ[DV]] at the row's index in the stock order
                    float * partial = partials + (iq3*neq2*N + (iq2 + g)*N + iq1) * partial_stride;
                    partial[0] = Ms[g];
                    partial[1] = Ss[g];
                    memcpy(partial + 2, o, DV * sizeof(float));
                } else {
                    const float S_inv = Ss[g] == 0.0f ? 0.0f : 1.0f/Ss[g];
                    ggml_vec_scale_f32(DV, o, S_inv);
                    memcpy((char *) dst->data + (iq3*ne2*ne1 + (iq2 + g) + iq1*ne1)*nb1, o, nb1);
                }
            }
            p += G;
        }
        return;
    }
#endif

    for (int ir = ir0; ir < ir1; ++ir) {
        // q indices
        const int iq3 = ir/(neq2*neq1);
"""

# The split-KV path (one query row, KV split over threads) called the kernel once per head;
# one call over all heads runs the same rows (partials at the same indices) and lets GQA heads
# go together.
SPLIT_OLD = """\
        if (ic_start < nek1) {
            for (int64_t q_head = 0; q_head < neq2; q_head++) {
                ggml_compute_forward_flash_attn_ext_f16_one_chunk(
                    params, dst, q_head, q_head + 1, ic_start, ic_end,
                    chunk_partials, partial_stride);
            }
"""
SPLIT_NEW = """\
        if (ic_start < nek1) {
            // prometheus-lite: all heads in one call (GQA heads together in ggml_fa_rows_f16)
            ggml_compute_forward_flash_attn_ext_f16_one_chunk(
                params, dst, 0, neq2, ic_start, ic_end, chunk_partials, partial_stride);
"""

ROW = [(ROW_OLD, ROW_NEW), (SPLIT_OLD, SPLIT_NEW)]

def _replace_once(text: str, old: str, new: str, where: Path) -> str:
    n = text.count(old)
    if n != 1:
        raise SystemExit(
            f"{where}: the text to patch occurs {n} times (expected once); this edit is for "
            "the llama.cpp vendored by llama-cpp-python 0.3.36"
        )
    return text.replace(old, new)


def apply(llama_cpp_dir: Path) -> None:
    """Edit ``ops.cpp`` under ``llama_cpp_dir`` (vendor/llama.cpp of the sdist) in place."""
    path = Path(llama_cpp_dir) / OPS
    text = path.read_text()
    if "ggml_fa_next_unmasked" in text:
        raise SystemExit(f"{path} is already patched")
    text = _replace_once(text, INCLUDE_ANCHOR, INCLUDE_ANCHOR + INCLUDE, path)
    text = _replace_once(text, HELPER_ANCHOR, HELPER + ROW_HELPER + HELPER_ANCHOR, path)
    text = _replace_once(text, SKIP_OLD, SKIP_NEW, path)
    for old, new in TILED + ROW:
        text = _replace_once(text, old, new, path)
    path.write_text(text)
