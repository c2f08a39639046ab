"""GGUF -> GGUF quantization with the native kernels (``--engine native``).

Same result as llama.cpp's ``llama_model_quantize`` with default parameters and no
importance matrix: the same type for every tensor (``mixtures.choose_types``) and
the same bytes (``kernels.quantize``); metadata is copied, with
``general.file_type`` and ``general.quantization_version`` set as llama.cpp sets
them. Tensors are streamed one at a time (input memory-mapped, output written as
it is produced), and the output appears atomically (temporary file + rename).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

from prometheus_lite.errors import QuantizationError

from . import kernels
from .mixture_rules import GGML_QNT_VERSION
from .mixtures import ModelInfo, TensorInfo, choose_types, llama_order
from .quant_types import mixture, row_bytes

__all__ = ["encode_tensor", "model_info_from_reader", "quantize_gguf"]

log = logging.getLogger(__name__)

_FLOAT_TYPES = (T.F32, T.F16, T.BF16)
# numpy dtype of types GGUFWriter stores element-wise (anything else is block bytes)
_STORAGE = {
    T.F32: np.float32,
    T.F16: np.float16,
    T.BF16: np.uint16,
    T.I8: np.int8,
    T.I16: np.int16,
    T.I32: np.int32,
    T.I64: np.int64,
    T.F64: np.float64,
}


def encode_tensor(values: np.ndarray, target: T, *, n_threads: int | None = None) -> np.ndarray:
    """float values (last axis = row) -> the bytes/array GGUFWriter stores for ``target``.

    The one seam the converter needs besides ``choose_types``: F32 and F16 are
    plain numpy casts (round to nearest even, as ggml's fp32_to_fp16_row);
    quantized types go through the native kernels.
    """
    if target == T.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if target == T.F16:
        return np.ascontiguousarray(values, dtype=np.float32).astype(np.float16)
    return kernels.quantize(values, target, n_threads=n_threads)


def _as_float32(data: np.ndarray, t: T, shape: tuple[int, ...], name: str) -> np.ndarray:
    if t == T.F32:
        return np.asarray(data, dtype=np.float32).reshape(shape)
    if t == T.F16:
        return np.asarray(data).view(np.float16).astype(np.float32).reshape(shape)
    if t == T.BF16:
        u = np.asarray(data).view(np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    raise QuantizationError(
        f"tensor {name} is already quantized ({t.name}); requantizing is disabled "
        "(as in llama.cpp): start from an F32/F16/BF16 GGUF or from the checkpoint"
    )


def _field(reader: GGUFReader, key: str, default=None):
    f = reader.get_field(key)
    return f.contents() if f is not None else default


def model_info_from_reader(reader: GGUFReader) -> ModelInfo:
    arch = _field(reader, Keys.General.ARCHITECTURE)
    if not arch:
        raise QuantizationError("input GGUF has no general.architecture")
    n_layer = _field(reader, f"{arch}.block_count")
    if n_layer is None:
        raise QuantizationError(f"input GGUF has no {arch}.block_count")
    return ModelInfo(
        n_layer=int(n_layer),
        arch=str(arch),
        n_expert=int(_field(reader, f"{arch}.expert_count", 0) or 0),
        n_head=int(_field(reader, f"{arch}.attention.head_count", 0) or 0),
        n_head_kv=int(_field(reader, f"{arch}.attention.head_count_kv", 0) or 0),
    )


def quantize_gguf(
    in_path: os.PathLike | str,
    out_path: os.PathLike | str,
    level: str,
    n_threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, T]:
    """Quantize GGUF ``in_path`` to mixture ``level`` (e.g. "Q4_K_M") at ``out_path``.

    Returns the chosen type of every tensor. ``progress(name, i, n)`` is called
    before each tensor. Raises QuantizationError for unknown levels, already
    quantized inputs, or unreadable files.
    """
    try:
        mix = mixture(level)
    except KeyError as e:
        raise QuantizationError(str(e.args[0])) from None
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.is_file():
        raise QuantizationError(f"{in_path}: no such file")
    if out_path.exists() and out_path.resolve() == in_path.resolve():
        raise QuantizationError(
            f"{out_path}: output would overwrite the input; choose another name"
        )
    try:
        reader = GGUFReader(in_path)
    except (OSError, ValueError) as e:
        raise QuantizationError(f"cannot read {in_path} as GGUF: {e}") from e
    model = model_info_from_reader(reader)
    by_name = {t.name: t for t in reader.tensors}
    infos = [
        TensorInfo(t.name, tuple(int(x) for x in reversed(t.shape.tolist())), T(t.tensor_type))
        for t in reader.tensors
    ]
    types = choose_types(infos, model, mix.name)
    shapes = {i.name: i.shape for i in infos}
    requant = sorted(
        {i.type.name for i in infos if types[i.name] != i.type and i.type not in _FLOAT_TYPES}
    )
    if requant:  # checked before anything is written
        raise QuantizationError(
            f"{in_path}: already quantized ({', '.join(requant)}); quantize from the F16, "
            "BF16 or F32 GGUF instead (`prometheus-lite convert --outtype f16` makes one)"
        )
    order = llama_order(by_name)  # llama.cpp writes tensors in this order too

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    writer = GGUFWriter(tmp, model.arch)
    try:
        for field in reader.fields.values():
            if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
            if field.name == Keys.General.ALIGNMENT:
                writer.data_alignment = int(field.contents())
        # llama_model_quantize_impl l.1025-1026: quantization version, then file type
        writer.add_key_value(
            Keys.General.QUANTIZATION_VERSION, GGML_QNT_VERSION, GGUFValueType.UINT32
        )
        writer.add_key_value(Keys.General.FILE_TYPE, int(mix.ftype), GGUFValueType.UINT32)

        for name in order:
            shape, t = shapes[name], types[name]
            src = by_name[name]
            nrows = int(np.prod(shape[:-1], dtype=np.int64))
            if t in _STORAGE:  # stored element by element
                byte_shape, dtype = shape, _STORAGE[t]
                nbytes = nrows * shape[-1] * np.dtype(dtype).itemsize
            else:  # blocks: [..., bytes per row]
                byte_shape, dtype = shape[:-1] + (row_bytes(t, shape[-1]),), np.uint8
                nbytes = nrows * byte_shape[-1]
            writer.add_tensor_info(name, byte_shape, np.dtype(dtype), nbytes, raw_dtype=t)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        t0 = time.monotonic()
        for i, name in enumerate(order):
            if progress:
                progress(name, i, len(order))
            src, t, shape = by_name[name], types[name], shapes[name]
            if t == src.tensor_type:
                data = np.asarray(src.data)  # copied unchanged
                if t in _STORAGE:
                    data = data.view(_STORAGE[t])
            else:
                values = _as_float32(src.data, T(src.tensor_type), shape, name)
                data = encode_tensor(values, t, n_threads=n_threads)
            writer.write_tensor_data(np.ascontiguousarray(data))
            log.debug("%s: %s -> %s", name, T(src.tensor_type).name, t.name)
        writer.close()
        os.replace(tmp, out_path)
        log.info(
            "quantized %s -> %s (%s) in %.1fs", in_path, out_path, mix.name, time.monotonic() - t0
        )
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return types
