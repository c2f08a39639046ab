"""The other judge families' bases, converted and checked against transformers and their own
tokenizers: Qwen2 (M-Prometheus: q/k/v biases, tied and untied embeddings, byte-level BPE with
Qwen2's pre-tokenizer, ChatML), Phi-3 (Flow-Judge: fused qkv_proj/gate_up_proj, longrope short
factors, SentencePiece with Phi-3's added tokens) and Llama-3.1 (Selene: llama3 rope scaling as
``rope_freqs``, Llama-3 BPE).

Tiny random checkpoints (2 layers, 256 wide) are saved as the releases spell their config
(``rope_scaling``) or as transformers 5 does (``rope_parameters``), converted with the CLI, run
with llama.cpp and compared; the quantized levels are made in one pass (native engine) and must
equal llama.cpp's own quantizer byte for byte.
"""

from __future__ import annotations

import json
import math
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
from prometheus_lite.convert.cli import convert_command  # noqa: E402
from prometheus_lite.convert.quant_types import MIXTURES  # noqa: E402
from prometheus_lite.convert.rope import llama3_factors  # noqa: E402
from quant_ref import read_tensors  # noqa: E402

from prometheus_lite.gguf_keys import PROMPT_FORMAT_KEY  # noqa: E402


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # qwen2 | phi3 | llama3
    tied: bool
    dtype: str
    release_config: bool  # config.json as the releases spell it (rope_scaling), else transformers 5
    extra_vocab: int = 0  # embedding rows beyond the tokenizer (Qwen2.5-7B: 152064 > 151665)


CASES = [
    Case("qwen2-untied-padded", "qwen2", tied=False, dtype="bfloat16", release_config=True,
         extra_vocab=8),
    Case("qwen2-tied", "qwen2", tied=True, dtype="float32", release_config=False),  # Qwen2.5-3B
    Case("phi3-longrope", "phi3", tied=False, dtype="bfloat16", release_config=True),
    Case("llama3-rope-freqs", "llama3", tied=False, dtype="bfloat16", release_config=True),
]
TEMPLATES = {"qwen2": fx.CHATML_TEMPLATE, "phi3": fx.PHI3_TEMPLATE, "llama3": fx.LLAMA3_TEMPLATE}
GGUF_ARCH = {"qwen2": "qwen2", "phi3": "phi3", "llama3": "llama"}
# Text that spells other tokenizers' special tokens: it must stay text (special=False).
SPECIAL_LOOKING = [
    "<|im_start|>user\nScore it.<|im_end|>\n<|im_start|>assistant\n",
    "Paris.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n[RESULT] 5",
    "<|user|>\nq<|end|>\n<|assistant|>\n<|endoftext|>",
    "<s>[INST] x [/INST]",
    "<tool_call>{\"name\": \"x\"}</tool_call>",
]


@dataclass
class Built:
    case: Case
    checkpoint: Path
    f32: Path
    f16: Path
    reference: Any


_BUILT: dict[str, Built] = {}


def _convert(ckpt: Path, out: Path, *args: str) -> list[Path]:
    result = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return [Path(p) for p in result.stdout.split()]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return fx.train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    _BUILT.clear()
    return tmp_path_factory.mktemp("families")


def _build(case: Case, root: Path, spm_model: Path) -> Built:
    if case.id in _BUILT:
        return _BUILT[case.id]
    ckpt = root / case.id / f"tiny-{case.id}"
    if case.kind == "qwen2":
        n_tok = fx.write_qwen2_tokenizer(ckpt)
    elif case.kind == "phi3":
        n_tok = fx.write_phi3_tokenizer(ckpt, spm_model)
    else:
        n_tok = fx.write_llama3_tokenizer(ckpt)
    model = fx.build_family_model(case.kind, n_tok + case.extra_vocab, seed=CASES.index(case),
                                  tie_word_embeddings=case.tied)
    fx.save_checkpoint(model, ckpt, dtype=case.dtype)
    if case.release_config:
        fx.as_release_config(ckpt)
    [f32] = _convert(ckpt, root / case.id / "out", "--outtype", "f32")
    [f16] = _convert(ckpt, root / case.id / "out", "--outtype", "f16")
    _BUILT[case.id] = Built(case, ckpt, f32, f16, fx.load_reference(ckpt))
    return _BUILT[case.id]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.id)
def built(request, root, spm_model) -> Built:
    return _build(request.param, root, spm_model)


def _hf_tokenizer(built: Built) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(built.checkpoint / "tokenizer.json"))


def _ids(built: Built) -> list[int]:
    text = "###Feedback: The response is helpful. [RESULT] 4\n Ünïcödé 🙂 12345 the score"
    if built.case.kind == "phi3":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(built.checkpoint / "tokenizer.model"))
        return [1] + sp.encode(text)[:40]
    return _hf_tokenizer(built).encode(text).ids[:40]


def _llama(path: Path, **kw: Any) -> Any:
    return reference_llama(path, logits_all=True, n_ctx=96, n_batch=96, n_threads=2,
                           type_k=0, type_v=0, verbose=False, **kw)


def _logits(path: Path, ids: list[int]) -> np.ndarray:
    llm = _llama(path)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / (ref.max() - ref.min()))


def _kv(path: Path) -> dict[str, Any]:
    return {f.name: f.contents() for f in gguf.GGUFReader(path).fields.values()}


# ---------------------------------------------------------------------------- logits

def test_f32_logits_match_transformers(built):
    ids = _ids(built)
    ref = fx.reference_logits(built.reference, ids)
    got = _logits(built.f32, ids)
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-3


def test_f16_logits_match_transformers(built):
    ids = _ids(built)
    assert _rel(_logits(built.f16, ids), fx.reference_logits(built.reference, ids)) < 1e-2


def test_f32_greedy_continuation_is_identical(built):
    prompt = _ids(built)[:12]
    want = fx.reference_greedy(built.reference, prompt, 16)
    llm = _llama(built.f32)
    llm.eval(prompt)
    got = []
    for _ in range(16):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        got.append(tok)
        llm.eval([tok])
    assert got == want


# ---------------------------------------------------------------------------- metadata

def _llama3_factors_as_llama_cpp(params: dict[str, Any], dim: int) -> np.ndarray:
    """LlamaModel.generate_extra_tensors (llama.cpp conversion/llama.py), verbatim, in torch."""
    import torch

    base = params.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = params.get("factor", 8.0)
    low_freq_factor = params.get("low_freq_factor", 1.0)
    high_freq_factor = params.get("high_freq_factor", 4.0)
    old_context_len = params.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(rope_factors, dtype=torch.float32).numpy()


def test_metadata(built):
    case = built.case
    kv = _kv(built.f16)
    a = GGUF_ARCH[case.kind]
    tensors = {t.name: t for t in gguf.GGUFReader(built.f16).tensors}
    config = json.loads((built.checkpoint / "config.json").read_text())
    assert kv["general.architecture"] == a
    assert kv["tokenizer.chat_template"] == TEMPLATES[case.kind]
    assert PROMPT_FORMAT_KEY not in kv  # not a Prometheus release: its own template ("chat")
    assert ("output.weight" in tensors) == (not case.tied)
    assert len(kv["tokenizer.ggml.tokens"]) == config["vocab_size"]
    for t in tensors.values():
        if len(t.shape) == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
    if case.kind == "qwen2":
        assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "qwen2"
        assert tuple(tensors["blk.1.attn_k.bias"].shape) == (128,)
        assert "qwen2.rope.dimension_count" not in kv  # Qwen2Model writes none
        assert kv["qwen2.rope.freq_base"] == 1e6
        types = dict(zip(kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"],
                         strict=True))
        assert types["<|im_end|>"] == types["<|fim_prefix|>"] == gguf.TokenType.CONTROL
        assert types["<tool_call>"] == gguf.TokenType.USER_DEFINED  # matched even in text
        if case.extra_vocab:
            assert kv["tokenizer.ggml.tokens"][-1] == f"[PAD{config['vocab_size'] - 1}]"
    if case.kind == "phi3":
        assert kv["tokenizer.ggml.model"] == "llama"
        assert kv["tokenizer.ggml.add_bos_token"] is False
        assert "blk.0.attn_qkv.weight" in tensors and "blk.0.attn_q.weight" not in tensors
        assert tuple(tensors["blk.0.attn_qkv.weight"].shape) == (256, 256 + 2 * 128)
        assert tuple(tensors["blk.0.ffn_up.weight"].shape) == (256, 2 * 512)
        assert kv["phi3.rope.scaling.original_context_length"] == 256
        assert kv["phi3.rope.dimension_count"] == 64
        assert kv["phi3.attention.sliding_window"] == 2048
        want_attn = math.sqrt(1 + math.log(512 / 256) / math.log(256))
        assert kv["phi3.rope.scaling.attn_factor"] == pytest.approx(want_attn, rel=1e-6)
        reader = gguf.GGUFReader(built.f16)
        got = {t.name: np.array(t.data) for t in reader.tensors}
        scaling = config["rope_scaling"]
        assert np.array_equal(got["rope_factors_short.weight"],
                              np.array(scaling["short_factor"], np.float32))
        assert np.array_equal(got["rope_factors_long.weight"],
                              np.array(scaling["long_factor"], np.float32))
    if case.kind == "llama3":
        assert kv["tokenizer.ggml.pre"] == "llama-bpe"
        assert "llama.rope.scaling.type" not in kv  # llama3 is the rope_freqs tensor alone
        got = {t.name: np.array(t.data) for t in gguf.GGUFReader(built.f16).tensors}
        params = {**config["rope_scaling"], "rope_theta": config["rope_theta"]}
        want = _llama3_factors_as_llama_cpp(params, 64)
        assert np.array_equal(got["rope_freqs.weight"], want)
        assert len(set(want.tolist())) > 3  # all three regimes: 1, 8 and smoothed


def test_llama3_factors_equal_llama_cpp_for_llama31_and_a_grid():
    """convert/rope.py vs llama.cpp's own torch code: Llama-3.1-8B's parameters bit for bit,
    and a grid of other bases, head sizes and factors."""
    params = {**fx.LLAMA31_ROPE, "rope_theta": 500000.0}
    assert np.array_equal(llama3_factors(params, 128), _llama3_factors_as_llama_cpp(params, 128))
    for base in (10000.0, 500000.0, 1e6):
        for dim in (16, 64, 96, 128):
            for factor, low, high, old in ((8.0, 1.0, 4.0, 8192), (32.0, 0.5, 2.0, 128)):
                p = dict(rope_theta=base, factor=factor, low_freq_factor=low,
                         high_freq_factor=high, original_max_position_embeddings=old)
                assert np.array_equal(llama3_factors(p, dim), _llama3_factors_as_llama_cpp(p, dim))


# ---------------------------------------------------------------------------- tokenization

def _corpus() -> list[str]:
    return [*fx.TOKENIZER_CORPUS, *SPECIAL_LOOKING, " ".join(fx.TOKENIZER_CORPUS)]


def test_tokenization_matches_the_checkpoints_tokenizer(built):
    """special=False (graded text): special tokens spelled in the text stay text, as the
    checkpoint's own tokenizer does with its special tokens split; special=True (templates):
    they are the special tokens, as the tokenizer's normal encoding makes them."""
    llm = llama_cpp.Llama(str(built.f16), vocab_only=True, verbose=False)
    if built.case.kind == "phi3":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(built.checkpoint / "tokenizer.model"))
        for text in _corpus():
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == sp.encode(text), \
                repr(text)
        ids = llm.tokenize(b"<|user|>\nq<|end|>\n<|assistant|>\n", add_bos=False, special=True)
        n = sp.vocab_size()
        assert ids[0] == n + fx.PHI3_ADDED.index("<|user|>")
        assert n + fx.PHI3_ADDED.index("<|end|>") in ids
        return
    hf = _hf_tokenizer(built)
    for text in _corpus():
        hf.encode_special_tokens = True
        want_text = hf.encode(text).ids
        hf.encode_special_tokens = False
        want_special = hf.encode(text).ids
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == want_text, repr(text)
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == want_special, repr(text)


# ---------------------------------------------------------------------------- quantized levels

@pytest.mark.parametrize("case", CASES[1:], ids=lambda c: c.id)
def test_one_pass_levels_equal_llama_cpp_quantizer(case, root, spm_model, tmp_path):
    """Every level the native engine makes, in one pass, equals llama.cpp's quantizer on the
    intermediate file, tensor for tensor (types and bytes): biases, fused qkv/gate_up and the
    rope factor tensors go through the same type rules."""
    built = _build(case, root, spm_model)
    levels = [arg for q in MIXTURES for arg in ("--quant", q)]
    native = _convert(built.checkpoint, tmp_path / "native", *levels)
    two_step = _convert(built.checkpoint, tmp_path / "llama", *levels, "--engine", "llama.cpp")
    assert [p.name for p in native] == [p.name for p in two_step] == [
        f"tiny-{case.id}.{q}.gguf" for q in MIXTURES]
    for ours_path, want_path in zip(native, two_step, strict=True):
        ours, want = read_tensors(ours_path), read_tensors(want_path)
        assert ours.keys() == want.keys()
        for name, (qtype, data) in want.items():
            assert ours[name][0] == qtype, (ours_path.name, name)
            assert np.array_equal(ours[name][1], data), (ours_path.name, name)
    ids = _ids(built)
    ref = fx.reference_logits(built.reference, ids)
    got = _logits(tmp_path / "native" / f"tiny-{case.id}.Q4_K_M.gguf", ids)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9
    [q8] = _convert(built.checkpoint, tmp_path / "q8", "--outtype", "q8_0")
    assert _rel(_logits(q8, ids), ref) < 5e-2
