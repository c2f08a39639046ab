"""The checkpoint's tokenizer as GGUF metadata (``tokenizer.ggml.*``).

Two kinds, as in llama.cpp's converter (llama-cpp-python 0.3.36, ``vendor/llama.cpp/conversion``):

* SentencePiece (``tokenizer.model``), in two flavours (``arch.ArchSpec.sentencepiece``):
  "llama" (Llama-2, Mistral, Mixtral, all Prometheus models): pieces, scores and token types from
  gguf-py's ``SentencePieceVocab``, then the ``added_tokens_decoder`` of
  ``tokenizer_config.json`` applied and the list padded to the model's vocabulary size with unused
  ``[PADn]`` entries (base.py ``TextModel._create_vocab_sentencepiece``); "phi3" (Phi-3,
  Flow-Judge): the same pieces, then ``added_tokens.json``, ``added_tokens_decoder`` and
  ``tokenizer.json``'s ``added_tokens`` written over them as Phi3MiniModel.set_vocab (phi.py) does.
* Byte-level BPE (``tokenizer.json`` without byte fallback; Llama-3, Qwen2): tokens by id as
  ``TextModel.get_vocab_base`` lists them (added tokens CONTROL when special or shaped like
  ``<|...|>``, ``does_token_look_special``), merges from ``SpecialVocab``, pre-tokenizer chosen
  from the regex in the file (``BPE_PRE_TOKENIZERS``).

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

# Byte-level BPE pre-tokenizer regex (tokenizer.json's Split pattern) -> llama.cpp's
# tokenizer.ggml.pre name. Source: llama.cpp src/llama-vocab.cpp (LLAMA_VOCAB_PRE_TYPE_LLAMA3 and
# _QWEN2 regexes) and convert_hf_to_gguf_update.py (llama-bpe = meta-llama/Meta-Llama-3-8B,
# qwen2 = Qwen/Qwen1.5-7B; the Qwen2.5 tokenizers carry the same regex).
BPE_PRE_TOKENIZERS: dict[str, str] = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp's converter makes CONTROL even when not marked special.
    Source: base.py TextModel.does_token_look_special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


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
    """Tokens and types by id, as TextModel.get_vocab_base lists them (base.py)."""
    path = tok_dir / "tokenizer.json"
    tj = _read_json(path)
    model = tj.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConversionError(f"{path}: only byte-level BPE tokenizers are supported without "
                              "tokenizer.model; add the SentencePiece tokenizer.model to the "
                              "folder")
    pre = _bpe_pre(tj, tok_dir)
    by_id: dict[int, str] = {int(i): t for t, i in (model.get("vocab") or {}).items()}
    added: dict[int, dict[str, Any]] = {}
    for a in tj.get("added_tokens", []):
        by_id[int(a["id"])] = a["content"]
        added[int(a["id"])] = a
    if not by_id:
        raise ConversionError(f"{path}: no vocabulary in the file; re-download it")
    if max(by_id) >= n_vocab:
        raise ConversionError(f"{path}: token id {max(by_id)} but the model's vocab_size is "
                              f"{n_vocab}; pass the model's own tokenizer")
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]".encode())
            types.append(int(gguf.TokenType.UNUSED))
            continue
        if i in added:
            if added[i].get("special") or looks_special(text):
                types.append(int(gguf.TokenType.CONTROL))
            else:  # pre-normalize user-defined spaces (get_vocab_base, "added for Gemma")
                text = text.replace("\u2581", " ")
                types.append(int(gguf.TokenType.USER_DEFINED))
        else:
            types.append(int(gguf.TokenType.NORMAL))
        tokens.append(text.encode("utf-8"))
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


def _sentencepiece_phi3(tok_dir: Path, n_vocab: int
                        ) -> tuple[list[bytes], list[float], list[int]]:
    """Phi3MiniModel.set_vocab (phi.py): pieces by id over [PADn] placeholders, then the added
    tokens of added_tokens.json (USER_DEFINED), tokenizer_config.json's added_tokens_decoder and
    tokenizer.json's added_tokens (CONTROL when special) written over them, score -1000."""
    from sentencepiece import SentencePieceProcessor

    path = tok_dir / "tokenizer.model"
    try:
        sp = SentencePieceProcessor(model_file=str(path))
    except Exception as e:
        raise ConversionError(f"{path}: cannot be read as a SentencePiece model ({e})") from e
    if sp.vocab_size() > n_vocab:
        raise ConversionError(f"{path}: the tokenizer has {sp.vocab_size()} tokens but the "
                              f"model's vocab_size is {n_vocab}; pass the model's own tokenizer")
    T = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [int(T.UNUSED)] * n_vocab
    for i in range(sp.vocab_size()):
        tokens[i] = sp.id_to_piece(i).encode("utf-8")
        scores[i] = sp.get_score(i)
        types[i] = int(T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i)
                       else T.UNUSED if sp.is_unused(i) else T.BYTE if sp.is_byte(i)
                       else T.NORMAL)

    def put(tid: int, content: str, special: bool, source: Path) -> None:
        if not 0 <= tid < n_vocab:
            if source.name == "added_tokens.json":  # phi.py skips these with a debug message
                return
            raise ConversionError(f"{source}: added token {content!r} has id {tid}, outside "
                                  f"the model's vocab_size {n_vocab}; pass the model's tokenizer")
        tokens[tid], scores[tid] = content.encode("utf-8"), -1000.0
        types[tid] = int(T.CONTROL if special else T.USER_DEFINED)

    for content, tid in _read_json(tok_dir / "added_tokens.json").items():
        put(int(tid), content, False, tok_dir / "added_tokens.json")
    decoder = _read_json(tok_dir / "tokenizer_config.json").get("added_tokens_decoder", {})
    for key, data in decoder.items():
        put(int(key), data["content"], bool(data.get("special")), tok_dir / "tokenizer_config.json")
    for data in _read_json(tok_dir / "tokenizer.json").get("added_tokens", []):
        put(int(data["id"]), data["content"], bool(data.get("special")), tok_dir / "tokenizer.json")
    return tokens, scores, types


def load_vocab(tok_dir: Path, n_vocab: int, *, model_config: dict[str, Any],
               sentencepiece: str = "llama") -> Vocab:
    """Build the GGUF vocabulary for a model with ``n_vocab`` embedding rows (``sentencepiece``:
    the flavour of a tokenizer.model, "llama" or "phi3")."""
    if (tok_dir / "tokenizer.model").is_file():
        build = _sentencepiece_phi3 if sentencepiece == "phi3" else _sentencepiece
        tokens, scores, types = build(tok_dir, n_vocab)
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
