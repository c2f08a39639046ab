"""The service's settings and shared state (what every layer of the app reads)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .admission import Admission
from .errors import ApiError
from .metrics import Metrics

if TYPE_CHECKING:
    from ..judge import Judge

__all__ = ["ServerSettings", "State"]


@dataclass(frozen=True)
class ServerSettings:
    """How the service behaves (the model itself is fixed by the judge factory)."""

    api_key: str | None = None
    max_queue: int = 64  # judgements admitted beyond the engine's slots
    request_timeout: float = 600.0  # seconds from admission to result, per judgement
    max_body_bytes: int = 8 * 1024 * 1024
    max_tokens_cap: int | None = None  # a request asking for more gets a 400
    cors_origins: tuple[str, ...] = ()
    served_model_name: str | None = None  # default: the model's name
    batch_window: int | None = None  # items one batch keeps submitted (default slots + 1)


@dataclass
class State:
    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    judge: Judge | None = None
    admission: Admission | None = None
    load_error: str | None = None
    draining: bool = False  # set on SIGTERM/SIGINT: no new work is admitted
    started: float = field(default_factory=time.time)
    mean_latency: float = 1.0  # EWMA of judgement latency (s), for Retry-After

    def ready_judge(self) -> Judge:
        """The loaded judge. (Draining is the Guard's business: a request it let in before
        the signal is finished, not refused halfway.)"""
        if self.judge is not None and self.admission is not None:
            return self.judge
        if self.load_error is not None:
            raise ApiError(503, f"the model failed to load: {self.load_error}",
                           code="model_not_loaded")
        raise ApiError(503, "the model is still loading; retry shortly (GET /ready says when)",
                       code="loading", headers={"Retry-After": "2"})

    def retry_after(self) -> str:
        adm = self.admission
        slots = adm.slots if adm else 1
        queued = max(0, adm.inflight - adm.slots) if adm else 0
        return str(max(1, min(60, math.ceil(self.mean_latency * (queued + 1) / slots))))

    def model_name(self) -> str:
        judge = self.judge
        return self.settings.served_model_name or (
            judge.model_name if judge else "prometheus-lite"
        )
