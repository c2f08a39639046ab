"""The checkpoint's tokenizer as GGUF metadata (``tokenizer.ggml.*``).

Two kinds, as in llama.cpp's ``convert_hf_to_gguf.py``:

* SentencePiece (``tokenizer.model``; Llama-2, Mistral, Mixtral, all Prometheus models): pieces,
  scores and token types from gguf-py's ``SentencePieceVocab``, then the ``added_tokens_decoder`` of
  ``tokenizer_config.json`` applied and the list padded to the model's vocabulary size with unused
  ``[PADn]`` entries (``TextModel._create_vocab_sentencepiece``).
* Byte-level BPE (``tokenizer.json`` without byte fallback; Llama-3 style): tokens from gguf-py's
  ``BpeVocab``, merges from ``SpecialVocab``, pre-tokenizer chosen from the regex in the file.

Special token ids, BOS/EOS behaviour and the chat template come from gguf-py's ``SpecialVocab``
(``convert.inspect_checkpoint`` adds Llama-2-chat's template for v1 checkpoints without one).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from prometheus_lite.errors import ConversionError

__all__ = ["Vocab", "TOKENIZER_FILES", "resolve_tokenizer_dir", "load_vocab", "BPE_PRE_TOKENIZERS"]

logger = logging.getLogger(__name__)

# Files that make up a Hugging Face tokenizer (what --tokenizer REPO downloads).
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")

# Byte-level BPE pre-tokenizer regex -> llama.cpp's tokenizer.ggml.pre name.
# Source: llama.cpp src/llama-vocab.cpp (LLAMA_VOCAB_PRE_TYPE_LLAMA3 regex) and
# convert_hf_to_gguf_update.py (llama-bpe = meta-llama/Meta-Llama-3-8B).
BPE_PRE_TOKENIZERS: dict[str, str] = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str  # tokenizer.ggml.pre
    tokens: list[bytes]
    scores: list[float] | None
    types: list[int]
    special: gguf.SpecialVocab
    source: Path

    def add_to_gguf(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        self.special.add_to_gguf(writer, quiet=True)


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.model").is_file() or (path / "tokenizer.json").is_file()


def resolve_tokenizer_dir(checkpoint_dir: Path, tokenizer: str | None) -> Path:
    """Folder holding the tokenizer: ``--tokenizer`` (folder or hub repo id) or the checkpoint."""
    if tokenizer is None:
        if _has_tokenizer(checkpoint_dir):
            return checkpoint_dir
        raise ConversionError(
            f"{checkpoint_dir}: the checkpoint has no tokenizer (no tokenizer.model or "
            "tokenizer.json). Pass --tokenizer with a folder or Hugging Face repo id holding the "
            "base model's tokenizer; for prometheus-13b-v1.0 that is the Llama-2 tokenizer, e.g. "
            "--tokenizer meta-llama/Llama-2-13b-chat-hf"
        )
    local = Path(tokenizer).expanduser()
    if local.is_dir():
        if not _has_tokenizer(local):
            raise ConversionError(f"{local}: no tokenizer.model or tokenizer.json in this folder; "
                                  "point --tokenizer at the folder that holds them")
        return local
    if local.exists() or tokenizer.count("/") != 1:
        raise ConversionError(f"--tokenizer {tokenizer}: not a folder and not a Hugging Face repo "
                              "id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        fetched = Path(snapshot_download(tokenizer, allow_patterns=list(TOKENIZER_FILES)))
    except Exception as e:  # network, auth (gated Llama repos), unknown repo
        raise ConversionError(
            f"--tokenizer {tokenizer}: could not download the tokenizer from the Hugging Face Hub "
            f"({type(e).__name__}: {e}). Log in with `huggingface-cli login` for gated repos, or "
            "download it yourself and pass the folder"
        ) from e
    if not _has_tokenizer(fetched):
        raise ConversionError(f"--tokenizer {tokenizer}: the repo has no tokenizer.model or "
                              "tokenizer.json")
    return fetched


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e


def _sentencepiece(tok_dir: Path, n_vocab: int) -> tuple[list[bytes], list[float], list[int]]:
    try:
        spv = gguf.vocab.SentencePieceVocab(tok_dir)
    except Exception as e:
        raise ConversionError(f"{tok_dir / 'tokenizer.model'}: cannot be read as a SentencePiece "
                              f"model ({e})") from e
    tokens, scores, types = [], [], []
    for text, score, ttype in spv.all_tokens():
        tokens.append(text)
        scores.append(float(score))
        types.append(int(ttype))
    if len(tokens) > n_vocab:
        raise ConversionError(
            f"{tok_dir / 'tokenizer.model'}: the tokenizer has {len(tokens)} tokens but the "
            f"model's vocab_size is {n_vocab}; this is not the model's tokenizer, pass the right "
            "one with --tokenizer"
        )
    # tokenizer_config.json's added_tokens_decoder (id -> {content, special}).
    decoder = _read_json(tok_dir / "tokenizer_config.json").get("added_tokens_decoder", {})
    for key, data in decoder.items():
        tid, content = int(key), data.get("content", "")
        if tid >= n_vocab:
            continue
        while len(tokens) <= tid:
            tokens.append(f"[PAD{len(tokens)}]".encode())
            scores.append(-1000.0)
            types.append(int(gguf.TokenType.UNUSED))
        if types[tid] in (gguf.TokenType.UNKNOWN, gguf.TokenType.BYTE):
            continue
        if data.get("special"):
            types[tid] = int(gguf.TokenType.CONTROL)
        else:
            content = content.replace("\u2581", " ")
            types[tid] = int(gguf.TokenType.USER_DEFINED)
        tokens[tid] = content.encode("utf-8")
        scores[tid] = -1000.0
    # Pad to the embedding rows (llama.cpp requires n_vocab tokens).
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-10000.0)
        types.append(int(gguf.TokenType.UNUSED))
    return tokens, scores, types


def _bpe(tok_dir: Path, n_vocab: int) -> tuple[list[bytes], list[int], str]:
    tj = _read_json(tok_dir / "tokenizer.json")
    model = tj.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConversionError(f"{tok_dir / 'tokenizer.json'}: only byte-level BPE tokenizers are "
                              "supported without tokenizer.model; add the SentencePiece "
                              "tokenizer.model to the folder")
    pre = _bpe_pre(tj, tok_dir)
    try:
        bpe = gguf.vocab.BpeVocab(tok_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConversionError(
            f"{tok_dir / 'tokenizer.json'}: unsupported BPE tokenizer ({e})") from e
    special_added = {a["content"] for a in tj.get("added_tokens", []) if a.get("special")}
    tokens, types = [], []
    for text, _score, ttype in bpe.all_tokens():
        tokens.append(text if isinstance(text, bytes) else str(text).encode("utf-8"))
        if ttype == gguf.TokenType.CONTROL and tokens[-1].decode("utf-8") not in special_added:
            ttype = gguf.TokenType.USER_DEFINED
        types.append(int(ttype))
    # Added tokens that duplicate vocab entries keep their id; mark special ones as control.
    by_text = {t: i for i, t in enumerate(tokens)}
    for a in tj.get("added_tokens", []):
        i = by_text.get(a["content"].encode("utf-8"))
        if i is not None and a.get("special"):
            types[i] = int(gguf.TokenType.CONTROL)
    if len(tokens) > n_vocab:
        raise ConversionError(f"{tok_dir / 'tokenizer.json'}: {len(tokens)} tokens but the model's "
                              f"vocab_size is {n_vocab}; pass the model's own tokenizer")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
    return tokens, types, pre


def _bpe_pre(tj: dict[str, Any], tok_dir: Path) -> str:
    pt = tj.get("pre_tokenizer") or {}
    parts = pt.get("pretokenizers", [pt]) if pt.get("type") == "Sequence" else [pt]
    for p in parts:
        if p.get("type") == "Split":
            regex = (p.get("pattern") or {}).get("Regex")
            if regex in BPE_PRE_TOKENIZERS:
                return BPE_PRE_TOKENIZERS[regex]
            raise ConversionError(f"{tok_dir / 'tokenizer.json'}: unknown pre-tokenizer regex "
                                  f"{regex!r}; supported: {sorted(BPE_PRE_TOKENIZERS.values())}")
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt2"
    raise ConversionError(f"{tok_dir / 'tokenizer.json'}: unsupported pre-tokenizer {pt!r}")


def load_vocab(tok_dir: Path, n_vocab: int, *, model_config: dict[str, Any]) -> Vocab:
    """Build the GGUF vocabulary for a model with ``n_vocab`` embedding rows."""
    if (tok_dir / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece(tok_dir, n_vocab)
        model, pre, is_spm = "llama", "default", True
    else:
        tokens, types, pre = _bpe(tok_dir, n_vocab)
        scores, model, is_spm = None, "gpt2", False

    special = gguf.SpecialVocab(tok_dir, load_merges=not is_spm, n_vocab=len(tokens))
    # Ids the tokenizer folder does not give come from the model's config, then SentencePiece.
    for typ in ("bos", "eos", "pad", "unk"):
        tid = model_config.get(f"{typ}_token_id")
        if isinstance(tid, list):
            tid = tid[0] if tid else None
        special._set_special_token(typ, tid)
    if is_spm:
        from sentencepiece import SentencePieceProcessor

        sp = SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
        for typ, tid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id())):
            if tid >= 0:
                special._set_special_token(typ, tid)
        # Llama/Mistral SentencePiece tokenizers prepend BOS and do not append EOS.
        special.add_special_token.setdefault("bos", True)
        special.add_special_token.setdefault("eos", False)
    return Vocab(model, pre, tokens, scores, types, special, tok_dir)
