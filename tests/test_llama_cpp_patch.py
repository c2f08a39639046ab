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

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prometheus_lite import native

ROOT = Path(__file__).resolve().parents[1]
PATCH_DIR = ROOT / "kernels" / "llama_cpp"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PATCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


fa = _load("fa_skip_masked")

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
                                       for old, _ in fa.TILED)
)


def test_the_edit_applies_once_and_refuses_other_text(tmp_path: Path) -> None:
    ops = tmp_path / fa.OPS
    ops.parent.mkdir(parents=True)
    ops.write_text(OPS_TEXT)
    fa.apply(tmp_path)
    text = ops.read_text()
    assert text.count("ggml_fa_next_unmasked(") == 3  # defined, then called in both kernels
    assert fa.SKIP_NEW in text and fa.SKIP_OLD not in text
    assert all(new in text for _, new in fa.TILED)
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
    assert _load("build_wheel").LABEL == native.PATCHED_LABEL


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
