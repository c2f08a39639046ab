"""Quantize a GGUF file with llama.cpp's own quantizer (``llama_model_quantize``).

This is the only module of the converter that touches the llama.cpp binding; it is imported
lazily. The type names are llama.cpp's (``Q4_K_M``, ``Q5_K_M``, ``Q8_0``, ...): gguf-py's
``LlamaFileType`` mirrors ``enum llama_ftype`` of ``llama.h`` ("must be the same as llama_ftype in
llama.h"), and a test checks it against ``llama_cpp.LLAMA_FTYPE_*``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gguf

from prometheus_lite.errors import QuantizationError
from prometheus_lite.gguf_reader import HeaderReader

from .gguf_out import atomic_path

__all__ = ["QUANT_TYPES", "quant_type", "quantize_file", "FLOAT_INPUT_TYPES"]

logger = logging.getLogger(__name__)

# "Q4_K_M" -> llama_ftype value (ALL_F32 -> "F32", MOSTLY_X -> "X"); GUESSED is not a target.
QUANT_TYPES: dict[str, int] = {
    m.name.split("_", 1)[1]: int(m.value)
    for m in gguf.LlamaFileType
    if m.name.startswith(("MOSTLY_", "ALL_"))
}

# Tensor types llama.cpp quantizes from without --allow-requantize.
FLOAT_INPUT_TYPES = frozenset({"F32", "F16", "BF16"})


def quant_type(name: str) -> int:
    """llama_ftype for a type name, case-insensitive."""
    try:
        return QUANT_TYPES[name.upper()]
    except KeyError:
        raise QuantizationError(
            f"unknown quantization type {name!r}; choose one of: {', '.join(sorted(QUANT_TYPES))}"
        ) from None


def _check_input(src: Path) -> None:
    if not src.is_file():
        raise QuantizationError(f"{src}: no such file")
    try:
        reader = HeaderReader(src)
    except (OSError, ValueError) as e:
        raise QuantizationError(f"{src}: not a GGUF file ({e})") from e
    quantized = sorted({t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2}
                       - FLOAT_INPUT_TYPES)
    if quantized:
        raise QuantizationError(
            f"{src}: already quantized ({', '.join(quantized)}); quantize from the F16, BF16 or "
            "F32 GGUF instead (re-run `prometheus-lite convert --outtype f16` to make one)"
        )


def quantize_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], type_name: str, *,
                  nthread: int = 0) -> Path:
    """Quantize ``src`` (F32/F16/BF16 GGUF) into ``dst`` as ``type_name``; atomic."""
    src, dst = Path(src), Path(dst)
    ftype = quant_type(type_name)
    _check_input(src)
    if src.resolve() == dst.resolve():
        raise QuantizationError(f"{dst}: output would overwrite the input; choose another name")

    dst.parent.mkdir(parents=True, exist_ok=True)
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    # llama.cpp logs every tensor through llama-cpp-python's logger: keep warnings and errors.
    cpp_log = logging.getLogger("llama-cpp-python")
    saved_level = cpp_log.level
    cpp_log.setLevel(max(saved_level, logging.WARNING))
    try:
        with atomic_path(dst) as tmp:
            logger.info("quantizing %s -> %s (%s)", src, dst, type_name.upper())
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
            if rc != 0 or not tmp.is_file():
                raise QuantizationError(
                    f"llama.cpp could not quantize {src} to {type_name.upper()} (code {rc}); "
                    "check the input loads with llama.cpp and that the disk is not full"
                )
    finally:
        cpp_log.setLevel(saved_level)
    return dst
