"""``HeaderReader`` against gguf-py's own ``GGUFReader``: the same fields, parts, values and
tensors, on the embedded model (GPT-2 BPE: tokens, types, merges) and on llama.cpp's
SentencePiece vocabulary (tokens, float scores, types); and a clear error for a header cut
inside its vocabulary. (gguf-py takes 8-12 s on the Qwen2 and Llama-3 vocabularies, which
the same code reads; they are left out to keep the suite short.)"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from llama_vendor import vocab_dir

from prometheus_lite.errors import InvalidModelFileError
from prometheus_lite.gguf_reader import HeaderReader
from prometheus_lite.hub import resolve_model
from prometheus_lite.models import read_model_info

VOCABS = ["llama-spm"]


def same_as_gguf_py(path: Path) -> None:
    ref, ours = gguf.GGUFReader(path), HeaderReader(path)
    assert list(ours.fields) == list(ref.fields)
    for name, a in ref.fields.items():
        b = ours.fields[name]
        assert (b.offset, b.name, b.types, list(b.data)) == (a.offset, a.name, a.types,
                                                             list(a.data)), name
        assert len(b.parts) == len(a.parts), name
        step = max(1, len(a.parts) // 2000)  # every part of small fields, 2,000 of a vocabulary
        for i in [*range(0, len(a.parts), step), len(a.parts) - 1]:
            x, y = a.parts[i], b.parts[i]
            assert (y.dtype, y.tobytes()) == (x.dtype, x.tobytes()), name
        assert b.contents() == a.contents(), name
        if a.types[0] == gguf.GGUFValueType.ARRAY and len(a.data) > 2:
            assert b.contents(1) == a.contents(1) and b.contents(slice(-2, None)) == \
                a.contents(slice(-2, None)), name
    assert ours.data_offset == ref.data_offset
    assert [(t.name, t.tensor_type, t.shape.tolist(), t.data_offset, t.n_bytes)
            for t in ours.tensors] == [(t.name, t.tensor_type, t.shape.tolist(),
                                        t.data_offset, t.n_bytes) for t in ref.tensors]


def test_the_embedded_model_reads_as_gguf_py_reads_it() -> None:
    same_as_gguf_py(resolve_model(None))


@pytest.mark.parametrize("name", VOCABS)
def test_real_vocabularies_read_as_gguf_py_reads_them(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = vocab_dir(tmp_path_factory.getbasetemp() / "llama-vocab")
    same_as_gguf_py(folder / f"ggml-vocab-{name}.gguf")


def test_arrays_of_every_shape_read_as_gguf_py_reads_them(tmp_path: Path) -> None:
    """Nested (gguf-py's own path here), empty, bool, float and string arrays, with a
    non-ASCII and an empty string, written by gguf-py's writer."""
    path = tmp_path / "arrays.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_array("test.empty", [])
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.floats", [0.5, -1.25])
    w.add_array("test.strings", ["é", "", "x" * 300])
    w.add_tensor("t", np.arange(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    same_as_gguf_py(path)
    assert HeaderReader(path).fields["test.strings"].contents() == ["é", "", "x" * 300]


def test_a_header_cut_inside_the_vocabulary_is_a_clear_error(tmp_path: Path) -> None:
    source = resolve_model(None)
    tokens = HeaderReader(source).fields[gguf.Keys.Tokenizer.LIST]
    middle = tokens.offset + 100_000
    assert middle < HeaderReader(source).fields[gguf.Keys.Tokenizer.TOKEN_TYPE].offset
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as fh:
        cut.write_bytes(fh.read(middle))
    with pytest.raises(InvalidModelFileError, match=r"GGUF header.*truncated or corrupt"):
        read_model_info(cut)
