"""Supported checkpoint architectures and how their config maps onto GGUF (data only).

Everything here mirrors llama.cpp's own converter, ``convert_hf_to_gguf.py`` (class ``LlamaModel``,
registered for ``LlamaForCausalLM``, ``MistralForCausalLM`` and ``MixtralForCausalLM``; Mistral and
Mixtral are written as the ``llama`` architecture, Mixtral with expert tensors), and gguf-py's
``constants.py`` (key names) and ``tensor_mapping.py`` (tensor names). The code that uses these
tables lives in ``convert.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "HParam",
    "HPARAMS",
    "ROTARY_PERMUTED",
    "F32_TENSORS",
    "IGNORED_TENSOR_SUFFIXES",
    "EXPERT_WEIGHTS",
    "LLAMA2_CHAT_TEMPLATE",
    "GLOBAL_TENSORS",
    "BLOCK_TENSORS",
    "DENSE_FFN_TENSORS",
    "MOE_FFN_TENSORS",
]


@dataclass(frozen=True)
class ArchSpec:
    """One supported Hugging Face ``architectures[0]`` value."""

    gguf_arch: gguf.MODEL_ARCH
    moe: bool
    source: str


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=False,
        source="convert_hf_to_gguf.py LlamaModel; Prometheus 13B v1.0 (Llama-2-Chat-13B base)",
    ),
    "MistralForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=False,
        source="convert_hf_to_gguf.py LlamaModel (Mistral is llama + GQA); Prometheus 2 7B",
    ),
    "MixtralForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=True,
        source="convert_hf_to_gguf.py LlamaModel (experts stacked); Prometheus 2 8x7B",
    ),
}


@dataclass(frozen=True)
class HParam:
    """A GGUF key filled from the first present Hugging Face config key."""

    gguf_key: str  # template with {arch}, from gguf.Keys
    hf_keys: tuple[str, ...]  # "a.b" reaches into nested dicts (transformers 5: rope_parameters)
    kind: type  # int or float
    required: bool = True
    default: float | int | None = None
    moe_only: bool = False


# Source: convert_hf_to_gguf.py TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters.
HPARAMS: tuple[HParam, ...] = (
    HParam(gguf.Keys.LLM.CONTEXT_LENGTH, ("max_position_embeddings",), int),
    HParam(gguf.Keys.LLM.EMBEDDING_LENGTH, ("hidden_size",), int),
    HParam(gguf.Keys.LLM.BLOCK_COUNT, ("num_hidden_layers",), int),
    HParam(gguf.Keys.LLM.FEED_FORWARD_LENGTH, ("intermediate_size",), int),
    HParam(gguf.Keys.Attention.HEAD_COUNT, ("num_attention_heads",), int),
    # Absent in pre-GQA Llama configs: as many KV heads as heads.
    HParam(gguf.Keys.Attention.HEAD_COUNT_KV, ("num_key_value_heads",), int, required=False),
    # Llama default 10000 (transformers LlamaConfig); transformers 5 nests it in rope_parameters.
    HParam(gguf.Keys.Rope.FREQ_BASE, ("rope_theta", "rope_parameters.rope_theta"), float,
           required=False, default=10000.0),
    HParam(gguf.Keys.Attention.LAYERNORM_RMS_EPS, ("rms_norm_eps",), float),
    HParam(gguf.Keys.LLM.VOCAB_SIZE, ("vocab_size",), int),
    HParam(gguf.Keys.LLM.EXPERT_COUNT, ("num_local_experts",), int, moe_only=True),
    HParam(gguf.Keys.LLM.EXPERT_USED_COUNT, ("num_experts_per_tok",), int, moe_only=True),
)

# Q and K are stored by Hugging Face with rotary halves split ("rotate_half"); llama.cpp's rope
# works on interleaved pairs, so its converter reorders their rows: LlamaModel.permute(w, n_head,
# n_head_kv). Value: which head count groups the rows.
ROTARY_PERMUTED: dict[gguf.MODEL_TENSOR, str] = {
    gguf.MODEL_TENSOR.ATTN_Q: "n_head",
    gguf.MODEL_TENSOR.ATTN_K: "n_head_kv",
}

# Written as F32 whatever the output type: every 1-D tensor (norms) plus these.
# Source: convert_hf_to_gguf.py ModelBase.prepare_tensors (FFN_GATE_INP is kept in F32).
F32_TENSORS: frozenset[gguf.MODEL_TENSOR] = frozenset({gguf.MODEL_TENSOR.FFN_GATE_INP})

# Checkpoint entries that are not weights (old Llama checkpoints save the rotary buffer).
IGNORED_TENSOR_SUFFIXES: tuple[str, ...] = (".rotary_emb.inv_freq",)

# Mixtral per-expert weights: "model.layers.{bid}.block_sparse_moe.experts.{xid}.{w}.weight".
# They are stacked over xid into one 3-D tensor named as the merged HF name
# "model.layers.{bid}.block_sparse_moe.experts.{w}.weight", which gguf's TensorNameMap maps to
# ffn_{gate,down,up}_exps (w1 = gate, w2 = down, w3 = up).
EXPERT_WEIGHTS: tuple[str, ...] = ("w1", "w2", "w3")

# Llama-2-chat's chat template (meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json), written for
# checkpoints that bring no tokenizer of their own, such as Prometheus 13B v1.0 (Llama-2-Chat base).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# Tensors a complete model has, with their shape in numpy order (outermost first) as symbols that
# convert.py computes from the config: vocab, hidden, ff (intermediate), q_dim = n_head * head_dim,
# kv_dim = n_head_kv * head_dim, experts. Source: llama.cpp src/llama-model.cpp (LLM_ARCH_LLAMA
# tensor creation; GGUF dims are the reverse of these).
_T = gguf.MODEL_TENSOR
GLOBAL_TENSORS: dict[gguf.MODEL_TENSOR, tuple[str, ...]] = {
    _T.TOKEN_EMBD: ("vocab", "hidden"),
    _T.OUTPUT_NORM: ("hidden",),
    _T.OUTPUT: ("vocab", "hidden"),  # absent when tie_word_embeddings: llama.cpp reuses token_embd
}
BLOCK_TENSORS: dict[gguf.MODEL_TENSOR, tuple[str, ...]] = {
    _T.ATTN_NORM: ("hidden",),
    _T.ATTN_Q: ("q_dim", "hidden"),
    _T.ATTN_K: ("kv_dim", "hidden"),
    _T.ATTN_V: ("kv_dim", "hidden"),
    _T.ATTN_OUT: ("hidden", "q_dim"),
    _T.FFN_NORM: ("hidden",),
}
DENSE_FFN_TENSORS: dict[gguf.MODEL_TENSOR, tuple[str, ...]] = {
    _T.FFN_GATE: ("ff", "hidden"),
    _T.FFN_UP: ("ff", "hidden"),
    _T.FFN_DOWN: ("hidden", "ff"),
}
MOE_FFN_TENSORS: dict[gguf.MODEL_TENSOR, tuple[str, ...]] = {
    _T.FFN_GATE_INP: ("experts", "hidden"),
    _T.FFN_GATE_EXP: ("experts", "ff", "hidden"),
    _T.FFN_UP_EXP: ("experts", "ff", "hidden"),
    _T.FFN_DOWN_EXP: ("experts", "hidden", "ff"),
}
