"""Write GGUF files tensor by tensor, atomically; read back their tensor tables.

gguf-py's ``GGUFWriter`` writes the header, the metadata and the tensor-info table; the tensor data
is then streamed here chunk by chunk (each planned tensor yields its encoded bytes in pieces), so
neither the writer nor this module ever holds more than one chunk of output. The file is written
under a temporary name next to the target (``<target>.partial-<pid>``) and renamed into place only
after everything is written and synced: an interrupted run leaves no file at the target path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from prometheus_lite.errors import ConversionError
from prometheus_lite.gguf_reader import HeaderReader

__all__ = [
    "PlannedTensor",
    "tensor_nbytes",
    "write_gguf",
    "atomic_path",
    "check_free_space",
    "TensorRow",
    "read_tensor_table",
]

logger = logging.getLogger(__name__)


def tensor_nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    """Bytes of a tensor of logical ``shape`` (numpy order) stored as ``qtype``."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        raise ValueError(f"row size {shape[-1]} is not a multiple of {qtype.name}'s block {block}")
    return int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * type_size


@dataclass
class PlannedTensor:
    """One output tensor: its GGUF name, logical shape, type, and a producer of encoded chunks."""

    name: str
    shape: tuple[int, ...]  # numpy order (outermost first); GGUF stores it reversed
    qtype: gguf.GGMLQuantizationType
    chunks: Callable[[], Iterator[np.ndarray]]  # encoded pieces, in file order

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.qtype)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``, else it goes."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        with contextlib.suppress(OSError):
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Fail early, before any writing, when ``folder``'s file system lacks ``needed`` bytes."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConversionError(
            f"{folder}: not enough disk space for {what}: about {needed / 1e9:.2f} GB needed, "
            f"{free / 1e9:.2f} GB free. Free some space or write elsewhere with -o"
        )


def write_gguf(target: Path, writer: gguf.GGUFWriter, tensors: list[PlannedTensor], *,
               progress: bool = False) -> None:
    """Write ``writer``'s metadata and ``tensors`` (in order) to ``target`` atomically."""
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    total = sum(t.nbytes for t in tensors)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=target.name, file=sys.stderr)
    try:
        with atomic_path(target) as tmp:
            try:
                writer.write_header_to_file(path=tmp)
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                assert writer.fout is not None and len(writer.fout) == 1
                fout = writer.fout[0]
                writer.write_padding(fout, fout.tell())
                for t in tensors:
                    written = 0
                    for piece in t.chunks():
                        piece = np.ascontiguousarray(piece)
                        fout.write(memoryview(piece).cast("B"))
                        written += piece.nbytes
                        if bar is not None:
                            bar.update(piece.nbytes)
                    if written != t.nbytes:
                        raise ConversionError(f"internal error: {t.name} produced {written} bytes, "
                                              f"planned {t.nbytes}")
                    writer.write_padding(fout, written)
                fout.flush()
            finally:
                writer.close()
    finally:
        if bar is not None:
            bar.close()


@dataclass(frozen=True)
class TensorRow:
    name: str
    type: str
    shape: tuple[int, ...]  # GGUF order (innermost first), as llama.cpp prints it
    nbytes: int


def read_tensor_table(path: str | os.PathLike[str]) -> list[TensorRow]:
    """Tensors of a GGUF file with type, shape and size (for ``info --tensors``)."""
    try:
        reader = HeaderReader(path)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable GGUF file ({e})") from e
    return [
        TensorRow(t.name, t.tensor_type.name, tuple(int(x) for x in t.shape), int(t.n_bytes))
        for t in reader.tensors
    ]
