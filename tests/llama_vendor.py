"""llama.cpp's real vocabularies, chat templates and tokenizer test texts, offline.

The vocabularies and templates ship in the repository (``convert/vocab/``, for
``convert --synthetic``), the test texts in ``tests/data/llama-vocab/``; all are copied
unchanged from llama-cpp-python 0.3.36's source package. ``LLAMA_CPP_SOURCE`` (a llama.cpp
checkout) takes precedence when set, to test against another llama.cpp.
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "convert" / "vocab"
TEXTS = ROOT / "tests" / "data" / "llama-vocab"


def _source() -> Path | None:
    path = os.environ.get("LLAMA_CPP_SOURCE")
    return Path(path) / "models" if path else None


def chat_template(name: str) -> str:
    """A chat template from llama.cpp's ``models/templates/`` (e.g.
    ``Qwen-Qwen2.5-7B-Instruct.jinja``)."""
    source = _source()
    path = source / "templates" / name if source is not None else SHIPPED / name
    return path.read_text(encoding="utf-8")


def vocab_dir(scratch: Path) -> Path:
    """A folder holding ``ggml-vocab-NAME.gguf`` with its ``.inp``/``.out`` for the four
    shipped vocabularies (llama-spm, llama-bpe, qwen2, phi-3), made in ``scratch``."""
    source = _source()
    if source is not None:
        return source
    scratch.mkdir(parents=True, exist_ok=True)
    for xz in sorted(SHIPPED.glob("ggml-vocab-*.gguf.xz")):
        gguf = scratch / xz.name.removesuffix(".xz")
        if not gguf.is_file():
            gguf.write_bytes(lzma.decompress(xz.read_bytes()))
        for ext in (".inp", ".out"):
            (scratch / (gguf.name + ext)).write_bytes((TEXTS / (gguf.name + ext)).read_bytes())
    return scratch
