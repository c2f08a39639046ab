"""llama.cpp's per-tensor type rules for the file-type mixtures, as DATA.

Mirrored from ``src/llama-quant.cpp`` of the llama.cpp vendored in
llama-cpp-python 0.3.36 (line numbers below refer to that file). Only the
branches that can fire for the mixtures in ``quant_types.MIXTURES`` without an
importance matrix are mirrored; the logic that evaluates them is in
``mixtures.py``, and ``tests/test_mixtures.py`` checks the result against
``llama_model_quantize`` itself.

Reading a rule: within one ``Chain`` the first rule whose ``levels`` contain the
mixture and whose ``when`` conditions all hold sets the type (an if / else-if
chain in the C++); the chains of a role run one after another. Condition names
are evaluated by ``mixtures._CONDITIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T

__all__ = [
    "ALL",
    "CATEGORY_PATTERNS",
    "FALLBACK",
    "FALLBACK_LAST_RESORT",
    "GGML_QNT_VERSION",
    "NOT_QUANTIZED_NAMES",
    "NOT_QUANTIZED_SUBSTRINGS",
    "ROLE_CHAINS",
    "Chain",
    "Rule",
]

ALL = frozenset(
    {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"}
)


@dataclass(frozen=True)
class Rule:
    levels: frozenset[str]  # mixtures the rule applies to
    when: tuple[str, ...]  # condition names, all must hold
    then: T  # resulting tensor type
    source: str  # where it comes from in src/llama-quant.cpp


@dataclass(frozen=True)
class Chain:
    rules: tuple[Rule, ...]
    source: str


# tensor_get_category (l.119-154): first match wins; "=" means the whole name,
# otherwise a substring. Order matters ("attn_qkv" before "attn_v", ...).
CATEGORY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("output", "=output.weight"),  # l.120 tensor_name_match_output_weight
    ("token_embd", "=token_embd.weight"),  # l.123 tensor_name_match_token_embd
    ("token_embd", "=per_layer_token_embd.weight"),
    ("attn_qkv", "attn_qkv.weight"),  # l.126
    ("attn_kv_b", "attn_kv_b.weight"),  # l.129
    ("attn_v", "attn_v.weight"),  # l.132
    ("attn_k", "attn_k.weight"),  # l.135
    ("attn_q", "attn_q.weight"),  # l.138
    ("attn_output", "attn_output.weight"),  # l.141
    ("ffn_up", "ffn_up"),  # l.144
    ("ffn_gate", "ffn_gate"),  # l.147
    ("ffn_down", "ffn_down"),  # l.150
)

# tensor_allows_quantization (l.287-383): besides "at least 2-D" and "name ends
# with 'weight'", a tensor is left as it is if its name contains one of these
# (the architecture-specific GLM5-next list is not mirrored: not a Prometheus arch).
NOT_QUANTIZED_SUBSTRINGS: tuple[str, ...] = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
# ... or is exactly one of these (LLM_TN(arch)(LLM_TENSOR_POS_EMBD / TOKEN_TYPES), l.319-320).
NOT_QUANTIZED_NAMES: frozenset[str] = frozenset({"position_embd.weight", "token_types.weight"})

# llama_tensor_get_type_impl (l.446-714), by role. Role "output" = output.weight, or
# token_embd.weight when the model has no output.weight (tied embeddings, l.490).
# Conditions: see mixtures._CONDITIONS.
ROLE_CHAINS: dict[str, tuple[Chain, ...]] = {
    "output": (
        Chain(
            source="l.490-511",
            rules=(
                Rule(ALL, ("arch_is_falcon",), T.Q8_0, "l.500 arch == LLM_ARCH_FALCON"),
                Rule(ALL, ("ncols_not_multiple_of_default_block",), T.Q8_0, "l.500 nx % qk_k != 0"),
                Rule(ALL, ("default_is_not_q8_0",), T.Q6_K, "l.508 new_type != GGML_TYPE_Q8_0"),
            ),
        ),
    ),
    # category_is_attn_v (l.157): attn_v, attn_qkv, attn_kv_b. This branch (l.567)
    # comes before the ATTENTION_QKV branch (l.689), which is therefore never reached.
    "attn_v": (
        Chain(
            source="l.567-592",
            rules=(
                Rule(frozenset({"Q4_K_M", "Q5_K_M"}), ("use_more_bits_attn_v",), T.Q6_K, "l.590"),
                Rule(frozenset({"Q4_K_S"}), ("i_attention_wv_lt_4",), T.Q5_K, "l.592"),
            ),
        ),
        Chain(
            source="l.593-598",
            rules=(
                Rule(ALL, ("model_type_70b", "type_is_q3_k_or_q4_k"), T.Q5_K, "l.597 LLM_TYPE_70B"),
            ),
        ),
        Chain(
            source="l.599-603",
            rules=(Rule(ALL, ("n_expert_is_8",), T.Q8_0, "l.599 n_expert == 8"),),
        ),
    ),
    "attn_k": (
        Chain(
            source="l.605-610",
            rules=(Rule(ALL, ("n_expert_is_8",), T.Q8_0, "l.606 n_expert == 8"),),
        ),
    ),
    "ffn_down": (
        Chain(
            source="l.624-668",
            rules=(
                Rule(frozenset({"Q4_K_M"}), ("arch_is_falcon", "layer_lt_n_16"), T.Q6_K, "l.648"),
                Rule(
                    frozenset({"Q4_K_M"}),
                    ("arch_is_falcon", "use_more_bits_layer"),
                    T.Q5_K,
                    "l.649",
                ),
                Rule(frozenset({"Q4_K_M"}), ("arch_is_falcon",), T.Q4_K, "l.649"),
                Rule(frozenset({"Q4_K_M"}), ("use_more_bits_layer",), T.Q6_K, "l.651"),
                Rule(frozenset({"Q5_K_M"}), ("use_more_bits_layer",), T.Q6_K, "l.657"),
                Rule(frozenset({"Q4_K_S"}), ("arch_not_falcon", "layer_lt_n_8"), T.Q5_K, "l.658"),
                # l.661-667 (Q4_0/Q5_0 first layers -> Q4_1/Q5_1) needs an imatrix: never here.
            ),
        ),
    ),
    "attn_output": (
        Chain(
            source="l.669-687",
            rules=(
                Rule(
                    frozenset({"Q4_K_S", "Q4_K_M"}),
                    ("arch_not_falcon", "n_expert_is_8"),
                    T.Q5_K,
                    "l.671-676",
                ),
            ),
        ),
    ),
}

# tensor_type_fallback (l.390-443): when the row length is not a multiple of the
# chosen type's block size. 32-value types stay (l.420) and then, like a fallback
# that still does not fit, become F16 (l.438).
FALLBACK: dict[T, T] = {
    T.Q4_K: T.Q5_0,  # l.416
    T.Q5_K: T.Q5_1,  # l.417
    T.Q6_K: T.Q8_0,  # l.418
}
FALLBACK_LAST_RESORT = T.F16  # l.438

# ggml.h GGML_QNT_VERSION: written as general.quantization_version by llama_model_quantize (l.1025).
GGML_QNT_VERSION = 2
