"""prometheus-lite's edit of ggml-cpu's repacked-weight GEMMs (kernels/llama_cpp/repack_patch.py).

The installed runtime's kernels are called directly (ctypes, on buffers built here):

- Q4_0 (the edit changes its arithmetic where the CPU has AVX512-VNNI): against the matrix
  product computed in numpy from the same quantized values, and against ggml's scalar
  reference kernel (``*_generic``, which the edit leaves alone).
- Q4_0 and Q4_K: a row's output is the same bits whatever number of rows is computed with it
  (4 to 28: the 16-row loop, then 12, 8 or 4 rows in one sweep).
- The edit applies to its text once and refuses other text.

Whole-model bits: ``test_invariance.py`` and the suite's grades run through the same kernels.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_patches import load

from prometheus_lite import native

QK8_0, QK_K = 32, 256
Q4_0X8 = 8 * 2 + 8 * QK8_0 // 2  # block_q4_0x8: 8 fp16 scales, 8 x 16 bytes of nibbles
Q8_0X4 = 4 * 2 + 4 * QK8_0  # block_q8_0x4: 4 fp16 scales, 4 x 32 int8
Q4_KX8 = 16 * 2 + 96 + 1024  # block_q4_Kx8: d, dmin, 6-bit scales, nibbles
Q8_KX4 = 4 * 4 + 4 * QK_K + 64 * 2  # block_q8_Kx4: fp32 d, int8 quants, int16 sums
GGML_TYPE_Q8_0, GGML_TYPE_Q8_K = 8, 15


rp = load("repack_patch")


class Kernels:
    """The installed libggml-cpu's repacked GEMMs and activation quantizers."""

    def __init__(self) -> None:
        lib_dir = native.library_dir()
        if lib_dir is None:
            pytest.fail("llama-cpp-python is not installed (make install)")
        self.lib = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))
        self.lib.ggml_cpu_init()  # fp16 tables for the scalar reference
        gemm_args = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                     ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        for name in ("ggml_gemm_q4_0_8x8_q8_0", "ggml_gemm_q4_K_8x8_q8_K"):
            for fn in (getattr(self.lib, name), getattr(self.lib, name + "_generic")):
                fn.argtypes, fn.restype = gemm_args, None

    def quantize(self, x: np.ndarray, ggml_type: int, block_bytes: int, qk: int) -> np.ndarray:
        """Rows of ``x`` (a multiple of 4) as 4-row interleaved Q8 blocks (ggml's
        ``ggml_quantize_mat_t<8, type>``, what the matmul does to its activations)."""
        fn = getattr(self.lib, f"_Z19ggml_quantize_mat_tILl8EL9ggml_type{ggml_type}EEvPKfPvll")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
        nr, n = x.shape
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(nr // 4 * (n // qk) * block_bytes, dtype=np.uint8)
        for g in range(nr // 4):
            fn(x[4 * g :].ctypes.data, out[g * (n // qk) * block_bytes :].ctypes.data, 4, n)
        return out

    def gemm(self, name: str, n: int, w: np.ndarray, a: np.ndarray, nr: int, nc: int,
             generic: bool = False) -> np.ndarray:
        s = np.full((nr, nc), np.nan, dtype=np.float32)
        fn = getattr(self.lib, name + ("_generic" if generic else ""))
        fn(n, s.ctypes.data, nc, w.ctypes.data, a.ctypes.data, nr, nc)
        return s


@pytest.fixture(scope="module")
def kernels() -> Kernels:
    return Kernels()


def _q4_0_weights(rng, nc: int, n: int) -> np.ndarray:
    """Repacked Q4_0 weights: any nibbles, fp16 scales of either sign."""
    nb = n // QK8_0
    w = rng.integers(0, 256, (nc // 8, nb, Q4_0X8), dtype=np.uint8)
    d = (rng.uniform(0.002, 0.02, (nc // 8, nb, 8)) * rng.choice([-1, 1], (nc // 8, nb, 8)))
    w[:, :, :16] = d.astype(np.float16).view(np.uint8).reshape(nc // 8, nb, 16)
    return w.reshape(-1)


def _q4_0_values(w: np.ndarray, nc: int, n: int) -> np.ndarray:
    """The weight matrix (nc, n) the repacked bytes hold, from the layout of ggml's scalar
    kernel: weight row j of an 8-row group, element e of a 32-block sits in byte
    (e % 16 // 8) * 64 + j * 8 + e % 8 of the block's nibbles, low nibble for e < 16,
    high nibble for e >= 16, a 4-bit two's-complement value times the block's d[j]."""
    nb = n // QK8_0
    blocks = w.reshape(nc // 8, nb, Q4_0X8)
    d = blocks[:, :, :16].copy().view(np.float16).astype(np.float64)  # (groups, nb, 8)
    qs = blocks[:, :, 16:].astype(np.int64)  # (groups, nb, 128)
    e = np.arange(QK8_0)
    j = np.arange(8)
    byte = (e % 16 // 8)[None, :] * 64 + j[:, None] * 8 + (e % 8)[None, :]  # (8, 32)
    nib = np.where(e[None, :] < 16, qs[:, :, byte] & 0xF, qs[:, :, byte] >> 4)  # (g, nb, 8, 32)
    val = np.where(nib >= 8, nib - 16, nib) * d[:, :, :, None]
    return val.transpose(0, 2, 1, 3).reshape(nc, n)


def _q8_0_values(a: np.ndarray, nr: int, n: int) -> np.ndarray:
    """The activations (nr, n) the 4-row interleaved Q8_0 blocks hold: element e of row m
    in byte (e // 8) * 32 + m * 8 + e % 8 of the block's quants."""
    nb = n // QK8_0
    blocks = a.reshape(nr // 4, nb, Q8_0X4)
    d = blocks[:, :, :8].copy().view(np.float16).astype(np.float64)  # (g, nb, 4)
    qs = blocks[:, :, 8:].view(np.int8).astype(np.int64)
    e = np.arange(QK8_0)
    m = np.arange(4)
    byte = (e // 8)[None, :] * 32 + m[:, None] * 8 + (e % 8)[None, :]  # (4, 32)
    val = qs[:, :, byte] * d[:, :, :, None]  # (g, nb, 4, 32)
    return val.transpose(0, 2, 1, 3).reshape(nr, n)


@pytest.mark.parametrize("nr", [4, 8, 12, 16, 20, 28])
def test_the_q4_0_gemm_is_the_matrix_product_of_its_quantized_values(kernels, nr) -> None:
    rng = np.random.default_rng(nr)
    n, nc = 512, 32
    w = _q4_0_weights(rng, nc, n)
    x = rng.standard_normal((nr, n)).astype(np.float32)
    x[:, ::7] *= 20  # outliers: large quants in some blocks, small in the rest
    a = kernels.quantize(x, GGML_TYPE_Q8_0, Q8_0X4, QK8_0)
    W, A = _q4_0_values(w, nc, n), _q8_0_values(a, nr, n)
    assert np.abs(A - x).max() <= np.abs(x).max() / 127 + 1e-6  # the layout reads them right
    want = A @ W.T  # float64
    scale = np.abs(A) @ np.abs(W).T  # what fp32 rounding over 16 blocks is relative to
    got = kernels.gemm("ggml_gemm_q4_0_8x8_q8_0", n, w, a, nr, nc)
    ref = kernels.gemm("ggml_gemm_q4_0_8x8_q8_0", n, w, a, nr, nc, generic=True)
    assert np.all(np.abs(got - want) <= 1e-5 * scale), np.abs(got - want).max()
    assert np.all(np.abs(ref - want) <= 1e-5 * scale)  # the layout above is ggml's


def _q4_k_weights(rng, nc: int, n: int) -> np.ndarray:
    nb = n // QK_K
    w = rng.integers(0, 256, (nc // 8, nb, Q4_KX8), dtype=np.uint8)
    d = rng.uniform(0.001, 0.01, (nc // 8, nb, 16)).astype(np.float16)
    w[:, :, :32] = d.view(np.uint8).reshape(nc // 8, nb, 32)
    return w.reshape(-1)


@pytest.mark.parametrize(
    ("name", "make_w", "qtype", "block", "qk"),
    [
        ("ggml_gemm_q4_0_8x8_q8_0", _q4_0_weights, GGML_TYPE_Q8_0, Q8_0X4, QK8_0),
        ("ggml_gemm_q4_K_8x8_q8_K", _q4_k_weights, GGML_TYPE_Q8_K, Q8_KX4, QK_K),
    ],
)
def test_a_rows_bits_do_not_depend_on_the_rows_beside_it(kernels, name, make_w, qtype, block,
                                                          qk) -> None:
    """28 rows: the 16-row loop, then 12 in one sweep; fewer rows take the other paths."""
    rng = np.random.default_rng(1)
    n, nc, nr = 1024, 48, 28
    w = make_w(rng, nc, n)
    a = kernels.quantize(rng.standard_normal((nr, n)), qtype, block, qk)
    group = n // qk * block  # bytes of one 4-row group's blocks
    together = kernels.gemm(name, n, w, a, nr, nc)
    for rows in (4, 8, 12, 16, 20, 24):
        for start in range(0, nr - rows + 1, 4):
            part = kernels.gemm(name, n, w, a[start // 4 * group :], rows, nc)
            assert np.array_equal(part, together[start : start + rows]), (name, rows, start)
    ref = kernels.gemm(name, n, w, a, nr, nc, generic=True)
    np.testing.assert_allclose(together, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


AVX2_PART = """\
#endif // __AVX512BW__ && __AVX512DQ__
    for (; y < anr / 4; y += 4) {
                for (int rp = 0; rp < 4; rp++) {
                }
            for (int i = 0; i < 16; i++) {
                _mm256_storeu_ps((float *)(s + ((y * 4 + i) * bs + x * 8)), acc_rows[i]);
            }
        }
    }

    for (; y < nr / 4; y ++) {
    }
"""

REPACK_TEXT = """\
static void gemm_q4_b32_8x8_q8_0_lut_avx(int n) {
    int anr = nr - nr%16;
#if defined(__AVX512BW__) && defined(__AVX512DQ__)
{lut}
    for (; y < anr / 4; y += 4) {
            for (int b = 0; b < nb; b++) {
{uses}
                for (int rp = 0; rp < 4; rp++) {
{dots}
{sums}
                }
            }
            // Store the accumulated values
            for (int i = 0; i < 16; i++) {
                _mm512_storeu_ps((float *)(s + ((y * 4 + i) * bs + x * 8)), acc_rows[i]);
            }
        }
    }

    for (; y < nr / 4; y ++) {
    }
{avx2}}

void ggml_gemm_q4_K_8x8_q8_K(int n) {
#if defined(__AVX512BW__) && defined(__AVX512DQ__)
    for (; y < anr / 4; y += 4) {
                    for (int rp = 0; rp < 4; rp++) {
                    }
            for (int i = 0; i < 16; i++) {
                _mm512_storeu_ps((float * )(s + ((y * 4 + i) * bs + x * 8)), acc_rows[i]);
            }
        }
    }

    for (; y < nr / 4; y++) {
    }
{avx2}#endif
}
"""


def _repack_text() -> str:
    return (REPACK_TEXT.replace("{lut}", rp.LUT_LINE.rstrip("\n"))
            .replace("{uses}", "\n".join([rp.LUT_USE + "m);"] * rp.LUT_USES))
            .replace("{dots}", "\n".join([rp.DOT + "z, x, y);"] * rp.DOTS))
            .replace("{sums}", rp.SUMS_ANCHOR.rstrip("\n"))
            .replace("{avx2}", AVX2_PART))


def test_the_edit_applies_once_and_refuses_other_text(tmp_path: Path) -> None:
    path = tmp_path / rp.REPACK
    path.parent.mkdir(parents=True)
    path.write_text(_repack_text())
    rp.apply(tmp_path)
    text = path.read_text()
    for width in (512, 256):  # each GEMM's AVX-512 and AVX2 paths
        assert text.count(f"auto pl_row_groups_{width} = ") == 2
        assert text.count(f"pl_row_groups_{width}(std::integral_constant<int, 1>{{}})") == 2
    assert text.count("for (; y < anr / 4; y += 4) {") == 4  # the 16-row loops stay
    assert text.count("rp < NG") == 4 and text.count("rp < 4") == 4
    assert text.count("i < NG * 4") == 4
    assert text.count("pl_dot(") == 2 * rp.DOTS  # in the 16-row loop and in its copy
    assert "mul_sum_i8_pairs_acc_int32x16(z" not in text  # every dot goes through pl_dot
    first = text.index("pl_row_groups_512(std::integral_constant<int, 1>{})")
    assert first < text.index("for (; y < nr / 4; y ++)") < text.index("auto pl_row_groups_256")
    with pytest.raises(SystemExit, match="already patched"):
        rp.apply(tmp_path)
    path.write_text(_repack_text().replace("rp < 4", "rp < 2"))  # another llama.cpp
    with pytest.raises(SystemExit, match="occurs 0 times"):
        rp.apply(tmp_path)
