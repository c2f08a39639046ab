"""Bad or unusual Qwen2 / Phi-3 / Llama-3.1 checkpoints: clear errors, and the rope parameters
read the same from a release's ``rope_scaling`` as from transformers 5's ``rope_parameters``.
Numpy-written checkpoints (no torch): fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

import convert_fixtures as fx  # noqa: E402
from prometheus_lite.convert.convert import convert_checkpoint, inspect_checkpoint  # noqa: E402
from prometheus_lite.convert.rope import llama3_factors, rope_parameters  # noqa: E402

from prometheus_lite.errors import ConversionError  # noqa: E402

HIDDEN, FF, HEADS, KV, HD = 64, 128, 4, 2, 16


def _shapes(kind: str, vocab: int) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor names and shapes of a one-layer checkpoint."""
    p = "model.layers.0."
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, HIDDEN), "model.norm.weight": (HIDDEN,),
        "lm_head.weight": (vocab, HIDDEN), p + "input_layernorm.weight": (HIDDEN,),
        p + "post_attention_layernorm.weight": (HIDDEN,),
        p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HD),
        p + "mlp.down_proj.weight": (HIDDEN, FF),
    }
    if kind == "phi3":
        shapes[p + "self_attn.qkv_proj.weight"] = ((HEADS + 2 * KV) * HD, HIDDEN)
        shapes[p + "mlp.gate_up_proj.weight"] = (2 * FF, HIDDEN)
        return shapes
    shapes.update({p + "self_attn.q_proj.weight": (HEADS * HD, HIDDEN),
                   p + "self_attn.k_proj.weight": (KV * HD, HIDDEN),
                   p + "self_attn.v_proj.weight": (KV * HD, HIDDEN),
                   p + "mlp.gate_proj.weight": (FF, HIDDEN),
                   p + "mlp.up_proj.weight": (FF, HIDDEN)})
    if kind == "qwen2":
        shapes.update({p + "self_attn.q_proj.bias": (HEADS * HD,),
                       p + "self_attn.k_proj.bias": (KV * HD,),
                       p + "self_attn.v_proj.bias": (KV * HD,)})
    return shapes


def _checkpoint(dst: Path, kind: str, spm_model: Path | None = None, drop: tuple[str, ...] = (),
                **config: Any) -> Path:
    from safetensors.numpy import save_file

    if kind == "phi3":
        assert spm_model is not None
        vocab = fx.write_phi3_tokenizer(dst, spm_model)
    elif kind == "qwen2":
        vocab = fx.write_qwen2_tokenizer(dst)
    else:
        vocab = fx.write_llama3_tokenizer(dst)
    rng = np.random.default_rng(0)
    tensors = {k: (rng.standard_normal(s) * 0.05).astype(np.float32)
               for k, s in _shapes(kind, vocab).items() if not k.endswith(drop or ("-",))}
    save_file(tensors, str(dst / "model.safetensors"))
    arch = {"qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM", "llama3": "LlamaForCausalLM"}
    cfg = {"architectures": [arch[kind]], "vocab_size": vocab, "hidden_size": HIDDEN,
           "intermediate_size": FF, "num_hidden_layers": 1, "num_attention_heads": HEADS,
           "num_key_value_heads": KV, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
           "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False}
    if kind == "phi3":
        cfg.update(original_max_position_embeddings=256, sliding_window=262144,
                   rope_scaling={"type": "longrope", "short_factor": [1.0] * (HD // 2),
                                 "long_factor": [4.0] * (HD // 2)})
    if kind == "llama3":
        cfg.update(rope_theta=500000.0, rope_scaling=dict(fx.LLAMA31_ROPE))
    cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return fx.train_sentencepiece(tmp_path_factory.mktemp("spm"))


def test_qwen2_without_attention_biases_names_the_missing_tensor(tmp_path):
    ckpt = _checkpoint(tmp_path / "q", "qwen2", drop=("k_proj.bias",))
    with pytest.raises(ConversionError, match=r"no tensor for blk\.0\.attn_k\.bias"):
        convert_checkpoint(ckpt, tmp_path / "out")


def test_qwen2_yarn_scaling_is_refused_with_the_way_out(tmp_path):
    ckpt = _checkpoint(tmp_path / "q", "qwen2",
                       rope_scaling={"type": "yarn", "factor": 4.0,
                                     "original_max_position_embeddings": 128})
    with pytest.raises(ConversionError, match=r"rope scaling 'yarn' is not supported for "
                                              r"Qwen2ForCausalLM.*convert_hf_to_gguf"):
        inspect_checkpoint(ckpt)


def test_phi3_needs_its_original_context(tmp_path, spm_model):
    ckpt = _checkpoint(tmp_path / "p", "phi3", spm_model, original_max_position_embeddings=None)
    with pytest.raises(ConversionError, match="original_max_position_embeddings"):
        inspect_checkpoint(ckpt)


def test_phi3_longrope_factors_of_the_wrong_length(tmp_path, spm_model):
    ckpt = _checkpoint(tmp_path / "p", "phi3", spm_model,
                       rope_scaling={"type": "longrope", "short_factor": [1.0] * 3,
                                     "long_factor": [2.0] * 3})
    with pytest.raises(ConversionError, match=r"must both have 8 entries"):
        inspect_checkpoint(ckpt)


def test_phi3_fused_tensors_keep_their_rows(tmp_path, spm_model):
    """qkv_proj and gate_up_proj are written as stored (no rotary permutation: neox rope)."""
    import gguf
    from safetensors.numpy import load_file

    ckpt = _checkpoint(tmp_path / "p", "phi3", spm_model)
    [out] = convert_checkpoint(ckpt, tmp_path / "out", outtype="f32")
    src = load_file(str(ckpt / "model.safetensors"))
    got = {t.name: np.array(t.data) for t in gguf.GGUFReader(out).tensors}
    p = "model.layers.0."
    assert np.array_equal(got["blk.0.attn_qkv.weight"], src[p + "self_attn.qkv_proj.weight"])
    assert np.array_equal(got["blk.0.ffn_up.weight"], src[p + "mlp.gate_up_proj.weight"])
    assert np.array_equal(got["rope_factors_long.weight"], np.full(8, 4.0, np.float32))


def test_rope_parameters_from_either_spelling(tmp_path):
    """A release's rope_scaling + top-level rope_theta and transformers 5's rope_parameters give
    the same llama3 factors; a missing rope_type falls back to "type"."""
    release = {"rope_theta": 500000.0, "rope_scaling": dict(fx.LLAMA31_ROPE)}
    t5 = {"rope_parameters": {**fx.LLAMA31_ROPE, "rope_theta": 500000.0}}
    assert rope_parameters(release) == rope_parameters(t5)
    assert np.array_equal(llama3_factors(rope_parameters(release), 128),
                          llama3_factors(rope_parameters(t5), 128))
    assert rope_parameters({"rope_scaling": {"type": "longrope"}})["rope_type"] == "longrope"
    m = inspect_checkpoint(_checkpoint(tmp_path / "l", "llama3",
                                       rope_scaling=None, rope_parameters=t5["rope_parameters"]))
    assert list(m.extra_tensors) == ["rope_freqs.weight"]
    assert "llama.rope.scaling.type" not in m.hparams
