"""``rubrics`` and ``info``: what the presets say and what a model file holds."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import PrometheusLiteError
from ..results import jsonable
from ..rubrics import ALL_PRESETS

__all__ = ["rubrics", "info"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full rubrics as JSON.")
def rubrics(as_json: bool) -> None:
    """List the preset rubrics (use a name with --rubric, or write your own JSON file)."""
    if as_json:
        click.echo(json.dumps({n: r.to_dict() for n, r in ALL_PRESETS.items()}, indent=2,
                              ensure_ascii=False))
        return
    for name, rubric in ALL_PRESETS.items():
        scale = "" if rubric.scale == "1-5" else f" (scale {rubric.scale}; Flow-Judge)"
        click.echo(f"{name}{scale}\n    {rubric.criteria}")


@click.command()
@click.argument("model", required=False)
@click.option("--tensors", is_flag=True, help="Also list every tensor (name, type, shape).")
@click.option("--json", "as_json", is_flag=True, help="Print the model info as JSON.")
def info(model: str | None, tensors: bool, as_json: bool) -> None:
    """Show a GGUF model's metadata (default: the embedded model); reads no weights.

    Also shows how llama.cpp's CPU backend will load models on this machine (found by a
    probe in a child process, once per llama.cpp build and CPU; see README "CPUs with AMX").
    """
    from ..hub import resolve_model
    from ..models import format_info, read_model_info
    from ..native import cpu_backend, llama_cpp_version, runtime_build

    model_info = read_model_info(resolve_model(model))
    backend_error: PrometheusLiteError | None = None
    try:
        backend = cpu_backend()
        backend_json: dict[str, Any] = backend.as_dict()
        summary = backend.summary()
    except PrometheusLiteError as e:  # reported after the metadata, then exit 1
        backend_error, backend_json = e, {"error": str(e)}
        summary = "this llama.cpp build cannot run on this CPU (see the error below)"
    if as_json:
        data = jsonable(model_info)
        if not tensors and isinstance(data, dict):
            data.pop("tensors", None)
        data["cpu_backend"] = backend_json
        data["llama_cpp_python"] = llama_cpp_version()
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(format_info(model_info, tensors=tensors, cpu_backend=summary,
                               runtime=runtime_build()))
    if backend_error is not None:
        raise backend_error
