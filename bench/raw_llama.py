"""The baseline for the overhead comparison: llama.cpp's low-level API, nothing else.

This is the loop of llama.cpp's ``examples/simple``, written directly against
``llama_cpp``'s C bindings: ``llama_decode`` over a ``llama_batch``, a sampler chain
built from llama.cpp's own samplers, ``llama_sampler_sample`` (which reads the logits and
applies the chain in C). It uses the settings the Judge uses when the benchmark runs it
(context size, batch size, threads, llama.cpp's CPU buffer types as
``prometheus_lite.native`` decides them; greedy with the repetition penalty over the prompt
and output, as ``prometheus_lite.llama`` builds the chain) and, like the Judge, keeps the
KV cache of the previous prompt and reuses the common prefix, so both do the same work.

End-of-generation tokens are removed with a logit-bias sampler, so it always produces
exactly the requested number of tokens (the Judge's constraint bans them too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RawLlama", "RawRun"]


@dataclass
class RawRun:
    tokens: list[int]
    reused: int  # prompt tokens whose KV entries were kept from the previous prompt
    prefill_s: float
    gen_s: float
    prefill_cpu_s: float = 0.0  # process CPU time (time.process_time), all threads
    gen_cpu_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.gen_s


class RawLlama:
    """One model and one context, driven through the C API only."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int,
        n_threads: int,
        n_batch: int = 64,  # the Judge's default
        n_gpu_layers: int = 0,
        use_extra_bufts: bool | None = None,  # None: as the Judge loads (native's probe)
        load_log: list[str] | None = None,  # if given, receives llama.cpp's model-load log
    ) -> None:
        import llama_cpp as L

        logger = logging.getLogger("llama-cpp-python")
        self.L = L
        self._model = self._ctx = self._batch = None
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        if use_extra_bufts is None:
            from prometheus_lite.native import extra_buffer_types_ok

            use_extra_bufts = extra_buffer_types_ok()
        mparams.use_extra_bufts = use_extra_bufts
        # llama-cpp-python's log callback prints to sys.stderr when its logger allows it.
        logger.setLevel(logging.INFO if load_log is not None else logging.ERROR)
        captured = io.StringIO()
        quiet = load_log is None
        with contextlib.nullcontext() if quiet else contextlib.redirect_stderr(captured):
            self._model = L.llama_model_load_from_file(str(Path(path)).encode(), mparams)
        logger.setLevel(logging.ERROR)
        if load_log is not None:
            load_log += captured.getvalue().splitlines()
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(vocab))
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = min(n_batch, n_ctx)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_ctx = int(L.llama_n_ctx(self._ctx))
        self.n_batch = int(L.llama_n_batch(self._ctx))
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        eog = [t for t in range(self.n_vocab) if L.llama_vocab_is_eog(vocab, t)]
        self._bias = (L.llama_logit_bias * len(eog))(
            *[L.llama_logit_bias(token=t, bias=float("-inf")) for t in eog]
        )
        self._cached: list[int] = []

    def _decode(self, tokens: list[int], pos: int) -> None:
        b, n = self._batch, len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 0
        b.logits[n - 1] = 1
        b.n_tokens = n
        if self.L.llama_decode(self._ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def _chain(self, repetition_penalty: float, history: list[int]):
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(
            chain, L.llama_sampler_init_logit_bias(self.n_vocab, len(self._bias), self._bias)
        )
        if repetition_penalty != 1.0:
            L.llama_sampler_chain_add(
                chain,
                L.llama_sampler_init_penalties(
                    self.n_vocab, self.n_ctx, repetition_penalty, 0.0, 0.0
                ),
            )
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        for t in history:
            L.llama_sampler_accept(chain, t)
        return chain

    def run(
        self,
        prompt: list[int],
        n_gen: int,
        *,
        forced: list[int] | tuple[int, ...] = (),
        repetition_penalty: float = 1.03,
    ) -> RawRun:
        """Prefill ``prompt`` (reusing the cached prefix), then produce ``n_gen`` tokens.

        Tokens are sampled greedily one at a time and each but the last is decoded. With
        ``forced`` tokens (the Judge's closing ``[RESULT]`` when its feedback budget runs
        out) the same decode calls as the Judge's are made: ``n_gen - len(forced) - 1``
        sampled tokens, one batch with the forced tokens, one final sampled token.
        """
        L = self.L
        if n_gen < 1 or len(forced) >= n_gen:
            raise ValueError("n_gen must be at least 1 and exceed the number of forced tokens")
        t0, c0 = time.perf_counter(), time.process_time()
        keep = 0
        for a, b in zip(self._cached, prompt, strict=False):
            if a != b:
                break
            keep += 1
        # Whole n_batch-aligned chunks only, as the Judge does (see LlamaRuntime._prefill).
        keep = min(keep, len(prompt) - 1) // self.n_batch * self.n_batch
        if keep < len(self._cached):
            L.llama_memory_seq_rm(self._mem, 0, keep, -1)
        for start in range(keep, len(prompt), self.n_batch):
            self._decode(prompt[start : start + self.n_batch], start)
        t1, c1 = time.perf_counter(), time.process_time()
        chain = self._chain(repetition_penalty, prompt)
        out: list[int] = []
        pos = len(prompt)
        try:
            for _ in range(n_gen - len(forced) - 1):
                token = int(L.llama_sampler_sample(chain, self._ctx, -1))  # samples and accepts
                out.append(token)
                self._decode([token], pos)
                pos += 1
            if forced:
                for t in forced:
                    L.llama_sampler_accept(chain, t)
                self._decode(list(forced), pos)
                pos += len(forced)
                out += forced
            out.append(int(L.llama_sampler_sample(chain, self._ctx, -1)))
        finally:
            L.llama_sampler_free(chain)
        t2, c2 = time.perf_counter(), time.process_time()
        self._cached = prompt + out[:-1]  # the last sampled token was never decoded
        return RawRun(out, keep, t1 - t0, t2 - t1, c1 - c0, c2 - c1)

    def close(self) -> None:
        L = self.L
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> RawLlama:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
