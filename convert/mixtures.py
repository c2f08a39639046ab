"""Which GGML type each tensor gets in a llama.cpp file-type mixture (Q4_K_M, ...).

Logic only; the rules are data in ``mixture_rules.py``. ``choose_types`` reproduces
``llama_tensor_get_type`` of llama.cpp (src/llama-quant.cpp, llama-cpp-python
0.3.36) for the mixtures in ``quant_types.MIXTURES``, including the things that
make it stateful:

- tensors are visited in llama.cpp's order (``weight_name_comparer``,
  src/llama-model-loader.h: by ``blk.N.`` layer number, then by name; non-layer
  tensors first), because the attn_v / ffn_down rules count how many they have
  seen;
- the model has tied embeddings when there is no ``output.weight``: then
  ``token_embd.weight`` is treated like the output tensor;
- rows whose length is not a multiple of the chosen type's block size fall back
  (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16): tiny test models hit this.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gguf import GGMLQuantizationType as T
from gguf import Keys

from prometheus_lite.errors import QuantizationError

from . import mixture_rules as R
from .quant_types import block_size, mixture

__all__ = [
    "ModelInfo",
    "TensorInfo",
    "allows_quantization",
    "choose_types",
    "llama_order",
    "tensor_category",
    "use_more_bits",
]

_QUANTIZED_SOURCE = {T.F32, T.F16, T.BF16}  # types llama_model_quantize reads as floats


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the chooser needs it: GGUF name, numpy shape (last axis = row,
    i.e. ggml ne[0]) and current type."""

    name: str
    shape: tuple[int, ...]
    type: T = T.F32


@dataclass(frozen=True)
class ModelInfo:
    """Hyper-parameters the rules look at (from the GGUF metadata / HF config)."""

    n_layer: int  # {arch}.block_count
    arch: str = "llama"  # general.architecture
    n_expert: int = 0  # {arch}.expert_count
    n_head: int = 0  # {arch}.attention.head_count
    n_head_kv: int = 0  # {arch}.attention.head_count_kv

    @classmethod
    def from_kv(cls, arch: str, kv: Mapping[str, Any]) -> ModelInfo:
        """From GGUF metadata: keys like "llama.block_count" (gguf.Keys templates, formatted)."""

        def get(template: str) -> int:
            return int(kv.get(template.format(arch=arch), 0) or 0)

        if not get(Keys.LLM.BLOCK_COUNT):
            raise QuantizationError(
                f"no {Keys.LLM.BLOCK_COUNT.format(arch=arch)} in the model metadata"
            )
        return cls(
            n_layer=get(Keys.LLM.BLOCK_COUNT),
            arch=arch,
            n_expert=get(Keys.LLM.EXPERT_COUNT),
            n_head=get(Keys.Attention.HEAD_COUNT),
            n_head_kv=get(Keys.Attention.HEAD_COUNT_KV),
        )

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B for the llama arch (src/models/llama.cpp l.28):
        80 layers, grouped-query attention, no experts."""
        return (
            self.arch == "llama"
            and self.n_expert != 8
            and self.n_layer == 80
            and self.n_head != self.n_head_kv
        )


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp l.452: first and last eighth of the layers, and every third in between."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def tensor_category(name: str) -> str:
    """tensor_get_category (llama-quant.cpp l.119): a broad role from the name."""
    for cat, pat in R.CATEGORY_PATTERNS:
        if (name == pat[1:]) if pat.startswith("=") else (pat in name):
            return cat
    return "other"


def allows_quantization(t: TensorInfo) -> bool:
    """tensor_allows_quantization (llama-quant.cpp l.287): 2-D/3-D weights only; no norms,
    routers, ..."""
    if len(t.shape) < 2 or not t.name.endswith("weight"):
        return False
    if t.name in R.NOT_QUANTIZED_NAMES:
        return False
    return not any(s in t.name for s in R.NOT_QUANTIZED_SUBSTRINGS)


_BLK = re.compile(r"^blk\.(-?\d+)\.")


def _layer(name: str) -> int:
    m = _BLK.match(name)
    return int(m.group(1)) if m else -1


def llama_order(names: Iterable[str]) -> list[str]:
    """Names in the order llama_model_quantize visits them (weight_name_comparer)."""
    return sorted(names, key=lambda n: (_layer(n), n.encode()))


@dataclass
class _State:
    """quantize_state_impl: counters the stateful rules use."""

    model: ModelInfo
    level: str
    default: T
    tied: bool
    n_attention_wv: int
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    # set per tensor
    ncols: int = 0
    i_layer: int = 0
    cur: T = T.F32


_CONDITIONS: dict[str, Callable[[_State], bool]] = {
    "arch_is_falcon": lambda s: s.model.arch == "falcon",
    "arch_not_falcon": lambda s: s.model.arch != "falcon",
    "ncols_not_multiple_of_default_block": lambda s: s.ncols % block_size(s.default) != 0,
    "default_is_not_q8_0": lambda s: s.default != T.Q8_0,
    "use_more_bits_attn_v": lambda s: use_more_bits(s.i_attention_wv, s.n_attention_wv),
    "i_attention_wv_lt_4": lambda s: s.i_attention_wv < 4,
    "model_type_70b": lambda s: s.model.is_70b,
    "type_is_q3_k_or_q4_k": lambda s: s.cur in (T.Q3_K, T.Q4_K),
    "n_expert_is_8": lambda s: s.model.n_expert == 8,
    "use_more_bits_layer": lambda s: use_more_bits(s.i_layer, s.model.n_layer),
    "layer_lt_n_8": lambda s: s.i_layer < s.model.n_layer // 8,
    "layer_lt_n_16": lambda s: s.i_layer < s.model.n_layer // 16,
}


def _apply_chains(role: str, s: _State) -> T:
    for chain in R.ROLE_CHAINS.get(role, ()):
        for rule in chain.rules:
            if s.level in rule.levels and all(_CONDITIONS[c](s) for c in rule.when):
                s.cur = rule.then
                break
    return s.cur


def _fallback(t: T, ncols: int) -> T:
    """tensor_type_fallback (l.390)."""
    if ncols % block_size(t) == 0:
        return t
    if t in R.FALLBACK:
        t2 = R.FALLBACK[t]
    elif block_size(t) <= 32:
        t2 = t
    else:
        raise QuantizationError(f"no fallback type for {t.name}")
    return t2 if ncols % block_size(t2) == 0 else R.FALLBACK_LAST_RESORT


def choose_types(tensors: Sequence[TensorInfo], model: ModelInfo, level: str) -> dict[str, T]:
    """Output type of every tensor for mixture ``level`` (e.g. "Q4_K_M"), as
    ``llama_model_quantize`` (no imatrix, default params) would choose it.

    Tensors that are not quantized keep their type. A tensor whose chosen type
    equals its current type is copied unchanged by both engines.
    """
    mix = mixture(level)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise QuantizationError("duplicate tensor names")
    by_name = {t.name: t for t in tensors}
    cats = {n: tensor_category(n) for n in names}
    s = _State(
        model=model,
        level=mix.name,
        default=mix.default,
        tied="output" not in cats.values(),
        n_attention_wv=sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats.values()),
    )
    out: dict[str, T] = {}
    for name in llama_order(names):
        t = by_name[name]
        if not allows_quantization(t):
            out[name] = t.type
            continue
        cat = cats[name]
        s.ncols, s.cur = t.shape[-1], mix.default
        if cat == "output" or (s.tied and cat == "token_embd"):
            role = "output"
        elif cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            role = "attn_v"
        else:
            role = cat
        if role == "ffn_down":
            if model.n_expert > 1:  # experts: layer from the name (l.456-468)
                s.i_layer = _layer(name)
                if not 0 <= s.i_layer < model.n_layer:
                    raise QuantizationError(
                        f"bad layer {s.i_layer} for tensor {name}; must be in [0, {model.n_layer})"
                    )
            else:
                s.i_layer = s.i_ffn_down
        new = _apply_chains(role, s)
        if role == "attn_v":
            s.i_attention_wv += 1
        elif role == "ffn_down":
            s.i_ffn_down += 1
        out[name] = _fallback(new, t.shape[-1])
    return {n: out[n] for n in names}
