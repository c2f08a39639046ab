"""``prometheus-lite serve``: the HTTP service under uvicorn (registered into the main CLI).

Importing this module needs only click: FastAPI and uvicorn (the ``serve`` extra) are
imported when the command runs, with a clear message if they are missing.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from typing import Any

import click

from ..errors import PrometheusLiteError
from ..options import ModelOptions, model_options
from ..options import StderrHandler as _StderrHandler  # the CLI's (follows sys.stderr)

__all__ = ["serve_command"]

log = logging.getLogger("prometheus_lite.server")

API_KEY_ENV = "PROMETHEUS_LITE_API_KEY"


def _setup_logs(access_log: bool) -> None:
    """Service logs as text, access logs as one JSON object per line, both on stderr."""
    text = _StderrHandler()
    text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("prometheus_lite.server", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            logger.addHandler(text)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    access = logging.getLogger("prometheus_lite.server.access")
    access.propagate = False
    access.handlers = []
    if access_log:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    else:
        access.setLevel(logging.CRITICAL + 1)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve_options(f: Any) -> Any:
    options = [
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Address to bind (0.0.0.0 for every interface: set an API key)."),
        click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
                     help="Port to bind (0: any free port; the log says which)."),
        click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True, default=None,
                     help="Require 'Authorization: Bearer KEY' on every endpoint but "
                     "/health (prefer the environment variable: a command line is visible "
                     "to other users)."),
        click.option("--max-queue", type=click.IntRange(min=0), default=64, show_default=True,
                     help="Judgements admitted beyond the engine's slots; past it, 429."),
        click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=600.0, show_default=True,
                     help="Seconds one judgement may take, queueing included (then 504)."),
        click.option("--max-body-bytes", type=click.IntRange(min=1024), default=8 * 2**20,
                     show_default=True, help="Largest request body accepted (then 413)."),
        click.option("--max-tokens-cap", type=click.IntRange(min=8), default=None,
                     help="Refuse requests asking for more max_tokens than this "
                     "[default: no cap beyond the context]."),
        click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
                     help="Allow browser calls from this origin (repeatable) [default: CORS "
                     "off]."),
        click.option("--served-model-name", default=None,
                     help="Model id in /v1/models and responses [default: the model's name]."),
        click.option("--grace-period", type=click.FloatRange(min=0), default=30.0,
                     show_default=True,
                     help="On SIGTERM/SIGINT: seconds to finish in-flight requests."),
        click.option("--access-log/--no-access-log", default=True, show_default=True,
                     help="One JSON line per request on stderr."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _command() -> click.Command:
    @click.command("serve")
    @model_options
    @_serve_options
    def serve_command(opts: ModelOptions, **kw: Any) -> None:
        """Serve the judge over HTTP: judge endpoints and an OpenAI-compatible API.

        \b
        Judge:   POST /v1/grade, /v1/compare, /v1/batch (NDJSON); GET /v1/rubrics, /v1/model
        OpenAI:  POST /v1/chat/completions, /v1/completions; GET /v1/models
        Ops:     GET /health, /ready, /metrics; the schema at /openapi.json

        The model loads once; requests share the engine's slots (--parallel). With
        --dry-run, print the settings and exit without loading the model.
        """
        run_server(opts, **kw)

    return serve_command


def run_server(
    opts: Any,
    *,
    host: str,
    port: int,
    api_key: str | None,
    max_queue: int,
    request_timeout: float,
    max_body_bytes: int,
    max_tokens_cap: int | None,
    cors_origins: tuple[str, ...],
    served_model_name: str | None,
    grace_period: float,
    access_log: bool,
) -> None:
    try:
        import uvicorn

        from .app import ServerSettings, create_app
    except ImportError as e:  # pragma: no cover - depends on the install
        raise PrometheusLiteError(
            f"serving needs the 'serve' extra ({e.name} is missing): "
            "pip install 'prometheus-lite[serve]'"
        ) from e
    settings = ServerSettings(
        api_key=api_key or None,
        max_queue=max_queue,
        request_timeout=request_timeout,
        max_body_bytes=max_body_bytes,
        max_tokens_cap=max_tokens_cap,
        cors_origins=tuple(cors_origins),
        served_model_name=served_model_name,
    )
    if opts.dry_run:
        shown = {**settings.__dict__, "api_key": "(set)" if api_key else None,
                 "host": host, "port": port, "parallel": opts.parallel, "model": opts.model}
        for k, v in shown.items():
            click.echo(f"{k}: {v}")
        return
    _setup_logs(access_log)
    if not _is_loopback(host) and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can "
                    "use the judge; set %s", host, API_KEY_ENV)

    server: Any = None

    def load() -> Any:
        return opts.make_judge()  # --parallel: the engine's slots

    def failed(reason: str) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(load, settings, on_load_failure=failed)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                log.info("signal %d: draining (grace period %gs)", sig, grace_period)
            app.state.service.draining = True
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            for srv in getattr(self, "servers", []):
                for sock in srv.sockets:
                    name = sock.getsockname()
                    log.info("listening on http://%s:%d", *name[:2])

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=grace_period, server_header=False,
    )
    server = _Server(config)
    # uvicorn re-raises the signal it drained on, to run the previous handler; make that
    # a no-op, so a graceful SIGTERM/SIGINT ends with exit code 0.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    error = app.state.service.load_error
    if error is not None:
        raise PrometheusLiteError(f"the model failed to load: {error}")
    if not server.started:
        sys.exit(1)
    log.info("stopped")


serve_command = _command()
