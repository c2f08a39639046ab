"""The one module that talks to llama.cpp (through llama-cpp-python's C bindings).

It loads a GGUF, tokenizes prompts and runs THE decode loop: prompt prefill with
prefix reuse, sampling with llama.cpp's sampler chain, the output constraint
checked on each sampled token, the steered close when the feedback budget runs
out, and the label distribution. Everything else in prometheus-lite is plain
Python and never imports ``llama_cpp``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import native
from .constraint import ConstraintState, OutputConstraint
from .errors import DecodeError, InvalidModelFileError, ModelError

if TYPE_CHECKING:
    from .prompts import Prompt

__all__ = [
    "Sampling",
    "Generation",
    "LlamaRuntime",
    "label_distribution",
    "supports_gpu_offload",
]

log = logging.getLogger(__name__)


def _llama():  # imported lazily so that `import prometheus_lite` stays light
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(
        logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR
    )
    return llama_cpp


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, ...)."""
    return bool(_llama().llama_supports_gpu_offload())


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen. Defaults are the official Prometheus settings.

    ``greedy=True`` takes the most likely token at every step (deterministic);
    the repetition penalty still applies, as in Hugging Face's greedy search.
    """

    temperature: float = 1.0
    top_p: float = 0.9
    repetition_penalty: float = 1.03
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ValueError(
                "sampling needs temperature >= 0, 0 < top_p <= 1 and repetition_penalty > 0; "
                f"got {self.temperature}, {self.top_p}, {self.repetition_penalty}"
            )


@dataclass
class Generation:
    """What one decode produced."""

    tokens: list[int]
    text: bytes
    label: str | None  # the constrained label, None for unconstrained runs
    label_probs: dict[str, float] = field(default_factory=dict)
    finish: str = "model"  # "model" | "budget" | "eos" (unconstrained) | "length" (unconstrained)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0


class LlamaRuntime:
    """A loaded GGUF model with one context: tokenizer plus the decode loop.

    Args:
        path: the GGUF file.
        n_ctx: context size; default min(4096, the model's training context).
        n_threads: CPU threads; default all cores.
        n_gpu_layers: layers to offload; default all when the build supports GPU offload.
        n_batch: tokens per prefill step, and the granularity of prompt-prefix reuse.
            64 costs about 5% of prefill speed against 512 on a 2-core CPU, and lets
            Prometheus prompts reuse most of their shared ~200-token task description.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        n_batch: int = 64,
    ) -> None:
        L = _llama()
        self._L = L
        self.path = Path(path)
        self._model = self._ctx = self._batch = None
        if n_gpu_layers is None:
            n_gpu_layers = -1 if L.llama_supports_gpu_offload() else 0
        mparams = L.llama_model_default_params()
        mparams.use_extra_bufts = native.extra_buffer_types_ok()  # False only where AMX & co crash
        mparams.n_gpu_layers = n_gpu_layers
        self._model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise InvalidModelFileError(
                f"llama.cpp could not load {self.path}. The file may be corrupt, truncated, or "
                "use an architecture this llama.cpp build does not know; re-download or "
                "re-convert it (run with -v to see llama.cpp's own message)."
            )
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
        n_ctx = n_ctx or min(4096, self.n_ctx_train)
        threads = n_threads or os.cpu_count() or 1
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(n_batch, n_ctx)
        cparams.n_ubatch = min(n_batch, n_ctx)
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise ModelError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {self.path}; "
                "lower --n-ctx (the KV cache may not fit in memory)."
            )
        self._mem = L.llama_get_memory(self._ctx)
        self.n_ctx = int(L.llama_n_ctx(self._ctx))
        self.n_batch = int(L.llama_n_batch(self._ctx))
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        self.bos = int(L.llama_vocab_bos(self._vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.pieces = [self._piece(t) for t in range(self.n_vocab)]
        # End-of-generation and control tokens never belong in the judge's answer.
        self.banned = np.fromiter(
            (
                L.llama_vocab_is_eog(self._vocab, t) or L.llama_vocab_is_control(self._vocab, t)
                for t in range(self.n_vocab)
            ),
            dtype=bool,
            count=self.n_vocab,
        )
        self.eog = [t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self._vocab, t)]
        # Control tokens by their text, to find them in chat-template text.
        self._special_ids: dict[str, int] = {}
        for t in range(self.n_vocab):
            if L.llama_vocab_get_attr(self._vocab, t) & L.LLAMA_TOKEN_ATTR_CONTROL:
                text = (L.llama_vocab_get_text(self._vocab, t) or b"").decode("utf-8", "replace")
                if text:
                    self._special_ids.setdefault(text, t)
        self._special_re = (
            re.compile(
                "("
                + "|".join(re.escape(k) for k in sorted(self._special_ids, key=len, reverse=True))
                + ")"
            )
            if self._special_ids
            else None
        )
        # Candidate buffer shared by every sampling step (the layout of llama_token_data).
        self._cand = np.zeros(
            self.n_vocab,
            dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]),
        )
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._cand_array = L.llama_token_data_array(
            data=self._cand.ctypes.data_as(L.llama_token_data_p),
            size=self.n_vocab,
            selected=-1,
            sorted=False,
        )
        self._cached: list[int] = []  # tokens whose keys/values are in the KV cache, in order

    # -- metadata ----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    # -- tokens --------------------------------------------------------------------------
    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (self._L.llama_token * cap)()
        n = self._L.llama_tokenize(
            self._vocab, data, len(data), out, cap, add_special, parse_special
        )
        if n < 0:
            cap = -n
            out = (self._L.llama_token * cap)()
            n = self._L.llama_tokenize(
                self._vocab, data, len(data), out, cap, add_special, parse_special
            )
        return list(out[:n])

    def tokenize_prompt(self, prompt: Prompt) -> list[int]:
        """Tokens of a prompt, as llama.cpp would split the whole text, but safe.

        llama.cpp tokenizes text by first cutting it at special tokens and then
        tokenizing each plain run (SentencePiece adds its leading space at the start
        of each run). We do the same, except that special tokens are only looked for
        in the template's own pieces: graded text that contains e.g. ``</s>`` or
        ``<|im_end|>`` stays plain text.
        """
        tokens: list[int] = []
        run: list[str] = []
        for piece, template in prompt.segments:
            if not template or self._special_re is None:
                run.append(piece)
                continue
            for i, part in enumerate(self._special_re.split(piece)):
                if i % 2 == 0:
                    run.append(part)
                else:  # a special token written by the template
                    if "".join(run):
                        tokens += self.tokenize(
                            "".join(run), add_special=False, parse_special=False
                        )
                    run = []
                    tokens.append(self._special_ids[part])
        if "".join(run):
            tokens += self.tokenize("".join(run), add_special=False, parse_special=False)
        if self.add_bos and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)
        return tokens

    def detokenize(self, tokens: list[int]) -> bytes:
        return b"".join(self.pieces[t] for t in tokens)

    # -- the KV cache --------------------------------------------------------------------
    def _prefill(self, tokens: list[int]) -> int:
        """Bring the KV cache to ``tokens`` and compute logits for the last one.

        Reuses the prefix already in the cache (Prometheus prompts share their whole
        task description), so only the new tail is processed. Returns the number of
        reused tokens.

        Why reuse stops at a multiple of ``n_batch``: llama.cpp's results depend
        (in the last bits) on how tokens are grouped into batches. The prompt is
        always processed in chunks aligned to ``n_batch`` from position 0, and only
        whole chunks are reused, so the KV cache and the logits are bit-identical to
        a fresh run: a grade does not depend on what was graded before it.
        """
        L = self._L
        common = 0
        for a, b in zip(self._cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        # Whole chunks only, and never the chunk holding the last token: we need its logits.
        keep = min(common, len(tokens) - 1) // self.n_batch * self.n_batch
        if keep < len(self._cached):
            if not L.llama_memory_seq_rm(self._mem, 0, keep, -1):
                L.llama_memory_clear(self._mem, True)
                keep = 0
        self._cached = tokens[:keep]
        for start in range(keep, len(tokens), self.n_batch):
            self._decode(tokens[start : start + self.n_batch], start)
        self._cached = list(tokens)
        return keep

    def _decode(self, tokens: list[int], pos: int, *, all_logits: bool = False) -> None:
        b = self._batch
        n = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if all_logits else 0
        b.logits[n - 1] = 1
        b.n_tokens = n
        rc = self._L.llama_decode(self._ctx, b)
        if rc != 0:
            self._cached = []
            self._L.llama_memory_clear(self._mem, True)
            raise DecodeError(
                f"llama_decode failed with code {rc} (no room in the KV cache, or out of "
                "memory); rerun to retry the item, or lower --n-ctx / --parallel"
            )

    def forced_logits(self, prompt_tokens: list[int], answer_tokens: list[int]) -> np.ndarray:
        """Raw logits after the prompt and after each answer token (teacher forcing).

        Shape ``(len(answer_tokens) + 1, n_vocab)``. The prompt is brought into the
        cache exactly as :meth:`generate` does (same chunks, same reuse), so row 0
        equals the logits a grade samples its first token from.
        """
        if len(prompt_tokens) + len(answer_tokens) > self.n_ctx:
            raise ModelError(
                f"prompt plus answer ({len(prompt_tokens)} + {len(answer_tokens)} tokens) "
                f"does not fit n_ctx={self.n_ctx}"
            )
        out = np.empty((len(answer_tokens) + 1, self.n_vocab), dtype=np.float32)
        self._prefill(prompt_tokens)
        out[0] = self._logits()
        pos = len(prompt_tokens)
        for start in range(0, len(answer_tokens), self.n_batch):
            chunk = answer_tokens[start : start + self.n_batch]
            self._decode(chunk, pos, all_logits=True)
            self._cached += chunk
            for i in range(len(chunk)):
                ptr = self._L.llama_get_logits_ith(self._ctx, i)
                out[start + i + 1] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            pos += len(chunk)
        return out

    def _logits(self) -> np.ndarray:
        ptr = self._L.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # -- sampling ------------------------------------------------------------------------
    def _sampler(self, sampling: Sampling, seed: int, history: list[int]):
        L = self._L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.repetition_penalty != 1.0:
            # Hugging Face semantics: every token seen so far, prompt included.
            L.llama_sampler_chain_add(
                chain,
                L.llama_sampler_init_penalties(
                    self.n_vocab, self.n_ctx, sampling.repetition_penalty, 0.0, 0.0
                ),
            )
        if sampling.greedy or sampling.temperature == 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
            if sampling.top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        for t in history:
            L.llama_sampler_accept(chain, t)
        return chain

    def _sample(self, chain, logits: np.ndarray, mask: np.ndarray | None) -> int:
        """Run the sampler chain over the logits (restricted to ``mask`` if given)."""
        cand = self._cand
        cand["id"] = self._ids
        if mask is None:
            cand["logit"] = logits
        else:
            cand["logit"] = np.where(mask, logits, -np.inf)
        cand["p"] = 0.0
        arr = self._cand_array
        arr.data = cand.ctypes.data_as(self._L.llama_token_data_p)
        arr.size = self.n_vocab
        arr.selected = -1
        arr.sorted = False
        self._L.llama_sampler_apply(chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    # -- THE decode loop ----------------------------------------------------------------
    def generate(
        self,
        prompt_tokens: list[int],
        *,
        constraint: OutputConstraint | None,
        sampling: Sampling,
        max_new_tokens: int,
        seed: int = 0,
        stop_at_eog: bool = True,
    ) -> Generation:
        """Generate up to ``max_new_tokens`` after the prompt.

        With a constraint, the output is always ``feedback [RESULT] label``: a sampled
        token the constraint rejects is resampled from the allowed tokens only, and
        when the feedback budget (``max_new_tokens`` minus the closing reserve) runs
        out, the closing tokens are written for the model. Without a constraint the
        loop stops at an end-of-generation token (unless ``stop_at_eog`` is False, as
        benchmarks do to generate a fixed number of tokens) or at the budget.
        """
        L = self._L
        if len(prompt_tokens) >= self.n_ctx:
            raise ModelError(
                f"prompt of {len(prompt_tokens)} tokens does not fit n_ctx={self.n_ctx}"
            )
        max_new_tokens = min(max_new_tokens, self.n_ctx - len(prompt_tokens))
        t0 = time.perf_counter()
        reused = self._prefill(prompt_tokens)
        t1 = time.perf_counter()
        chain = self._sampler(sampling, seed, prompt_tokens)
        out: list[int] = []
        gen = Generation(tokens=out, text=b"", label=None, prompt_tokens=len(prompt_tokens))
        gen.cached_prompt_tokens = reused
        state = ConstraintState()
        feedback_budget = max_new_tokens - (constraint.reserve if constraint else 0)
        eog = set(self.eog)
        try:
            while True:
                logits = self._logits()
                if not stop_at_eog:
                    logits[self.eog] = -np.inf
                if constraint is not None and state.phase == 0 and len(out) >= feedback_budget:
                    # Budget spent inside the feedback: close it and open the label.
                    last = self.pieces[out[-1]][-1:] if out and self.pieces[out[-1]] else b""
                    closing, state = constraint.closing(state, last[0] if last else None)
                    for t in closing:
                        L.llama_sampler_accept(chain, t)
                    out += closing
                    self._decode(closing, len(self._cached))
                    self._cached += closing
                    gen.finish = "budget"
                    continue
                labels = constraint.label_tokens(state) if constraint is not None else {}
                token = self._sample(chain, logits, None)
                if constraint is not None:
                    nxt = constraint.advance(state, token)
                    if nxt is None:
                        token = self._sample(chain, logits, constraint.allowed_mask(state))
                        nxt = constraint.advance(state, token)
                        assert nxt is not None, "the sampler chose a masked token"
                    state = nxt
                L.llama_sampler_accept(chain, token)
                out.append(token)
                if labels and state.done:
                    gen.label = state.label
                    gen.label_probs = label_distribution(logits, labels)
                    break
                if constraint is None and (token in eog or len(out) >= max_new_tokens):
                    gen.finish = "eos" if token in eog else "length"
                    break
                self._decode([token], len(self._cached))
                self._cached.append(token)
        finally:
            L.llama_sampler_free(chain)
        gen.text = self.detokenize(out)
        gen.prefill_s = t1 - t0
        gen.decode_s = time.perf_counter() - t1
        return gen

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        L = self._L
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def label_distribution(logits: np.ndarray, labels: dict[str, list[int]]) -> dict[str, float]:
    """P(label) from raw logits at the label position, over the tokens that write a label.

    Tokens writing the same label (``"5"`` and ``" 5"``) are summed.
    """
    names = sorted(labels)
    per_label = [np.asarray(logits[labels[n]], dtype=np.float64) for n in names]
    top = max(float(v.max()) for v in per_label)
    mass = [float(np.exp(v - top).sum()) for v in per_label]
    total = math.fsum(mass)
    return {n: m / total for n, m in zip(names, mass, strict=False)}
