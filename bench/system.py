"""The machine: CPU description, memory read bandwidth, and per-process peak memory.

Memory bandwidth
----------------
Generating one token makes llama.cpp read every weight of the model once (plus the KV
cache), and for all but the smallest batch sizes that read, not arithmetic, is the
bottleneck. So the machine's *read* bandwidth over a buffer much larger than the caches
bounds generation speed: ``tokens/s <= bandwidth / bytes read per token``.

We measure it the way the decoder reads: a large float32 array (default 1 GiB, far beyond
any last-level cache, so every byte comes from DRAM) is streamed once per pass with
``np.dot(x, x)``. Both operands are the same memory, so each cache line is fetched once;
BLAS' vectorised multiply-add retires far more bytes per cycle than DRAM delivers, so
the pass time is the time to read the bytes. Each thread reads its own contiguous slice
(numpy releases the GIL inside BLAS), with as many threads as the judge uses, because
one core alone cannot saturate the memory controllers. The pages are touched before
timing (no page faults in the timed passes), and the best of several passes is kept:
other processes on a shared machine can only make a pass slower, never faster. Written
bytes are zero, so this is read bandwidth, not copy bandwidth (which STREAM's "copy"
reports and which counts write-allocate traffic).

Peak memory
-----------
Each model is measured in its own child process; :func:`run_child` waits for it with
``os.wait4``, whose ``ru_maxrss`` is that child's own peak resident set (kernel
bookkeeping, no sampling gaps). It counts the memory-mapped weights that were touched,
which is what a user's machine must hold.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["gpu_bandwidth", "machine_info", "memory_bandwidth", "rss_bytes", "run_child"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict[str, object]:
    """CPU model, logical cores, RAM, OS and Python, for the report's header."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_bytes": _mem_total(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def memory_bandwidth(
    size_mb: float = 1024, threads: int | None = None, passes: int = 8
) -> dict[str, float | int]:
    """Read bandwidth in GB/s (1e9 bytes/s): best of ``passes`` timed passes over a
    ``size_mb`` MiB buffer with ``threads`` readers (default: all usable cores), and the
    same with one reader. See the module docstring for why this is read bandwidth."""
    threads = threads or machine_info()["usable_cores"]  # type: ignore[assignment]
    assert isinstance(threads, int)
    n = int(size_mb * 2**20) // 4
    buf = np.ones(n, dtype=np.float32)  # written once: every page is resident before timing
    slices = np.array_split(buf, threads)

    def one_pass(parts: Sequence[np.ndarray], pool: ThreadPoolExecutor | None) -> float:
        t0 = time.perf_counter()
        if pool is None:
            for p in parts:
                np.dot(p, p)
        else:
            list(pool.map(lambda p: np.dot(p, p), parts))
        return sum(p.nbytes for p in parts) / (time.perf_counter() - t0) / 1e9

    with ThreadPoolExecutor(threads) as pool:
        one_pass(slices, pool)  # warm-up: thread start, BLAS init
        multi = max(one_pass(slices, pool) for _ in range(passes))
    single = max(one_pass([buf], None) for _ in range(max(1, passes // 2)))
    del buf, slices
    return {
        "gb_per_s": round(multi, 2),
        "gb_per_s_one_thread": round(single, 2),
        "threads": threads,
        "buffer_mib": round(size_mb),
        "passes": passes,
        "method": "best-of-N np.dot(x, x) over a float32 buffer, one slice per thread",
    }


def gpu_bandwidth(size_mb: float = 2048, passes: int = 10) -> dict[str, object] | None:
    """GPU memory bandwidth in GB/s: best of ``passes`` device-to-device copies of a
    ``size_mb`` MiB buffer, counting bytes read plus bytes written, timed with CUDA events
    through PyTorch. None when PyTorch or a CUDA device is missing: llama.cpp exposes no
    copy primitive, and the report then leaves the GPU ceiling out rather than guess it.

    A copy is what generation does to the weights (read once per token) plus a write of the
    same size, so it is an upper bound on the read rate the decoder can see; the GPU report
    states the method next to the figure."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    n = int(size_mb * 2**20)
    src = torch.ones(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    best = 0.0
    for _ in range(passes):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = max(best, 2 * n / (start.elapsed_time(end) / 1e3) / 1e9)
    del src, dst
    torch.cuda.empty_cache()
    return {
        "gb_per_s": round(best, 1),
        "buffer_mib": round(size_mb),
        "passes": passes,
        "device": torch.cuda.get_device_name(0),
        "method": "best-of-N device-to-device copy (torch), bytes read + written",
    }


def rss_bytes() -> tuple[int | None, int | None]:
    """(current, peak) resident set of this process from /proc/self/status (Linux)."""
    cur = peak = None
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cur, peak


def run_child(
    argv: Sequence[str],
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, int, str]:
    """Run ``argv``, passing each stdout line to ``on_line``; returns (exit code, peak RSS
    in bytes from the kernel's ``ru_maxrss``, captured stderr).

    The peak is an upper bound: Linux carries the high-water mark of the forked copy of
    this process into the child's ``ru_maxrss`` at exec, so a large parent inflates it.
    Children that matter report their own ``VmHWM`` (``rss_bytes()``), which is exact."""
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # stderr is drained in a thread so a chatty child cannot block on a full pipe
    with ThreadPoolExecutor(1) as pool:
        err = pool.submit(proc.stderr.read)
        for line in proc.stdout:
            if on_line is not None:
                on_line(line.rstrip("\n"))
        _, status, usage = os.wait4(proc.pid, 0)
        stderr = err.result()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss) * 1024, stderr  # ru_maxrss is KiB on Linux
