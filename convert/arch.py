"""Supported checkpoint architectures and how their config maps onto GGUF (data only).

Everything here mirrors llama.cpp's own converter (llama-cpp-python 0.3.36's
``vendor/llama.cpp/convert_hf_to_gguf.py`` and its ``conversion/`` package: ``llama.py`` class
``LlamaModel``, ``qwen.py`` class ``Qwen2Model``, ``phi.py`` class ``Phi3MiniModel``, ``base.py``
class ``TextModel``), gguf-py's ``constants.py`` (key names) and ``tensor_mapping.py`` (tensor
names), and the tensor shapes llama.cpp's loader expects (``src/models/{llama,qwen2,phi3}.cpp``).
The code that uses these tables lives in ``convert.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "HParam",
    "ROTARY_PERMUTED",
    "F32_TENSORS",
    "IGNORED_TENSOR_SUFFIXES",
    "EXPERT_WEIGHTS",
    "LLAMA2_CHAT_TEMPLATE",
    "GLOBAL_TENSORS",
    "Shapes",
]

_T = gguf.MODEL_TENSOR
_K = gguf.Keys
# Tensor table: (kind, "weight" | "bias") -> shape in numpy order (outermost first) as symbols
# convert.py computes from the config: vocab, hidden, ff (intermediate), ff2 = 2 * ff,
# q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim, qkv_dim = q_dim + 2 * kv_dim,
# experts, rot_half = rope dimension count / 2. GGUF dims are the reverse of these.
Shapes = dict[tuple[gguf.MODEL_TENSOR, str], tuple[str, ...]]


@dataclass(frozen=True)
class HParam:
    """A GGUF key filled from the first present Hugging Face config key.

    ``hf_keys``: "a.b" reaches into nested dicts; "rope.x" reads the normalized rope parameters
    (convert.rope_parameters: ``rope_parameters`` or ``rope_scaling`` with the top-level
    ``rope_theta`` and ``original_max_position_embeddings`` mirrored in, as TextModel.__init__
    does)."""

    gguf_key: str  # template with {arch}, from gguf.Keys
    hf_keys: tuple[str, ...]
    kind: type  # int or float
    required: bool = True
    default: float | int | None = None
    moe_only: bool = False


@dataclass(frozen=True)
class ArchSpec:
    """One supported Hugging Face ``architectures[0]`` value and how llama.cpp's converter
    writes it."""

    gguf_arch: gguf.MODEL_ARCH
    moe: bool
    source: str
    hparams: tuple[HParam, ...]
    block_tensors: Shapes  # per layer, besides the FFN
    ffn_tensors: Shapes  # per layer
    # Q/K rows reordered for llama.cpp's "normal" rope (LlamaModel.permute); False for the
    # NEOX-rope architectures (qwen2, phi3), whose converters write Q/K as stored.
    rotary_permute: bool
    # Rope scaling types ("rope_type" or "type") accepted; others are refused.
    rope_types: frozenset[str]
    # How {arch}.rope.dimension_count is written: "head_dim" (LlamaModel.set_gguf_parameters),
    # "partial" (Phi3MiniModel: int(partial_rotary_factor * hidden) // n_head) or None (not
    # written: TextModel; llama.cpp then rotates the whole head).
    rope_dims: str | None
    # SentencePiece vocabulary flavour (tokenizer.py): "llama" (TextModel.
    # _create_vocab_sentencepiece) or "phi3" (Phi3MiniModel.set_vocab).
    sentencepiece: str = "llama"
    # config.json flag that switches a configured sliding_window on (Qwen2: use_sliding_window).
    sliding_window_flag: str | None = None


# ---------------------------------------------------------------------------- hyper-parameters

# Source: convert_hf_to_gguf TextModel.set_gguf_parameters (base.py) for every architecture.
_TEXT_HPARAMS: tuple[HParam, ...] = (
    HParam(_K.LLM.CONTEXT_LENGTH, ("max_position_embeddings",), int),
    HParam(_K.LLM.EMBEDDING_LENGTH, ("hidden_size",), int),
    HParam(_K.LLM.BLOCK_COUNT, ("num_hidden_layers",), int),
    HParam(_K.LLM.FEED_FORWARD_LENGTH, ("intermediate_size",), int),
    HParam(_K.Attention.HEAD_COUNT, ("num_attention_heads",), int),
    # Absent in pre-GQA Llama configs: as many KV heads as heads (filled in by convert.py).
    HParam(_K.Attention.HEAD_COUNT_KV, ("num_key_value_heads",), int, required=False),
    # Default 10000 (transformers' Llama/Qwen2 configs); transformers 5 nests it in
    # rope_parameters, releases keep it top level: both reach rope.rope_theta.
    HParam(_K.Rope.FREQ_BASE, ("rope.rope_theta",), float, required=False, default=10000.0),
    HParam(_K.Attention.LAYERNORM_RMS_EPS, ("rms_norm_eps",), float),
    HParam(_K.LLM.EXPERT_COUNT, ("num_local_experts",), int, moe_only=True),
    HParam(_K.LLM.EXPERT_USED_COUNT, ("num_experts_per_tok",), int, moe_only=True),
)
# LlamaModel.set_gguf_parameters adds the vocabulary size (the rope dimension count: rope_dims).
_LLAMA_HPARAMS = (*_TEXT_HPARAMS, HParam(_K.LLM.VOCAB_SIZE, ("vocab_size",), int))
# Phi3MiniModel.set_gguf_parameters replaces TextModel's: the same keys minus experts, plus the
# original context (required: rope_parameters["original_max_position_embeddings"]) and the
# sliding window (0 when the config has none: "distinguishes Phi-4 from other PHI3 models").
_PHI3_HPARAMS = (
    *(h for h in _TEXT_HPARAMS if not h.moe_only),
    HParam(_K.Rope.SCALING_ORIG_CTX_LEN, ("rope.original_max_position_embeddings",), int),
    HParam(_K.Attention.SLIDING_WINDOW, ("sliding_window",), int, required=False, default=0),
)

# ---------------------------------------------------------------------------- tensors

GLOBAL_TENSORS: Shapes = {
    (_T.TOKEN_EMBD, "weight"): ("vocab", "hidden"),
    (_T.OUTPUT_NORM, "weight"): ("hidden",),
    # Absent when tie_word_embeddings: llama.cpp reuses token_embd (TENSOR_DUPLICATED).
    (_T.OUTPUT, "weight"): ("vocab", "hidden"),
}
# Source: src/models/llama.cpp, qwen2.cpp (create_tensor_qkv: q/k/v biases), phi3.cpp.
_LLAMA_BLOCK: Shapes = {
    (_T.ATTN_NORM, "weight"): ("hidden",),
    (_T.ATTN_Q, "weight"): ("q_dim", "hidden"),
    (_T.ATTN_K, "weight"): ("kv_dim", "hidden"),
    (_T.ATTN_V, "weight"): ("kv_dim", "hidden"),
    (_T.ATTN_OUT, "weight"): ("hidden", "q_dim"),
    (_T.FFN_NORM, "weight"): ("hidden",),
}
_QWEN2_BLOCK: Shapes = {
    **_LLAMA_BLOCK,
    (_T.ATTN_Q, "bias"): ("q_dim",),
    (_T.ATTN_K, "bias"): ("kv_dim",),
    (_T.ATTN_V, "bias"): ("kv_dim",),
}
# Phi-3 stores Q, K and V as one qkv_proj (rows q, then k, then v) and the gate and up
# projections as one gate_up_proj (gate rows, then up rows): llama.cpp keeps both fused
# (attn_qkv; ffn_up of 2 * ff rows, split by its swiglu).
_PHI3_BLOCK: Shapes = {
    (_T.ATTN_NORM, "weight"): ("hidden",),
    (_T.ATTN_QKV, "weight"): ("qkv_dim", "hidden"),
    (_T.ATTN_OUT, "weight"): ("hidden", "q_dim"),
    (_T.FFN_NORM, "weight"): ("hidden",),
}
_DENSE_FFN: Shapes = {
    (_T.FFN_GATE, "weight"): ("ff", "hidden"),
    (_T.FFN_UP, "weight"): ("ff", "hidden"),
    (_T.FFN_DOWN, "weight"): ("hidden", "ff"),
}
_MOE_FFN: Shapes = {
    (_T.FFN_GATE_INP, "weight"): ("experts", "hidden"),
    (_T.FFN_GATE_EXP, "weight"): ("experts", "ff", "hidden"),
    (_T.FFN_UP_EXP, "weight"): ("experts", "ff", "hidden"),
    (_T.FFN_DOWN_EXP, "weight"): ("experts", "hidden", "ff"),
}
_PHI3_FFN: Shapes = {
    (_T.FFN_UP, "weight"): ("ff2", "hidden"),
    (_T.FFN_DOWN, "weight"): ("hidden", "ff"),
}

# ---------------------------------------------------------------------------- architectures

_LLAMA_ROPE = frozenset({"default", "linear", "llama3"})

ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=False, hparams=_LLAMA_HPARAMS, block_tensors=_LLAMA_BLOCK,
        ffn_tensors=_DENSE_FFN, rotary_permute=True, rope_types=_LLAMA_ROPE, rope_dims="head_dim",
        source="llama.py LlamaModel; Prometheus 13B v1.0 (Llama-2-Chat-13B base); Selene-1-Mini "
               "(Llama-3.1-8B base: rope_scaling llama3 -> rope_freqs, generate_extra_tensors)",
    ),
    "MistralForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=False, hparams=_LLAMA_HPARAMS, block_tensors=_LLAMA_BLOCK,
        ffn_tensors=_DENSE_FFN, rotary_permute=True, rope_types=_LLAMA_ROPE, rope_dims="head_dim",
        source="llama.py LlamaModel (Mistral is llama + GQA); Prometheus 2 7B",
    ),
    "MixtralForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.LLAMA, moe=True, hparams=_LLAMA_HPARAMS, block_tensors=_LLAMA_BLOCK,
        ffn_tensors=_MOE_FFN, rotary_permute=True, rope_types=_LLAMA_ROPE, rope_dims="head_dim",
        source="llama.py LlamaModel (experts stacked); Prometheus 2 8x7B",
    ),
    "Qwen2ForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.QWEN2, moe=False, hparams=_TEXT_HPARAMS, block_tensors=_QWEN2_BLOCK,
        ffn_tensors=_DENSE_FFN, rotary_permute=False, rope_types=frozenset({"default", "linear"}),
        rope_dims=None, sliding_window_flag="use_sliding_window",
        source="qwen.py Qwen2Model (TextModel defaults, q/k/v biases); M-Prometheus (Qwen2.5)",
    ),
    "Phi3ForCausalLM": ArchSpec(
        gguf.MODEL_ARCH.PHI3, moe=False, hparams=_PHI3_HPARAMS, block_tensors=_PHI3_BLOCK,
        ffn_tensors=_PHI3_FFN, rotary_permute=False,
        rope_types=frozenset({"default", "longrope", "su"}), rope_dims="partial",
        sentencepiece="phi3",
        source="phi.py Phi3MiniModel (fused qkv/gate_up, longrope factors); Flow-Judge-v0.1 "
               "(Phi-3.5-mini)",
    ),
}

# Q and K are stored by Hugging Face with rotary halves split ("rotate_half"); llama.cpp's
# normal rope works on interleaved pairs, so LlamaModel.permute(w, n_head, n_head_kv) reorders
# their rows (ArchSpec.rotary_permute). Value: which head count groups the rows.
ROTARY_PERMUTED: dict[gguf.MODEL_TENSOR, str] = {
    _T.ATTN_Q: "n_head",
    _T.ATTN_K: "n_head_kv",
}

# Written as F32 whatever the output type: every 1-D tensor (norms, biases, rope factors) plus
# these. Source: convert_hf_to_gguf.py ModelBase.prepare_tensors (FFN_GATE_INP is kept in F32).
F32_TENSORS: frozenset[gguf.MODEL_TENSOR] = frozenset({_T.FFN_GATE_INP})

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
