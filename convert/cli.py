"""``prometheus-lite convert`` and ``prometheus-lite quantize`` (click commands).

They are registered in the main group by ``prometheus_lite/cli.py`` and also run on their own
(``convert_command.main([...])`` or click's ``CliRunner``). Written files are printed to stdout, one
path a line; progress and log lines go to stderr. Errors are shown as one message and exit code 1;
``PROMETHEUS_LITE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from prometheus_lite.errors import PrometheusLiteError

__all__ = ["convert_command", "quantize_command", "format_tensor_table"]


@contextlib.contextmanager
def _user_errors(quiet: bool) -> Iterator[None]:
    handler = None
    log = logging.getLogger("prometheus_lite.convert")
    if not quiet:
        log.setLevel(logging.INFO)
        if not log.hasHandlers():  # standalone; under the main CLI its handler prints them
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
    try:
        yield
    except PrometheusLiteError as e:
        if os.environ.get("PROMETHEUS_LITE_DEBUG"):
            raise
        raise click.ClickException(str(e)) from e
    finally:
        if handler is not None:
            log.removeHandler(handler)


@click.command("convert")
@click.argument("checkpoint_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--synthetic", "synthetic", metavar="RELEASE",
              help="Instead of a checkpoint: a random-weight model with RELEASE's exact shape, "
                   "hyper-parameters and tokenizer (prometheus-7b-v2.0, prometheus-13b-v1.0, "
                   "prometheus-8x7b-v2.0, m-prometheus-3b/-7b/-14b, selene-1-mini, "
                   "flow-judge-v0.1), for timings only; marked prometheus.synthetic.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="With --synthetic: random seed (same seed, same bytes).")
@click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="With --synthetic: change a config.json value (e.g. num_hidden_layers=2) "
                   "for a smaller test shape; the name gets a digest of the overrides.")
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="Folder for the GGUF files (<model-name>.<TYPE>.gguf).")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0"], case_sensitive=False),
              help="Write this type directly (default f16 when no --quant is given).")
@click.option("--quant", "quants", multiple=True, metavar="TYPE",
              help="llama.cpp quantization (Q4_K_M, Q5_K_M, Q8_0, ...); repeatable. Made by "
                   "llama.cpp's quantizer from an intermediate F16/BF16 file that is removed.")
@click.option("--tokenizer", metavar="DIR_OR_REPO",
              help="Tokenizer folder or Hugging Face repo id, for checkpoints without one "
                   "(prometheus-13b-v1.0: the Llama-2 tokenizer).")
@click.option("--prompt-format", type=click.Choice(["v1", "v2"]),
              help="Prometheus prompt version stored in the file (default: from the checkpoint: "
                   "a Prometheus release its name names; else v1/v2 if it is built like one "
                   "(Llama/Mistral/Mixtral with a SentencePiece tokenizer and no or an [INST] "
                   "chat template); else none: the model keeps its own chat template).")
@click.option("--name", help="Model name for the files and general.name (default: folder name).")
@click.option("--threads", type=int, default=0, help="Quantizer threads (0: all cores).")
@click.option("--engine", type=click.Choice(["native", "llama.cpp"]), default="native",
              show_default=True,
              help="For --quant: native kernels in one pass (no intermediate file), or llama.cpp's "
                   "quantizer on an intermediate file. Both give identical tensors.")
@click.option("--precision", type=click.Choice(["f16", "bf16", "f32"]),
              help="For --quant: round values to this before quantizing (the intermediate's "
                   "type). Default f16 (bf16 for bf16 checkpoints): lossless for f16/bf16 "
                   "checkpoints and what llama.cpp-made quants of them hold.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or log lines on stderr.")
def convert_command(checkpoint_dir: Path | None, synthetic: str | None, seed: int,
                    overrides: tuple[str, ...], out_dir: Path, outtype: str | None,
                    quants: tuple[str, ...], tokenizer: str | None, prompt_format: str | None,
                    name: str | None, threads: int, engine: str, precision: str | None,
                    quiet: bool) -> None:
    """Convert a Hugging Face checkpoint folder (Llama incl. Llama-3.1, Mistral, Mixtral, Qwen2,
    Phi-3) to GGUF.

    Example: prometheus-lite convert prometheus-13b-v1.0 -o models --quant Q4_K_M
    --tokenizer meta-llama/Llama-2-13b-chat-hf

    Or a synthetic release-shaped model (random weights, timings only):
    prometheus-lite convert --synthetic prometheus-7b-v2.0 -o models --quant Q4_K_M
    """
    from .convert import convert_checkpoint

    if (checkpoint_dir is None) == (synthetic is None):
        raise click.UsageError("give either CHECKPOINT_DIR or --synthetic RELEASE")
    if synthetic is not None:
        ignored = [o for o, v in (("--tokenizer", tokenizer), ("--name", name),
                                  ("--precision", precision)) if v]
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)}: not used with --synthetic (the "
                                   "release fixes tokenizer, name and precision)")
        from .synthetic import convert_synthetic, parse_overrides

        with _user_errors(quiet):
            paths = convert_synthetic(
                synthetic, out_dir, quants=quants, outtype=outtype, seed=seed,
                overrides=parse_overrides(overrides), prompt_format=prompt_format,
                progress=not quiet, nthread=threads, engine=engine,
            )
        for p in paths:
            click.echo(str(p))
        return
    if overrides or seed:
        raise click.UsageError("--seed and --override go with --synthetic")
    with _user_errors(quiet):
        paths = convert_checkpoint(
            checkpoint_dir, out_dir, outtype=outtype, quants=quants, tokenizer=tokenizer,
            prompt_format=prompt_format, name=name, progress=not quiet, nthread=threads,
            engine=engine, precision=precision,
        )
    for p in paths:
        click.echo(str(p))


@click.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--type", "type_name", required=True, metavar="TYPE",
              help="llama.cpp quantization type, e.g. Q4_K_M, Q5_K_M, Q8_0.")
@click.option("--threads", type=int, default=0, help="Threads (0: all cores).")
@click.option("--engine", type=click.Choice(["native", "llama.cpp"]), default="native",
              show_default=True,
              help="native kernels (same tensors as llama.cpp, faster) or llama.cpp's quantizer "
                   "(which also makes the types the native engine lacks).")
@click.option("-q", "--quiet", is_flag=True, help="No log lines on stderr.")
def quantize_command(src: Path, dst: Path, type_name: str, threads: int, engine: str,
                     quiet: bool) -> None:
    """Quantize an F16/BF16/F32 GGUF (SRC) into DST."""
    with _user_errors(quiet):
        if engine == "native":
            from .native_quantize import quantize_gguf

            quantize_gguf(src, dst, type_name, n_threads=threads or None)
        else:
            from .quantize import quantize_file

            quantize_file(src, dst, type_name, nthread=threads)
    click.echo(str(dst))


def format_tensor_table(path: str | os.PathLike[str]) -> str:
    """Text table of a GGUF file's tensors (name, type, shape, size) for ``info --tensors``."""
    from .gguf_out import read_tensor_table

    rows = read_tensor_table(path)
    width = max((len(r.name) for r in rows), default=4)
    lines = [f"{'name':<{width}}  {'type':<8} {'shape':<24} {'bytes':>14}"]
    for r in rows:
        shape = "x".join(str(d) for d in r.shape)
        lines.append(f"{r.name:<{width}}  {r.type:<8} {shape:<24} {r.nbytes:>14,}")
    lines.append(f"{len(rows)} tensors, {sum(r.nbytes for r in rows):,} bytes")
    return "\n".join(lines)
