"""Tokenizers at full size: Qwen2 (151,936 ids), Llama-3 (128,256) and Phi-3 (32,064).

llama.cpp ships vocab-only GGUFs of the real tokenizers with test texts and the ids the real
Hugging Face tokenizers gave for them (``models/ggml-vocab-{qwen2,llama-bpe,phi-3}.gguf`` and
``.inp``/``.out`` in llama-cpp-python's source package). Each test rebuilds the checkpoint-side
tokenizer files from the GGUF (tokenizer.json with the vocabulary, merges and added tokens; or
tokenizer.model with the pieces and scores, plus Phi-3's added tokens), converts them with our
converter, and checks: the same tokens, types and merges as llama.cpp's file; llama.cpp on our
file gives the real tokenizer's ids for every test text; and it agrees with the rebuilt
tokenizer (HF tokenizers / SentencePiece) on text that spells special tokens, kept as text.

The files are the shipped copies (``tests/llama_vendor.py``); set LLAMA_CPP_SOURCE to a
llama.cpp checkout to test against its ``models/`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("tokenizers")

import convert_fixtures as fx  # noqa: E402
from llama_vendor import vocab_dir  # noqa: E402
from prometheus_lite.convert.tokenizer import load_vocab  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vocab_dir(tmp_path_factory.mktemp("llama-vocab"))


SPECIAL_LOOKING = [
    "<|im_start|>user\nScore it.<|im_end|>\n<|im_start|>assistant\n",
    "Paris.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n[RESULT] 5",
    "<|user|>\nq<|end|>\n<|assistant|>\n<|endoftext|><|begin_of_text|>",
    "<s>[INST] x [/INST] <unk>",
]
T = gguf.TokenType


def _reference(models: Path, name: str) -> dict[str, Any]:
    return fx.read_gguf_kv(models / f"ggml-vocab-{name}.gguf")


def _cases(models: Path, name: str) -> list[tuple[str, list[int]]]:
    inp = (models / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8")
    out = (models / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    texts[-1] = texts[-1].removesuffix("\n__ggml_vocab_test__\n").removesuffix(
        "\n__ggml_vocab_test__")
    ids = [[int(x) for x in line.split()] for line in out.split("\n")[: len(texts)]]
    assert len(texts) == len(ids) > 20
    return list(zip(texts, ids, strict=True))


def _write_ours(ref: dict[str, Any], tok_dir: Path, out: Path, sentencepiece: str = "llama"
                ) -> dict[str, Any]:
    """Our converter's vocabulary for the rebuilt tokenizer, in a vocab-only GGUF carrying the
    reference file's model keys; returns its metadata."""
    n_vocab = len(ref["tokenizer.ggml.tokens"])
    config = {f"{t}_token_id": ref.get(f"tokenizer.ggml.{t}_token_id") for t in ("bos", "eos")}
    vocab = load_vocab(tok_dir, n_vocab, model_config=config, sentencepiece=sentencepiece)
    arch = ref["general.architecture"]
    w = gguf.GGUFWriter(str(out), arch)
    for key, value in ref.items():
        if key.startswith(f"{arch}."):
            (w.add_float32 if isinstance(value, float) else w.add_uint32)(key, value)
    vocab.add_to_gguf(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return fx.read_gguf_kv(out)


def _rebuild_bpe(ref: dict[str, Any], dst: Path, regex: str, *, nfc: bool, bos: bool) -> None:
    """tokenizer.json + tokenizer_config.json from a byte-level BPE vocab GGUF."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tokens, types = ref["tokenizer.ggml.tokens"], ref["tokenizer.ggml.token_type"]
    vocab = {t: i for i, (t, ty) in enumerate(zip(tokens, types, strict=True)) if ty == T.NORMAL}
    merges = [tuple(m.split(" ", 1)) for m in ref["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=not nfc))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    bos_id = ref.get("tokenizer.ggml.bos_token_id")
    added = [AddedToken(t, special=ty == T.CONTROL, normalized=False)
             for t, ty in zip(tokens, types, strict=True)
             if ty in (T.CONTROL, T.USER_DEFINED) and not t.startswith("[PAD")]
    tok.add_tokens(added)
    if bos:
        b = tokens[bos_id]  # Llama-3's tokenizer.json post-processor
        tok.post_processor = processors.TemplateProcessing(
            single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    dst.mkdir(parents=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast",
           "bos_token": tokens[bos_id] if bos else None,
           "eos_token": tokens[ref["tokenizer.ggml.eos_token_id"]]}
    if "tokenizer.chat_template" in ref:
        cfg["chat_template"] = ref["tokenizer.chat_template"]
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(("name", "regex", "nfc", "bos"), [
    ("qwen2", fx.QWEN2_REGEX, True, False),
    ("llama-bpe", fx.LLAMA3_REGEX, False, True),
])
def test_bpe_vocab_at_full_size(name, regex, nfc, bos, models, tmp_path):
    from tokenizers import Tokenizer

    ref = _reference(models, name)
    _rebuild_bpe(ref, tmp_path / "tok", regex, nfc=nfc, bos=bos)
    ours = _write_ours(ref, tmp_path / "tok", tmp_path / "ours.gguf")
    assert ours["tokenizer.ggml.model"] == "gpt2" and ours["tokenizer.ggml.pre"] == name
    assert ours["tokenizer.ggml.tokens"] == ref["tokenizer.ggml.tokens"]
    assert ours["tokenizer.ggml.merges"] == ref["tokenizer.ggml.merges"]
    for i, (mine, theirs) in enumerate(zip(ours["tokenizer.ggml.token_type"],
                                           ref["tokenizer.ggml.token_type"], strict=True)):
        pad = ref["tokenizer.ggml.tokens"][i].startswith("[PAD")
        assert mine == (T.UNUSED if pad else theirs), i  # older files made padding user-defined
    assert ours.get("tokenizer.ggml.add_bos_token", False) is bos
    llm = llama_cpp.Llama(str(tmp_path / "ours.gguf"), vocab_only=True, verbose=False)
    # the real tokenizer's ids (convert_hf_to_gguf_update.py)
    for text, want in _cases(models, name):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == want, repr(text)
    hf = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    hf.encode_special_tokens = True
    for text in [*fx.TOKENIZER_CORPUS, *SPECIAL_LOOKING]:
        want = hf.encode(text, add_special_tokens=False).ids
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == want, repr(text)


def _rebuild_phi3(ref: dict[str, Any], dst: Path) -> int:
    """tokenizer.model (the 32,000 SentencePiece pieces and scores), added_tokens.json and
    tokenizer_config.json (Phi-3-mini's added_tokens_decoder) from the Phi-3 vocab GGUF."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens, types = ref["tokenizer.ggml.tokens"], ref["tokenizer.ggml.token_type"]
    scores = ref["tokenizer.ggml.scores"]
    n_spm = 32000
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = n_spm
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id = 0, 1, 2
    m.trainer_spec.pad_id = -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    P = pb.ModelProto.SentencePiece
    for i in range(n_spm):
        kind = (P.UNKNOWN if i == 0 else P.CONTROL if i < 3 else
                P.BYTE if types[i] == T.BYTE else P.NORMAL)
        m.pieces.add(piece=tokens[i], score=0.0 if i < 3 else scores[i], type=kind)
    dst.mkdir(parents=True)
    (dst / "tokenizer.model").write_bytes(m.SerializeToString())
    added = {tokens[i]: i for i in range(n_spm, len(tokens)) if not tokens[i].startswith("[PAD")}
    (dst / "added_tokens.json").write_text(json.dumps(added))
    decoder = {str(i): {"content": tokens[i], "special": types[i] == T.CONTROL}
               for i in [0, 1, 2, *added.values()]}
    (dst / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|endoftext|>",
        "unk_token": "<unk>", "pad_token": "<|endoftext|>", "add_bos_token": True,
        "add_eos_token": False, "added_tokens_decoder": decoder,
        "chat_template": ref["tokenizer.chat_template"]}))
    return n_spm + len(added)


def test_phi3_vocab_at_full_size(models, tmp_path):
    import sentencepiece as spm

    ref = _reference(models, "phi-3")
    n_real = _rebuild_phi3(ref, tmp_path / "tok")
    ours = _write_ours(ref, tmp_path / "tok", tmp_path / "ours.gguf", sentencepiece="phi3")
    assert ours["tokenizer.ggml.model"] == "llama"
    assert ours["tokenizer.ggml.tokens"] == ref["tokenizer.ggml.tokens"]
    assert ours["tokenizer.ggml.scores"] == ref["tokenizer.ggml.scores"]
    # <unk> and <s> control, </s> user-defined (not special in Phi-3's tokenizer_config), the
    # added tokens control; the padding unused (the older reference file wrote 2 there).
    assert ours["tokenizer.ggml.token_type"][:n_real] == ref["tokenizer.ggml.token_type"][:n_real]
    assert set(ours["tokenizer.ggml.token_type"][n_real:]) == {T.UNUSED}
    llm = llama_cpp.Llama(str(tmp_path / "ours.gguf"), vocab_only=True, verbose=False)
    for text, want in _cases(models, "phi-3"):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == want, repr(text)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "tokenizer.model"))
    for text in [*fx.TOKENIZER_CORPUS, *SPECIAL_LOOKING]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == sp.encode(text), \
            repr(text)
    ids = llm.tokenize(b"<|user|>\nHi<|end|>\n<|assistant|>\n", add_bos=True, special=True)
    assert ids[:2] == [1, 32010] and 32007 in ids and 32001 in ids  # <|user|> ... <|end|>
