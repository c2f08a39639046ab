"""Independent references for the quantization tests and benchmarks: llama.cpp
itself, as shipped in llama-cpp-python.

- ``ggml_quantize`` / ``ggml_dequantize``: ggml's own C functions
  (``ggml_quantize_chunk``, ``dequantize_row_*`` in libggml-base) through ctypes:
  the exact code ``llama_model_quantize`` runs per chunk of rows.
- ``write_llama_gguf`` + ``llama_quantize``: the whole file path, through
  ``llama_model_quantize`` on a minimal llama-architecture GGUF.
- ``block_mismatch``: share of differing blocks, for failure messages.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

T = gguf.GGMLQuantizationType

_LIBDIR = Path(llama_cpp.__file__).resolve().parent / "lib"


def _ggml() -> ctypes.CDLL:
    names = ["libggml-base.so", "libggml-base.dylib", "ggml-base.dll"]
    for n in names:
        if (_LIBDIR / n).exists():
            lib = ctypes.CDLL(str(_LIBDIR / n))
            break
    else:
        raise FileNotFoundError(f"libggml-base not found in {_LIBDIR}")
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    return lib


GGML = _ggml()


def ggml_quantize(a: np.ndarray, t: T, n_threads: int = 1) -> np.ndarray:
    """ggml_quantize_chunk over all rows (imatrix NULL), split in row ranges over
    ``n_threads`` Python threads (ctypes drops the GIL), like llama_model_quantize."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    n = a.shape[-1]
    nrows = a.size // n
    out = np.empty(a.shape[:-1] + (GGML.ggml_row_size(int(t), n),), np.uint8)
    if n_threads <= 1:
        GGML.ggml_quantize_chunk(int(t), a.ctypes.data, out.ctypes.data, 0, nrows, n, None)
        return out
    import threading

    bounds = np.linspace(0, nrows, n_threads + 1).astype(int)

    def work(r0: int, r1: int) -> None:
        if r1 > r0:  # start is in elements; dst offset is computed by ggml from it
            GGML.ggml_quantize_chunk(
                int(t), a.ctypes.data, out.ctypes.data, r0 * n, r1 - r0, n, None
            )

    ths = [
        threading.Thread(target=work, args=(int(bounds[i]), int(bounds[i + 1])))
        for i in range(n_threads)
    ]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return out


def ggml_dequantize(data: np.ndarray, t: T, shape: tuple[int, ...]) -> np.ndarray:
    """ggml's dequantize_row_<type> over the whole buffer."""
    fn = getattr(GGML, f"dequantize_row_{t.name.lower().replace('_k', '_K')}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    buf = np.ascontiguousarray(data).view(np.uint8)
    out = np.empty(shape, np.float32)
    fn(buf.ctypes.data, out.ctypes.data, out.size)
    return out


def block_mismatch(ours: np.ndarray, ref: np.ndarray, t: T) -> tuple[float, int, int]:
    """(share of differing blocks, number differing, total blocks)."""
    ts = gguf.GGML_QUANT_SIZES[t][1]
    a = np.asarray(ours, np.uint8).reshape(-1, ts)
    b = np.asarray(ref, np.uint8).reshape(-1, ts)
    assert a.shape == b.shape, f"size differs: {a.shape} vs {b.shape}"
    bad = np.any(a != b, axis=1)
    return float(bad.mean()) if len(bad) else 0.0, int(bad.sum()), len(bad)


def assert_same_blocks(ours: np.ndarray, ref: np.ndarray, t: T, what: str) -> None:
    share, nbad, n = block_mismatch(ours, ref, t)
    if nbad:
        first = int(
            np.argmax(
                np.any(
                    np.asarray(ours).reshape(-1, gguf.GGML_QUANT_SIZES[t][1])
                    != np.asarray(ref).reshape(-1, gguf.GGML_QUANT_SIZES[t][1]),
                    axis=1,
                )
            )
        )
        raise AssertionError(
            f"{t.name} {what}: {nbad}/{n} blocks differ ({share:.4%}); first at block {first}"
        )


def write_llama_gguf(
    path: os.PathLike | str,
    tensors: Mapping[str, np.ndarray],
    *,
    n_layer: int,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 4,
    n_expert: int = 0,
    n_ff: int = 128,
    dtype: object = np.float32,
) -> None:
    """A minimal llama-architecture GGUF that llama_model_quantize accepts: the
    hyper-parameters load_hparams needs, and the given tensors (2-D and up as ``dtype``:
    np.float32, np.float16 or "bf16"; 1-D always F32, as converters write norms)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(
        {
            np.float32: gguf.LlamaFileType.ALL_F32,
            np.float16: gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        }[dtype]
    )
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    for name, a in tensors.items():
        if a.ndim > 1 and dtype == "bf16":  # gguf-py's BF16 rounding, as the converter writes it
            w.add_tensor(
                name,
                gguf.quants.quantize(np.ascontiguousarray(a, np.float32), T.BF16),
                raw_dtype=T.BF16,
            )
        else:
            w.add_tensor(name, np.ascontiguousarray(a, dtype=dtype if a.ndim > 1 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_quantize(
    inp: os.PathLike | str, out: os.PathLike | str, ftype: int, nthread: int = 1
) -> None:
    """llama.cpp's file quantizer with default parameters (no imatrix)."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = int(ftype)
    p.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(inp).encode(), str(out).encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with {rc}")


def read_tensors(path: os.PathLike | str) -> dict[str, tuple[T, np.ndarray]]:
    """name -> (type, raw data as uint8 bytes) of every tensor in a GGUF."""
    r = gguf.GGUFReader(str(path))
    return {
        t.name: (T(t.tensor_type), np.array(t.data).view(np.uint8).reshape(-1)) for t in r.tensors
    }
