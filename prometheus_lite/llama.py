"""The one module that talks to llama.cpp (through llama-cpp-python's C bindings).

It loads a GGUF, tokenizes prompts, decodes batches of tokens over several
sequences, copies and truncates sequences in the KV cache, and runs llama.cpp's
sampler chain. THE decode loop that drives these is :mod:`prometheus_lite.engine`.
Everything else in prometheus-lite is plain Python and never imports ``llama_cpp``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import native
from .errors import InvalidModelFileError, ModelError

if TYPE_CHECKING:
    from .prompts import Prompt

__all__ = [
    "Sampling",
    "BatchEntry",
    "LlamaRuntime",
    "label_distribution",
    "supports_gpu_offload",
    "device_memory",
    "gpu_devices",
    "KV_CACHE_TYPES",
]

log = logging.getLogger(__name__)

LLAMA_MAX_SEQ = 256  # sequences one context can hold (src/llama-cparams.h)

# --- batch invariance (issue 16, section 3; measured by bench/invariance.py) -----------------
# llama.cpp's CPU backend picks kernels by batch shape. Each path below gives a sequence's rows
# other bits than the path it takes alone; ``LlamaRuntime(batch_invariant=True)`` keeps every
# decode on one path per op (source: vendor/llama.cpp/ggml/src/ggml-cpu of llama-cpp-python
# 0.3.36):
# - flash attention (ops.cpp, ggml_compute_forward_flash_attn_ext_f16): one query row in the
#   ubatch and >= 512 KV cells -> KV split over threads and re-reduced; >= GGML_FA_TILE_Q (64)
#   query rows -> the tiled kernel; otherwise one row at a time over the cells (invariant).
#   Remedy: every ubatch has 2..63 tokens (pad a lone row; cap n_ubatch at 63).
# - K-quant matmuls (tiled/tiled.cpp): >= 8 columns -> tiles, else vec_dot. Remedy: the
#   process-wide GGML_CPU_TILED_MM=0 (read once, at the first matmul of the process).
# - repacked weights (repack.cpp, CPU_REPACK extra buffer type, Q4_0/Q4_K/IQ4_NL/...): columns
#   in groups of 4 -> gemm, the rest -> gemv. Remedy: use_extra_bufts = False.
# - llamafile sgemm (tinyBLAS) for F32/F16/Q8_0/Q4_0 at >= 2 columns vs vec_dot at 1: same bits
#   on the AVX-512 CPU measured; padding to >= 2 rows and outputs keeps it on one path anyway.
INVARIANT_MAX_TOKENS = 63  # GGML_FA_TILE_Q - 1
# The same tile threshold costs speed whenever a pass mixes sequences: the tiled kernel
# skips a 64-cell KV tile only when it is masked for all 64 query rows of its Q tile, so
# rows of different sequences make every row attend over the union of their cells. Measured
# with raw llama_decode (embedded model, 2 threads, AMD Zen 4, 8 sequences of 900 tokens;
# ``python -P -m prometheus_lite.bench.tile --threads 2``): 9.60 ms per token at 64 rows
# mixed against 5.06 at 63; one sequence alone is faster tiled (4.08 against 4.73). So on
# a CPU a pass of several sequences holds at most MIXED_MAX_TOKENS tokens, and one
# sequence's prompt chunk may use the whole batch.
MIXED_MAX_TOKENS = INVARIANT_MAX_TOKENS
_TILED_MM_ENV = "GGML_CPU_TILED_MM"


ENV_THREADS = "PROMETHEUS_LITE_THREADS"


def default_threads() -> int:
    """CPU threads when none are given: ``$PROMETHEUS_LITE_THREADS``, else the cores this
    process may run on (its CPU affinity, which containers and ``taskset`` narrow).

    ggml's worker threads spin at every barrier, so two processes that each take every core
    (test workers, Ray actors, two servers) slow each other far beyond sharing: give each
    its share here.
    """
    raw = os.environ.get(ENV_THREADS, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ModelError(f"{ENV_THREADS}={raw!r} is not a thread count: set a whole "
                             "number >= 1, or unset it to use every core this process may use")
        return int(raw)
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _llama():  # imported lazily so that `import prometheus_lite` stays light
    # A build whose very import dies on this CPU is caught by the probe (in a child
    # process) and reported as a clear error, before this process imports it.
    native.extra_buffer_types_ok()
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


@dataclass(frozen=True)
class BatchEntry:
    """One token of a ``llama_decode`` batch."""

    token: int
    pos: int
    seq: int
    logits: bool


# KV cache element types as llama.cpp names them (common/arg.cpp, --cache-type-k/-v), with
# (ggml type id from ggml.h's enum ggml_type, bytes per block, elements per block from
# ggml-common.h: block_q8_0 = fp16 scale + 32 int8, block_q4_0 = fp16 scale + 16 bytes).
KV_CACHE_TYPES: dict[str, tuple[int, int, int]] = {
    "f16": (1, 2, 1),
    "q8_0": (8, 34, 32),
    "q4_0": (2, 18, 32),
}


def gpu_devices() -> list[dict[str, Any]]:
    """The GPU devices llama.cpp offloads to: ``name``, ``description``, ``free`` and
    ``total`` bytes; empty without one.

    Every device of type GPU (integrated GPUs only when there is no discrete one), as
    llama.cpp picks its offload devices (src/llama.cpp, llama_model_load_from_file).
    llama-cpp-python does not bind these calls, so they are taken from libggml (loaded by
    ``llama_cpp._ggml``) with ctypes.
    """
    _llama()
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_size_t)] * 2
    lib.ggml_backend_dev_memory.restype = None
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_char_p
    gpu, igpu = 1, 2  # GGML_BACKEND_DEVICE_TYPE_GPU / _IGPU (ggml-backend.h)
    found: dict[int, list[dict[str, Any]]] = {gpu: [], igpu: []}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        kind = lib.ggml_backend_dev_type(dev)
        if kind in found:
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            found[kind].append({
                "name": (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                "description": (lib.ggml_backend_dev_description(dev) or b"").decode(
                    errors="replace"),
                "free": free.value,
                "total": total.value,
            })
    return found[gpu] or found[igpu]


def device_memory() -> tuple[int, int] | None:
    """(free, total) bytes over the GPU devices llama.cpp offloads to (:func:`gpu_devices`),
    or None without one."""
    devices = gpu_devices()
    if not devices:
        return None
    return sum(d["free"] for d in devices), sum(d["total"] for d in devices)


class LlamaRuntime:
    """A loaded GGUF model with one context of ``n_seq`` sequences: the binding's primitives.

    Tokenization, batched decoding, the KV cache's sequence operations and llama.cpp's
    sampler chain. The decode loop that uses them is :mod:`prometheus_lite.engine`;
    nothing else calls ``llama_decode``.

    The KV cache is ONE pool of ``kv_cells`` cells shared by all sequences (llama.cpp's
    unified cache, as llama-server's ``--kv-unified``): a cell holds one token of the
    sequences that share it, so memory follows the tokens that exist, and
    ``seq_copy`` shares the source's cells (a cached prefix costs nothing to reuse).
    llama.cpp then splits a batch with ``split_simple`` (src/llama-kv-cache.cpp
    ``init_batch``): with ``n_ubatch == max_batch`` every ``decode`` is one forward pass,
    whatever the order of its sequences and however prompt chunks and single tokens mix
    (per-sequence streams split a batch into one pass per run of consecutive sequence ids
    with equal token counts). No sequence may exceed ``n_ctx`` tokens (the engine keeps to
    it); when the pool is full ``decode`` returns 1 and the engine makes room.

    Args:
        path: the GGUF file.
        n_ctx: the most tokens of one sequence; default min(4096, the training context).
        n_threads: CPU threads; default :func:`default_threads`.
        n_gpu_layers: layers to offload; default all when the build supports GPU offload.
        n_seq: sequences in the context (running ones plus cached prefixes).
        kv_cells: cells in the KV pool (at least ``n_ctx``; llama.cpp rounds up to 256);
            default ``n_ctx``.
        plan: instead of ``n_seq`` and ``kv_cells``: called with the loaded runtime (so
            :meth:`kv_bytes_per_token` and :func:`device_memory` are known) before the
            context is made; returns ``(n_seq, kv_cells)``.
        n_batch: tokens per prefill chunk, and the granularity of prompt-prefix reuse.
            64 costs about 5% of prefill speed against 512 on a 2-core CPU, and lets
            Prometheus prompts reuse most of their shared ~200-token task description.
        max_batch: most tokens in one ``llama_decode`` call (default ``n_batch``).
        n_ubatch: tokens per forward pass (default ``max_batch``: one pass per decode;
            smaller only to test multi-pass failures).
        cache_type_k, cache_type_v: KV cache types, ``f16``, ``q8_0`` or ``q4_0``
            (a quantized V cache needs flash attention).
        flash_attn: None lets llama.cpp decide (on where the backend supports it).
        mixed_batch: most tokens in a ``decode`` that holds more than one sequence
            (default ``max_batch``); on a CPU, :data:`MIXED_MAX_TOKENS` keeps such passes
            off flash attention's tiled kernel.
        eval_callback: llama.cpp's ``cb_eval`` (a ``ggml_backend_sched_eval_callback``),
            for tests and debugging only: it slows every graph.
        batch_invariant: a sequence's logits are the same bits whatever else is in the batch
            (see ``INVARIANT_MAX_TOKENS`` above): no repacked weights, no tiled K-quant
            matmuls in this process, at most 63 tokens a pass (``n_batch`` and ``max_batch``
            capped at 61, leaving room for padding), and a decode of one row or one output
            gets a padding row of an extra sequence (id ``n_seq``), removed again after it.
            The cells a sequence gets must also follow its positions (flash attention sums
            in cell order; bench/invariance.py ``--finish-one`` measures it): the engine
            then frees no cell while a job runs (:meth:`seq_retire`, :meth:`clear`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        n_seq: int = 1,
        kv_cells: int | None = None,
        plan: Callable[[LlamaRuntime], tuple[int, int]] | None = None,
        n_batch: int = 64,
        max_batch: int | None = None,
        n_ubatch: int | None = None,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        flash_attn: bool | None = None,
        mixed_batch: int | None = None,
        eval_callback=None,
        batch_invariant: bool = False,
    ) -> None:
        if batch_invariant:  # before the first matmul of the process, which reads it once
            os.environ[_TILED_MM_ENV] = "0"
        for what, name in (("cache_type_k", cache_type_k), ("cache_type_v", cache_type_v)):
            if name not in KV_CACHE_TYPES:
                raise ValueError(
                    f"{what} must be one of {', '.join(KV_CACHE_TYPES)} (llama.cpp's names), "
                    f"got {name!r}"
                )
        if cache_type_v != "f16" and flash_attn is False:
            raise ValueError(
                f"a quantized V cache ({cache_type_v}) needs flash attention in llama.cpp; "
                "enable flash attention (or leave it on auto), or use cache_type_v='f16'"
            )
        self.cache_type_k, self.cache_type_v = cache_type_k, cache_type_v
        L = _llama()
        self._L = L
        self.path = Path(path)
        self._model = self._ctx = self._batch = None
        if n_gpu_layers is None:
            n_gpu_layers = -1 if L.llama_supports_gpu_offload() else 0
        self.n_gpu_layers = n_gpu_layers
        mparams = L.llama_model_default_params()
        # False only where AMX & co crash, or for batch invariance (repacked gemm vs gemv)
        mparams.use_extra_bufts = native.extra_buffer_types_ok() and not batch_invariant
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
        self.n_ctx = n_ctx or min(4096, self.n_ctx_train)
        if plan is not None:
            n_seq, kv_cells = plan(self)
        # batch_invariant: two more sequences, the padding rows' and the retired cells'.
        self.n_seq = max(1, min(int(n_seq), LLAMA_MAX_SEQ - 2 * batch_invariant))
        cells = max(self.n_ctx, int(kv_cells or self.n_ctx))
        threads = n_threads or default_threads()
        max_batch = max(n_batch, max_batch or n_batch)
        self.batch_invariant = batch_invariant
        if batch_invariant:
            # Room for the padding rows (at most 2) inside one pass of < 64 rows.
            n_batch = min(n_batch, INVARIANT_MAX_TOKENS - 2)
            max_batch = min(max_batch, INVARIANT_MAX_TOKENS - 2)
        pad_room = 2 if batch_invariant else 0
        cparams = L.llama_context_default_params()
        cparams.n_ctx = cells
        cparams.n_batch = max_batch + pad_room
        cparams.n_ubatch = min(max_batch, n_ubatch or max_batch) + pad_room
        cparams.n_seq_max = self.n_seq + 2 * batch_invariant  # + padding, retired cells
        cparams.kv_unified = True
        cparams.type_k = KV_CACHE_TYPES[cache_type_k][0]
        cparams.type_v = KV_CACHE_TYPES[cache_type_v][0]
        if flash_attn is not None:
            cparams.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_* (llama.h)
        if eval_callback is not None:
            self._eval_callback = eval_callback  # llama.cpp holds the pointer: keep it alive
            cparams.cb_eval = eval_callback
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise ModelError(
                f"llama.cpp could not create a context of {cells} KV cells ({self.n_seq} "
                f"sequences, K cache {cache_type_k}, V cache {cache_type_v}) for {self.path}; "
                "lower --parallel or --n-ctx (the KV cache may not fit in memory), or use "
                "f16 cache types (a quantized cache needs a head size divisible by 32 and, "
                "for V, flash attention; run with -v to see llama.cpp's message)."
            )
        self._mem = L.llama_get_memory(self._ctx)
        self.kv_cells = int(L.llama_n_ctx(self._ctx))  # the pool, as llama.cpp rounded it
        self.n_batch = n_batch
        self.max_batch = int(L.llama_n_batch(self._ctx)) - pad_room  # the callers' tokens
        self.n_ubatch = int(L.llama_n_ubatch(self._ctx)) - pad_room
        self.mixed_batch = min(self.max_batch, mixed_batch or self.max_batch)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self._batch = L.llama_batch_init(self.max_batch + 2, 0, 1)  # + padding rows
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
        # Candidate buffer shared by every sampling step (the layout of llama_token_data),
        # reset from a template (ids in order, p = 0) with one contiguous copy per step:
        # the samplers sort and rewrite it in place.
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self._cand_template = np.zeros(self.n_vocab, dtype=dtype)
        self._cand_template["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._cand = self._cand_template.copy()
        self._cand_logits = self._cand["logit"]  # a strided view into the buffer
        self._cand_bytes = self._cand.view(np.uint8)  # for a plain memcpy from the template
        self._cand_template_bytes = self._cand_template.view(np.uint8)
        self._cand_ptr = self._cand.ctypes.data_as(L.llama_token_data_p)
        self._cand_array = L.llama_token_data_array(
            data=self._cand_ptr,
            size=self.n_vocab,
            selected=-1,
            sorted=False,
        )

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

    def kv_bytes_per_token(
        self, cache_type_k: str | None = None, cache_type_v: str | None = None
    ) -> int:
        """Bytes of K and V cache per token (per cell), for this runtime's cache types or
        the ones given."""
        L, m = self._L, self._model
        n_head = max(1, int(L.llama_model_n_head(m)))
        head_dim = int(L.llama_model_n_embd(m)) // n_head
        per_row = int(L.llama_model_n_layer(m)) * int(L.llama_model_n_head_kv(m)) * head_dim
        total = 0.0
        for name in (cache_type_k or self.cache_type_k, cache_type_v or self.cache_type_v):
            _, block_bytes, block = KV_CACHE_TYPES[name]
            total += per_row * block_bytes / block
        return math.ceil(total)

    @property
    def kv_bytes(self) -> int:
        """Bytes of the whole KV pool."""
        return self.kv_bytes_per_token() * self.kv_cells

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

    # -- decoding and the KV cache ------------------------------------------------------
    def decode(self, entries: list[BatchEntry]) -> int:
        """One ``llama_decode`` over ``entries`` (at most ``max_batch``); llama.cpp's code.

        0 is success; 1: no room in the KV pool (nothing was computed or kept). On other
        failures llama.cpp removes only the failing forward pass's tokens (from each of its
        sequences' lowest position on): earlier passes stay in the cache, which
        :meth:`seq_pos_max` tells.
        """
        if len(entries) > self.max_batch:  # the batch's arrays hold max_batch rows
            raise ValueError(f"{len(entries)} tokens in one decode; at most max_batch "
                             f"({self.max_batch}): split them into several decodes")
        b = self._batch
        pad = self._padding(entries) if self.batch_invariant else []
        for i, e in enumerate(entries + pad):
            b.token[i] = e.token
            b.pos[i] = e.pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = e.seq
            b.logits[i] = e.logits
        b.n_tokens = len(entries) + len(pad)
        code = int(self._L.llama_decode(self._ctx, b))
        if pad:
            self._L.llama_memory_seq_rm(self._mem, self.n_seq, -1, -1)
        return code

    def _padding(self, entries: list[BatchEntry]) -> list[BatchEntry]:
        """Rows that give a decode >= 2 rows and >= 2 outputs (batch_invariant; appended, so the
        callers' row numbers stay), for the padding sequence ``n_seq``."""
        n = max(2 - len(entries), 2 - sum(e.logits for e in entries), 0)
        return [BatchEntry(max(self.bos, 0), p, self.n_seq, True) for p in range(n)]

    def logits(self, row: int) -> np.ndarray:
        """The logits of batch row ``row`` of the last decode (a view, valid until the next)."""
        ptr = self._L.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def seq_truncate(self, seq: int, n: int) -> None:
        """Keep the first ``n`` positions of sequence ``seq`` in the cache."""
        if not self._L.llama_memory_seq_rm(self._mem, seq, n, -1):
            raise ModelError(f"llama.cpp could not truncate sequence {seq} at {n}")

    def seq_copy(self, src: int, dst: int) -> None:
        """Make ``dst`` a copy of ``src``: in the unified pool it shares ``src``'s cells."""
        self._L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def seq_clear(self, seq: int) -> None:
        """Drop every token of sequence ``seq`` (cells no other sequence holds are freed)."""
        self.seq_truncate(seq, 0)

    # batch_invariant: llama.cpp puts new tokens from its search head on, and moves the head
    # down to any cell freed below it (src/llama-kv-cache.cpp: seq_rm, find_slot), so a
    # sequence still running would get cells below its older ones. Retired cells stay
    # occupied (by sequence n_seq + 1) until the pool is cleared: the pool only grows.
    def seq_retire(self, seq: int, n: int) -> None:
        """Keep the first ``n`` positions of ``seq``; its later cells are not freed but
        held by the retired-cells sequence until :meth:`clear` (batch_invariant only)."""
        if not self.batch_invariant:
            raise ValueError("seq_retire needs LlamaRuntime(batch_invariant=True)")
        self._L.llama_memory_seq_cp(self._mem, seq, self.n_seq + 1, n, -1)
        self.seq_truncate(seq, n)

    def free_retired(self) -> None:
        """Free the retired cells now (new tokens may then land below running ones)."""
        self._L.llama_memory_seq_rm(self._mem, self.n_seq + 1, -1, -1)

    def clear(self) -> None:
        """Empty the whole pool; new tokens go from cell 0 on again."""
        self._L.llama_memory_clear(self._mem, False)

    def seq_pos_max(self, seq: int) -> int:
        """The highest position of ``seq`` in the cache, -1 when it holds none."""
        return int(self._L.llama_memory_seq_pos_max(self._mem, seq))

    # -- sampling ------------------------------------------------------------------------
    def sampler(self, sampling: Sampling, seed: int, history: list[int]):
        """llama.cpp's sampler chain for ``sampling``, having seen ``history``."""
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

    def accept(self, chain, token: int) -> None:
        self._L.llama_sampler_accept(chain, token)

    def free_sampler(self, chain) -> None:
        self._L.llama_sampler_free(chain)

    def sample(self, chain, logits: np.ndarray, mask: np.ndarray | None) -> int:
        """Run the sampler chain over the logits (restricted to ``mask`` if given)."""
        np.copyto(self._cand_bytes, self._cand_template_bytes)
        if mask is None:
            self._cand_logits[:] = logits
        else:
            np.copyto(self._cand_logits, np.where(mask, logits, -np.inf))
        arr = self._cand_array
        arr.data = self._cand.ctypes.data_as(self._L.llama_token_data_p)
        arr.size = self.n_vocab
        arr.selected = -1
        arr.sorted = False
        self._L.llama_sampler_apply(chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

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
