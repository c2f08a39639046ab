"""The ggml-cpu edit: flash attention jumps over runs of masked KV cells.

``ggml_compute_forward_flash_attn_ext_f16_one_chunk`` (ggml/src/ggml-cpu/ops.cpp; the
kernel below 64 query rows, and the split-KV kernel of one row) loops over every cell below
the pool's highest used one for every query row and head, converting each cell's fp16 mask
value and skipping it when it is -inf. In a unified KV pool of eight sequences most cells are
another sequence's, so most of that loop is the test. The edit replaces the one-cell skip by
a jump to the next cell whose mask is not -inf, comparing 32 (AVX-512BW) or 16 (AVX2) mask
values at a time, else one at a time. A masked cell contributes nothing to the sum, so the
kernel's result is bit-identical; only cells that were already skipped are skipped.

The jump is taken only when ``slope > 0`` (always, without ALiBi's ``max_bias``): then a
cell's ``slope * mask`` is -inf exactly when its fp16 mask is -inf (0xFC00).

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
// prometheus-lite (kernels/llama_cpp/fa_skip_masked.py): the first cell in [ic, end) whose
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
        for (int64_t ic = row_done ? ic_end : ic_start; ic < ic_end; ++ic) {
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


# The one-row kernel's fp16 path, rewritten (ggml_fa_row_f16): the row's unmasked cells in
# blocks of ROW_BLOCK, head sizes ROW_HEADS, where the CPU has AVX-512 (F, DQ) or AVX2 with
# FMA and F16C; anything else keeps the stock loop.
ROW_BLOCK = 16
ROW_HEADS = (64, 96, 128)

_ROW_CASES = "".join(
    f"        case {d}: ggml_fa_row_f16<{d}>(q, scale, k, nbk, v, nbv, mp, ic, end, M_out, "
    "S_out, out); return true;\n" for d in ROW_HEADS
)

ROW_HELPER = f"""\
// prometheus-lite (kernels/llama_cpp/fa_skip_masked.py): one query row's attention over fp16 K
// and V, the kernel below 64 rows. The stock loop takes one cell at a time: a dot product
// through a function pointer, a scalar expf, and an fp16 accumulator rounded after every
// cell. This takes the row's unmasked cells {ROW_BLOCK} at a time: their scores (fp32 dot
// products), one running-max update and one vector exp per block, then V accumulated in fp32.
// The cells are taken in the row's own order, so the result depends on the row's cells only,
// not on where other sequences' cells lie in the pool.
#if defined(__GNUC__) && ((defined(__AVX512F__) && defined(__AVX512DQ__)) || \\
    (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)))
#define GGML_FA_ROW_SIMD  1
#define GGML_FA_ROW_BLOCK {ROW_BLOCK}
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define GGML_FA_ROW_VL 16
typedef __m512 ggml_fa_v;
static inline ggml_fa_v ggml_fa_load_h(const ggml_fp16_t * p) {{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p));
}}
static inline ggml_fa_v ggml_fa_loadu(const float * p) {{ return _mm512_loadu_ps(p); }}
static inline void ggml_fa_storeu(float * p, ggml_fa_v a) {{ _mm512_storeu_ps(p, a); }}
static inline ggml_fa_v ggml_fa_set1(float x) {{ return _mm512_set1_ps(x); }}
static inline ggml_fa_v ggml_fa_add(ggml_fa_v a, ggml_fa_v b) {{ return _mm512_add_ps(a, b); }}
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
static inline ggml_fa_v ggml_fa_add(ggml_fa_v a, ggml_fa_v b) {{ return _mm256_add_ps(a, b); }}
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

// Attention of the fp32 query row q (head size D) over the cells [ic, end) of fp16 K and V
// (cell i at k + i*nbk and v + i*nbv) whose fp16 mask (mp; NULL: none) is not -inf: the
// running max *M_out, the sum of exp(score - max) *S_out, and the unnormalised output out[D],
// as the stock loop leaves them (M -inf, S 0, out 0 when no cell is seen).
template <int D>
static void ggml_fa_row_f16(const float * q, float scale,
        const char * k, size_t nbk, const char * v, size_t nbv,
        const ggml_fp16_t * mp, int64_t ic, int64_t end,
        float * M_out, float * S_out, float * out) {{
    constexpr int VL = GGML_FA_ROW_VL;
    constexpr int NV = D / VL;
    constexpr int B  = GGML_FA_ROW_BLOCK;
    static_assert(D % VL == 0 && B % VL == 0, "head size and block must fill whole vectors");
    ggml_fa_v qv[NV], acc[NV];
    for (int i = 0; i < NV; ++i) {{
        qv[i]  = ggml_fa_loadu(q + i*VL);
        acc[i] = ggml_fa_set1(0.0f);
    }}
    float M = -INFINITY, S = 0.0f;
    alignas(64) float sc[B];
    alignas(64) float pr[B];
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
            ggml_fa_v s = ggml_fa_mul(ggml_fa_load_h(kr), qv[0]);
            for (int i = 1; i < NV; ++i) {{
                s = ggml_fa_fma(ggml_fa_load_h(kr + i*VL), qv[i], s);
            }}
            sc[j] = ggml_fa_hsum(s)*scale + (mp ? GGML_CPU_FP16_TO_FP32(mp[idx[j]]) : 0.0f);
        }}
        float mb = sc[0];
        for (int j = 1; j < n; ++j) {{
            mb = sc[j] > mb ? sc[j] : mb;
        }}
        for (int j = n; j < B; ++j) {{
            sc[j] = mb; // lanes past the block's cells: computed, never used
        }}
        if (mb > M) {{
            const float ms = expf(M - mb); // 0 for the first block (M is -inf)
            for (int i = 0; i < NV; ++i) {{
                acc[i] = ggml_fa_mul(acc[i], ggml_fa_set1(ms));
            }}
            S *= ms;
            M = mb;
        }}
        for (int j = 0; j < B; j += VL) {{
            ggml_fa_storeu(pr + j, ggml_v_expf(ggml_fa_sub(ggml_fa_loadu(sc + j), ggml_fa_set1(M))));
        }}
        for (int j = 0; j < n; ++j) {{
            const ggml_fp16_t * vr = (const ggml_fp16_t *) (v + idx[j]*nbv);
            const ggml_fa_v p = ggml_fa_set1(pr[j]);
            for (int i = 0; i < NV; ++i) {{
                acc[i] = ggml_fa_fma(ggml_fa_load_h(vr + i*VL), p, acc[i]);
            }}
            S += pr[j];
        }}
    }}
    for (int i = 0; i < NV; ++i) {{
        ggml_fa_storeu(out + i*VL, acc[i]);
    }}
    *M_out = M;
    *S_out = S;
}}

// ggml_fa_row_f16 for head size D; false when D is not one it is built for.
static inline bool ggml_fa_row_f16_any(int64_t D, const float * q, float scale,
        const char * k, size_t nbk, const char * v, size_t nbv,
        const ggml_fp16_t * mp, int64_t ic, int64_t end,
        float * M_out, float * S_out, float * out) {{
    switch (D) {{
{_ROW_CASES}        default: return false;
    }}
}}
#endif

"""


# (old, new) pairs in ggml_compute_forward_flash_attn_ext_f16_one_chunk, each matching once:
# the fast path, taken for fp16 K and V without softcap or ALiBi, and the stock loop and its
# fp16-to-fp32 step skipped when it ran.
ROW = [
    (
        "        q_to_vec_dot(pq, Q_q, DK);\n",
        """\
        // prometheus-lite: the row's unmasked cells in blocks (ggml_fa_row_f16), where built
        bool row_done = false;
#if defined(GGML_FA_ROW_SIMD)
        if (!params->use_ref && k->type == GGML_TYPE_F16 && v->type == GGML_TYPE_F16 &&
            DK == DV && logit_softcap == 0.0f && slope == 1.0f) {
            row_done = ggml_fa_row_f16_any(DK, pq, scale,
                (const char *) k->data + ik2*nbk2 + ik3*nbk3, nbk1,
                (const char *) v->data + iv2*nbv2 + iv3*nbv3, nbv1,
                mp, ic_start, ic_end, &M, &S, VKQ32);
        }
#endif
        if (!row_done) {
            q_to_vec_dot(pq, Q_q, DK);
        }
""",
    ),
    (
        """\
        if (v->type == GGML_TYPE_F16) {
            for (int64_t d = 0; d < DV; ++d) {
                VKQ32[d] = GGML_CPU_FP16_TO_FP32(VKQ16[d]);
""",
        """\
        if (v->type == GGML_TYPE_F16 && !row_done) {
            for (int64_t d = 0; d < DV; ++d) {
                VKQ32[d] = GGML_CPU_FP16_TO_FP32(VKQ16[d]);
""",
    ),
]


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
