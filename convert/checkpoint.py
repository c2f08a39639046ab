"""Open a Hugging Face checkpoint folder and read its tensors lazily, one at a time.

``open_checkpoint(dir)`` reads ``config.json`` and the headers of the weight files (safetensors or
PyTorch ``.bin``, single or sharded with an index) and checks they are complete; no weight data is
read. ``TensorRef.load()`` then reads one tensor with plain file reads (no mmap, so the memory it
uses is released as soon as the array is dropped) and returns it in its stored dtype; ``to_f32``
widens it. numpy has no bfloat16: bf16 data is returned as ``uint16`` and widened by a shift.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prometheus_lite.errors import ConversionError

from .pickle_reader import read_torch_zip

__all__ = ["Checkpoint", "TensorRef", "open_checkpoint", "to_f32", "DTYPES"]

# dtype label -> numpy dtype as stored (BF16 is raw uint16, see to_f32).
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie; nothing is read until ``load()``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # byte offset of the first element in ``path``
    strides: tuple[int, ...] | None = None  # element strides; None means C-contiguous

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * DTYPES[self.dtype].itemsize

    def load(self) -> np.ndarray:
        """Read the tensor (stored dtype, C-contiguous)."""
        dt = DTYPES[self.dtype]
        count = int(np.prod(self.shape, dtype=np.int64))
        contiguous = self.strides is None or _is_contiguous(self.shape, self.strides)
        span = count if contiguous else 1 + sum(
            (n - 1) * s for n, s in zip(self.shape, self.strides or (), strict=False))
        buf = np.empty(span, dtype=dt)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            got = f.readinto(memoryview(buf).cast("B"))
        if got != buf.nbytes:
            raise ConversionError(
                f"{self.path}: file ends inside tensor {self.name} (truncated download?); "
                "re-download this file"
            )
        if contiguous:
            return buf.reshape(self.shape)
        view = np.lib.stride_tricks.as_strided(
            buf, self.shape, tuple(s * dt.itemsize for s in self.strides or ()))
        return np.ascontiguousarray(view)


def _is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides), strict=False):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def to_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Widen a stored array (any float label, bf16 as uint16) to float32."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef] = field(default_factory=dict)
    weight_format: str = "safetensors"  # or "bin"

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else ""

    @property
    def source_dtypes(self) -> set[str]:
        return {t.dtype for t in self.tensors.values() if len(t.shape) >= 2}


# ---------------------------------------------------------------------------- safetensors

def _read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    """Parse the safetensors header: u64 little-endian length N, then N bytes of JSON."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: empty or truncated safetensors file; re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise ConversionError(f"{path}: corrupt safetensors header; re-download it")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ConversionError(
                f"{path}: corrupt safetensors header ({e}); re-download it") from e
    base = 8 + n
    out: dict[str, TensorRef] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype")
        if dtype not in DTYPES:
            raise ConversionError(f"{path}: tensor {name} has dtype {dtype}; only float32, "
                                  "float16, bfloat16 (and integer buffers) are supported")
        begin, end = entry["data_offsets"]
        ref = TensorRef(name, dtype, tuple(int(s) for s in entry["shape"]), path, base + begin)
        if end - begin != ref.nbytes or base + end > size:
            raise ConversionError(f"{path}: tensor {name} lies outside the file (truncated "
                                  "download?); re-download this file")
        out[name] = ref
    return out


def _read_bin(path: Path) -> dict[str, TensorRef]:
    return {
        name: TensorRef(name, t.dtype, t.shape, path, t.file_offset, t.strides)
        for name, t in read_torch_zip(path).items()
    }


# ---------------------------------------------------------------------------- folder

_LAYOUTS = (
    # (index file, single file, reader, format name)
    ("model.safetensors.index.json", "model.safetensors", _read_safetensors_header, "safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", _read_bin, "bin"),
)


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read config and weight headers of a Hugging Face checkpoint folder, checking completeness."""
    root = Path(path)
    if not root.is_dir():
        raise ConversionError(f"{root}: not a folder; pass the folder holding config.json and the "
                              "weight files (e.g. a `huggingface-cli download` target)")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{config_path}: missing; a Hugging Face checkpoint folder has a "
                              "config.json next to its weights")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"{config_path}: not valid JSON ({e})") from e

    for index_name, single_name, reader, fmt in _LAYOUTS:
        index_path = root / index_name
        if index_path.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise ConversionError(f"{index_path}: no valid weight_map ({e})") from e
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (root / f).is_file()]
            if missing:
                raise ConversionError(
                    f"{root}: missing shard file(s) {', '.join(missing)} listed in {index_name}; "
                    "download them into the checkpoint folder"
                )
            tensors: dict[str, TensorRef] = {}
            for f in files:
                for name, ref in reader(root / f).items():
                    if name in weight_map:
                        tensors[name] = ref
            absent = sorted(n for n, f in weight_map.items() if n not in tensors)
            if absent:
                shard = weight_map[absent[0]]
                raise ConversionError(
                    f"{root / shard}: tensor {absent[0]} (and {len(absent) - 1} more) listed in "
                    f"{index_name} is not in the file; the shard is incomplete, re-download it"
                )
            return Checkpoint(root, config, tensors, fmt)
        if (root / single_name).is_file():
            return Checkpoint(root, config, reader(root / single_name), fmt)

    raise ConversionError(
        f"{root}: no weights found (expected model.safetensors, model-*.safetensors with "
        "model.safetensors.index.json, pytorch_model.bin or pytorch_model-*.bin with "
        "pytorch_model.bin.index.json)"
    )
