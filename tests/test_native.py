"""The CPU-backend probe (prometheus_lite.native): real child processes, real llama.cpp.

This machine's llama.cpp runs with and without extra buffer types, so the probe says
"ok" here; the crash paths are exercised with the documented fault seam
(PROMETHEUS_LITE_PROBE_FAULT), which makes the child kill itself with SIGILL where the
AMX kernel would. Every test has its own cache dir (PROMETHEUS_LITE_CACHE_DIR).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from prometheus_lite import native
from prometheus_lite.cli import main
from prometheus_lite.errors import ModelError
from prometheus_lite.hub import embedded_model_path

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = tmp_path / "cache"
    monkeypatch.setenv(native.ENV_CACHE_DIR, str(cache))
    for var in (native.ENV_EXTRA_BUFTS, native.ENV_PROBE_FAULT, "LLAMA_CPP_LIB_PATH"):
        monkeypatch.delenv(var, raising=False)
    native.clear_memo()
    yield cache
    native.clear_memo()


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[native.ProbeResult]:
    """Records every probe the decision runs (the real child process still runs)."""
    calls: list[native.ProbeResult] = []
    real = native.run_probe

    def spy(model, *, extra_bufts, timeout=None):  # type: ignore[no-untyped-def]
        result = real(model, extra_bufts=extra_bufts, timeout=timeout)
        calls.append(result)
        return result

    monkeypatch.setattr(native, "run_probe", spy)
    return calls


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("cpu-backend-*.json")) if cache.is_dir() else []


def fresh_decision() -> native.CpuBackend:
    native.clear_memo()  # as a new process would: only the cache file carries over
    return native.cpu_backend()


def test_probe_ok_keeps_the_defaults_and_is_cached(isolated: Path, probes: list) -> None:
    b = native.cpu_backend()
    assert b.extra_buffer_types is True and native.extra_buffer_types_ok() is True
    assert b.source == "probe" and len(probes) == 1 and probes[0].extra_bufts is True
    (path,) = cache_files(isolated)
    assert b.cache_file == str(path)
    data = json.loads(path.read_text())
    assert data["decision"]["extra_buffer_types"] is True and data["key"] == b.key
    again = fresh_decision()
    assert again.source == "cache" and again.extra_buffer_types is True and len(probes) == 1


def test_injected_crash_falls_back_once_and_is_cached(
    isolated: Path, probes: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(native.ENV_PROBE_FAULT, "default")
    with caplog.at_level(logging.INFO, logger="prometheus_lite.native"):
        b = native.cpu_backend()
        assert native.extra_buffer_types_ok() is False  # memoized: no new probe, no new line
    assert b.extra_buffer_types is False and b.source == "probe"
    assert [(p.extra_bufts, p.outcome, p.detail) for p in probes] == [
        (True, "crashed", "SIGILL"),
        (False, "ok", ""),
    ]
    assert probes[0].stage == "decode"  # it died in llama_decode, after the model loaded
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "SIGILL" in warnings[0].message and "use_extra_bufts=False" in warnings[0].message
    (path,) = cache_files(isolated)
    assert json.loads(path.read_text())["decision"]["extra_buffer_types"] is False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prometheus_lite.native"):
        again = fresh_decision()
    assert again.source == "cache" and again.extra_buffer_types is False and len(probes) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The injected fault is part of the key: the real setting is probed on its own.
    monkeypatch.delenv(native.ENV_PROBE_FAULT)
    real = fresh_decision()
    assert real.extra_buffer_types is True and real.key != b.key and len(probes) == 3


def test_both_crash_is_a_clear_error_and_not_cached(
    isolated: Path, probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.ENV_PROBE_FAULT, "default,fallback")
    with pytest.raises(ModelError) as e:
        native.extra_buffer_types_ok()
    msg = str(e.value)
    assert [p.outcome for p in probes] == ["crashed", "crashed"]
    assert "CPU instructions this CPU cannot run" in msg and msg.count("SIGILL") == 2
    assert "CMAKE_ARGS=" in msg and "-DGGML_NATIVE=OFF" in msg and "AMX" not in msg.split("\n")[1]
    assert "--force-reinstall --no-cache-dir" in msg and "llama-cpp-python==" in msg
    assert "wheel cache" in msg and native.ENV_EXTRA_BUFTS in msg
    assert "Illegal instruction" not in msg
    assert cache_files(isolated) == []  # a rebuild must be probed again


def test_crash_while_importing_llama_cpp_is_a_clear_error(
    probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.ENV_PROBE_FAULT, "import")
    with pytest.raises(ModelError, match="killed by SIGILL while importing llama_cpp") as e:
        native.cpu_backend()
    assert "pip install --force-reinstall --no-cache-dir" in str(e.value)
    assert len(probes) == 1  # no second setting to try: the library itself cannot load


def test_a_real_model_load_uses_the_fallback(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """End to end, through the CLI in a fresh process: the decision reaches
    llama_model_load_from_file (llama.cpp's load log names the CPU_REPACK extra buffer
    type only when extra buffer types are on)."""
    args = ["grade", "-i", "2+2?", "-r", "4", "--rubric", "helpfulness", "--greedy"]
    args += ["--max-tokens", "8", "--threads", "1"]
    exe = Path(sys.executable).with_name("prometheus-lite")

    def grade(**env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, native.ENV_CACHE_DIR: str(isolated), **env}
        return subprocess.run(
            [str(exe), "-vv", *args], capture_output=True, text=True, env=full, timeout=240
        )

    fell_back = grade(**{native.ENV_PROBE_FAULT: "default"})
    assert fell_back.returncode == 0, fell_back.stderr[-2000:]
    assert "Score: " in fell_back.stdout
    assert fell_back.stderr.count("WARNING prometheus_lite.native") == 1
    assert "CPU_REPACK" not in fell_back.stderr
    if native.run_probe(embedded_model_path(), extra_bufts=True).ok:  # safe to compare here
        default = grade(**{native.ENV_EXTRA_BUFTS: "1"})
        assert default.returncode == 0, default.stderr[-2000:]
        assert "CPU_REPACK" in default.stderr, "the comparison above could not have failed"


def test_cache_is_keyed_by_library_and_cpu(
    tmp_path: Path, isolated: Path, probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = native.library_dir()
    assert lib is not None and lib.is_dir()
    copy = tmp_path / "lib"
    shutil.copytree(lib, copy)
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(copy))  # llama_cpp (and the child) load it
    first = native.cpu_backend()
    assert first.library == str(copy) and first.extra_buffer_types and len(probes) == 1
    assert fresh_decision().source == "cache" and len(probes) == 1

    # A rebuilt or reinstalled library (new size or mtime) is probed again.
    so = sorted(copy.glob("libggml-cpu*"))[0]
    st = so.stat()
    os.utime(so, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = fresh_decision()
    assert rebuilt.source == "probe" and rebuilt.key != first.key and len(probes) == 2

    # Another CPU (model name or flags) is probed again; the first one's entry stays valid.
    cpuinfo = tmp_path / "cpuinfo"
    real = native.CPUINFO.read_text() if native.CPUINFO.is_file() else "model name\t: x\n"
    cpuinfo.write_text(real.replace("\nflags\t\t: ", "\nflags\t\t: amx_tile amx_int8 ", 1) + "\n")
    monkeypatch.setattr(native, "CPUINFO", cpuinfo)
    other = fresh_decision()
    if other.key == rebuilt.key:  # no /proc/cpuinfo flags line on this OS
        pytest.skip("this OS reports no CPU flags in /proc/cpuinfo")
    assert other.source == "probe" and len(probes) == 3
    monkeypatch.setattr(native, "CPUINFO", Path("/proc/cpuinfo"))
    assert fresh_decision().source == "cache" and len(probes) == 3
    assert len(cache_files(isolated)) == 3


def test_identity_functions() -> None:
    lib = native.library_dir()
    assert lib is not None
    ident = native.library_identity(lib)
    names = [f[0] for f in ident["files"]]
    assert any(n.startswith("libllama") or n.startswith("llama") for n in names)
    assert ident["version"].partition("+")[0] == native.PINNED_LLAMA_CPP_PYTHON  # +pl.fa3 too
    cpu = native.cpu_identity()
    assert cpu["machine"] == platform.machine() and cpu["model"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"version": native.CACHE_VERSION, "key": "another key", "decision": {}}),
        "wrong-type",
    ],
    ids=["garbage", "other-key", "wrong-type"],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(
    isolated: Path, probes: list, content: str
) -> None:
    path = native.cache_path()
    if content == "wrong-type":  # a well-formed entry for this key, but not a bool
        native.cpu_backend()
        native.clear_memo()
        data = json.loads(path.read_text())
        data["decision"]["extra_buffer_types"] = "no"
        content = json.dumps(data)
        del probes[:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    b = native.cpu_backend()
    assert b.source == "probe" and b.extra_buffer_types is True and len(probes) == 1
    assert json.loads(path.read_text())["decision"]["extra_buffer_types"] is True


def test_unwritable_cache_dir_still_decides(
    tmp_path: Path, probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(native.ENV_CACHE_DIR, str(blocker / "cache"))
    assert native.cpu_backend().extra_buffer_types is True and len(probes) == 1


def test_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.ENV_CACHE_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.cache_dir() == tmp_path / "xdg" / "prometheus-lite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native.cache_dir() == Path.home() / ".cache" / "prometheus-lite"


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True)])
def test_env_override_skips_the_probe(
    value: str, expected: bool, isolated: Path, probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.ENV_EXTRA_BUFTS, value)
    monkeypatch.setenv(native.ENV_PROBE_FAULT, "import")  # a probe would raise
    b = native.cpu_backend()
    assert b.extra_buffer_types is expected and b.source == "env" and value in b.reason
    assert probes == [] and cache_files(isolated) == []


def test_env_auto_probes(probes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_EXTRA_BUFTS, "auto")
    assert native.cpu_backend().source == "probe" and len(probes) == 1


@pytest.mark.parametrize(
    "var, value, needle",
    [
        (native.ENV_EXTRA_BUFTS, "maybe", "use auto"),
        (native.ENV_PROBE_FAULT, "defualt", "unknown fault points"),
    ],
)
def test_bad_env_values_are_clear_errors(
    var: str, value: str, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ModelError, match=needle) as e:
        native.cpu_backend()
    assert var in str(e.value) and value in str(e.value)


def test_a_hung_probe_keeps_the_defaults_uncached(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "PROBE_TIMEOUT_S", 0.01)
    with caplog.at_level(logging.WARNING, logger="prometheus_lite.native"):
        b = native.cpu_backend()
    assert b.extra_buffer_types is True and b.source == "unprobed"
    assert "no answer within" in caplog.text and cache_files(isolated) == []


def test_rebuild_command_matches_ggml_feature_names() -> None:
    """Every instruction set this llama.cpp build uses (llama_print_system_info) is one
    the rebuild command keeps; AMX is never turned on."""
    import llama_cpp

    cmd = native.rebuild_command()
    assert cmd.startswith('CMAKE_ARGS="-DGGML_NATIVE=OFF') and "AMX" not in cmd
    assert "--force-reinstall --no-cache-dir" in cmd
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    info = llama_cpp.llama_print_system_info().decode()
    on = {k.strip() for k, _, v in (p.partition("=") for p in info.split("|")) if v.strip() == "1"}
    on = {k.removeprefix("CPU : ") for k in on}
    table = {opt.removeprefix("GGML_") for opt, _ in native._GGML_X86_OPTIONS}
    used = (on & table) | ({"AMX_INT8"} & on)
    kept = {a.removeprefix("-DGGML_").removesuffix("=ON") for a in cmd.split('"')[1].split()}
    assert "AVX2" in used, info  # this build (and CPU) has AVX2: the check below means something
    assert used - {"AMX_INT8"} <= kept, (used, kept)


def test_rebuild_command_for_an_avx2_cpu_with_amx_flags() -> None:
    cpu = {
        "machine": "x86_64",
        "model": "some Xeon",
        "flags": ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "amx_tile"],
    }
    args = native.rebuild_command(cpu).split('"')[1].split()
    assert "-DGGML_AVX2=ON" in args and "-DGGML_FMA=ON" in args
    assert "-DGGML_AVX512=ON" not in args  # needs avx512cd/vl/dq/bw too
    assert not [a for a in args if "AMX" in a]


def test_info_shows_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "CPU backend:    llama.cpp defaults" in result.stdout
    native.clear_memo()
    result = runner.invoke(main, ["info", "--json"])
    data = json.loads(result.stdout)["cpu_backend"]
    assert data["extra_buffer_types"] is True and data["source"] == "cache"
    native.clear_memo()
    monkeypatch.setenv(native.ENV_PROBE_FAULT, "default,fallback")
    result = runner.invoke(main, ["info", "--json"])
    assert result.exit_code == 1
    assert "cannot run" in json.loads(result.stdout)["cpu_backend"]["error"]
    assert result.stderr.startswith("Error: This llama-cpp-python build uses CPU instructions")


@pytest.mark.parametrize("setting, repack", [("0", False), ("1", True)])
def test_reference_llama_loads_as_decided(
    setting: str, repack: bool, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """tests/llama_ref.py: the high-level Llama (a test reference) follows the decision."""
    from llama_ref import reference_llama

    if repack and not native.run_probe(embedded_model_path(), extra_bufts=True).ok:
        pytest.skip("llama.cpp's default CPU path crashes on this machine")
    monkeypatch.setenv(native.ENV_EXTRA_BUFTS, setting)
    llm = reference_llama(embedded_model_path(), n_ctx=64, n_threads=1, verbose=True)
    try:
        assert llm.eval(llm.tokenize(b"Hello")) is None
    finally:
        llm.close()
    log = capfd.readouterr().err
    assert "load_tensors" in log  # the load log was captured: the check below can fail
    assert ("CPU_REPACK" in log) is repack
