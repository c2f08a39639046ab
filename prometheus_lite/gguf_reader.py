"""A GGUF file's header, read with gguf-py's ``GGUFReader`` but without its per-element cost.

``gguf.GGUFReader`` makes two or three numpy views for every element of every array field
while it parses the header: for the embedded model's 49,152 tokens, their 49,152 types and
48,900 merges that is 2.3-2.8 s, most of a judge's start-up, although
prometheus-lite reads two of those elements (the BOS and EOS token texts).
:class:`HeaderReader` is the same reader with one private method replaced
(``_build_fields``): an array field is scanned once for where its elements lie, and its
parts are made when they are read. The private methods it replaces or calls
(``_build_fields``, ``_build_tensors``, ``_get_field_parts``, ``_get``, ``_get_str``) are the
same in gguf 0.17.0 to 0.19.0, the versions pyproject allows (compared), and
``tests/test_gguf_reader.py`` checks the result against ``gguf.GGUFReader`` itself.
Fields, tensors and errors are gguf-py's; a file in the other byte order, or an array of
arrays, takes gguf-py's own path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import gguf
import numpy as np

__all__ = ["HeaderReader", "TruncatedData"]

_STRING, _ARRAY = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY


class TruncatedData(ValueError):
    """The file's tensor data runs past the end of the file."""

    def __init__(self, expected_size: int) -> None:
        super().__init__(f"the tensor data runs to byte {expected_size:,}, past the file's end")
        self.expected_size = expected_size


def tensor_data_end(start_offs: int, fields: list[Any]) -> int | None:
    """Where the last tensor's data ends, from the tensor info table; None if unsure."""
    try:
        end = start_offs
        for info in fields:
            _len, _name, _n_dims, dims, raw_dtype, offset = info.parts
            qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            n_bytes = int(np.prod(dims, dtype=np.uint64)) * type_size // block
            end = max(end, start_offs + int(offset[0]) + n_bytes)
        return end
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


class _ArrayParts(Sequence):
    """An array field's ``parts`` as gguf-py lists them (the key's length, bytes and value
    type, the item type, the count, then each element's parts: a scalar's value, or a
    string's length and bytes), each made when it is read."""

    def __init__(self, reader: HeaderReader, head: list[np.ndarray], itype: gguf.GGUFValueType,
                 starts: np.ndarray | int, count: int) -> None:
        self._reader, self._head, self._itype = reader, head, itype
        self._starts, self._count = starts, count  # one offset per string, or the first scalar
        self._per = 2 if itype == _STRING else 1

    def __len__(self) -> int:
        return len(self._head) + self._per * self._count

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        n = len(self)
        if not isinstance(i, int | np.integer) or not -n <= i < n:
            raise IndexError(i)
        i = int(i) % n
        if i < len(self._head):
            return self._head[i]
        k, which = divmod(i - len(self._head), self._per)
        r = self._reader
        if self._per == 1:
            dtype = r.gguf_scalar_to_np[self._itype]
            return r._get(int(self._starts) + k * np.dtype(dtype).itemsize, dtype)
        start = int(self._starts[k])  # type: ignore[index]
        length = r._get(start, np.uint64)
        return length if which == 0 else r._get(start + 8, np.uint8, int(length[0]))

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


class HeaderReader(gguf.GGUFReader):
    """``gguf.GGUFReader`` with lazily made array elements (see the module's docstring) that
    also reports truncated tensor data, with sizes, instead of failing to reshape it (through
    the private ``_build_tensors(start_offs, fields)``; if its signature ever changes, the
    check is skipped, nothing else)."""

    def _build_tensors(self, *args: Any, **kwargs: Any) -> None:
        end = tensor_data_end(*args) if len(args) == 2 and args[1] and not kwargs else None
        if end is not None and end > len(self.data):
            raise TruncatedData(end)
        super()._build_tensors(*args, **kwargs)

    def _build_fields(self, offs: int, count: int) -> int:
        if self.byte_order != "I" or sys.byteorder != "little":
            return super()._build_fields(offs, count)
        for _ in range(int(count)):
            orig_offs = offs
            kv_klen, kv_kdata = self._get_str(offs)
            offs += int(kv_klen.nbytes + kv_kdata.nbytes)
            raw_kv_type = self._get(offs, np.uint32)
            offs += int(raw_kv_type.nbytes)
            head = [kv_klen, kv_kdata, raw_kv_type]
            name = str(bytes(kv_kdata), encoding="utf-8")
            if gguf.GGUFValueType(int(raw_kv_type[0])) == _ARRAY:
                field, size = self._array_field(orig_offs, name, head, offs)
            else:
                size, parts, idxs, types = self._get_field_parts(offs, raw_kv_type[0])
                field = gguf.ReaderField(orig_offs, name, head + parts,
                                         [i + len(head) for i in idxs], types)
            self._push_field(field, skip_sum=True)
            offs += size
        return offs

    def _array_field(self, orig_offs: int, name: str, head: list[np.ndarray],
                     offs: int) -> tuple[gguf.ReaderField, int]:
        """(the field, its value's size in bytes) of the array whose item type is at offs."""
        raw_itype = self._get(offs, np.uint32)
        alen = self._get(offs + 4, np.uint64)
        itype, n = gguf.GGUFValueType(int(raw_itype[0])), int(alen[0])
        head = [*head, raw_itype, alen]
        first = offs + 12
        if itype == _STRING:
            starts, end = self._string_starts(first, n)
        elif itype in self.gguf_scalar_to_np:
            starts = first
            end = first + n * np.dtype(self.gguf_scalar_to_np[itype]).itemsize
            if end > len(self.data):
                raise ValueError(f"array field {name!r} runs past the end of the file")
        else:  # an array of arrays: gguf-py's own (per-element) path
            size, parts, idxs, types = self._get_field_parts(offs, _ARRAY)
            base = len(head) - 2
            return gguf.ReaderField(orig_offs, name, head[:-2] + parts,
                                    [i + base for i in idxs], types), size
        per = 2 if itype == _STRING else 1
        data = range(len(head) + per - 1, len(head) + per * n, per)
        parts = _ArrayParts(self, head, itype, starts, n)
        return gguf.ReaderField(orig_offs, name, parts, data, [_ARRAY, itype]), end - offs

    def _string_starts(self, pos: int, n: int) -> tuple[np.ndarray, int]:
        """The offsets of ``n`` length-prefixed strings from ``pos``, and where they end."""
        buf, size = memoryview(self.data), len(self.data)
        if n > (size - pos) // 8:
            raise ValueError(f"{n:,} strings cannot fit in the {size - pos:,} bytes left")
        starts = np.empty(n, dtype=np.int64)
        for k in range(n):
            if pos + 8 > size:
                raise ValueError("a string array runs past the end of the file")
            starts[k] = pos
            pos += 8 + int.from_bytes(buf[pos:pos + 8], "little")
        if pos > size:
            raise ValueError("a string array runs past the end of the file")
        return starts, pos
