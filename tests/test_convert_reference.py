"""Converted GGUF files against an independent reference: transformers (logits, greedy text) and
Hugging Face tokenizers / SentencePiece (tokenization).

Tiny checkpoints of each supported family are built with transformers, saved in the layouts the
Prometheus releases use, converted with the CLI, run with llama.cpp (llama-cpp-python) and compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

import convert_fixtures as fx  # noqa: E402
from llama_ref import reference_llama  # noqa: E402
from prometheus_lite.convert import arch  # noqa: E402
from prometheus_lite.convert.cli import convert_command  # noqa: E402

from prometheus_lite.gguf_keys import PROMPT_FORMAT_KEY  # noqa: E402


@dataclass
class Case:
    kind: str  # llama (MHA) | mistral (GQA) | mixtral (2 experts, GQA)
    fmt: str  # safetensors | bin
    dtype: str  # float32 | bfloat16 | float16
    shards: int
    own_tokenizer: bool  # False: tokenizer passed with --tokenizer, like prometheus-13b-v1.0

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.fmt}-{self.dtype}-{self.shards}shard"


CASES = [
    Case("llama", "bin", "float32", 2, own_tokenizer=False),
    Case("llama", "safetensors", "bfloat16", 1, own_tokenizer=True),
    Case("mistral", "safetensors", "bfloat16", 2, own_tokenizer=True),
    Case("mistral", "bin", "float16", 1, own_tokenizer=True),
    Case("mixtral", "safetensors", "bfloat16", 2, own_tokenizer=True),
    Case("mixtral", "bin", "float32", 1, own_tokenizer=True),
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return fx.train_sentencepiece(tmp_path_factory.mktemp("spm"))


@dataclass
class Converted:
    case: Case
    checkpoint: Path
    f32: Path
    f16: Path
    reference: Any  # transformers model loaded from the checkpoint, float32
    convert_args: list[str]


def _convert(ckpt: Path, out: Path, *args: str) -> list[Path]:
    result = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return [Path(p) for p in result.stdout.split()]


_BUILT: dict[str, Converted] = {}


def _build(case: Case, root: Path, spm_model: Path) -> Converted:
    """Build, save and convert one case (once per module run)."""
    if case.id in _BUILT:
        return _BUILT[case.id]
    root = root / case.id
    model = fx.build_model(case.kind, seed=CASES.index(case))
    ckpt = fx.save_checkpoint(model, root / f"tiny-{case.kind}", fmt=case.fmt, dtype=case.dtype,
                              shards=case.shards)
    extra: list[str] = []
    if case.own_tokenizer:
        fx.write_tokenizer_files(ckpt, spm_model, chat_template=fx.MISTRAL_TEMPLATE)
    else:
        tok = root / "llama2-tokenizer"
        fx.write_tokenizer_files(tok, spm_model)
        extra = ["--tokenizer", str(tok)]
    [f32] = _convert(ckpt, root / "out", "--outtype", "f32", *extra)
    [f16] = _convert(ckpt, root / "out", "--outtype", "f16", *extra)
    _BUILT[case.id] = Converted(case, ckpt, f32, f16, fx.load_reference(ckpt), extra)
    return _BUILT[case.id]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    _BUILT.clear()
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.id)
def converted(request, build_root, spm_model) -> Converted:
    return _build(request.param, build_root, spm_model)


def _ids(spm_model: Path) -> list[int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    text = "###Feedback: The response is helpful. [RESULT] 4\n Ünïcödé 🙂 12345"
    return [1] + sp.encode(text)[:40]


def _llama(path: Path) -> Any:
    # F32 KV cache: the comparison measures the conversion, not llama.cpp's cache rounding.
    # reference_llama: loads as the Judge does on this CPU (no AMX crash; prometheus_lite.native)
    return reference_llama(path, logits_all=True, n_ctx=96, n_batch=96, n_threads=2,
                           type_k=0, type_v=0, verbose=False)


def _llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    llm = _llama(path)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / (ref.max() - ref.min()))


def test_f32_logits_match_transformers(converted, spm_model):
    ids = _ids(spm_model)
    ref = fx.reference_logits(converted.reference, ids)
    got = _llama_logits(converted.f32, ids)
    assert got.shape == ref.shape
    assert _relative_error(got, ref) < 1e-3


def test_f16_logits_match_transformers(converted, spm_model):
    ids = _ids(spm_model)
    ref = fx.reference_logits(converted.reference, ids)
    assert _relative_error(_llama_logits(converted.f16, ids), ref) < 1e-2


def test_f32_greedy_continuation_is_identical(converted, spm_model):
    prompt = _ids(spm_model)[:12]
    want = fx.reference_greedy(converted.reference, prompt, 16)
    llm = _llama(converted.f32)
    llm.eval(prompt)
    got = []
    for _ in range(16):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        got.append(tok)
        llm.eval([tok])
    assert got == want


def test_metadata(converted):
    reader = gguf.GGUFReader(converted.f16)
    kv = {f.name: f.contents() for f in reader.fields.values()}
    case = converted.case
    assert kv["general.architecture"] == "llama"
    assert kv["general.name"] == f"tiny-{case.kind}"
    assert kv["tokenizer.ggml.model"] == "llama"
    assert kv["tokenizer.ggml.add_bos_token"] is True
    assert kv.get("tokenizer.ggml.add_eos_token", False) is False
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    types = kv["tokenizer.ggml.token_type"]
    assert types[0] == gguf.TokenType.UNKNOWN and types[1] == gguf.TokenType.CONTROL
    assert types.count(gguf.TokenType.BYTE) == 256
    if case.own_tokenizer:
        assert kv["tokenizer.chat_template"] == fx.MISTRAL_TEMPLATE
    else:
        assert kv["tokenizer.chat_template"] == arch.LLAMA2_CHAT_TEMPLATE
    assert kv[PROMPT_FORMAT_KEY] == ("v1" if case.kind == "llama" else "v2")
    tensors = {t.name: t for t in reader.tensors}
    for t in reader.tensors:
        if len(t.shape) == 1 or "ffn_gate_inp" in t.name:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
    if case.kind == "mixtral":
        assert kv["llama.expert_count"] == 2 and kv["llama.expert_used_count"] == 2
        assert tuple(tensors["blk.0.ffn_gate_exps.weight"].shape) == (64, 128, 2)
        assert tuple(tensors["blk.0.ffn_down_exps.weight"].shape) == (128, 64, 2)
        assert "blk.0.ffn_gate.weight" not in tensors


def test_tokenization_matches_hugging_face(build_root, spm_model):
    """llama.cpp on the GGUF vs HF tokenizers (Llama-2-style tokenizer.json) and SentencePiece."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    converted = _build(CASES[2], build_root, spm_model)
    tj = fx.write_llama2_tokenizer_json(converted.checkpoint)
    hf = Tokenizer.from_file(str(tj))
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    llm = llama_cpp.Llama(str(converted.f16), vocab_only=True, verbose=False)
    corpus = fx.TOKENIZER_CORPUS + [" ".join(fx.TOKENIZER_CORPUS), "\n\n".join(fx.TOKENIZER_CORPUS)]
    for text in corpus:
        mine = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        assert mine == hf.encode(text).ids, repr(text)
        assert mine == [1] + sp.encode(text), repr(text)
        decoded = llm.detokenize(mine[1:]).decode("utf-8")
        assert decoded.removeprefix(" ") == text, repr(text)  # minus SentencePiece's dummy prefix


@pytest.mark.parametrize("index", [0, 4], ids=[CASES[0].id, CASES[4].id])
def test_q8_0_and_llama_cpp_quant_levels_run(index, build_root, spm_model, tmp_path):
    converted = _build(CASES[index], build_root, spm_model)
    ids = _ids(spm_model)
    ref = fx.reference_logits(converted.reference, ids)
    [q8] = _convert(converted.checkpoint, tmp_path, "--outtype", "q8_0", *converted.convert_args)
    assert _relative_error(_llama_logits(q8, ids), ref) < 5e-2
    # --quant: llama.cpp's quantizer from an intermediate (BF16 for the bf16 MoE checkpoint).
    [q4] = _convert(converted.checkpoint, tmp_path / "q", "--quant", "Q4_K_M",
                    "--engine", "llama.cpp", *converted.convert_args)
    assert q4.name == f"tiny-{converted.case.kind}.Q4_K_M.gguf"
    assert [p.name for p in (tmp_path / "q").iterdir()] == [q4.name]  # intermediate removed
    got = _llama_logits(q4, ids)
    assert np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


# ---------------------------------------------------------------------------- other shapes

SHAPES = {
    # Mistral-style explicit head_dim (q_dim 128 != hidden 64): attention.key_length is written.
    "head_dim_32": ("mistral", dict(head_dim=32)),
    # Tied embeddings: no output.weight; llama.cpp reuses token_embd.
    "tied_embeddings": ("llama", dict(tie_word_embeddings=True)),
    # Embedding rows beyond the tokenizer (padded vocabulary) and a row size q8_0 cannot take.
    "padded_vocab_odd_ffn": ("mixtral", dict(vocab_size=fx.SPM_VOCAB + 40, intermediate_size=80)),
    # One layer, eight heads of 8, four KV heads.
    "narrow_heads": ("mistral", dict(num_hidden_layers=1, num_attention_heads=8,
                                     num_key_value_heads=4)),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_other_shapes_match_transformers(shape, tmp_path, spm_model):
    kind, overrides = SHAPES[shape]
    vocab = overrides.pop("vocab_size", fx.SPM_VOCAB)
    model = fx.build_model(kind, vocab=vocab, seed=7, **overrides)
    ckpt = fx.save_checkpoint(model, tmp_path / f"tiny-{shape}", dtype="bfloat16")
    fx.write_tokenizer_files(ckpt, spm_model)
    [f32] = _convert(ckpt, tmp_path / "out", "--outtype", "f32")
    [q8] = _convert(ckpt, tmp_path / "out", "--outtype", "q8_0")
    ids = _ids(spm_model)
    ref = fx.reference_logits(fx.load_reference(ckpt), ids)
    assert _relative_error(_llama_logits(f32, ids), ref) < 1e-3
    assert _relative_error(_llama_logits(q8, ids), ref) < 5e-2
    tensors = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q8).tensors}
    kv = {f.name: f.contents() for f in gguf.GGUFReader(f32).fields.values()}
    assert len(kv["tokenizer.ggml.tokens"]) == vocab
    if shape == "tied_embeddings":
        assert "output.weight" not in tensors
    if shape == "head_dim_32":
        assert kv["llama.attention.key_length"] == 32 and kv["llama.rope.dimension_count"] == 32
    if shape == "padded_vocab_odd_ffn":
        assert kv["tokenizer.ggml.tokens"][-1] == f"[PAD{vocab - 1}]"
        assert tensors["blk.0.ffn_down_exps.weight"] == "F16"  # 80 is not a multiple of 32
        assert tensors["blk.0.ffn_up_exps.weight"] == "Q8_0"


# ---------------------------------------------------------------------------- BPE tokenizer.json

LLAMA3_REGEX = next(iter(__import__(
    "prometheus_lite.convert.tokenizer", fromlist=["BPE_PRE_TOKENIZERS"]).BPE_PRE_TOKENIZERS))


def _train_bpe(dst: Path) -> int:
    """A Llama-3-style byte-level BPE tokenizer.json (same pre-tokenizer regex, ignore_merges)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=448, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(fx._training_text(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    (dst / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    return tok.get_vocab_size()


def test_bpe_tokenizer_json_path(tmp_path):
    from tokenizers import Tokenizer

    ckpt = tmp_path / "tiny-llama3"
    n_vocab = _train_bpe(ckpt)
    model = fx.build_model("llama", vocab=n_vocab)
    cfg = model.config
    cfg.bos_token_id, cfg.eos_token_id = 0, 1
    fx.save_checkpoint(model, ckpt)
    [out] = _convert(ckpt, tmp_path / "out", "--outtype", "f16")
    kv = {f.name: f.contents() for f in gguf.GGUFReader(out).fields.values()}
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "llama-bpe"
    assert kv["tokenizer.ggml.bos_token_id"] == 0 and kv["tokenizer.ggml.add_bos_token"] is True
    hf = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    for text in fx.TOKENIZER_CORPUS:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf.encode(text).ids, \
            repr(text)


def test_bin_reader_handles_what_torch_save_writes(tmp_path):
    """OrderedDict state dicts with _metadata, Parameters, bf16, views into shared storage."""
    import torch
    from prometheus_lite.convert.checkpoint import _read_bin, to_f32

    sd = torch.nn.Linear(4, 6).state_dict()
    sd["param"] = torch.nn.Parameter(torch.randn(3, 2))
    sd["transposed"] = torch.randn(4, 6).t()
    sd["bf16"] = torch.randn(5, 3, dtype=torch.bfloat16)
    sd["view"] = sd["transposed"][1:3]
    torch.save(sd, tmp_path / "pytorch_model.bin")
    refs = _read_bin(tmp_path / "pytorch_model.bin")
    assert set(refs) == set(sd)
    for name, ref in refs.items():
        want = sd[name].detach().float().numpy()
        assert np.array_equal(to_f32(ref.load(), ref.dtype), want), name
