"""Check and describe GGUF model files.

Two jobs, neither of which imports ``llama_cpp`` (finding the file is
:mod:`prometheus_lite.hub`'s):

* :func:`validate_gguf` / :func:`read_model_info` read the GGUF header with
  :class:`prometheus_lite.gguf_reader.HeaderReader` (gguf-py's reader, without its
  per-element cost) and explain what is wrong with files that are not usable GGUFs.
* :func:`read_model_info` also records the model's judge family and prompt format, as
  decided by :mod:`prometheus_lite.judges` (the one place that maps a model to its judge;
  its functions are re-exported here).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gguf

from .errors import InvalidModelFileError
from .gguf_keys import FAMILY_KEY, PROMPT_FORMAT_KEY, SYNTHETIC_KEY
from .gguf_reader import HeaderReader, TruncatedData
from .hub import EMBEDDED_MODEL_NOTE, is_embedded_model
from .judges import (  # re-exported: the mapping used to live here
    decide_family,
    decide_prompt_format,
    describe_output,
    detect_family,
    detect_prompt_format,
    family_of_name,
    judge_family,
    prometheus_version,
    resolve_prompt_format,
)

__all__ = [
    "ModelInfo",
    "SYNTHETIC_MODEL_NOTE",
    "TensorInfo",
    "decide_family",
    "decide_prompt_format",
    "detect_family",
    "describe_output",
    "detect_prompt_format",
    "family_of_name",
    "judge_family",
    "format_info",
    "prometheus_version",
    "read_model_info",
    "resolve_prompt_format",
    "validate_gguf",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# GGUF inspection
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str  # GGML type: "Q4_K", "F32", ...
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    file_size: int  # bytes
    gguf_version: int
    architecture: str | None
    name: str | None  # general.name
    parameter_count: int  # sum of tensor element counts
    file_type: int | None  # general.file_type (llama_ftype)
    quantization: str  # "Q4_K_M", or a guess from the tensor types when file_type is absent
    tensor_type_counts: dict[str, int]
    context_length: int | None
    vocab_size: int | None
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str | None
    eos_token: str | None
    add_bos_token: bool | None
    prompt_format_key: str | None  # value of prometheus.prompt_format, if present
    prompt_format_detected: str  # "v1", "v2" or "chat"
    prompt_format_reason: str
    general: dict[str, Any] = field(default_factory=dict)  # scalar general.* metadata
    tensors: tuple[TensorInfo, ...] = ()
    is_embedded: bool = False
    synthetic: bool = False  # prometheus.synthetic: random weights, for timings only
    family_key: str | None = None  # value of prometheus.family, if present
    family: str = "prometheus"  # the judge family (families.FAMILIES)
    family_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _describe_non_gguf(head: bytes, size: int) -> tuple[str, str]:
    """(what the bytes look like, how to fix it) for a file without the GGUF magic."""
    convert = "convert the checkpoint to GGUF with `prometheus-lite convert`, or download a GGUF"
    redownload = "the download went wrong: check the URL and your token, then download again"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    legacy = {b"lmgg": "ggml", b"fmgg": "ggmf", b"tjgg": "ggjt", b"algg": "ggla", b"nsgg": "ggsn"}
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (a PyTorch .bin/.pt checkpoint is a ZIP file)", convert
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (an old-style PyTorch checkpoint)", convert
    if len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "a safetensors file", convert
    if head[:4] in legacy:
        return (
            f"a legacy GGML file (magic {legacy[head[:4]]!r}, llama.cpp's format before GGUF)",
            "download a GGUF version of the model or re-convert it with current llama.cpp",
        )
    if text.startswith(b"version https://git-lfs"):
        return (
            "a Git LFS pointer file, not the model",
            "run `git lfs pull` or download via huggingface_hub",
        )
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:256]:
        return "an HTML page (an error or login page saved instead of the model?)", redownload
    if text.startswith((b"{", b"[")):
        return "JSON text (a server error or a config file?)", redownload
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data", "decompress it first"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive", "extract it first"
    snippet = head[:60].decode("utf-8", errors="replace")
    printable = sum((ch.isprintable() and ch != "\ufffd") or ch in "\r\n\t" for ch in snippet)
    if snippet and printable / len(snippet) > 0.95:
        return f"a text file starting with {snippet[:40]!r}", "pass a .gguf model file"
    return f"unknown data (first bytes: {head[:8].hex(' ')})", "pass a .gguf model file"


def _open_gguf(path: str | os.PathLike[str]) -> tuple[Path, int, gguf.GGUFReader]:
    p = Path(path)
    if not p.exists():
        hint = " (a broken link: the cached blob is gone)" if p.is_symlink() else ""
        raise InvalidModelFileError(f"Model file not found: {p}{hint}. Check the path.")
    if p.is_dir():
        raise InvalidModelFileError(f"{p} is a directory; pass the .gguf file inside it.")
    size = p.stat().st_size
    if size == 0:
        raise InvalidModelFileError(
            f"{p} is empty (0 bytes): an interrupted download or conversion. Delete it and "
            "download or convert the model again."
        )
    with p.open("rb") as fh:
        head = fh.read(512)
    if head[:4] != b"GGUF":
        what, fix = _describe_non_gguf(head, size)
        raise InvalidModelFileError(f"{p} is not a GGUF file: it looks like {what}. Fix: {fix}.")
    if size < 24:
        raise InvalidModelFileError(f"{p} is truncated: only {size} bytes, not even a GGUF header.")
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0:  # written for the other byte order
        version = int.from_bytes(head[4:8], "big")
    if version not in (2, 3):
        age = "an early 2023 format" if version == 1 else "unknown to this gguf library"
        raise InvalidModelFileError(
            f"{p} is GGUF version {version} ({age}); versions 2 and 3 are supported. Download "
            "a current GGUF of the model or re-convert it (or upgrade: pip install -U gguf)."
        )
    try:
        reader = HeaderReader(p)
    except Exception as exc:  # the reader raises ValueError/IndexError/KeyError on bad data
        raise _diagnose(p, size, exc) from exc
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
    if end > size:
        raise _truncated(p, size, end)
    return p, size, reader


def _truncated(p: Path, size: int, expected: int) -> InvalidModelFileError:
    return InvalidModelFileError(
        f"{p} is truncated: its tensor data extends to byte {expected:,} but the file has "
        f"{size:,} bytes ({size / expected:.0%}). The download or conversion was interrupted: "
        "delete the file and download or convert it again."
    )


def _diagnose(p: Path, size: int, exc: Exception) -> InvalidModelFileError:
    if isinstance(exc, TruncatedData):
        return _truncated(p, size, exc.expected_size)
    if "GGMLQuantizationType" in str(exc):
        return InvalidModelFileError(
            f"{p} uses a tensor type this gguf library does not know ({exc}): it was written "
            "by a newer llama.cpp. Upgrade with `pip install -U gguf`."
        )
    return InvalidModelFileError(
        f"Cannot read the GGUF header of {p} ({type(exc).__name__}: {exc}). The file has "
        f"{size:,} bytes and is probably truncated or corrupt: download or convert it again."
    )


def validate_gguf(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InvalidModelFileError` saying what is wrong if ``path`` is no usable GGUF."""
    _open_gguf(path)


def _decode(raw: Any) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


def _scalar(reader: gguf.GGUFReader, key: str) -> Any:
    """A scalar or string field's value; None if missing or an array."""
    f = reader.get_field(key)
    if f is None or not f.types or f.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    if f.types[0] == gguf.GGUFValueType.STRING:
        return _decode(f.parts[-1])
    return f.parts[-1].tolist()[0]


def _token_text(reader: gguf.GGUFReader, token_id: int | None) -> str | None:
    """One entry of tokenizer.ggml.tokens, decoded alone (the vocab is not materialised)."""
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if token_id is None or tokens is None or not 0 <= token_id < len(tokens.data):
        return None
    return _decode(tokens.parts[tokens.data[token_id]])


def _quantization_name(file_type: int | None, type_counts: Counter[str], tensors: list[Any]) -> str:
    if file_type is not None:
        try:
            name = gguf.LlamaFileType(file_type).name
        except ValueError:
            return f"file type {file_type}"
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    weights = Counter(t.tensor_type.name for t in tensors if len(t.shape) >= 2)
    if not weights:
        return max(type_counts, key=type_counts.__getitem__, default="unknown")
    return f"{weights.most_common(1)[0][0]} (guessed from tensor types)"


def _general_fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    values = {k: _scalar(reader, k) for k in reader.fields if k.startswith("general.")}
    return {k: v for k, v in values.items() if v is not None}


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Validate a GGUF file and read what prometheus-lite needs to know about it."""
    p, size, reader = _open_gguf(path)
    arch = _scalar(reader, gguf.Keys.General.ARCHITECTURE)
    file_type = _scalar(reader, gguf.Keys.General.FILE_TYPE)
    type_counts = Counter(t.tensor_type.name for t in reader.tensors)
    bos = _scalar(reader, gguf.Keys.Tokenizer.BOS_ID)
    eos = _scalar(reader, gguf.Keys.Tokenizer.EOS_ID)
    vocab = _scalar(reader, f"{arch}.vocab_size") if arch else None
    if vocab is None and (tokens := reader.get_field(gguf.Keys.Tokenizer.LIST)) is not None:
        vocab = len(tokens.data)
    fmt_key = _scalar(reader, PROMPT_FORMAT_KEY)
    family_key = _scalar(reader, FAMILY_KEY)
    add_bos = _scalar(reader, gguf.Keys.Tokenizer.ADD_BOS)
    info = ModelInfo(
        path=p,
        file_size=size,
        gguf_version=int(_scalar(reader, "GGUF.version") or 0),
        architecture=arch,
        name=_scalar(reader, gguf.Keys.General.NAME),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        file_type=file_type,
        quantization=_quantization_name(file_type, type_counts, reader.tensors),
        tensor_type_counts=dict(type_counts.most_common()),
        context_length=_scalar(reader, f"{arch}.context_length") if arch else None,
        vocab_size=vocab,
        chat_template=_scalar(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE),
        bos_token_id=bos,
        eos_token_id=eos,
        bos_token=_token_text(reader, bos),
        eos_token=_token_text(reader, eos),
        add_bos_token=None if add_bos is None else bool(add_bos),
        prompt_format_key=None if fmt_key is None else str(fmt_key),
        prompt_format_detected="chat",
        prompt_format_reason="",
        general=_general_fields(reader),
        tensors=tuple(
            TensorInfo(
                name=t.name,
                type_name=t.tensor_type.name,
                shape=tuple(int(d) for d in t.shape),
                n_elements=int(t.n_elements),
                n_bytes=int(t.n_bytes),
            )
            for t in reader.tensors
        ),
        is_embedded=is_embedded_model(p),
        synthetic=bool(_scalar(reader, SYNTHETIC_KEY)),
        family_key=None if family_key is None else str(family_key),
    )
    family, family_reason = detect_family(info)
    info = replace(info, family=family, family_reason=family_reason)
    fmt, reason = detect_prompt_format(info)
    return replace(info, prompt_format_detected=fmt, prompt_format_reason=reason)


# ---------------------------------------------------------------------------------------
# Human-readable summary
# ---------------------------------------------------------------------------------------


def _human_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.2f} {unit}"


def _human_count(n: int) -> str:
    for div, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


SYNTHETIC_MODEL_NOTE = (
    "SYNTHETIC model (prometheus.synthetic = true): a release's shape and tokenizer with "
    "random weights, made by `prometheus-lite convert --synthetic`. Its timings and memory are "
    "the real model's; its grades mean nothing."
)


def format_info(info: ModelInfo, *, tensors: bool = False, cpu_backend: str | None = None,
                runtime: str | None = None) -> str:
    """A summary for ``prometheus-lite info`` (``tensors=True`` adds the tensor table;
    ``cpu_backend`` a line on how llama.cpp's CPU backend loads models here, ``runtime``
    one on the llama-cpp-python build)."""
    types = ", ".join(f"{n} {t}" for t, n in info.tensor_type_counts.items())
    tokens = []
    for label, tid, text in (
        ("bos", info.bos_token_id, info.bos_token),
        ("eos", info.eos_token_id, info.eos_token),
    ):
        if tid is not None:
            tokens.append(f"{label} {tid} {text!r}" if text is not None else f"{label} {tid}")
    template = f"yes ({len(info.chat_template)} chars)" if info.chat_template else "none"
    rows = [
        ("File", f"{info.path} ({_human_bytes(info.file_size)}, GGUF v{info.gguf_version})"),
        ("Name", info.name or "-"),
        ("Architecture", info.architecture or "-"),
        ("Parameters", f"{_human_count(info.parameter_count)} ({info.parameter_count:,})"),
        ("Quantization", f"{info.quantization} (tensors: {types})"),
        ("Context length", str(info.context_length) if info.context_length else "-"),
        (
            "Vocabulary",
            f"{info.vocab_size or '-'} tokens" + (f" ({', '.join(tokens)})" if tokens else ""),
        ),
        ("Chat template", template),
        ("Prompt format", f"{info.prompt_format_detected}: {info.prompt_format_reason}"),
        ("Judge family", f"{info.family}: {info.family_reason}"),
        ("Output format", describe_output(judge_family(info.prompt_format_detected, info.family))),
    ]
    if runtime is not None:
        rows.append(("Runtime", runtime))
    if cpu_backend is not None:
        rows.append(("CPU backend", cpu_backend))
    lines = [f"{label + ':':<16}{value}" for label, value in rows]
    if info.is_embedded:
        lines += ["", "Note: " + EMBEDDED_MODEL_NOTE]
    if info.synthetic:
        lines += ["", "Note: " + SYNTHETIC_MODEL_NOTE]
    if tensors:
        width = max((len(t.name) for t in info.tensors), default=4)
        lines += ["", f"{'tensor':<{width}}  {'type':<8}  {'shape':<20}  size"]
        lines += [
            f"{t.name:<{width}}  {t.type_name:<8}  {'x'.join(map(str, t.shape)):<20}  "
            f"{_human_bytes(t.n_bytes)}"
            for t in info.tensors
        ]
    return "\n".join(lines)
