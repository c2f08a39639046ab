"""Builders of tiny Hugging Face checkpoints for the converter tests (need torch + transformers).

Everything is small enough for a 2-core machine: hidden 64, 2 layers, head_dim 16, a SentencePiece
vocabulary of 384 pieces trained here with byte fallback.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SPM_VOCAB = 384

# Text with the things tokenizers get wrong: unicode, runs of spaces and newlines, digits, tabs,
# characters the vocabulary has never seen (byte fallback), leading/trailing spaces.
TOKENIZER_CORPUS = [
    "Hello world",
    " leading space and trailing space ",
    "two  spaces, three   spaces,    four",
    "new\nline, two\n\nnewlines, three\n\n\n",
    "tab\tseparated\tvalues",
    "numbers 0 7 42 1234567 3.14159 -12",
    "Ünïcödé façade naïve coöperate",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 and symbols ∑ ∫ √",
    "###Feedback: The response is good. [RESULT] 4",
    "[INST] <<SYS>>\nYou are a fair evaluator language model.\n<</SYS>>\n\nScore it.  [/INST]",
    "",
    " ",
    "\n",
    "a",
    "mixedCASE Words_with-punctuation!?",
]


def _training_text(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("the model response score rubric feedback evaluate quality helpful harmless honest "
             "answer question reference criteria result judge fair language good bad better "
             "instruction assistant user system because however therefore").split()
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line += f" {rng.randint(0, 9999)}"
        if rng.random() < 0.2:
            line = line.capitalize() + "."
        lines.append(line)
    lines += ["Score 1: poor. Score 2: fair. Score 3: ok. Score 4: good. Score 5: great."] * 20
    lines += ["###Task Description: ###Response to evaluate: ###Reference Answer: [RESULT]"] * 20
    return lines


def train_sentencepiece(out_dir: Path, vocab_size: int = SPM_VOCAB) -> Path:
    """Train a Llama-style SentencePiece BPE model (byte fallback, digits split) into out_dir."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(_training_text()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    corpus.unlink()
    (out_dir / "tokenizer.vocab").unlink()
    return out_dir / "tokenizer.model"


def write_tokenizer_files(dst: Path, spm_model: Path, chat_template: str | None = None) -> None:
    """tokenizer.model + a Llama-style tokenizer_config.json into dst."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(spm_model, dst / "tokenizer.model")
    cfg: dict[str, Any] = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 256,
        "added_tokens_decoder": {
            "0": {"content": "<unk>", "special": True},
            "1": {"content": "<s>", "special": True},
            "2": {"content": "</s>", "special": True},
        },
    }
    if chat_template:
        cfg["chat_template"] = chat_template
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat template: it trims every message (so the
# "###Feedback: " every Prometheus prompt ends with loses its space) and writes the header tokens.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>")
# Llama-3's pre-tokenizer regex (llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3, "llama-bpe").
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write_llama3_tokenizer(dst: Path, chat_template: str | None = LLAMA3_TEMPLATE) -> int:
    """A Llama-3-style byte-level BPE tokenizer (tokenizer.json: Llama-3's pre-tokenizer regex,
    ignore_merges, its five special tokens at ids 0-4) plus tokenizer_config.json with the chat
    template; returns the vocabulary size. Needs the ``tokenizers`` package."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=448, special_tokens=list(LLAMA3_SPECIALS),
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg: dict[str, Any] = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                           "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template:
        cfg["chat_template"] = chat_template
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tok.get_vocab_size()


def llama3_checkpoint(dst: Path, chat_template: str | None = LLAMA3_TEMPLATE) -> Path:
    """A tiny Llama-3-style checkpoint (LlamaForCausalLM, numpy weights, byte-level BPE
    tokenizer with its own chat template): not a Prometheus model."""
    vocab = write_llama3_tokenizer(dst, chat_template)
    numpy_checkpoint(dst, None, vocab=vocab, architecture="LlamaForCausalLM", kv_heads=4)
    config = json.loads((dst / "config.json").read_text())
    config.update(model_type="llama", bos_token_id=0, eos_token_id=4)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def build_model(kind: str, vocab: int = SPM_VOCAB, seed: int = 0, layers: int = 2,
                **overrides: Any) -> Any:
    """A random transformers model: llama (MHA), mistral (GQA) or mixtral (2 experts, GQA)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=256, initializer_range=0.08,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    per_kind = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM,
                  dict(num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0)),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM,
                    dict(num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
                         sliding_window=None)),
        "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM,
                    dict(num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=1e6,
                         num_local_experts=2, num_experts_per_tok=2, sliding_window=None)),
    }
    config_cls, model_cls, defaults = per_kind[kind]
    model = model_cls(config_cls(**{**defaults, **common, **overrides}))
    with torch.no_grad():  # make the norms non-trivial so a wrong norm shows
        for _name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model.eval()


def save_checkpoint(model: Any, dst: Path, *, fmt: str = "safetensors", dtype: str = "float32",
                    shards: int = 1) -> Path:
    """Save like the Hub releases: safetensors or zip .bin, optional index, fp32/bf16/fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = model.to(tdtype)
    # save_pretrained writes the checkpoint (legacy tensor names for Mixtral experts).
    model.save_pretrained(dst, safe_serialization=True)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    names = sorted(state)
    groups = [names[i::shards] for i in range(shards)]
    if fmt == "safetensors":
        files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
        if shards == 1:
            files = ["model.safetensors"]
        for f, g in zip(files, groups, strict=False):
            save_file({k: state[k].contiguous() for k in g}, dst / f, metadata={"format": "pt"})
        index = "model.safetensors.index.json"
    else:
        files = [f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin" for i in range(shards)]
        if shards == 1:
            files = ["pytorch_model.bin"]
        for f, g in zip(files, groups, strict=False):
            torch.save({k: state[k] for k in g}, dst / f)
        index = "pytorch_model.bin.index.json"
    if shards > 1:
        weight_map = {k: f for f, g in zip(files, groups, strict=False) for k in g}
        (dst / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def load_reference(checkpoint: Path) -> Any:
    """The checkpoint as transformers loads it, computing in float32 (the independent reference)."""
    import torch
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def reference_logits(model: Any, ids: list[int]) -> Any:
    """float32 logits on ids, as numpy (n_tokens, vocab)."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def reference_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    import torch

    m = model
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = m(torch.tensor([out])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
    return out[len(ids):]


def write_llama2_tokenizer_json(checkpoint: Path) -> Path:
    """tokenizer.json the way meta-llama/Llama-2-*-hf ships it, from the folder's tokenizer.model.

    Llama-2's file normalizes with Prepend("▁") + Replace(" ", "▁") and has no pre-tokenizer,
    which is exactly SentencePiece's behaviour. (transformers 5's LlamaTokenizer instead rebuilds a
    Metaspace pre-tokenizer from tokenizer.model, which drops the dummy prefix before a leading
    space and so disagrees with SentencePiece itself on " text".)
    """
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    backend.save(str(checkpoint / "tokenizer.json"))
    return checkpoint / "tokenizer.json"


def numpy_checkpoint(dst: Path, spm_model: Path | None, *, layers: int = 1, vocab: int = SPM_VOCAB,
                     hidden: int = 64, ff: int = 128, heads: int = 4, kv_heads: int = 2,
                     shards: int = 1, dtype: str = "float32", seed: int = 0,
                     architecture: str = "MistralForCausalLM") -> Path:
    """A Llama/Mistral checkpoint written with numpy only (no torch): for input-handling tests."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * hd, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * hd),
            p + "mlp.gate_proj.weight": (ff, hidden),
            p + "mlp.up_proj.weight": (ff, hidden),
            p + "mlp.down_proj.weight": (hidden, ff),
        })
    tensors = {k: (rng.standard_normal(s) * 0.05).astype(dtype) for k, s in shapes.items()}
    names = sorted(tensors)
    groups = [names[i::shards] for i in range(shards)]
    files = (["model.safetensors"] if shards == 1 else
             [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)])
    for f, g in zip(files, groups, strict=False):
        save_file({k: tensors[k] for k in g}, str(dst / f))
    if shards > 1:
        wm = {k: f for f, g in zip(files, groups, strict=False) for k in g}
        (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    config = {
        "architectures": [architecture], "model_type": "mistral", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": dtype,
    }
    (dst / "config.json").write_text(json.dumps(config))
    if spm_model is not None:
        write_tokenizer_files(dst, spm_model)
    return dst


# ---------------------------------------------------------------------------- other families

# Qwen2's pre-tokenizer regex (llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2, "qwen2"): digits one by one.
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5-Instruct's added tokens: three special ones and two that are not (<tool_call>, and
# <|fim_prefix|>, which llama.cpp's converter makes CONTROL because it looks special).
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_PLAIN_ADDED = ("<tool_call>", "<|fim_prefix|>")  # not special; the second looks it
# ChatML, as Qwen2.5-Instruct's tokenizer_config.json writes it (system prompt default dropped).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Phi-3.5-mini-instruct's chat template and its added tokens (ids after the SentencePiece pieces).
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI3_ADDED = ("<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|system|>", "<|end|>",
              "<|user|>")


def write_qwen2_tokenizer(dst: Path, chat_template: str | None = CHATML_TEMPLATE) -> int:
    """A Qwen2-style byte-level BPE tokenizer (NFC normalizer, Qwen2's regex, no BOS, its added
    tokens after the trained vocabulary) plus tokenizer_config.json; returns the token count."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=440, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in QWEN2_SPECIALS])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in QWEN2_PLAIN_ADDED])
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg: dict[str, Any] = {"bos_token": None, "eos_token": "<|im_end|>",
                           "pad_token": "<|endoftext|>", "add_prefix_space": False,
                           "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 256}
    if chat_template:
        cfg["chat_template"] = chat_template
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tok.get_vocab_size()


def write_phi3_tokenizer(dst: Path, spm_model: Path, chat_template: str | None = PHI3_TEMPLATE
                         ) -> int:
    """Phi-3.5-mini's tokenizer layout on a trained SentencePiece model: tokenizer.model,
    added_tokens.json, and tokenizer_config.json (added_tokens_decoder with <unk>, <s>, </s>
    and the added tokens, all special; add_bos_token false); returns the token count."""
    import shutil

    import sentencepiece as spm

    n_spm = spm.SentencePieceProcessor(model_file=str(spm_model)).vocab_size()
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(spm_model, dst / "tokenizer.model")
    added = {t: n_spm + i for i, t in enumerate(PHI3_ADDED)}
    (dst / "added_tokens.json").write_text(json.dumps(added))
    decoder = {"0": {"content": "<unk>", "special": True}, "1": {"content": "<s>", "special": True},
               "2": {"content": "</s>", "special": False}}
    decoder.update({str(i): {"content": t, "special": True} for t, i in added.items()})
    cfg: dict[str, Any] = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                           "eos_token": "<|endoftext|>", "unk_token": "<unk>",
                           "pad_token": "<|endoftext|>", "add_bos_token": False,
                           "add_eos_token": False, "legacy": False,
                           "added_tokens_decoder": decoder}
    if chat_template:
        cfg["chat_template"] = chat_template
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return n_spm + len(PHI3_ADDED)


# Llama-3.1-8B's rope scaling (config.json), kept for the tiny llama3 model.
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def build_family_model(kind: str, vocab: int, seed: int = 0, **overrides: Any) -> Any:
    """A random transformers model of another judge family, 256 wide (K-quant rows), 2 layers:
    qwen2 (q/k/v biases, GQA), phi3 (fused qkv/gate_up, longrope with random factors,
    original context 256 of 512: llama.cpp pads a context to 256, so tests at n_ctx <= 256 get
    the short factors), llama3 (Llama-3.1's llama3 rope scaling, theta 500000)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, initializer_range=0.05,
                  tie_word_embeddings=False, rms_norm_eps=1e-6)
    g = torch.Generator().manual_seed(seed + 1)
    longrope = {"rope_type": "longrope",
                "short_factor": (1 + torch.rand(32, generator=g)).tolist(),
                "long_factor": (2 + 8 * torch.rand(32, generator=g)).tolist()}
    per_kind = {
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM,
                  dict(max_position_embeddings=256, rope_theta=1e6, bos_token_id=None,
                       eos_token_id=None, use_sliding_window=False, sliding_window=None)),
        "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM,
                 dict(max_position_embeddings=512, original_max_position_embeddings=256,
                      rope_scaling=longrope, rope_theta=10000.0, bos_token_id=1,
                      eos_token_id=None, pad_token_id=None, sliding_window=2048)),
        "llama3": (tf.LlamaConfig, tf.LlamaForCausalLM,
                   dict(max_position_embeddings=1024, rope_theta=500000.0,
                        rope_scaling=dict(LLAMA31_ROPE), bos_token_id=0, eos_token_id=4)),
    }
    config_cls, model_cls, defaults = per_kind[kind]
    model = model_cls(config_cls(**{**common, **defaults, **overrides}))
    with torch.no_grad():  # non-trivial norms and biases, so a wrong one shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 0.0 if name.endswith(".bias") else 1.0
                p.copy_(base + 0.3 * torch.randn_like(p))
    return model.eval()


def as_release_config(checkpoint: Path) -> None:
    """Rewrite config.json the way the released checkpoints spell it (transformers 4):
    ``rope_scaling`` (without rope_theta) and a top-level ``rope_theta`` instead of
    transformers 5's ``rope_parameters``."""
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    params = dict(config.pop("rope_parameters", None) or {})
    config["rope_theta"] = params.pop("rope_theta", 10000.0)
    params.pop("partial_rotary_factor", None)  # transformers' default 1.0 (Phi-3.5's too)
    kind = params.get("rope_type", "default")
    if kind == "longrope":  # Phi-3.5: {"long_factor", "short_factor", "type"}, context top level
        config["original_max_position_embeddings"] = params.pop("original_max_position_embeddings")
        params["type"] = params.pop("rope_type")
    config["rope_scaling"] = None if kind == "default" else params
    path.write_text(json.dumps(config, indent=1))


def read_gguf_kv(path: Path) -> dict[str, Any]:
    """A GGUF file's metadata, read directly (gguf.GGUFReader takes most of a minute on a
    150k-token vocabulary here). Format: ggml/docs/gguf.md, little-endian, version 2 or 3."""
    import struct

    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
               12: "d"}
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("Q")
        pos += n
        return data[pos - n:pos].decode("utf-8")

    def value(kind: int) -> Any:
        if kind == 8:
            return string()
        if kind == 9:
            inner, n = take("I"), take("Q")
            return [value(inner) for _ in range(n)]
        return take(scalars[kind])

    assert data[:4] == b"GGUF" and take("4s") and take("I") in (2, 3)
    take("Q")  # tensor count
    return {string(): value(take("I")) for _ in range(take("Q"))}
