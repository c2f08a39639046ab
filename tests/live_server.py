"""A real ``prometheus-lite serve`` process on 127.0.0.1 (any free port), for tests and benches.

The server binds port 0 and logs the port it got; the helper reads it from stderr, waits
for ``/ready`` and stops the process (SIGTERM, then SIGKILL) when done. Every wait is
bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class LiveServer:
    def __init__(self, *args: str, api_key: str | None = None, startup_s: float = 180) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_LITE_API_KEY"}
        if api_key is not None:
            env["PROMETHEUS_LITE_API_KEY"] = api_key
        self.api_key = api_key
        cmd = [sys.executable, "-P", "-m", "prometheus_lite", "serve", "--host", "127.0.0.1",
               "--port", "0", "--threads", "1", *args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        self.lines: list[str] = []
        self._url: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._wait_ready(startup_s)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = _LISTENING.search(line)
            if m and self._url is None:
                self._url = m.group(1)
                self._found.set()
        self._found.set()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self._found.wait(timeout) or self._url is None:
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-30:]))
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.get("/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError("server never became ready:\n" + "\n".join(self.lines[-30:]))

    @property
    def url(self) -> str:
        assert self._url is not None
        return self._url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, headers=self.headers, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 if absent)."""
        with self.client() as c:
            text = c.get("/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            sample, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if sample == name and got == want:
                return float(value)
        return 0.0

    def access_log(self) -> list[dict[str, Any]]:
        import json

        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode
