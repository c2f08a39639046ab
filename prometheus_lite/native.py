"""Which of llama.cpp's CPU code paths this machine can run, found out in a child process.

Why: llama-cpp-python builds llama.cpp from source for the CPU it is installed on
(``GGML_NATIVE``). On Intel Xeons with AMX such a build compiles ggml's AMX kernels, and
llama.cpp uses them, through its *extra buffer types*, for Q4_0/Q4_1/Q8_0/K-quant
weights. In some environments (VMs, sandboxes) the AMX path dies with SIGILL
(``tileloadd`` in ``ggml_backend_amx_mul_mat``) on the first ``llama_decode``, and the
whole Python process with it. Loading with ``llama_model_params.use_extra_bufts = False``
avoids it, at a cost on CPUs where the extra buffer types work (they also hold the
repacked Q4_0/Q8_0/... layouts of the AVX2/AVX-512 kernels; ``bench/test_cpu_backend.py``
measures the difference).

How: :func:`extra_buffer_types_ok` (called by ``LlamaRuntime`` for every model load)
runs, once per llama.cpp build and CPU, ``python -P -m prometheus_lite.native probe``:
a child process that imports ``llama_cpp``, loads the embedded SmolLM2 Q4_1 model on the
CPU with the default parameters and decodes a batch of tokens (the AMX tile kernel) and
then one token (the single-row kernel).

- the child succeeds: the defaults are kept (``True``); nothing changes on machines
  where llama.cpp works as it is;
- it is killed by a signal (SIGILL, SIGSEGV, ...): the probe runs again with
  ``use_extra_bufts = False``; if that works, the answer is ``False`` (one WARNING line
  says why);
- both are killed, or importing ``llama_cpp`` itself is: :class:`~.errors.ModelError`
  names the cause and the fix (a rebuild for this CPU, without pip's wheel cache);
- the probe cannot tell (the embedded model is missing, a timeout, an error that is not
  a crash): the defaults are kept and the reason logged; nothing is cached.

Decisions are cached as JSON files in ``$PROMETHEUS_LITE_CACHE_DIR``, else
``$XDG_CACHE_HOME/prometheus-lite``, else ``~/.cache/prometheus-lite``, keyed by the
llama.cpp shared libraries (directory, file names, sizes and mtimes; a reinstall makes
a new key) and the CPU (``/proc/cpuinfo`` model name and flags). A corrupt or foreign
file is ignored and rewritten. The probe only ever turns extra buffer types *off* where
the default crashed, so a CUDA or Metal build that works keeps its defaults (the probe
runs on the CPU, ``n_gpu_layers = 0``: the CPU path is the one in question).

Environment:

- ``PROMETHEUS_LITE_EXTRA_BUFTS``: ``auto`` (default, probe), ``1`` (always use the
  extra buffer types, no probe), ``0`` (never use them, no probe).
- ``PROMETHEUS_LITE_CACHE_DIR``: where decisions are cached.
- ``PROMETHEUS_LITE_PROBE_FAULT`` (test seam): a comma-separated list of ``import``,
  ``default``, ``fallback``. The child kills itself with SIGILL at that point (before
  importing ``llama_cpp``; at the decode with the default parameters; at the decode with
  ``use_extra_bufts = False``), as a real illegal instruction would, so that the
  fallback and the error paths run for real on any CPU. The value is part of the cache
  key, so an injected fault never touches the decision for the real setting.

No ``llama_cpp`` import at module level: only the child imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError

__all__ = [
    "CpuBackend",
    "ProbeResult",
    "cpu_backend",
    "extra_buffer_types_ok",
    "llama_cpp_version",
    "rebuild_command",
    "runtime_build",
]

log = logging.getLogger(__name__)

ENV_EXTRA_BUFTS = "PROMETHEUS_LITE_EXTRA_BUFTS"
ENV_CACHE_DIR = "PROMETHEUS_LITE_CACHE_DIR"
ENV_PROBE_FAULT = "PROMETHEUS_LITE_PROBE_FAULT"
FAULT_POINTS = ("import", "default", "fallback")

CACHE_VERSION = 1
PROBE_TIMEOUT_S = 180.0
CPUINFO = Path("/proc/cpuinfo")
PINNED_LLAMA_CPP_PYTHON = "0.3.36"  # pyproject.toml's pin; used when the version is unknown

# Child exit statuses other than 0 (ok) and a signal.
EXIT_FAILED = 3  # llama.cpp refused (load, context, decode returned an error)
EXIT_BAD_LOGITS = 4  # the decode ran but produced NaN/inf: broken kernels, like a crash

# Child stages, in order; the last one reached says where a crash happened.
STAGES = ("start", "import", "load", "decode", "done")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Windows reports a crash as an NTSTATUS exit code instead of a signal.
_NTSTATUS = {
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION",
    0xC0000005: "STATUS_ACCESS_VIOLATION",
    0xC0000096: "STATUS_PRIVILEGED_INSTRUCTION",
}

# /proc/cpuinfo flag(s) -> the llama.cpp CMake option that compiles for them (names as in
# ggml/CMakeLists.txt of llama.cpp, "instruction set specific" options). GGML_AVX512 adds
# -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw (ggml/src/ggml-cpu/CMakeLists.txt),
# so it needs all five. The AMX options (GGML_AMX_TILE/INT8/BF16) are left OFF on purpose.
_GGML_X86_OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)


# ---------------------------------------------------------------------------------------
# What the decision is keyed by: the llama.cpp build and the CPU
# ---------------------------------------------------------------------------------------


def library_dir() -> Path | None:
    """The folder llama-cpp-python loads its shared libraries from (None: not installed).

    Found without importing ``llama_cpp``; honours ``LLAMA_CPP_LIB_PATH`` as it does.
    """
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def library_identity(lib_dir: Path) -> dict[str, Any]:
    """The shared libraries in ``lib_dir``: name, size and mtime of each (a rebuild or a
    reinstall changes them), plus the llama-cpp-python version."""
    files = []
    if lib_dir.is_dir():
        for p in sorted(lib_dir.iterdir()):
            if any(s in p.name for s in (".so", ".dylib", ".dll")) and p.is_file():
                st = p.stat()
                files.append([p.name, st.st_size, st.st_mtime_ns])
    return {"dir": str(lib_dir.resolve()), "files": files, "version": llama_cpp_version()}


def cpu_identity(cpuinfo: Path | None = None) -> dict[str, Any]:
    """The CPU: model name and instruction-set flags (from ``/proc/cpuinfo`` on Linux)."""
    fields: dict[str, str] = {}
    path = cpuinfo or CPUINFO
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: the same model on every core
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags") or fields.get("Features") or ""
    model = fields.get("model name") or fields.get("Processor") or platform.processor()
    return {
        "machine": platform.machine(),
        "model": model or "unknown CPU",
        "vendor": fields.get("vendor_id", ""),
        "flags": sorted(set(flags.split())),
    }


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return None


# The local version label of llama-cpp-python built with prometheus-lite's ggml-cpu patch
# (kernels/llama_cpp/build_wheel.py: flash attention's masked cells and one-row kernel, the
# repacked Q4_0/Q4_K GEMMs' row groups).
PATCHED_LABEL = "pl.fa3.rp1"


def runtime_build() -> str:
    """Which llama-cpp-python is installed, and whether it carries our ggml-cpu patch."""
    version = llama_cpp_version()
    if version is None:
        return "llama-cpp-python is not installed"
    if version.partition("+")[2] == PATCHED_LABEL:
        return (f"llama-cpp-python {version} (with prometheus-lite's ggml-cpu patch: flash "
                "attention jumps over masked KV cells and tiles and takes a row's cells in "
                "blocks with fp32 sums; repacked Q4_0/Q4_K matmuls sweep their weights once "
                "per pass; faster with parallel slots and long prompts)")
    return (f"llama-cpp-python {version} (stock build; in a source checkout, `make install` "
            "or kernels/llama_cpp/build_wheel.py builds it with prometheus-lite's ggml-cpu patch)")


def _faults() -> set[str]:
    raw = os.environ.get(ENV_PROBE_FAULT, "")
    points = {p.strip() for p in raw.split(",") if p.strip()}
    unknown = points - set(FAULT_POINTS)
    if unknown:
        raise ModelError(
            f"{ENV_PROBE_FAULT}={raw!r} names unknown fault points {sorted(unknown)}; "
            f"use a comma-separated list of {', '.join(FAULT_POINTS)}, or unset it."
        )
    return points


def cache_dir() -> Path:
    """Where decisions are cached (see the module docstring)."""
    own = os.environ.get(ENV_CACHE_DIR)
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prometheus-lite"


# ---------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One child run: did a test decode with these parameters survive?"""

    extra_bufts: bool
    outcome: str  # "ok" | "crashed" (killed by a signal, or NaN logits) | "failed" | "timeout"
    stage: str  # the last stage the child reached (STAGES)
    detail: str  # the signal, the exit status, or llama.cpp's complaint
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def crashed(self) -> bool:
        return self.outcome == "crashed"

    def describe(self) -> str:
        where = {"start": "at start-up", "import": "while importing llama_cpp"}.get(
            self.stage, "while loading the model" if self.stage == "load" else "in llama_decode"
        )
        if self.ok:
            return f"a test decode ran ({self.seconds:.1f} s)"
        if self.crashed:
            return f"killed by {self.detail} {where}"
        if self.outcome == "timeout":
            return f"no answer within {self.detail} {where}"
        return f"failed {where}: {self.detail}"


@dataclass(frozen=True)
class CpuBackend:
    """Whether models load with llama.cpp's extra CPU buffer types, and why."""

    extra_buffer_types: bool
    source: str  # "probe" | "cache" | "env" | "unprobed" (the probe could not tell)
    reason: str
    cpu: str
    library: str
    key: str
    cache_file: str | None = None

    def summary(self) -> str:
        setting = (
            "llama.cpp defaults (extra buffer types on: repacked weights, AMX where built)"
            if self.extra_buffer_types
            else "extra buffer types OFF (use_extra_bufts=False: no AMX, no repacked weights)"
        )
        return f"{setting}; {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_lock = threading.Lock()
_memo: dict[tuple[str, str], CpuBackend] = {}


def clear_memo() -> None:
    """Forget the decisions made in this process (the cache files stay). For tests."""
    with _lock:
        _memo.clear()


def extra_buffer_types_ok() -> bool:
    """The value for ``llama_model_params.use_extra_bufts`` on this machine.

    True (llama.cpp's default) unless the default CPU path crashed in a probe; see the
    module docstring. Raises ModelError when this llama.cpp build cannot run here at all.
    """
    return cpu_backend().extra_buffer_types


def cpu_backend() -> CpuBackend:
    """The CPU backend decision for this llama.cpp build and CPU (probing if needed)."""
    lib = library_dir()
    if lib is None:
        raise ModelError(
            "llama-cpp-python is not installed; install prometheus-lite's dependencies "
            f"(pip install 'llama-cpp-python=={PINNED_LLAMA_CPP_PYTHON}')."
        )
    cpu = cpu_identity()
    raw = os.environ.get(ENV_EXTRA_BUFTS, "").strip()
    mode = raw.lower()
    if mode in _TRUE | _FALSE:
        return CpuBackend(
            mode in _TRUE, "env", f"set by {ENV_EXTRA_BUFTS}={raw}", cpu["model"], str(lib), ""
        )
    if mode not in ("", "auto"):
        raise ModelError(
            f"{ENV_EXTRA_BUFTS}={raw!r} is not a valid setting; use auto (probe this CPU "
            "once, the default), 1 (always use llama.cpp's extra buffer types) or 0 (never)."
        )
    ident, key, path = _cache_entry(lib, cpu)
    with _lock:
        memo = _memo.get((key, str(path)))
        if memo is not None:
            return memo
        decision = _read_cache(path, key)
        if decision is None:
            decision, keep = _probe_and_decide(lib, cpu, key, path)
            if keep:
                _write_cache(path, decision, ident)
        elif not decision.extra_buffer_types:
            log.info("%s (cached in %s)", decision.summary(), path)
        _memo[(key, str(path))] = decision
    return decision


def cache_path() -> Path:
    """The cache file for this llama.cpp build, CPU and probe setting (may not exist)."""
    lib = library_dir()
    if lib is None:
        raise ModelError("llama-cpp-python is not installed")
    return _cache_entry(lib, cpu_identity())[2]


def _cache_entry(lib: Path, cpu: dict[str, Any]) -> tuple[dict[str, Any], str, Path]:
    """What the decision is keyed by, the key (a hash of it) and the cache file."""
    ident = {
        "version": CACHE_VERSION,
        "library": library_identity(lib),
        "cpu": cpu,
        "probe_fault": sorted(_faults()),
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    return ident, key, cache_dir() / f"cpu-backend-{key}.json"


def _probe_and_decide(
    lib: Path, cpu: dict[str, Any], key: str, path: Path
) -> tuple[CpuBackend, bool]:
    """Run the probe(s); returns the decision and whether to cache it."""
    from .hub import embedded_model_path

    def backend(extra: bool, source: str, reason: str) -> CpuBackend:
        return CpuBackend(extra, source, reason, cpu["model"], str(lib), key, str(path))

    try:
        model = embedded_model_path()
    except ModelError as e:
        log.warning("cannot probe llama.cpp's CPU path (%s); keeping its defaults", e)
        return backend(True, "unprobed", f"not probed: {e}"), False
    first = run_probe(model, extra_bufts=True)
    if first.ok:
        return backend(True, "probe", f"probe: {first.describe()} with the defaults"), True
    if first.crashed and first.stage in ("start", "import"):
        raise ModelError(_cannot_run_message(lib, cpu, first, None))
    if not first.crashed:
        log.warning(
            "could not test llama.cpp's default CPU path in a child process (%s); keeping "
            "the defaults",
            first.describe(),
        )
        return backend(True, "unprobed", f"not probed: {first.describe()}"), False
    second = run_probe(model, extra_bufts=False)
    if second.crashed:
        raise ModelError(_cannot_run_message(lib, cpu, first, second))
    reason = (
        f"probe: the default CPU path was {first.describe()}; with use_extra_bufts=False "
        f"{second.describe()}"
    )
    log.warning(
        "llama.cpp's default CPU path crashed on this CPU (%s: %s in a test decode), so "
        "models load with use_extra_bufts=False (no AMX or repacked weight layouts; "
        "slower prompt processing). %s; set %s=0 or 1 to choose yourself.",
        cpu["model"],
        first.detail,
        "Decision cached in " + str(path) if second.ok else "Not cached",
        ENV_EXTRA_BUFTS,
    )
    return backend(False, "probe", reason), second.ok


# ---------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------


def _read_cache(path: Path, key: str) -> CpuBackend | None:
    try:
        data = json.loads(path.read_text())
        if data["version"] != CACHE_VERSION or data["key"] != key:
            raise ValueError("written for another key or format")
        decision = CpuBackend(**data["decision"])
        if not isinstance(decision.extra_buffer_types, bool) or decision.key != key:
            raise ValueError("malformed decision")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.debug("ignoring the CPU backend cache file %s: %s", path, e)
        return None
    return CpuBackend(**{**asdict(decision), "source": "cache"})


def _write_cache(path: Path, decision: CpuBackend, ident: dict[str, Any]) -> None:
    """Atomic: a temporary file in the same folder, then os.replace."""
    data = {
        "version": CACHE_VERSION,
        "key": decision.key,
        "decision": decision.as_dict(),
        "identity": ident,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:  # a read-only home: the decision still holds for this process
        log.debug("could not cache the CPU backend decision in %s: %s", path, e)


# ---------------------------------------------------------------------------------------
# The error when nothing runs
# ---------------------------------------------------------------------------------------


def rebuild_command(cpu: dict[str, Any] | None = None) -> str:
    """The pip command that rebuilds llama-cpp-python for this CPU, AMX off.

    On x86 the instruction sets come from the CPU's flags, so the build keeps AVX2 or
    AVX-512 where the CPU has them, without ``GGML_NATIVE`` (which also turns AMX on).
    """
    cpu = cpu or cpu_identity()
    # PyPI has the public version only (a local label marks our patched build).
    version = (llama_cpp_version() or PINNED_LLAMA_CPP_PYTHON).partition("+")[0]
    args = ["-DGGML_NATIVE=OFF"]
    if cpu["machine"].lower() in ("x86_64", "amd64", "i686", "i386"):
        flags = set(cpu["flags"])
        args += [f"-D{opt}=ON" for opt, need in _GGML_X86_OPTIONS if flags.issuperset(need)]
    return (
        f'CMAKE_ARGS="{" ".join(args)}" pip install --force-reinstall --no-cache-dir '
        f'"llama-cpp-python=={version}"'
    )


def _cannot_run_message(
    lib: Path, cpu: dict[str, Any], first: ProbeResult, second: ProbeResult | None
) -> str:
    if second is None:
        what = f"a child process was {first.describe()}"
    else:
        what = (
            f"a test decode in a child process was {first.describe()} with llama.cpp's "
            f"defaults, and {second.describe()} with its extra buffer types (AMX, repacked "
            "weights) turned off"
        )
    return (
        "This llama-cpp-python build uses CPU instructions this CPU cannot run: "
        f"{what} (library: {lib}; CPU: {cpu['model']}). llama-cpp-python compiles "
        "llama.cpp for the machine it is built on, so a build made elsewhere, or for "
        "instruction sets this CPU (or its VM) does not allow, crashes here. Rebuild it for "
        "this CPU, bypassing pip's wheel cache (pip reuses a cached build whatever "
        "CMAKE_ARGS say):\n    "
        + rebuild_command(cpu)
        + f"\n(Setting {ENV_EXTRA_BUFTS}=1 or 0 skips this check; the process may then crash.)"
    )


# ---------------------------------------------------------------------------------------
# The probe: parent side
# ---------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The child imports this same prometheus_lite: when it does not live in a
    site-packages folder (a source tree), its folder goes on PYTHONPATH (-P keeps the
    working directory off sys.path)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in sites:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _signal_name(returncode: int) -> str | None:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return _NTSTATUS.get(returncode & 0xFFFFFFFF)


def run_probe(
    model: str | os.PathLike[str], *, extra_bufts: bool, timeout: float | None = None
) -> ProbeResult:
    """Load ``model`` in a child process with ``use_extra_bufts=extra_bufts`` and decode
    (``timeout`` seconds at most, default PROBE_TIMEOUT_S)."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    cmd = [sys.executable, "-P", "-m", "prometheus_lite.native", "probe", str(model)]
    if not extra_bufts:
        cmd.append("--no-extra-bufts")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=_child_env(),
            cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        return ProbeResult(extra_bufts, "timeout", _last_stage(out or ""), f"{timeout:.0f} s", 0)
    seconds = time.perf_counter() - t0
    stage = _last_stage(proc.stdout)
    crash = _signal_name(proc.returncode)
    if proc.returncode == 0 and stage == "done":
        outcome, detail = "ok", ""
    elif crash is not None:
        outcome, detail = "crashed", crash
    elif proc.returncode == EXIT_BAD_LOGITS:
        outcome, detail = "crashed", "non-finite logits (broken kernels)"
    else:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
        outcome = "failed"
        detail = f"exit status {proc.returncode}" + (f": {' | '.join(tail)}" if tail else "")
    log.debug("probe (extra_bufts=%s): %s %s at %s", extra_bufts, outcome, detail, stage)
    return ProbeResult(extra_bufts, outcome, stage, detail, seconds)


def _last_stage(stdout: str) -> str:
    stage = "start"
    for line in stdout.splitlines():
        if line.startswith("STAGE ") and line[6:].strip() in STAGES:
            stage = line[6:].strip()
    return stage


# ---------------------------------------------------------------------------------------
# The probe: child side (python -P -m prometheus_lite.native probe MODEL)
# ---------------------------------------------------------------------------------------

PROBE_BATCH = 32  # > 1 row: ggml's AMX mul_mat takes the tile kernel (M == 1 uses VNNI)


def _stage(name: str) -> None:
    print(f"STAGE {name}", flush=True)


def _die_here() -> None:
    """The injected fault: end the way an illegal instruction does."""
    sys.stdout.flush()
    signal.signal(signal.SIGILL, signal.SIG_DFL)
    signal.raise_signal(signal.SIGILL)


def _child_probe(model: str, extra_bufts: bool) -> int:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
    except (ImportError, ValueError, OSError):
        pass
    faults = _faults()
    _stage("import")
    if "import" in faults:
        _die_here()
    import llama_cpp as L
    import numpy as np

    _stage("load")
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    mparams.n_gpu_layers = 0  # the CPU path is the one in question
    mparams.use_extra_bufts = extra_bufts
    llm = L.llama_model_load_from_file(model.encode(), mparams)
    if not llm:
        print(f"llama.cpp could not load {model}", file=sys.stderr)
        return EXIT_FAILED
    threads = min(4, os.cpu_count() or 1)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = 128
    cparams.n_batch = cparams.n_ubatch = 64
    cparams.n_seq_max = 1
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    ctx = L.llama_init_from_model(llm, cparams)
    if not ctx:
        print("llama.cpp could not create a context", file=sys.stderr)
        return EXIT_FAILED
    n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(llm)))
    batch = L.llama_batch_init(64, 0, 1)
    _stage("decode")
    if ("default" if extra_bufts else "fallback") in faults:
        _die_here()
    tokens = [(17 + 7919 * i) % n_vocab for i in range(PROBE_BATCH + 1)]
    for start, chunk in ((0, tokens[:PROBE_BATCH]), (PROBE_BATCH, tokens[PROBE_BATCH:])):
        for i, t in enumerate(chunk):
            batch.token[i] = t
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(chunk) - 1
        batch.n_tokens = len(chunk)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            print(f"llama_decode returned {rc}", file=sys.stderr)
            return EXIT_FAILED
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        if not np.isfinite(logits).all():
            print("llama_decode produced non-finite logits", file=sys.stderr)
            return EXIT_BAD_LOGITS
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(llm)
    _stage("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -P -m prometheus_lite.native",
        description="Probe llama.cpp's CPU path in this process (prometheus-lite runs "
        "this in a child process; see the module docstring).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    probe = sub.add_parser("probe", help="load MODEL on the CPU and run a test decode")
    probe.add_argument("model")
    probe.add_argument("--no-extra-bufts", action="store_true")
    sub.add_parser("decide", help="print the cached (or freshly probed) decision as JSON")
    args = parser.parse_args(argv)
    if args.command == "probe":
        return _child_probe(args.model, not args.no_extra_bufts)
    print(json.dumps(cpu_backend().as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
