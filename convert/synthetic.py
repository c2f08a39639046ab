"""Synthetic release-shaped models: ``prometheus-lite convert --synthetic RELEASE``.

A GGUF with a judge release's exact architecture, tensor shapes, hyper-parameters and real
tokenizer, and seeded random weights: for timing and memory figures before a download (a
kernel's cost does not depend on the values), never for grades. The precedent is vLLM's
``load_format="dummy"``.

How: ``base_configs.py`` holds the base model's published ``config.json``; from it this module
builds a lazy random checkpoint (Hugging Face tensor names and layouts, ``HF_LAYOUTS``; each
tensor generated only when the converter reads it, so a 13B never sits in memory) and hands it,
with the release's vocabulary (``vocab/``), to the normal pipeline (``convert.py``):
``inspect_checkpoint`` reads the config as for a real checkpoint, ``plan_tensors`` maps the
names, the one-pass quantizer writes every level. The file is marked ``prometheus.synthetic``.

Determinism: every tensor comes from its own PCG64 stream, seeded by (seed, tensor name), so
the same command gives the same bytes whatever the order of the reads.
"""

from __future__ import annotations

import copy
import hashlib
import lzma
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from prometheus_lite.errors import ConversionError
from prometheus_lite.gguf_keys import (
    SYNTHETIC_KEY,
    SYNTHETIC_RELEASE_KEY,
    SYNTHETIC_SEED_KEY,
    SYNTHETIC_SOURCE_KEY,
)

from .base_configs import BaseConfig, base_config
from .checkpoint import Checkpoint, TensorRef
from .tokenizer import Vocab

__all__ = [
    "HF_LAYOUTS",
    "RandomTensorRef",
    "random_tensors",
    "release_vocab",
    "synthetic_model",
    "convert_synthetic",
    "synthetic_name",
    "parse_overrides",
]

VOCAB_DIR = Path(__file__).parent / "vocab"
# Elements generated per random draw: bounds the float32 temporaries of one tensor.
DRAW_ELEMENTS = 16 * 2**20

# Hugging Face tensor names -> shape (outermost first) as symbols of the config, per
# ``architectures[0]``. Source: transformers' modeling_{llama,mistral,mixtral,qwen2,phi3}.py
# (module names and nn.Linear(in, out) weights of shape (out, in)); tests/test_synthetic.py
# checks them against the state dict transformers builds for each architecture.
_GLOBAL = {
    "model.embed_tokens.weight": ("vocab", "hidden"),
    "model.norm.weight": ("hidden",),
    "lm_head.weight": ("vocab", "hidden"),  # absent with tie_word_embeddings
}
_NORMS = {
    "model.layers.{bid}.input_layernorm.weight": ("hidden",),
    "model.layers.{bid}.post_attention_layernorm.weight": ("hidden",),
}
_ATTN = {
    "model.layers.{bid}.self_attn.q_proj.weight": ("q_dim", "hidden"),
    "model.layers.{bid}.self_attn.k_proj.weight": ("kv_dim", "hidden"),
    "model.layers.{bid}.self_attn.v_proj.weight": ("kv_dim", "hidden"),
    "model.layers.{bid}.self_attn.o_proj.weight": ("hidden", "q_dim"),
}
_QKV_BIAS = {  # Qwen2: q/k/v projections with bias
    "model.layers.{bid}.self_attn.q_proj.bias": ("q_dim",),
    "model.layers.{bid}.self_attn.k_proj.bias": ("kv_dim",),
    "model.layers.{bid}.self_attn.v_proj.bias": ("kv_dim",),
}
_MLP = {
    "model.layers.{bid}.mlp.gate_proj.weight": ("ff", "hidden"),
    "model.layers.{bid}.mlp.up_proj.weight": ("ff", "hidden"),
    "model.layers.{bid}.mlp.down_proj.weight": ("hidden", "ff"),
}
_MOE = {  # Mixtral: router and per-expert w1 (gate), w2 (down), w3 (up)
    "model.layers.{bid}.block_sparse_moe.gate.weight": ("experts", "hidden"),
    "model.layers.{bid}.block_sparse_moe.experts.{xid}.w1.weight": ("ff", "hidden"),
    "model.layers.{bid}.block_sparse_moe.experts.{xid}.w2.weight": ("hidden", "ff"),
    "model.layers.{bid}.block_sparse_moe.experts.{xid}.w3.weight": ("ff", "hidden"),
}
_PHI3 = {  # fused qkv_proj and gate_up_proj
    "model.layers.{bid}.self_attn.qkv_proj.weight": ("qkv_dim", "hidden"),
    "model.layers.{bid}.self_attn.o_proj.weight": ("hidden", "q_dim"),
    "model.layers.{bid}.mlp.gate_up_proj.weight": ("ff2", "hidden"),
    "model.layers.{bid}.mlp.down_proj.weight": ("hidden", "ff"),
}
# (global tensors, per-block tensors)
HF_LAYOUTS: dict[str, tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {
    "LlamaForCausalLM": (_GLOBAL, {**_NORMS, **_ATTN, **_MLP}),
    "MistralForCausalLM": (_GLOBAL, {**_NORMS, **_ATTN, **_MLP}),
    "MixtralForCausalLM": (_GLOBAL, {**_NORMS, **_ATTN, **_MOE}),
    "Qwen2ForCausalLM": (_GLOBAL, {**_NORMS, **_ATTN, **_QKV_BIAS, **_MLP}),
    "Phi3ForCausalLM": (_GLOBAL, {**_NORMS, **_PHI3}),
}

# Matrices are stored as F16 whatever the base's torch_dtype: a BF16 checkpoint would make the
# converter round every row through gguf-py's numpy bf16 code (measured 4x the Q4_K kernel's
# time here), and the level files come out the same size and kinds either way (the mixtures
# quantize every matrix; norms stay F32).


# ---------------------------------------------------------------------------- random tensors

def _stream_seed(seed: int, name: str) -> np.random.SeedSequence:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little")])


@dataclass(frozen=True)
class RandomTensorRef(TensorRef):
    """A checkpoint tensor generated on ``load()``: each value a random float16 with random
    sign and magnitude in [2**-9, 2**-5) (13 random bits: 2 of exponent, 10 of mantissa),
    so |w| ~ 0.002-0.03 like trained weights and the f16 intermediate holds it exactly;
    norm weights are ones. Made from random bits, not ``standard_normal``: 4x faster here,
    and the kernels' cost does not depend on the values."""

    seed: int = 0
    ones: bool = False

    def load(self) -> np.ndarray:
        count = int(np.prod(self.shape, dtype=np.int64))
        if self.ones:
            out = np.ones(count, dtype=np.float16)
        else:
            rng = np.random.Generator(np.random.PCG64(_stream_seed(self.seed, self.name)))
            bits = np.empty(count, dtype=np.uint16)
            for a in range(0, count, DRAW_ELEMENTS):  # sequential draws: one stream
                u = rng.integers(0, 1 << 16, min(count, a + DRAW_ELEMENTS) - a, dtype=np.uint16)
                exponent = (np.uint16(6) + ((u >> np.uint16(10)) & np.uint16(3))) << np.uint16(10)
                bits[a:a + len(u)] = (u & np.uint16(0x83FF)) | exponent
            out = bits.view(np.float16)
        out = out.reshape(self.shape)
        return out.astype(np.float32) if self.dtype == "F32" else out


def _dims(config: dict[str, Any]) -> dict[str, int]:
    hidden, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or hidden // n_head)
    ff = int(config["intermediate_size"])
    return {
        "vocab": int(config["vocab_size"]), "hidden": hidden, "ff": ff, "ff2": 2 * ff,
        "q_dim": n_head * head_dim, "kv_dim": n_kv * head_dim,
        "qkv_dim": (n_head + 2 * n_kv) * head_dim,
        "experts": int(config.get("num_local_experts") or 0),
        "n_layer": int(config["num_hidden_layers"]),
    }


def random_tensors(config: dict[str, Any], seed: int, where: Path) -> dict[str, TensorRef]:
    """Every weight a checkpoint with this ``config.json`` holds, as lazy random tensors."""
    arch = (config.get("architectures") or [""])[0]
    if arch not in HF_LAYOUTS:
        raise ConversionError(f"{where}: no synthetic layout for {arch!r}; known: "
                              f"{', '.join(HF_LAYOUTS)}")
    dims = _dims(config)
    global_t, block_t = HF_LAYOUTS[arch]
    names: dict[str, tuple[str, ...]] = {}
    for name, sym in global_t.items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        names[name] = sym
    for bid in range(dims["n_layer"]):
        for tmpl, sym in block_t.items():
            for xid in range(dims["experts"] if "{xid}" in tmpl else 1):
                names[tmpl.format(bid=bid, xid=xid)] = sym
    return {
        name: RandomTensorRef(
            name, "F32" if len(sym) == 1 else "F16", tuple(dims[s] for s in sym), where, 0,
            seed=seed, ones=name.endswith("norm.weight"),
        )
        for name, sym in names.items()
    }


# ---------------------------------------------------------------------------- vocabulary

# GGUF value types (gguf.GGUFValueType) -> numpy scalar type; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
                 10: "<u8", 11: "<i8", 12: "<f8"}


def _gguf_kv(data: bytes) -> dict[str, Any]:
    """The key-value section of a GGUF file (v2/v3), strings as bytes. gguf-py's GGUFReader
    takes a minute on a 400,000-string vocabulary here; this reads it in about a second."""
    if data[:4] != b"GGUF":
        raise ConversionError("not a GGUF file (vocabulary); reinstall prometheus-lite")
    n_kv = int.from_bytes(data[16:24], "little")
    pos = 24

    def string() -> bytes:
        nonlocal pos
        n = int.from_bytes(data[pos:pos + 8], "little")
        pos += 8 + n
        return data[pos - n:pos]

    def value(vtype: int) -> Any:
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            etype = int.from_bytes(data[pos:pos + 4], "little")
            count = int.from_bytes(data[pos + 4:pos + 12], "little")
            pos += 12
            if etype in _GGUF_SCALARS:
                arr = np.frombuffer(data, _GGUF_SCALARS[etype], count, pos)
                pos += arr.nbytes
                return arr.tolist()
            return [value(etype) for _ in range(count)]
        arr = np.frombuffer(data, _GGUF_SCALARS[vtype], 1, pos)
        pos += arr.nbytes
        return bool(arr[0]) if vtype == 7 else arr[0].item()

    out: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string().decode("utf-8")
        vtype = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        out[key] = value(vtype)
    return out


def _text(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def release_vocab(base: BaseConfig, n_vocab: int) -> Vocab:
    """The release's vocabulary as ``tokenizer.load_vocab`` builds it for a checkpoint: the
    vocab file's tokens, scores, types, merges and special tokens, padded to ``n_vocab`` rows
    as the converter pads, the release's chat template."""
    source = VOCAB_DIR / f"{base.vocab_file}.gguf.xz"
    if not source.is_file():
        raise ConversionError(f"{source}: the vocabulary file is missing from the installation; "
                              "reinstall prometheus-lite")
    K = gguf.Keys.Tokenizer
    f = {k: (v if k == K.LIST else _text(v)) for k, v in
         _gguf_kv(lzma.decompress(source.read_bytes())).items() if k.startswith("tokenizer.")}
    tokens: list[bytes] = list(f[K.LIST])
    types = [int(t) for t in f[K.TOKEN_TYPE]]
    scores = [float(s) for s in f[K.SCORES]] if K.SCORES in f else None
    if len(tokens) > n_vocab:
        raise ConversionError(f"{source}: {len(tokens)} tokens but vocab_size is {n_vocab}; "
                              "the override does not fit this vocabulary")
    for i in range(len(tokens), n_vocab):  # as tokenizer._sentencepiece / _bpe pad
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
        if scores is not None:
            scores.append(-10000.0)
    with tempfile.TemporaryDirectory() as empty:  # SpecialVocab reads nothing from it
        special = gguf.SpecialVocab(empty, load_merges=False, n_vocab=n_vocab)
    special.merges = [m.decode("utf-8") for m in f.get(K.MERGES, [])]
    for typ, key in (("bos", K.BOS_ID), ("eos", K.EOS_ID), ("unk", K.UNK_ID),
                     ("pad", K.PAD_ID), ("sep", K.SEP_ID)):
        tid = base.special_token_ids.get(typ, f.get(key))
        if tid is not None:
            special.special_token_ids[typ] = int(tid)
    for typ, key in (("bos", K.ADD_BOS), ("eos", K.ADD_EOS)):
        if key in f:
            special.add_special_token[typ] = bool(f[key])
    template = f.get(K.CHAT_TEMPLATE)
    if base.chat_template_file:
        template = (VOCAB_DIR / f"{base.chat_template_file}.jinja").read_text(encoding="utf-8")
    special.chat_template = template
    model = str(f[K.MODEL])
    return Vocab(model, str(f.get(K.PRE, "default")), tokens, scores, types, special, source)


# ---------------------------------------------------------------------------- model

def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` config overrides (VALUE as JSON, else a string)."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConversionError(f"--override {item!r}: write KEY=VALUE, e.g. "
                                  "num_hidden_layers=2")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def synthetic_name(release: str, overrides: dict[str, Any] | None = None) -> str:
    """Model name (and file-name stem) of a synthetic release: ``<release>-synthetic``, plus a
    digest of the overrides when the shape is not the release's."""
    name = f"{release}-synthetic"
    if overrides:
        text = ",".join(f"{k}={overrides[k]!r}" for k in sorted(overrides))
        name += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return name


def synthetic_model(release: str, *, seed: int = 0, overrides: dict[str, Any] | None = None,
                    prompt_format: str | None = None) -> Any:
    """The pipeline's ``convert.Model`` for a synthetic ``release`` (nothing generated yet)."""
    from .convert import inspect_checkpoint

    base = base_config(release)
    config = copy.deepcopy(base.config)
    unknown = sorted(set(overrides or {}) - set(config) - {"head_dim"})
    if unknown:
        raise ConversionError(f"--override {', '.join(unknown)}: not a key of "
                              f"{base.release}'s config.json ({base.source})")
    config.update(overrides or {})
    where = Path(f"synthetic:{base.release}")
    ckpt = Checkpoint(where, config, random_tensors(config, seed, where), "synthetic")
    model = inspect_checkpoint(
        where, name=synthetic_name(base.release, overrides), prompt_format=prompt_format,
        checkpoint=ckpt, vocab_for=lambda n: release_vocab(base, n),
    )
    model.hparams[SYNTHETIC_KEY] = True  # written with the hyper-parameters (bool)
    model.hparams[SYNTHETIC_RELEASE_KEY] = base.release
    model.hparams[SYNTHETIC_SEED_KEY] = int(seed)
    source = f"config.json of {base.source}; vocabulary: {base.vocab_note}"
    if overrides:
        source += "; overridden: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    model.hparams[SYNTHETIC_SOURCE_KEY] = source
    return model


def convert_synthetic(
    release: str,
    out_dir: str | os.PathLike[str],
    *,
    quants: Sequence[str] = (),
    outtype: str | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    prompt_format: str | None = None,
    progress: bool = False,
    nthread: int = 0,
    engine: str = "native",
    on_model: Callable[[Any], None] | None = None,
) -> list[Path]:
    """Write the synthetic ``release`` at each level through ``convert.convert_checkpoint``."""
    from .convert import convert_checkpoint

    model = synthetic_model(release, seed=seed, overrides=overrides, prompt_format=prompt_format)
    if on_model is not None:
        on_model(model)
    return convert_checkpoint(
        model.checkpoint.path, out_dir, outtype=outtype, quants=quants, model=model,
        progress=progress, nthread=nthread, engine=engine,
    )
