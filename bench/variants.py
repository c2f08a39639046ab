"""Quantization variants of one GGUF file, made with prometheus-lite's own quantizer.

``quantize_gguf`` (``--engine native``) and ``llama_model_quantize`` (``--engine
llama.cpp``) both refuse already-quantized input, as llama.cpp does without
``--allow-requantize``. A quantized source (the embedded SmolLM2 file is Q4_1, its token
embedding Q8_0) is therefore first *dequantized* to a float GGUF with the native kernels
(``kernels.dequantize``: the exact values llama.cpp computes with), and every level is
quantized from that. The reference of such a set is a dequantized Q4_1, not the original
weights: it carries all of Q4_1's rounding error, and the other levels' drift is measured
on top of it. The report says so.

Files are cached in ``cache_dir`` as ``<stem>.<LEVEL>.gguf`` and rebuilt only when the
source is newer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType

from prometheus_lite.errors import QuantizationError

__all__ = ["FLOAT_LEVELS", "build_variants", "dequantize_gguf", "is_quantized"]

log = logging.getLogger(__name__)

FLOAT_LEVELS = {"F32": (T.F32, LlamaFileType.ALL_F32), "F16": (T.F16, LlamaFileType.MOSTLY_F16)}
_FLOAT_TYPES = (T.F32, T.F16, T.BF16)


def is_quantized(path: str | os.PathLike[str]) -> bool:
    """Whether any matrix in the GGUF is stored in a quantized (block) type."""
    reader = GGUFReader(path)
    return any(len(t.shape) >= 2 and T(t.tensor_type) not in _FLOAT_TYPES for t in reader.tensors)


def _stem(path: Path) -> str:
    name = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.stem
    for level in ("Q4_1", "Q4_0", "Q8_0", "Q5_K_M", "Q4_K_M", "F16", "BF16", "F32"):
        for sep in (".", "-", "_"):
            if name.upper().endswith(sep + level):
                return name[: -len(level) - 1]
    return name


def dequantize_gguf(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], level: str = "F16"
) -> Path:
    """Write ``src`` with every quantized matrix dequantized to ``level`` (F16 or F32).

    Float tensors are copied unchanged (F32 norms stay F32, as llama.cpp keeps them);
    metadata is copied with ``general.file_type`` set for the new level.
    """
    from prometheus_lite.convert import kernels

    target, ftype = FLOAT_LEVELS[level.upper()]
    src, dst = Path(src), Path(dst)
    reader = GGUFReader(src)
    arch = reader.get_field(Keys.General.ARCHITECTURE)
    if arch is None:
        raise QuantizationError(f"{src} has no general.architecture")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = GGUFWriter(tmp, str(arch.contents()))
    try:
        for field in reader.fields.values():
            if field.name in (
                Keys.General.ARCHITECTURE,
                Keys.General.FILE_TYPE,
                Keys.General.QUANTIZATION_VERSION,
            ) or field.name.startswith("GGUF."):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
            if field.name == Keys.General.ALIGNMENT:
                writer.data_alignment = int(field.contents())
        writer.add_key_value(Keys.General.FILE_TYPE, int(ftype), GGUFValueType.UINT32)
        plan = []
        for t in reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order, row last
            src_type = T(t.tensor_type)
            out_type = (
                src_type
                if src_type in _FLOAT_TYPES and (len(shape) < 2 or src_type == target)
                else target
            )
            if len(shape) < 2 and src_type not in _FLOAT_TYPES:
                out_type = T.F32
            plan.append((t, shape, src_type, out_type))
            dtype = {T.F32: np.float32, T.F16: np.float16, T.BF16: np.uint16}[out_type]
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            writer.add_tensor_info(t.name, shape, np.dtype(dtype), nbytes, raw_dtype=out_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, shape, src_type, out_type in plan:
            if src_type == out_type:
                data = np.asarray(t.data)
            else:
                if src_type == T.F32:
                    values = np.asarray(t.data, dtype=np.float32).reshape(shape)
                elif src_type == T.F16:
                    values = np.asarray(t.data).view(np.float16).astype(np.float32).reshape(shape)
                elif src_type == T.BF16:
                    u = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
                    values = u.view(np.float32).reshape(shape)
                else:
                    values = kernels.dequantize(np.asarray(t.data), src_type, shape)
                data = values.astype(np.float16 if out_type == T.F16 else np.float32)
            writer.write_tensor_data(np.ascontiguousarray(data))
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst


def build_variants(
    src: str | os.PathLike[str],
    levels: Sequence[str],
    cache_dir: str | os.PathLike[str],
    *,
    engine: str = "native",
    n_threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Make ``src`` at every level in ``levels`` (e.g. F16, Q8_0, Q5_K_M, Q4_K_M, Q4_0).

    Returns the files (in the order of ``levels``) and notes for the report: how each was
    made and, for a quantized source, that the float reference is its dequantization.
    """
    src, cache = Path(src), Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stem = _stem(src)
    quantized = is_quantized(src)
    src_name = _level_of(src)
    notes: dict[str, str] = {}

    def fresh(p: Path) -> bool:
        return p.is_file() and p.stat().st_mtime >= src.stat().st_mtime

    # The float file every quantized level is made from.
    base = src
    if quantized:
        base = cache / f"{stem}.F16.gguf"
        if not fresh(base):
            if progress:
                progress(f"dequantizing {src.name} -> F16")
            dequantize_gguf(src, base, "F16")
        notes["F16"] = (
            f"dequantized from {src.name} ({src_name}) by prometheus-lite's native kernels: "
            f"a float copy of the {src_name} weights, NOT the original full-precision weights"
        )
    out: list[Path] = []
    for level in levels:
        lv = level.upper()
        if lv in FLOAT_LEVELS:
            path = cache / f"{stem}.{lv}.gguf"
            if lv == "F16" and quantized:
                path = base
            elif not fresh(path):
                if progress:
                    progress(f"writing {lv}")
                dequantize_gguf(src, path, lv)
            if quantized:
                notes.setdefault(lv, notes["F16"].replace("-> F16", f"-> {lv}"))
            out.append(path)
            continue
        path = cache / f"{stem}.{lv}.gguf"
        if not fresh(path):
            if progress:
                progress(f"quantizing -> {lv} ({engine})")
            if engine == "native":
                from prometheus_lite.convert.native_quantize import quantize_gguf

                quantize_gguf(base, path, lv, n_threads=n_threads)
            elif engine == "llama.cpp":
                from prometheus_lite.convert.quantize import quantize_file

                quantize_file(base, path, lv, nthread=n_threads or 0)
            else:
                raise QuantizationError(f"unknown engine {engine!r}; use native or llama.cpp")
        notes[lv] = f"quantized to {lv} by prometheus-lite ({engine} engine) from " + (
            f"the F16 dequantization of {src.name} (requantized {src_name})"
            if quantized
            else src.name
        )
        out.append(path)
    return out, notes


def _level_of(path: Path) -> str:
    from prometheus_lite.models import read_model_info

    return read_model_info(path).quantization or "?"
