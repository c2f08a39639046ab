"""The one module that loads the native quantization kernels (libpl_quants, built
from ``kernels/`` by CMake during ``pip install``).

``quantize(array, type)`` turns a float32 matrix into GGML block bytes identical to
llama.cpp's quantizer output; ``dequantize(data, type, shape)`` goes back. Both
release the GIL inside C (ctypes) and split rows over ``n_threads`` pthreads.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np

from prometheus_lite.errors import QuantizationError

from .quant_types import NATIVE_TYPES, GGMLQuantizationType, row_bytes

__all__ = [
    "default_threads",
    "dequantize",
    "is_native",
    "library_path",
    "quantize",
    "round_to_f16",
    "simd_info",
]

_API_VERSION = 1
_ENV_LIB = "PROMETHEUS_LITE_KERNELS_LIB"  # explicit path to the library, for development
_LIB_NAMES = {"darwin": "libpl_quants.dylib", "win32": "pl_quants.dll"}
_LIB_NAME = _LIB_NAMES.get(sys.platform, "libpl_quants.so")
_ERRORS = {
    -1: "type not supported by the native kernels",
    -2: "row length not a multiple of the block size",
    -3: "could not start worker threads",
}

_lib: ctypes.CDLL | None = None
_lib_path: Path | None = None


def _candidates() -> list[Path]:
    """Where the library may be: env override; next to this file (wheel install);
    the installed package dir (editable installs keep sources elsewhere); the
    scikit-build build tree of a source checkout."""
    out: list[Path] = []
    if os.environ.get(_ENV_LIB):
        out.append(Path(os.environ[_ENV_LIB]))
    here = Path(__file__).resolve().parent
    out.append(here / _LIB_NAME)
    for entry in sys.path:
        if entry:
            out.append(Path(entry) / "prometheus_lite" / "convert" / _LIB_NAME)
    out.extend(sorted((here.parent / "build").glob(f"*/{_LIB_NAME}")))
    return out


def _load() -> ctypes.CDLL:
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    tried = []
    for path in _candidates():
        if path in tried:
            continue
        tried.append(path)
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise QuantizationError(
                f"native kernels at {path} cannot be loaded ({e}); "
                "rebuild them: pip install --no-build-isolation --force-reinstall ."
            ) from e
        if lib.pl_api_version() != _API_VERSION:
            raise QuantizationError(
                f"native kernels at {path} have API version {lib.pl_api_version()}, "
                f"expected {_API_VERSION}; rebuild: pip install --force-reinstall ."
            )
        _declare(lib)
        _lib, _lib_path = lib, path
        return lib
    raise QuantizationError(
        f"native quantization kernels ({_LIB_NAME}) not found; looked in: "
        + ", ".join(str(p) for p in tried[:4])
        + (" ..." if len(tried) > 4 else "")
        + ". Build them with `pip install .` (or `pip install -e .`) from the source tree, "
        f"point {_ENV_LIB} at a built library, or use --engine llama.cpp."
    )


def _declare(lib: ctypes.CDLL) -> None:
    c_i64, c_int, c_void_p = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.pl_api_version.restype = c_int
    lib.pl_simd_info.restype = ctypes.c_char_p
    lib.pl_row_size.argtypes = [c_int, c_i64]
    lib.pl_row_size.restype = ctypes.c_size_t
    lib.pl_quantize.argtypes = [c_int, c_void_p, c_void_p, c_i64, c_i64, c_int]
    lib.pl_quantize.restype = c_int
    lib.pl_dequantize.argtypes = [c_int, c_void_p, c_void_p, c_i64, c_i64, c_int]
    lib.pl_dequantize.restype = c_int
    lib.pl_fp32_to_fp16.argtypes = [c_void_p, c_void_p, c_i64]
    lib.pl_fp32_to_fp16.restype = None


def library_path() -> Path:
    """Path of the loaded library (loads it)."""
    _load()
    assert _lib_path is not None
    return _lib_path


def simd_info() -> str:
    """Code path the library selected on this CPU ("avx2", "scalar", ...)."""
    return _load().pl_simd_info().decode()


def default_threads() -> int:
    """Threads used when ``n_threads`` is None: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def is_native(qtype: GGMLQuantizationType | int) -> bool:
    """True if the kernels implement ``qtype``."""
    return int(qtype) in {int(t) for t in NATIVE_TYPES}


def _check_type(qtype: GGMLQuantizationType | int) -> GGMLQuantizationType:
    t = GGMLQuantizationType(int(qtype))
    if not is_native(t):
        raise QuantizationError(
            f"type {t.name} is not implemented by the native kernels "
            f"(they do {', '.join(x.name for x in NATIVE_TYPES)}); use --engine llama.cpp"
        )
    return t


def quantize(
    array: np.ndarray, qtype: GGMLQuantizationType | int, *, n_threads: int | None = None
) -> np.ndarray:
    """Quantize ``array`` (float32, any shape whose last axis is the row; other
    dtypes are converted) to GGML ``qtype`` blocks.

    Returns uint8 of shape ``array.shape[:-1] + (row_bytes,)`` - the layout gguf-py's
    GGUFWriter expects for quantized tensors. Bytes equal llama.cpp's
    (quantize_row_*_ref, the no-imatrix path of llama_model_quantize).
    """
    t = _check_type(qtype)
    a = np.ascontiguousarray(array, dtype=np.float32)
    if a.ndim == 0:
        raise QuantizationError("cannot quantize a scalar")
    n_per_row = a.shape[-1]
    try:
        rb = row_bytes(t, n_per_row)
    except ValueError as e:
        raise QuantizationError(
            f"{e}; pick another type for this tensor (see convert/mixtures.py)"
        ) from None
    nrows = a.size // n_per_row if n_per_row else 0
    out = np.empty(a.shape[:-1] + (rb,), dtype=np.uint8)
    if nrows == 0:
        return out
    lib = _load()
    rc = lib.pl_quantize(
        int(t),
        a.ctypes.data,
        out.ctypes.data,
        nrows,
        n_per_row,
        n_threads if n_threads is not None else default_threads(),
    )
    if rc:
        raise QuantizationError(f"native quantize to {t.name} failed: {_ERRORS.get(rc, rc)}")
    return out


def dequantize(
    data: np.ndarray | bytes,
    qtype: GGMLQuantizationType | int,
    shape: tuple[int, ...],
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Inverse of :func:`quantize`: GGML ``qtype`` block bytes -> float32 of ``shape``
    (the logical shape, last axis = row)."""
    t = _check_type(qtype)
    shape = tuple(int(s) for s in shape)
    n_per_row = shape[-1]
    try:
        rb = row_bytes(t, n_per_row)
    except ValueError as e:
        raise QuantizationError(str(e)) from None
    nrows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    buf = np.ascontiguousarray(
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, (bytes, bytearray, memoryview))
        else np.asarray(data).view(np.uint8).reshape(-1)
    )
    if buf.size != nrows * rb:
        raise QuantizationError(
            f"{t.name} data of {buf.size} bytes does not match shape {shape} "
            f"({nrows * rb} bytes expected)"
        )
    out = np.empty(shape, dtype=np.float32)
    if nrows == 0:
        return out
    rc = _load().pl_dequantize(
        int(t),
        buf.ctypes.data,
        out.ctypes.data,
        nrows,
        n_per_row,
        n_threads if n_threads is not None else default_threads(),
    )
    if rc:
        raise QuantizationError(f"native dequantize of {t.name} failed: {_ERRORS.get(rc, rc)}")
    return out


def round_to_f16(array: np.ndarray) -> np.ndarray:
    """float32 values rounded through IEEE half and back (what an F16 intermediate
    GGUF does to them). Same rounding as numpy's astype(float16): nearest-even."""
    return np.ascontiguousarray(array, dtype=np.float32).astype(np.float16).astype(np.float32)
