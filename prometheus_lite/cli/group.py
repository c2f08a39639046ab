"""The ``prometheus-lite`` group: version, ``-v`` logging, and errors turned into exit codes."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from ..errors import PrometheusLiteError
from ..options import StderrHandler

__all__ = ["main", "DEBUG_ENV"]

DEBUG_ENV = "PROMETHEUS_LITE_DEBUG"


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("prometheus-lite")
    except PackageNotFoundError:  # running from a source tree
        from .. import __version__

        return __version__


class _Group(click.Group):
    """Turns PrometheusLiteError from any subcommand into ``Error: ...`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PrometheusLiteError as e:
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(_version(), prog_name="prometheus-lite")
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v info, -vv debug.")
def main(verbose: int) -> None:
    """Prometheus LLM judges on llama.cpp, offline, with well-formed output.

    Every answer is 'feedback [RESULT] N': a grade 1-5 (grade) or A/B (compare),
    with the model's probabilities over the possible results.

    \b
    Quick start (the embedded SmolLM2-135M smoke-test model, not a real judge):
      prometheus-lite grade --instruction "2+2?" --response "4" --rubric helpfulness
      prometheus-lite grade --input items.jsonl --output results.jsonl --model PATH.gguf
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    _setup_logging(level)


def _setup_logging(level: int) -> None:
    """Log prometheus_lite's messages to stderr (only the package logger: the root
    logger, and whatever the host application put there, is left alone)."""
    log = logging.getLogger("prometheus_lite")
    if not any(isinstance(h, StderrHandler) for h in log.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
