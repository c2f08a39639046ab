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
#if (defined(__AVX512BW__) || defined(__AVX2__)) && defined(__GNUC__)
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
    text = _replace_once(text, HELPER_ANCHOR, HELPER + HELPER_ANCHOR, path)
    text = _replace_once(text, SKIP_OLD, SKIP_NEW, path)
    path.write_text(text)
