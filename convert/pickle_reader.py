"""Read PyTorch ``.bin`` checkpoints without executing them and without importing torch.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` is a pickle that describes every
tensor (dtype, shape, strides, storage key), and ``<name>/data/<key>`` holds each storage's raw
bytes, stored uncompressed. Unpickling ``data.pkl`` with the standard unpickler would let the file
run any Python callable, so it is read with an unpickler that knows only the handful of globals a
state dict needs (the same set torch's own ``weights_only`` loader allows for plain tensors) and
maps each of them onto a harmless stand-in here. Anything else stops the read with
``UnsafeCheckpointError`` before it can run. Tensor bytes are not read here: the result says where
each tensor's bytes lie in the file, and ``checkpoint.py`` reads them one tensor at a time.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_lite.errors import ConversionError

__all__ = ["PickledTensor", "UnsafeCheckpointError", "read_torch_zip", "STORAGE_DTYPES"]

# torch.<X>Storage -> our dtype label (numpy dtype in checkpoint.DTYPES).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "DoubleStorage": "F64",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1}


class UnsafeCheckpointError(ConversionError):
    """The pickle asks for something other than tensor storage: it is refused, never run."""


class PickledTensor(NamedTuple):
    dtype: str  # label, see STORAGE_DTYPES
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements, as torch stores them
    file_offset: int  # byte offset of element [0, 0, ...] in the .bin file


class _StorageType:
    def __init__(self, label: str) -> None:
        self.label = label


class _Storage(NamedTuple):
    dtype: str
    key: str
    numel: int


class _TensorStub(NamedTuple):
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, *_rest: Any):
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("malformed tensor record (storage is not a storage reference)")
    return _TensorStub(storage, int(storage_offset), tuple(int(s) for s in size),
                       tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_rest: Any):
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    return OrderedDict(*args)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles (torch's default) spell bytes objects as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8"):
        raise UnsafeCheckpointError("malformed bytes record in pickle")
    return text.encode(encoding)


# (module, name) -> stand-in. Source: torch/_weights_only_unpickler.py (_get_allowed_globals),
# restricted to what state dicts of these models contain.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    **{("torch", name): _StorageType(label) for name, label in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self.where}: refused to load: the pickle asks for {module}.{name}, which is not "
                "tensor data (a checkpoint file should only hold tensors). The file may be "
                "malicious or not a plain state dict; get the checkpoint from a trusted source, "
                "preferably as .safetensors."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel)
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"{self.where}: refused to load: unknown persistent record")
        return _Storage(pid[1].label, str(pid[2]), int(pid[4]))


def _member_data_offset(fp: Any, info: zipfile.ZipInfo, where: str) -> int:
    if info.compress_type != zipfile.ZIP_STORED:
        raise ConversionError(f"{where}: tensor data {info.filename} is compressed; "
                              "re-save the checkpoint with torch.save or convert it to safetensors")
    fp.seek(info.header_offset)
    header = fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ConversionError(f"{where}: corrupt zip entry {info.filename}; re-download the file")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def read_torch_zip(path: Path) -> dict[str, PickledTensor]:
    """Describe every tensor of a ``torch.save`` state dict; nothing in the file is executed."""
    where = str(path)
    if not zipfile.is_zipfile(path):
        raise ConversionError(
            f"{where}: not a zip-format PyTorch file (legacy pre-1.6 format or not a checkpoint); "
            "re-save it with a recent torch or use .safetensors"
        )
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl_names = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl_names) != 1:
            raise ConversionError(f"{where}: expected one data.pkl in the archive, found "
                                  f"{len(pkl_names)}; is this a torch.save file?")
        prefix = pkl_names[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in infos:
            byteorder = zf.read(prefix + "byteorder").decode().strip()
        if byteorder != "little":
            raise ConversionError(f"{where}: big-endian checkpoint is not supported")
        obj = _RestrictedUnpickler(zf.read(pkl_names[0]), where).load()

    if not isinstance(obj, dict):
        raise ConversionError(f"{where}: the pickle is not a state dict (got {type(obj).__name__})")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]

    result: dict[str, PickledTensor] = {}
    with open(path, "rb") as fp:
        offsets: dict[str, int] = {}
        for name, value in obj.items():
            if not isinstance(value, _TensorStub):
                continue  # non-tensor entries (metadata) are not weights
            member = f"{prefix}data/{value.storage.key}"
            if member not in infos:
                raise ConversionError(f"{where}: tensor {name} refers to missing entry {member}; "
                                      "the file is truncated or corrupt, re-download it")
            if member not in offsets:
                offsets[member] = _member_data_offset(fp, infos[member], where)
            itemsize = _ITEMSIZE[value.storage.dtype]
            span = _span(value.shape, value.strides) + value.offset
            if value.shape and span > value.storage.numel:
                raise ConversionError(
                    f"{where}: tensor {name} overruns its storage; re-download it")
            if infos[member].file_size < value.storage.numel * itemsize:
                raise ConversionError(f"{where}: storage for {name} is truncated; re-download it")
            result[str(name)] = PickledTensor(
                value.storage.dtype, value.shape, value.strides,
                offsets[member] + value.offset * itemsize,
            )
    return result


def _span(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Number of storage elements a (shape, strides) view reaches."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((n - 1) * st for n, st in zip(shape, strides, strict=False))
