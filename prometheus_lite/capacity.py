"""How many sequences to run at once, and how big the shared KV pool is: pure arithmetic.

The engine keeps every sequence's tokens in ONE KV pool (llama.cpp's unified cache), so
memory follows the tokens that exist. The pool must hold one whole context (a prompt that
fits ``n_ctx`` always runs, at worst alone); each further running slot adds a quarter of a
context, about what a typical Prometheus grade takes (a 500 to 900-token prompt plus its
feedback at n_ctx 4096). Cached prefixes live in whatever is free and are evicted, least
recently used first, when running work needs the room; a full pool makes new work wait.

The pool may take a share of the memory it lives in: with GPU offload, the free memory
of the GPU devices llama.cpp offloads to, measured after the weights are loaded
(``llama.device_memory``); otherwise the machine's RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Capacity", "choose_parallel", "AUTO_PARALLEL_CPU", "AUTO_PARALLEL_GPU"]

# Default running slots: a GPU runs many sequences for little more than the price of one;
# on a CPU the gain is smaller (issue 16: one 8-sequence pass costs 4.3x one sequence at 7B).
AUTO_PARALLEL_GPU = 16
AUTO_PARALLEL_CPU = 8
# Share of host RAM the KV pool may take (the weights and the OS need the rest).
KV_MEMORY_SHARE = 0.25
# Share of the GPUs' free memory (after the weights) the pool may take: the compute
# buffers grow with the batch, and other processes may share the card.
KV_DEVICE_SHARE = 0.5
# Each running slot beyond the first adds this fraction of n_ctx to the pool.
CELLS_PER_EXTRA_SLOT = 0.25
# llama.cpp pads its context to a multiple of 256 cells (src/llama-context.cpp).
CELL_PAD = 256


@dataclass(frozen=True)
class Capacity:
    """What the judge runs with: ``n_parallel`` slots, ``n_seq`` sequences (slots plus
    cached prefixes), a pool of ``kv_cells`` cells, and why, in words."""

    n_parallel: int
    n_seq: int
    kv_cells: int
    why: str


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def pool_cells(n_parallel: int, n_ctx: int) -> int:
    """The pool for ``n_parallel`` running slots of ``n_ctx`` tokens at most."""
    return _pad(n_ctx + int((n_parallel - 1) * n_ctx * CELLS_PER_EXTRA_SLOT))


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def choose_parallel(
    requested: int | str,
    *,
    n_ctx: int,
    kv_bytes_per_token: int,
    gpu: bool,
    memory_bytes: int,
    device_free_bytes: int | None = None,
    kv_cells: int | None = None,
) -> Capacity:
    """Running slots, sequences and pool size for ``requested`` ("auto" or a count).

    ``auto`` takes 16 slots with GPU offload and 8 on a CPU, fewer when their pool
    (:func:`pool_cells`) would take more than its share of the memory it lives in (half of
    the GPUs' free memory with offload, a quarter of RAM otherwise). An explicit count
    that does not fit is reduced, and the reason says so. ``kv_cells`` sets the pool
    size instead (at least ``n_ctx``). With one slot the context holds one sequence, so
    that every grade is computed exactly as a fresh run (see engine.py: Determinism).
    """
    if requested == "auto":
        n = AUTO_PARALLEL_GPU if gpu else AUTO_PARALLEL_CPU
        why = f"auto: {'GPU' if gpu else 'CPU'} default {n}"
    else:
        try:
            n = int(requested)
        except (TypeError, ValueError):
            n = 0
        if n < 1:
            raise ValueError(f"parallel must be 'auto' or a positive integer, got {requested!r}")
        why = "chosen with --parallel"
    per_token = max(1, kv_bytes_per_token)
    if gpu and device_free_bytes is not None:
        budget = int(device_free_bytes * KV_DEVICE_SHARE)
        where = f"half of the GPU memory free after the weights ({_gib(device_free_bytes)})"
    else:
        budget = int(memory_bytes * KV_MEMORY_SHARE)
        where = f"a quarter of RAM ({_gib(memory_bytes)})"
        if gpu:
            where += "; llama.cpp reported no GPU memory"
    if kv_cells is None:
        fit = n
        while fit > 1 and pool_cells(fit, n_ctx) * per_token > budget:
            fit -= 1
        if fit < n:
            why += f", reduced to {fit} to fit the KV pool in {where}"
            n = fit
        cells = pool_cells(n, n_ctx)
        sized = f"n_ctx {n_ctx} + {n - 1} x {CELLS_PER_EXTRA_SLOT:g} n_ctx"
    else:
        cells = _pad(max(n_ctx, kv_cells))
        sized = "chosen with kv_cells"
    n_seq = 1 if n == 1 else 2 * n  # one slot: one sequence, bit-identical to a fresh run
    why += (
        f"; KV pool of {cells} cells ({_gib(cells * per_token)}, {sized}) shared by "
        f"{n} running sequence{'s' if n != 1 else ''}"
        + (f" and {n_seq - n} cached prompts" if n_seq > n else " and its cached prompt")
    )
    return Capacity(n, n_seq, cells, why)
