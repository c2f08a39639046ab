"""The judge releases' base models as their ``config.json`` publish them (data only).

``convert --synthetic RELEASE`` builds a random checkpoint of exactly this shape
(``synthetic.py``). Each entry is the base model's published ``config.json`` (the fields a
converter reads, copied as published, with the repository it comes from), the vocabulary it
gets (a vocab-only GGUF of llama.cpp's ``models/`` folder, shipped in ``vocab/``, see
``vocab/README.md``) and the chat template the released judge uses (files from llama.cpp's
``models/templates/``, which ``scripts/get_chat_template.py`` copies from the named
repositories). Where the shipped vocabulary is not the release's own, ``vocab_note`` says
what differs; timings do not depend on which pieces a vocabulary holds, only on its size.

Published file sizes (``PUBLISHED_SIZES``) are listed only where a file listing was seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BaseConfig", "BASE_CONFIGS", "PUBLISHED_SIZES", "base_config", "release_names"]


@dataclass(frozen=True)
class BaseConfig:
    release: str  # the name users pass to --synthetic (releases.py spelling)
    source: str  # the repository whose config.json ``config`` copies
    config: dict[str, Any]
    vocab_file: str  # vocab/<name>.gguf.xz
    chat_template_file: str | None = None  # vocab/<name>.jinja; None: the vocabulary's own
    vocab_note: str = ""
    # Special-token ids the release's tokenizer_config.json sets differently from the vocab file.
    special_token_ids: dict[str, int] = field(default_factory=dict)


_MISTRAL_7B_V02 = {  # mistralai/Mistral-7B-Instruct-v0.2 config.json
    "architectures": ["MistralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}

_LLAMA2_13B_CHAT = {  # meta-llama/Llama-2-13b-chat-hf config.json
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 13824,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 40,
    "num_hidden_layers": 40,
    "num_key_value_heads": 40,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": 32000,
}

_MIXTRAL_8X7B = {  # mistralai/Mixtral-8x7B-Instruct-v0.1 config.json
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}


def _qwen25(hidden: int, ff: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
            window_layers: int, window: int) -> dict[str, Any]:
    """Qwen/Qwen2.5-{3B,7B,14B}-Instruct config.json (they differ only in these fields)."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": ff,
        "max_position_embeddings": 32768,
        "max_window_layers": window_layers,
        "model_type": "qwen2",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": window,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


_LLAMA31_8B = {  # meta-llama/Llama-3.1-8B-Instruct config.json
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

_PHI35_MINI = {  # microsoft/Phi-3.5-mini-instruct config.json
    "architectures": ["Phi3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "embd_pdrop": 0.0,
    "eos_token_id": 32000,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "model_type": "phi3",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096,
    "pad_token_id": 32000,
    "resid_pdrop": 0.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "long_factor": [
            1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601,
            1.5899999141693115, 1.600000023841858, 1.6200000047683716, 2.620000123977661,
            3.2300000190734863, 3.2300000190734863, 4.789999961853027, 7.400000095367432,
            7.700000286102295, 9.09000015258789, 12.199999809265137, 17.670000076293945,
            24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
            32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992,
            50.340003967285156, 50.45000457763672, 57.55000305175781, 57.93000411987305,
            58.21000289916992, 60.1400032043457, 62.61000442504883, 62.62000274658203,
            62.71000289916992, 63.1400032043457, 63.1400032043457, 63.77000427246094,
            63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
            64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938,
            64.4800033569336, 64.51000213623047, 64.52999877929688, 64.83999633789062,
        ],
        "short_factor": [
            1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705,
            1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0499999523162842,
            1.0499999523162842, 1.0699999332427979, 1.0999999046325684, 1.1099998950958252,
            1.1599998474121094, 1.1599998474121094, 1.1699998378753662, 1.2899998426437378,
            1.339999794960022, 1.679999828338623, 1.7899998426437378, 1.8199998140335083,
            1.8499997854232788, 1.8799997568130493, 1.9099997282028198, 1.9399996995925903,
            1.9899996519088745, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
            2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0299997329711914,
            2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
            2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
            2.0799996852874756, 2.0899996757507324, 2.189999580383301, 2.2199995517730713,
            2.5899994373321533, 2.729999542236328, 2.749999523162842, 2.8399994373321533,
        ],
        "type": "longrope",
    },
    "rope_theta": 10000.0,
    "sliding_window": 262144,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32064,
}

_SPM_NOTE = (
    "Llama-2's SentencePiece vocabulary (ggml-vocab-llama-spm, from meta-llama/Llama-2-7b-hf)"
)
_QWEN_NOTE = (
    "Qwen's byte-level BPE (ggml-vocab-qwen2, from Qwen/Qwen1.5-7B: the same 151,643 pieces "
    "and <|endoftext|>/<|im_start|>/<|im_end|>; Qwen2.5's added tokens 151646-151664 are "
    "unused [PAD] entries here)"
)

BASE_CONFIGS: dict[str, BaseConfig] = {
    b.release: b
    for b in (
        BaseConfig(
            "prometheus-7b-v2.0", "mistralai/Mistral-7B-Instruct-v0.2 (base of "
            "prometheus-eval/prometheus-7b-v2.0)", _MISTRAL_7B_V02, "ggml-vocab-llama-spm",
            vocab_note=_SPM_NOTE + " in place of Mistral's own 32,000-piece SentencePiece "
            "vocabulary: same size, kind and special ids (unk 0, bos 1, eos 2), other pieces",
        ),
        BaseConfig(
            "prometheus-13b-v1.0", "meta-llama/Llama-2-13b-chat-hf (base of "
            "prometheus-eval/prometheus-13b-v1.0)", _LLAMA2_13B_CHAT, "ggml-vocab-llama-spm",
            vocab_note=_SPM_NOTE + ": the release's own vocabulary",
        ),
        BaseConfig(
            "prometheus-8x7b-v2.0", "mistralai/Mixtral-8x7B-Instruct-v0.1 (base of "
            "prometheus-eval/prometheus-8x7b-v2.0)", _MIXTRAL_8X7B, "ggml-vocab-llama-spm",
            vocab_note=_SPM_NOTE + " in place of Mixtral's own (same size, kind and special "
            "ids, other pieces)",
        ),
        BaseConfig(
            "m-prometheus-3b", "Qwen/Qwen2.5-3B-Instruct (base of Unbabel/M-Prometheus-3B)",
            _qwen25(2048, 11008, 36, 16, 2, 151936, True, 70, 32768), "ggml-vocab-qwen2",
            "Qwen-Qwen2.5-7B-Instruct", vocab_note=_QWEN_NOTE,
        ),
        BaseConfig(
            "m-prometheus-7b", "Qwen/Qwen2.5-7B-Instruct (base of Unbabel/M-Prometheus-7B)",
            _qwen25(3584, 18944, 28, 28, 4, 152064, False, 28, 131072), "ggml-vocab-qwen2",
            "Qwen-Qwen2.5-7B-Instruct", vocab_note=_QWEN_NOTE + "; padded to 152,064",
        ),
        BaseConfig(
            "m-prometheus-14b", "Qwen/Qwen2.5-14B-Instruct (base of Unbabel/M-Prometheus-14B)",
            _qwen25(5120, 13824, 48, 40, 8, 152064, False, 70, 131072), "ggml-vocab-qwen2",
            "Qwen-Qwen2.5-7B-Instruct", vocab_note=_QWEN_NOTE + "; padded to 152,064",
        ),
        BaseConfig(
            "selene-1-mini", "meta-llama/Llama-3.1-8B-Instruct (base of "
            "AtlaAI/Selene-1-Mini-Llama-3.1-8B)", _LLAMA31_8B, "ggml-vocab-llama-bpe",
            "meta-llama-Llama-3.1-8B-Instruct",
            vocab_note="Llama-3's byte-level BPE (ggml-vocab-llama-bpe, from "
            "meta-llama/Meta-Llama-3-8B: Llama-3.1's 128,256 pieces; some reserved special "
            "tokens carry Llama-3's names)",
            # Llama-3.1-8B-Instruct tokenizer_config.json: eos_token "<|eot_id|>".
            special_token_ids={"eos": 128009},
        ),
        BaseConfig(
            "flow-judge-v0.1", "microsoft/Phi-3.5-mini-instruct (base of "
            "flowaicom/Flow-Judge-v0.1)", _PHI35_MINI, "ggml-vocab-phi-3",
            "microsoft-Phi-3.5-mini-instruct",
            vocab_note="Phi-3's SentencePiece vocabulary (ggml-vocab-phi-3, from "
            "microsoft/Phi-3-mini-4k-instruct), which Phi-3.5-mini shares",
        ),
    )
}

# Published GGUF file sizes (bytes as the Hub lists them, 1 GB = 1e9 bytes), with their source.
PUBLISHED_SIZES: dict[tuple[str, str], tuple[int, str]] = {
    ("prometheus-7b-v2.0", "Q4_K_M"): (
        4_370_000_000, "issue 16: 'the published 4.37 GB' (Hugging Face file listing, rounded)"),
}


def release_names() -> list[str]:
    return list(BASE_CONFIGS)


def base_config(release: str) -> BaseConfig:
    from prometheus_lite.errors import ConversionError

    key = release.strip().lower()
    if key not in BASE_CONFIGS:
        raise ConversionError(f"--synthetic {release!r}: unknown release; choose one of "
                              f"{', '.join(BASE_CONFIGS)}")
    return BASE_CONFIGS[key]
