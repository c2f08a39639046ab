"""prometheus-lite's ggml-cpu patch (kernels/llama_cpp/): flash attention jumps over masked
KV cells.

- The inserted C function, compiled here for this CPU (the same ``-march=native`` as
  llama-cpp-python's build, so the AVX-512 or AVX2 branch runs where the CPU has it), finds
  the first unmasked cell exactly as a one-by-one scan does, on masks built to put
  boundaries everywhere a vector step could get them wrong.
- The edit applies to the kernel's text once, and refuses text it was not written for.
- The runtime ``make install`` built is the patched one. That its results do not change is
  the rest of the suite: grades bit-identical at four slots and alone through pool resets
  (``test_invariance.py``: a jump past an unmasked cell would change them), converted
  models against ``transformers``, probabilities against an independent softmax.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_patches import load

from prometheus_lite import native

fa = load("flash_attn_patch")

NINF = 0xFC00  # fp16 -inf
HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
typedef uint16_t ggml_fp16_t;
""" + fa.INCLUDE + fa.HELPER + r"""
int main(void) {
    // stdin: n start end, then n mask values; stdout: the first unmasked cell
    long n, start, end;
    while (scanf("%ld %ld %ld", &n, &start, &end) == 3) {
        ggml_fp16_t * m = (ggml_fp16_t *) malloc(n * sizeof(ggml_fp16_t));
        for (long i = 0; i < n; ++i) {
            unsigned v;
            if (scanf("%u", &v) != 1) return 1;
            m[i] = (ggml_fp16_t) v;
        }
        printf("%ld\n", (long) ggml_fa_next_unmasked(m, start, end));
        free(m);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def next_unmasked(tmp_path_factory) -> Path:
    # ggml builds ops.cpp as C++; the function is also plain C, so gcc alone will do.
    cxx = shutil.which("g++") or shutil.which("c++")
    cc = None if cxx else shutil.which("gcc") or shutil.which("cc")
    if not (cxx or cc):
        pytest.fail("no C or C++ compiler (g++, c++, gcc, cc) to build the patched function")
    d = tmp_path_factory.mktemp("fa")
    src, exe = d / ("harness.cpp" if cxx else "harness.c"), d / "harness"
    src.write_text(HARNESS)
    subprocess.run([cxx or cc, "-O2", "-march=native", "-o", str(exe), str(src)], check=True)
    return exe


def _cases() -> list[tuple[np.ndarray, int, int]]:
    rng = np.random.default_rng(0)
    cases = []
    for n in (0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200):
        cases.append((np.full(n, NINF, dtype=np.uint16), 0, n))  # all masked: lands on end
        for hole in {0, n // 2, n - 1} if n else set():
            m = np.full(n, NINF, dtype=np.uint16)
            m[hole] = 0  # one unmasked cell (mask 0.0)
            for start in {0, max(0, hole - 1), hole, min(n, hole + 1)}:
                cases.append((m, start, n))
    for _ in range(200):  # runs of masked cells between unmasked ones, any values
        n = int(rng.integers(1, 300))
        m = np.where(rng.random(n) < 0.9, NINF, rng.integers(0, 0xFFFF, n)).astype(np.uint16)
        start = int(rng.integers(0, n + 1))
        end = int(rng.integers(start, n + 1))
        cases.append((m, start, end))
    # values next to -inf's bit pattern: only 0xFC00 is masked
    cases.append((np.array([NINF, 0xFC01, NINF], dtype=np.uint16), 0, 3))
    cases.append((np.array([NINF] * 40 + [0x7C00], dtype=np.uint16), 0, 41))  # +inf
    return cases


def _expected(m: np.ndarray, start: int, end: int) -> int:
    i = start
    while i < end and m[i] == NINF:
        i += 1
    return i


def test_the_jump_lands_where_a_one_by_one_scan_does(next_unmasked: Path) -> None:
    cases = _cases()
    stdin = "".join(f"{len(m)} {s} {e}\n{' '.join(map(str, m.tolist()))}\n" for m, s, e in cases)
    out = subprocess.run([str(next_unmasked)], input=stdin, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert len(out) == len(cases)
    wrong = [(len(m), s, e, int(got), _expected(m, s, e))
             for (m, s, e), got in zip(cases, out, strict=True) if int(got) != _expected(m, s, e)]
    assert not wrong, f"(n, start, end, got, expected): {wrong[:5]}"


OPS_TEXT = (
    '#include "ops.h"\n\nstatic int x;\n\n'
    + fa.HELPER_ANCHOR + "        const ggml_tensor * dst) {\n" + fa.SKIP_OLD + "        }\n}\n"
    + "// the tiled kernel\n" + "".join(old if old.endswith("\n") else old + "\n"
                                       for old, _ in fa.TILED + fa.ROW)
)


def test_the_edit_applies_once_and_refuses_other_text(tmp_path: Path) -> None:
    ops = tmp_path / fa.OPS
    ops.parent.mkdir(parents=True)
    ops.write_text(OPS_TEXT)
    fa.apply(tmp_path)
    text = ops.read_text()
    # defined, then called by the row kernel, the stock loop and the tiled kernel
    assert text.count("ggml_fa_next_unmasked(") == 4
    assert fa.SKIP_NEW in text and fa.SKIP_OLD not in text
    assert all(new in text for _, new in fa.TILED + fa.ROW)
    assert text.index("static void ggml_fa_rows_f16(") < text.index(fa.HELPER_ANCHOR)
    assert text.index("static inline int64_t ggml_fa_next_unmasked") < text.index(fa.HELPER_ANCHOR)
    with pytest.raises(SystemExit, match="already patched"):
        fa.apply(tmp_path)
    ops.write_text(OPS_TEXT.replace("continue;", "break;"))  # another llama.cpp
    with pytest.raises(SystemExit, match="occurs 0 times"):
        fa.apply(tmp_path)


def test_make_install_built_the_patched_runtime() -> None:
    version = native.llama_cpp_version()
    assert version is not None and version.partition("+")[2] == native.PATCHED_LABEL, (
        f"llama-cpp-python {version} is not prometheus-lite's patched build; run "
        "`make install` (or python kernels/llama_cpp/build_wheel.py --wheel-dir DIR --install)"
    )
    assert "ggml-cpu patch" in native.runtime_build()
    pinned = native.PINNED_LLAMA_CPP_PYTHON
    assert native.rebuild_command().endswith(f'"llama-cpp-python=={pinned}"')  # PyPI's name
    assert load("build_wheel").LABEL == native.PATCHED_LABEL


def test_a_row_gets_the_same_bits_whoever_shares_its_attention_tile() -> None:
    """The tiled kernel's edits change no bits. A decode row of sequence 0 in a pass of 64
    rows or more (the tiled kernel) shares its Q tile with other rows. When it alone sees
    its sequence's cells, the patched kernel runs its GEMMs row by row (at most
    ``SPARSE_ROWS`` rows see the KV tile); when sequences holding the same cells (copies)
    decode beside it, the whole tile's GEMMs run. Its logits must be the same bits, and so
    must the prompt chunk's, with the pool's other cells jumped over or not."""
    from prometheus_lite.hub import resolve_model
    from prometheus_lite.llama import BatchEntry, LlamaRuntime

    n_copies = fa.SPARSE_ROWS + 2
    rt = LlamaRuntime(resolve_model(None), n_ctx=1024, n_threads=2, n_seq=n_copies + 2,
                      kv_cells=2048, n_batch=64, max_batch=256)
    rng = np.random.default_rng(0)
    base = [int(t) for t in rng.integers(100, 20000, 300)]
    chunk = [int(t) for t in rng.integers(100, 20000, 100)]
    prompt_seq = n_copies + 1
    try:
        for a in range(0, len(base), 256):
            assert rt.decode([BatchEntry(t, p, 0, False)
                              for p, t in enumerate(base) if a <= p < a + 256]) == 0
        for s in range(1, n_copies + 1):
            rt.seq_copy(0, s)  # the same cells, seen by more rows

        def run(decoding: list[int]) -> tuple[np.ndarray, np.ndarray]:
            # The chunk first, then sequence 0's row: the same cells in both runs (flash
            # attention sums over cells in pool order).
            es = [BatchEntry(t, p, prompt_seq, p == len(chunk) - 1) for p, t in enumerate(chunk)]
            es += [BatchEntry(base[-1] + s, len(base), s, True) for s in decoding]
            assert rt.decode(es) == 0
            out = rt.logits(len(chunk)).copy(), rt.logits(len(chunk) - 1).copy()
            for s in decoding:
                rt.seq_truncate(s, len(base))
            rt.seq_clear(prompt_seq)
            return out

        alone_row, alone_chunk = run([0])  # 101 rows; sequence 0's KV tiles: 1 row
        shared_row, shared_chunk = run(list(range(n_copies + 1)))  # those tiles: 7 rows
    finally:
        rt.close()
    assert np.array_equal(alone_row, shared_row)
    assert np.array_equal(alone_chunk, shared_chunk)


# The one-row kernel (ggml_fa_rows_f16) against attention computed here with numpy. ggml's
# vector exp is ggml's to test; the harness stands in for it lane by lane with expf.
ROW_HARNESS = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
typedef uint16_t ggml_fp16_t;
#define GGML_CPU_FP16_TO_FP32(x) _cvtsh_ss(x)
#if defined(__AVX512F__) && defined(__AVX512DQ__)
static inline __m512 ggml_v_expf(__m512 x) {
    alignas(64) float a[16];
    _mm512_store_ps(a, x);
    for (int i = 0; i < 16; ++i) a[i] = expf(a[i]);
    return _mm512_load_ps(a);
}
#elif defined(__AVX2__)
static inline __m256 ggml_v_expf(__m256 x) {
    alignas(32) float a[8];
    _mm256_store_ps(a, x);
    for (int i = 0; i < 8; ++i) a[i] = expf(a[i]);
    return _mm256_load_ps(a);
}
#endif
""" + fa.INCLUDE + fa.HELPER + fa.ROW_HELPER + r"""
static void must(size_t got, size_t want) { if (got != want) exit(2); }
int main(void) {
#if !defined(GGML_FA_ROW_SIMD)
    return 3;
#else
    // stdin, per case: int32 D, G, has_mask; int64 n, ic, end; float32 scale; then q[G][D]
    // (float32), K[n][D], V[n][D], mask[n] (fp16 bits). stdout, float32: ok, then per row
    // M, S, out[D] with the G rows together, then the same with each row alone.
    int32_t hdr[3];
    while (fread(hdr, sizeof hdr, 1, stdin) == 1) {
        const int32_t D = hdr[0], G = hdr[1], has_mask = hdr[2];
        int64_t r[3];
        float scale;
        must(fread(r, sizeof r, 1, stdin), 1);
        must(fread(&scale, sizeof scale, 1, stdin), 1);
        const int64_t n = r[0];
        float * q = (float *) malloc(G * D * sizeof(float));
        ggml_fp16_t * k = (ggml_fp16_t *) malloc((n * D + 1) * sizeof(ggml_fp16_t));
        ggml_fp16_t * v = (ggml_fp16_t *) malloc((n * D + 1) * sizeof(ggml_fp16_t));
        ggml_fp16_t * mk = (ggml_fp16_t *) malloc((n + 1) * sizeof(ggml_fp16_t));
        const int64_t per = 1 + 2 * G * (D + 2);
        float * res = (float *) calloc(per, sizeof(float));
        must(fread(q, sizeof(float), G * D, stdin), G * D);
        must(fread(k, sizeof(ggml_fp16_t), n * D, stdin), n * D);
        must(fread(v, sizeof(ggml_fp16_t), n * D, stdin), n * D);
        must(fread(mk, sizeof(ggml_fp16_t), n, stdin), n);
        const float * qs[GGML_FA_ROW_GROUP];
        float M[GGML_FA_ROW_GROUP], S[GGML_FA_ROW_GROUP];
        float * out = (float *) calloc(G * D + 1, sizeof(float));
        for (int g = 0; g < G; ++g) qs[g] = q + g * D;
        for (int alone = 0; alone < 2; ++alone) {
            for (int g0 = 0; g0 < G; g0 += alone ? 1 : G) {
                const int m = alone ? 1 : G;
                const bool ok = ggml_fa_rows_f16_any(D, m, qs + g0, scale, (const char *) k,
                    D * sizeof(ggml_fp16_t), (const char *) v, D * sizeof(ggml_fp16_t),
                    has_mask ? mk : NULL, r[1], r[2], M, S, out);
                res[0] = ok;
                for (int g = 0; g < m; ++g) {
                    float * row = res + 1 + (alone * G + g0 + g) * (D + 2);
                    row[0] = M[g];
                    row[1] = S[g];
                    for (int d = 0; d < D; ++d) row[2 + d] = out[g * D + d];
                }
            }
        }
        fwrite(res, sizeof(float), per, stdout);
        free(q); free(k); free(v); free(mk); free(res); free(out);
    }
    return 0;
#endif
}
"""


def _row_cases() -> list[dict]:
    rng = np.random.default_rng(1)
    cases = []
    for d in (*fa.ROW_HEADS, 80):  # 80: a head size it is not built for
        for n in (0, 1, 15, 16, 17, 33, 300):
            for masked in (None, 0.5, 0.97, 1.0):
                for trend in (0.0, 0.05, -0.05):  # the running max moves every block, or never
                    g = int(rng.integers(1, fa.ROW_GROUP + 1))
                    q = rng.standard_normal((g, d)).astype(np.float32)
                    k = rng.standard_normal((n, d)) + trend * np.arange(n)[:, None] * q[0]
                    k = k.astype(np.float16)
                    v = rng.standard_normal((n, d)).astype(np.float16)
                    if masked is None:
                        mask = np.zeros(n, np.float16)
                    else:  # -inf, or a finite bias now and then
                        bias = np.where(rng.random(n) < 0.2, rng.uniform(-2, 1, n), 0.0)
                        mask = np.where(rng.random(n) < masked, -np.inf, bias).astype(np.float16)
                    ic = int(rng.integers(0, n // 3 + 1))
                    end = int(rng.integers(ic, n + 1)) if rng.random() < 0.3 else n
                    cases.append(dict(d=d, g=g, q=q, k=k, v=v, mask=mask,
                                      has_mask=masked is not None, ic=ic, end=end,
                                      scale=np.float32(1 / np.sqrt(d))))
    return cases


def _row_reference(c: dict, q: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Attention of query row q over the case's unmasked cells, in float64: max score, sum,
    output."""
    cells = np.arange(c["ic"], c["end"])
    mask = c["mask"][cells].astype(np.float64)
    cells, mask = cells[mask != -np.inf], mask[mask != -np.inf]
    if cells.size == 0:
        return -np.inf, 0.0, np.zeros(c["d"])
    s = c["k"][cells].astype(np.float64) @ q.astype(np.float64) * float(c["scale"]) + mask
    p = np.exp(s - s.max())
    return s.max(), p.sum(), p @ c["v"][cells].astype(np.float64)


def test_the_one_row_kernel_matches_attention_computed_outside_it(tmp_path: Path) -> None:
    """Every row against numpy, with 1 to ROW_GROUP heads sharing K and V; a row's bits are
    the same together with other heads as alone."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler (g++, c++) to build the patched kernel, as ggml-cpu needs")
    src, exe = tmp_path / "row.cpp", tmp_path / "row"
    src.write_text(ROW_HARNESS)
    subprocess.run([cxx, "-O2", "-march=native", "-o", str(exe), str(src)], check=True)
    cases = _row_cases()
    stdin = b"".join(
        np.array([c["d"], c["g"], c["has_mask"]], np.int32).tobytes()
        + np.array([len(c["k"]), c["ic"], c["end"]], np.int64).tobytes()
        + np.float32(c["scale"]).tobytes() + c["q"].tobytes() + c["k"].tobytes()
        + c["v"].tobytes() + c["mask"].tobytes()
        for c in cases
    )
    run = subprocess.run([str(exe)], input=stdin, capture_output=True, timeout=60)
    if run.returncode == 3:
        pytest.skip("this CPU has neither AVX-512 (F, DQ) nor AVX2 with FMA and F16C: the "
                    "stock loop runs")
    assert run.returncode == 0, run.stderr
    out = np.frombuffer(run.stdout, np.float32)
    at, checked = 0, 0
    for c in cases:
        d, g = c["d"], c["g"]
        res = out[at : at + 1 + 2 * g * (d + 2)]
        at += res.size
        if d not in fa.ROW_HEADS:
            assert res[0] == 0  # not built for it: the stock loop runs
            continue
        assert res[0] == 1
        rows = res[1:].reshape(2, g, d + 2)
        assert np.array_equal(rows[0], rows[1])  # together or alone: the same bits
        for q, row in zip(c["q"], rows[0], strict=True):
            m_ref, s_ref, o_ref = _row_reference(c, q)
            m, s, o = float(row[0]), float(row[1]), row[2:].astype(np.float64)
            if s_ref == 0:
                assert m == -np.inf and s == 0 and not o.any()  # as the stock loop leaves them
                continue
            # fp32 sums of up to 128 products (K rows up to ~45 with the trend): ~1e-5 off
            assert m == pytest.approx(m_ref, rel=1e-4, abs=1e-4)
            rescale = np.exp(m - m_ref)  # sum and output relative to the kernel's own max
            assert s == pytest.approx(s_ref * rescale, rel=1e-4)
            np.testing.assert_allclose(o / s, o_ref / s_ref, rtol=1e-4, atol=1e-4)
            checked += 1
    assert at == out.size and checked > 200
