"""A real GGUF whose greedy output is known in advance: for the label-token tests.

The vocabulary is a byte-level BPE (GPT-2 / Llama-3 style ``tokenizer.json``, built with the
``tokenizers`` library): the 256 byte tokens, the pieces a test asks for (each made by a chain of
real merges, ``"]" + "Ġ" -> "]Ġ"``, ``"]Ġ" + "5" -> "]Ġ5"``, ...) and BOS/EOS. Pieces such as
``] 5``, ``]A`` or ``T] 4``, which end the ``[RESULT]`` marker and write the label in one token,
are ordinary tokens of it, as in Llama-3, Qwen or Mistral-Nemo vocabularies.

The weights are crafted so that the next token depends only on the current one, through a table
the test chooses: every block writes zero into the residual stream (attention and MLP output
projections are zero), the embedding of token ``t`` is ``sqrt(H) * e_t`` (one-hot, H = vocabulary
size, so RMSNorm leaves it at ``e_t * sqrt(H) / sqrt(1 + eps)``), and ``lm_head[s, t] =
table[t, s] / sqrt(H)``. The model's logits after token ``t`` are therefore
``table[t] / sqrt(1 + eps)`` at every position, whatever came before. The checkpoint is written as
Hugging Face safetensors and converted by this project's converter, so the file is exactly what a
user's converted model looks like to llama.cpp.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Llama-3's pre-tokenizer regex (the converter maps it to llama.cpp's "llama-bpe").
from prometheus_lite.convert.tokenizer import BPE_PRE_TOKENIZERS

LLAMA3_REGEX = next(k for k, v in BPE_PRE_TOKENIZERS.items() if v == "llama-bpe")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
RMS_EPS = 1e-6
CHAIN_LOGIT = 10.0  # the chosen successor; every other token gets 0


@dataclass(frozen=True)
class ChainModel:
    """A crafted GGUF and what it will do."""

    path: Path
    ids: dict[bytes, int]  # piece (raw bytes) -> token id, for the test-chosen pieces and bytes
    table: np.ndarray  # (V, V) float64: table[t] = the logits after token t (before 1/sqrt(1+eps))
    chain: tuple[bytes, ...]  # what greedy decoding writes after any prompt (not the last step)

    def logits_after(self, piece: bytes) -> np.ndarray:
        """The logits llama.cpp computes after ``piece`` (float64)."""
        return self.table[self.ids[piece]] / math.sqrt(1.0 + RMS_EPS)


def _byte_level(piece: bytes) -> str:
    from gguf.vocab import bytes_to_unicode

    table = bytes_to_unicode()
    return "".join(table[b] for b in piece)


def _tokenizer(pieces: Sequence[bytes]) -> tuple[object, dict[bytes, int]]:
    """A byte-level BPE tokenizer holding ``pieces``, every one reachable through merges."""
    from gguf.vocab import bytes_to_unicode
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    to_unicode = bytes_to_unicode()
    vocab: dict[str, int] = {to_unicode[b]: b for b in range(256)}
    ids: dict[bytes, int] = {bytes((b,)): b for b in range(256)}
    merges: list[tuple[str, str]] = []
    for piece in pieces:
        for k in range(2, len(piece) + 1):  # left to right: piece[:k-1] + piece[k-1]
            prefix = piece[:k]
            if prefix in ids:
                continue
            merges.append((_byte_level(piece[: k - 1]), _byte_level(piece[k - 1 : k])))
            ids[prefix] = vocab[_byte_level(prefix)] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(BOS, special=True), AddedToken(EOS, special=True)])
    return tok, ids


def build_chain_model(
    dst: Path,
    *,
    pieces: Sequence[bytes],
    chain: Sequence[bytes],
    last: Mapping[bytes, float],
) -> ChainModel:
    """Write and convert a checkpoint whose greedy output after any prompt is ``chain``.

    ``pieces`` are the multi-byte tokens of the vocabulary (besides the 256 bytes); ``chain``
    the tokens written one after the other (every token outside the chain is followed by
    ``chain[0]``); ``last`` the logits after ``chain[-1]`` (piece -> logit, 0 for the rest):
    the step the tests look at.
    """
    from prometheus_lite.convert.convert import convert_checkpoint
    from safetensors.numpy import save_file

    ckpt = dst / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    tok, ids = _tokenizer(pieces)
    tok.save(str(ckpt / "tokenizer.json"))
    n_tokens = tok.get_vocab_size(with_added_tokens=True)
    hidden = -(-n_tokens // 32) * 32  # vocab rows = hidden size: one-hot embeddings
    (ckpt / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 8192,
    }))
    for piece in (*chain, *last):
        if piece not in ids:
            raise ValueError(f"{piece!r} is not a token of the vocabulary; add it to pieces")

    table = np.zeros((hidden, hidden), dtype=np.float64)
    table[:, ids[chain[0]]] = CHAIN_LOGIT
    for a, b in zip(chain, chain[1:], strict=False):
        table[ids[a]] = 0.0
        table[ids[a], ids[b]] = CHAIN_LOGIT
    table[ids[chain[-1]]] = 0.0
    for piece, logit in last.items():
        table[ids[chain[-1]], ids[piece]] = logit

    ff, heads = 64, 4
    f32 = np.float32
    scale = math.sqrt(hidden)
    tensors = {
        "model.embed_tokens.weight": (np.eye(hidden) * scale).astype(f32),
        "lm_head.weight": np.ascontiguousarray(table.T / scale, dtype=f32),
        "model.norm.weight": np.ones(hidden, f32),
        "model.layers.0.input_layernorm.weight": np.ones(hidden, f32),
        "model.layers.0.post_attention_layernorm.weight": np.ones(hidden, f32),
    }
    for name, shape in {
        "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (ff, hidden), "mlp.up_proj": (ff, hidden),
        "mlp.down_proj": (hidden, ff),
    }.items():  # every block adds exactly zero to the residual stream
        tensors[f"model.layers.0.{name}.weight"] = np.zeros(shape, f32)
    save_file(tensors, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": hidden,
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": 1,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": 8192, "rms_norm_eps": RMS_EPS, "rope_theta": 10000.0,
        "bos_token_id": n_tokens - 2, "eos_token_id": n_tokens - 1, "hidden_act": "silu",
        "tie_word_embeddings": False, "torch_dtype": "float32",
    }))
    (path,) = convert_checkpoint(ckpt, dst, outtype="f32", prompt_format="v2", name="chain")
    return ChainModel(path, ids, table, tuple(chain))
