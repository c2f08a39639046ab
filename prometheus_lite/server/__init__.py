"""The HTTP service (``prometheus-lite serve``): judge endpoints and an OpenAI-compatible face.

    >>> from prometheus_lite.server import ServerSettings, create_app
    >>> app = create_app(lambda: Judge(...), ServerSettings(api_key="..."))   # an ASGI app

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client); importing this package
does not, so the CLI loads without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
