"""Default CPU threads: ``$PROMETHEUS_LITE_THREADS``, else the cores this process may use."""

from __future__ import annotations

import os

import pytest

from prometheus_lite.errors import ModelError
from prometheus_lite.hub import resolve_model
from prometheus_lite.llama import ENV_THREADS, LlamaRuntime, default_threads


def test_the_variable_sets_the_default_and_llama_cpp_gets_it(monkeypatch) -> None:
    monkeypatch.setenv(ENV_THREADS, "3")
    assert default_threads() == 3
    rt = LlamaRuntime(resolve_model(None), n_ctx=256)
    try:
        assert rt._L.llama_n_threads(rt._ctx) == 3
        assert rt._L.llama_n_threads_batch(rt._ctx) == 3
    finally:
        rt.close()


def test_unset_it_is_the_cores_this_process_may_use(monkeypatch) -> None:
    monkeypatch.delenv(ENV_THREADS, raising=False)
    cores = os.sched_getaffinity(0)
    assert default_threads() == len(cores)
    os.sched_setaffinity(0, {min(cores)})  # as taskset or a container's cpuset would
    try:
        assert default_threads() == 1  # not os.cpu_count()
    finally:
        os.sched_setaffinity(0, cores)


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_value_is_a_clear_error(monkeypatch, bad: str) -> None:
    monkeypatch.setenv(ENV_THREADS, bad)
    with pytest.raises(ModelError, match=f"{ENV_THREADS}='{bad}' is not a thread count"):
        default_threads()


def test_xdist_workers_share_the_cores() -> None:
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        pytest.skip("not under pytest-xdist")
    cores = len(os.sched_getaffinity(0))
    assert os.environ[ENV_THREADS] == str(max(1, cores // int(workers)))
