"""The conversion pipeline: Hugging Face checkpoint folder -> GGUF files llama.cpp runs.

    checkpoint.open_checkpoint  (config + weight headers, nothing loaded)
      -> read_hparams            (arch.HPARAMS: config -> GGUF keys)
      -> tokenizer.load_vocab    (tokenizer.ggml.*)
      -> models.decide_prompt_format (from the name, tokenizer and chat template)
      -> plan_tensors            (names via gguf's TensorNameMap, shapes checked, experts stacked)
      -> gguf_out.write_gguf     (one tensor at a time, row chunks, atomic)
      -> quantize.quantize_file  (only for --quant: llama.cpp's quantizer on an intermediate file)

Seam for the native-kernel engine
---------------------------------
Every tensor passes through one ``TensorEncoder``: ``tensor_type()`` picks the GGML type of each
output tensor and ``encode()`` turns a float32 block of rows into that type's bytes.
``NumpyEncoder`` below does F32/F16/BF16/Q8_0 with numpy and ``gguf.quants``; a one-pass
quantizing engine passes its own encoder to ``convert_checkpoint(encoder=...)`` and drops the
intermediate-file step. An encoder whose choice depends on the tensor's name (llama.cpp's mixture
rules count layers) defines ``tensor_type_by_name(name)`` instead; ``output_type()`` prefers it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gguf
import numpy as np

from prometheus_lite.errors import ConversionError
from prometheus_lite.gguf_keys import PROMPT_FORMAT_KEY, PROMPT_FORMAT_VALUES
from prometheus_lite.models import decide_prompt_format

from . import arch
from .checkpoint import Checkpoint, open_checkpoint
from .gguf_out import PlannedTensor, check_free_space, tensor_nbytes, write_gguf
from .plan import TensorSource, chunks, plan_tensors, rotary_row_order
from .rope import rope_parameters, rope_scaling
from .tokenizer import Vocab, load_vocab, resolve_tokenizer_dir

__all__ = [
    "OUTTYPES",
    "TensorEncoder",
    "NumpyEncoder",
    "output_type",
    "Model",
    "inspect_checkpoint",
    "plan_tensors",
    "convert_checkpoint",
    "output_name",
    "rotary_row_order",
]

logger = logging.getLogger(__name__)

# --outtype name -> (GGML tensor type, llama_ftype written as general.file_type).
OUTTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

# ---------------------------------------------------------------------------- encoder seam

class TensorEncoder(Protocol):
    def tensor_type(self, kind: gguf.MODEL_TENSOR,
                    shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
        """GGML type of the output tensor ``kind`` with logical ``shape`` (numpy order)."""

    def encode(self, rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
        """float32 ``(n, row)`` block -> its bytes in ``qtype`` (any dtype, C order)."""


def output_type(encoder: TensorEncoder, name: str, kind: gguf.MODEL_TENSOR,
                shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
    """The encoder's GGML type for one output tensor (by name when the encoder decides by name)."""
    by_name = getattr(encoder, "tensor_type_by_name", None)
    return by_name(name) if by_name is not None else encoder.tensor_type(kind, shape)


class NumpyEncoder:
    """F32 / F16 / BF16 / Q8_0 output with numpy and gguf-py's reference quantizers."""

    def __init__(self, outtype: str) -> None:
        self.qtype, self.file_type = OUTTYPES[outtype]

    def tensor_type(self, kind: gguf.MODEL_TENSOR,
                    shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
        if len(shape) == 1 or kind in arch.F32_TENSORS:
            return gguf.GGMLQuantizationType.F32
        for qtype in (self.qtype, gguf.GGMLQuantizationType.F16):
            if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
                return qtype  # llama.cpp's converter also falls back to F16 for odd rows
        return gguf.GGMLQuantizationType.F32

    def encode(self, rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
        if qtype == gguf.GGMLQuantizationType.F32:
            return rows.astype(np.float32, copy=False)
        if qtype == gguf.GGMLQuantizationType.F16:
            return rows.astype(np.float16)
        return gguf.quants.quantize(rows, qtype)


# ---------------------------------------------------------------------------- model description

@dataclass
class Model:
    """What the pipeline knows about a checkpoint before reading any weight."""

    checkpoint: Checkpoint
    spec: arch.ArchSpec
    name: str
    hparams: dict[str, Any]  # GGUF key -> value
    dims: dict[str, int]  # symbols of arch tensor shapes, plus n_head, n_head_kv, head_dim
    vocab: Vocab
    # "v1" / "v2" (written as prometheus.prompt_format) or "chat" (not written: a model that
    # is no Prometheus judge keeps its own chat template); see models.decide_prompt_format.
    prompt_format: str
    prompt_format_reason: str
    # Tensors llama.cpp's converter generates from the config (rope factors): name -> float32.
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.spec.gguf_arch]


def _config_value(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def read_hparams(config: dict[str, Any], spec: arch.ArchSpec, where: Path) -> dict[str, Any]:
    """GGUF keys from ``spec.hparams`` (``rope.*`` reads the normalized rope parameters)."""
    arch_name = gguf.MODEL_ARCH_NAMES[spec.gguf_arch]
    view = {**config, "rope": rope_parameters(config)}
    out: dict[str, Any] = {}
    for hp in spec.hparams:
        if hp.moe_only and not spec.moe:
            continue
        value = next((v for k in hp.hf_keys if (v := _config_value(view, k)) is not None), None)
        if value is None:
            if hp.required:
                raise ConversionError(f"{where}: config.json lacks {' or '.join(hp.hf_keys)}, "
                                      "which the model needs; is the file complete?")
            if hp.default is None:
                continue
            value = hp.default
        out[hp.gguf_key.format(arch=arch_name)] = hp.kind(value)
    return out


def _rope_dims(spec: arch.ArchSpec, config: dict[str, Any], hidden: int, n_head: int,
               head_dim: int) -> int:
    """Rotary dimensions: the whole head, or Phi3MiniModel's int(partial * hidden) // n_head."""
    if spec.rope_dims == "partial":
        partial = rope_parameters(config).get("partial_rotary_factor", 1.0)
        return int(partial * hidden) // n_head
    return head_dim


def _prompt_format(name: str, ckpt: Checkpoint, vocab: Vocab,
                   override: str | None) -> tuple[str, str]:
    """From the checkpoint (its name, tokenizer and chat template) by
    ``prometheus_lite.models.decide_prompt_format``, unless ``--prompt-format`` says."""
    if override is not None:
        if override not in PROMPT_FORMAT_VALUES:
            raise ConversionError(f"--prompt-format {override!r}: choose one of "
                                  f"{', '.join(PROMPT_FORMAT_VALUES)}")
        return override, "--prompt-format"
    names = [("model name", name), ("config.json _name_or_path", ckpt.config.get("_name_or_path"))]
    return decide_prompt_format(names, chat_template=vocab.special.chat_template,
                                architecture=ckpt.architecture, tokenizer_model=vocab.model)


def _default_name(path: Path) -> str:
    """Folder name; for a Hugging Face cache snapshot (models--owner--name/snapshots/<hash>) the
    repo name."""
    path = path.resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name


def inspect_checkpoint(checkpoint_dir: str | os.PathLike[str], *, name: str | None = None,
                       prompt_format: str | None = None, tokenizer: str | None = None,
                       checkpoint: Checkpoint | None = None,
                       vocab_for: Callable[[int], Vocab] | None = None) -> Model:
    """Config, tokenizer (``tokenizer``: --tokenizer, else the checkpoint's own) and prompt
    format of a checkpoint; no weight is read. ``checkpoint`` and ``vocab_for`` (vocabulary
    for n rows) stand in for the folder's (synthetic.py's random checkpoints)."""
    ckpt = checkpoint if checkpoint is not None else open_checkpoint(checkpoint_dir)
    spec = arch.ARCHITECTURES.get(ckpt.architecture)
    if spec is None:
        raise ConversionError(
            f"{ckpt.path / 'config.json'}: architecture {ckpt.architecture or '(none)'!r} is not "
            f"supported; supported: {', '.join(arch.ARCHITECTURES)}. For other models use "
            "llama.cpp's convert_hf_to_gguf.py"
        )
    config = ckpt.config
    where = ckpt.path / "config.json"
    hparams = read_hparams(config, spec, ckpt.path)
    a = gguf.MODEL_ARCH_NAMES[spec.gguf_arch]
    n_head = hparams[gguf.Keys.Attention.HEAD_COUNT.format(arch=a)]
    n_head_kv = hparams.setdefault(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=a), n_head)
    hidden = hparams[gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=a)]
    head_dim = config.get("head_dim") or hidden // n_head
    if head_dim % 2 or n_head % n_head_kv:
        raise ConversionError(f"{where}: head_dim {head_dim} / heads {n_head}/{n_head_kv} are "
                              "not a valid attention layout")
    rot = _rope_dims(spec, config, hidden, n_head, head_dim)
    if spec.rope_dims is not None:
        hparams[gguf.Keys.Rope.DIMENSION_COUNT.format(arch=a)] = rot
    if head_dim != hidden // n_head:
        hparams[gguf.Keys.Attention.KEY_LENGTH.format(arch=a)] = head_dim
        hparams[gguf.Keys.Attention.VALUE_LENGTH.format(arch=a)] = head_dim
    rope_keys, extra_tensors = rope_scaling(config, a, spec.rope_types, rot, where)
    hparams.update(rope_keys)
    if config.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"{where}: hidden_act {config.get('hidden_act')!r} is not "
                              f"supported (a {ckpt.architecture} uses silu)")
    window = config.get("sliding_window")
    window_on = spec.sliding_window_flag is None or config.get(spec.sliding_window_flag)
    if window and window_on and window < hparams[gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=a)]:
        logger.warning("%s: sliding_window %s is ignored (llama.cpp attends to the whole "
                       "context); outputs differ from transformers beyond %s tokens",
                       where, window, window)
    ff = hparams[gguf.Keys.LLM.FEED_FORWARD_LENGTH.format(arch=a)]
    if not isinstance(config.get("vocab_size"), int):
        raise ConversionError(f"{where}: config.json lacks vocab_size, which the model needs; "
                              "is the file complete?")
    dims = {
        "vocab": config["vocab_size"],
        "hidden": hidden,
        "ff": ff,
        "ff2": 2 * ff,
        "q_dim": n_head * head_dim,
        "kv_dim": n_head_kv * head_dim,
        "qkv_dim": (n_head + 2 * n_head_kv) * head_dim,
        "experts": hparams.get(gguf.Keys.LLM.EXPERT_COUNT.format(arch=a), 0),
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "head_dim": head_dim,
        "n_layer": hparams[gguf.Keys.LLM.BLOCK_COUNT.format(arch=a)],
    }
    model_name = name or _default_name(ckpt.path)
    vocab = vocab_for(dims["vocab"]) if vocab_for is not None else load_vocab(
        resolve_tokenizer_dir(ckpt.path, tokenizer), dims["vocab"],
        model_config=config, sentencepiece=spec.sentencepiece)
    fmt, reason = _prompt_format(model_name, ckpt, vocab, prompt_format)
    if vocab.special.chat_template is None and fmt == "v1":
        # Llama-2-chat's own template, for the v1 checkpoint that ships no tokenizer.
        vocab.special.chat_template = arch.LLAMA2_CHAT_TEMPLATE
    if vocab.special.chat_template is None:
        logger.warning("%s: no chat template in the tokenizer; llama.cpp will guess one",
                       vocab.source)
    return Model(ckpt, spec, model_name, hparams, dims, vocab, fmt, reason, extra_tensors)


# ---------------------------------------------------------------------------- driver

def output_name(model_name: str, type_name: str) -> str:
    return f"{model_name}.{type_name.upper()}.gguf"


def _writer(model: Model, vocab: Vocab, file_type: gguf.LlamaFileType) -> gguf.GGUFWriter:
    w = gguf.GGUFWriter(None, model.arch_name)
    w.add_name(model.name)
    for key, value in model.hparams.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, float(value))
    w.add_file_type(int(file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.add_to_gguf(w)
    if model.prompt_format in PROMPT_FORMAT_VALUES:
        w.add_string(PROMPT_FORMAT_KEY, model.prompt_format)
    return w


def _quant_estimate(n_params: int, type_name: str) -> int:
    """Rough upper estimate of a llama.cpp quant file's size (for the free-space check)."""
    from .quantize import quant_type

    quant_type(type_name)  # validates the name
    base = type_name.upper()
    for cand in (base, base.rsplit("_", 1)[0]):
        if cand in gguf.GGMLQuantizationType.__members__:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[cand]]
            return int(n_params * (size * 8 / block + 1.0) / 8)  # +1 bpw for mixed tensors
    return n_params * 2


# ---------------------------------------------------------------------------- native engine glue

def _check_engine(engine: str, quants: Sequence[str], precision: str | None) -> None:
    from .one_pass import INTERMEDIATES
    from .quant_types import MIXTURES

    if engine not in ("native", "llama.cpp"):
        raise ConversionError(f"--engine {engine!r}: choose native or llama.cpp")
    if precision is not None and precision.lower() not in INTERMEDIATES:
        raise ConversionError(f"--precision {precision!r}: choose one of "
                              f"{', '.join(INTERMEDIATES)}")
    other = [q for q in quants if q not in MIXTURES]
    if engine == "native" and other:
        raise ConversionError(f"--quant {', '.join(other)}: the native engine makes "
                              f"{', '.join(MIXTURES)}; add --engine llama.cpp for other types")


def _native_encoder(model: Model, plan: list[TensorSource], level: str, precision: str,
                    nthread: int) -> Any:
    """One-pass encoder for ``level``: each tensor's type as llama.cpp would choose it from the
    ``precision`` intermediate the two-step path writes."""
    from .mixtures import ModelInfo
    from .one_pass import NativeEncoder

    inter = NumpyEncoder(precision)
    tensors = [(p.name, p.shape, output_type(inter, p.name, p.kind, p.shape)) for p in plan]
    return NativeEncoder(level, ModelInfo.from_kv(model.arch_name, model.hparams), tensors,
                         intermediate=precision, n_threads=nthread or None)


def convert_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    outtype: str | None = None,
    quants: Sequence[str] = (),
    tokenizer: str | None = None,
    prompt_format: str | None = None,
    name: str | None = None,
    encoder: TensorEncoder | None = None,
    progress: bool = False,
    nthread: int = 0,
    engine: str = "native",
    precision: str | None = None,
    model: Model | None = None,
) -> list[Path]:
    """Convert a checkpoint folder; return the GGUF files written into ``out_dir``.

    ``outtype`` (f32/f16/bf16/q8_0) is written directly; each of ``quants`` (llama.cpp type names
    such as Q4_K_M) is made by llama.cpp's quantizer from an intermediate F16 (BF16 for bf16
    checkpoints) file that is removed afterwards. With neither, ``outtype`` defaults to f16.

    ``engine`` (quants only): "native" (default) writes each level in one pass with the native
    kernels (convert/one_pass.py), no intermediate file; "llama.cpp" is the two-step path above.
    ``precision`` (f16/bf16/f32): values are rounded to it before quantizing, by both engines
    (the intermediate's type); default f16, bf16 for all-BF16 checkpoints, so the engines agree.
    """
    if outtype is not None and outtype.lower() not in OUTTYPES:
        raise ConversionError(f"--outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    quants = list(dict.fromkeys(q.upper() for q in quants))
    _check_engine(engine, quants, precision)  # native engine: convert/one_pass.py
    if model is None:  # else already inspected (synthetic.py)
        model = inspect_checkpoint(checkpoint_dir, name=name, prompt_format=prompt_format,
                                   tokenizer=tokenizer)
    logger.info("%s: %s, prompt format %s (%s)", model.name, model.checkpoint.architecture,
                model.prompt_format, model.prompt_format_reason)
    vocab = model.vocab
    plan = plan_tensors(model)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if outtype is None and not quants:
        outtype = "f16"
    direct = outtype.lower() if outtype else None
    intermediate = None
    bf16_only = model.checkpoint.source_dtypes == {"BF16"}
    precision = (precision or ("bf16" if bf16_only else "f16")).lower()
    if quants and engine == "llama.cpp":
        intermediate = precision
        if direct == intermediate:
            intermediate = None  # the requested output doubles as the quantizer's input

    # Disk space for everything this run writes at once, checked before writing anything.
    def size_of(t: str) -> int:
        enc = encoder or NumpyEncoder(t)
        return sum(tensor_nbytes(p.shape, output_type(enc, p.name, p.kind, p.shape))
                   for p in plan)

    n_params = sum(int(np.prod(p.shape)) for p in plan)
    needed = sum(size_of(t) for t in (direct, intermediate) if t)
    needed += sum(_quant_estimate(n_params, q) for q in quants)
    check_free_space(out, needed, f"{model.name} ({', '.join(filter(None, [direct, *quants]))})")

    written: list[Path] = []

    def write(type_name: str, target: Path, native: Any = None) -> None:
        enc = native or encoder or NumpyEncoder(type_name)
        if native is not None:
            file_type = native.file_type
        else:
            file_type = OUTTYPES[type_name][1] if encoder is None else getattr(
                encoder, "file_type", OUTTYPES[type_name][1])
        planned = []
        for p in plan:
            qtype = output_type(enc, p.name, p.kind, p.shape)
            planned.append(PlannedTensor(p.name, p.shape, qtype, chunks(p, qtype, enc)))
        logger.info("writing %s", target)
        write_gguf(target, _writer(model, vocab, file_type), planned, progress=progress)

    if direct:
        target = out / output_name(model.name, direct)
        write(direct, target)
        written.append(target)
    if quants and engine == "native":  # one pass per level (convert/one_pass.py)
        for q in quants:
            target = out / output_name(model.name, q)
            write(q, target, native=_native_encoder(model, plan, q, precision, nthread))
            written.append(target)
    elif quants:
        from .quantize import quantize_file

        if intermediate:
            source = out / f".{model.name}.intermediate.{intermediate.upper()}.gguf"
        else:
            source = written[0]
        try:
            if intermediate:
                write(intermediate, source)
            for q in quants:
                target = out / output_name(model.name, q)
                quantize_file(source, target, q, nthread=nthread)
                written.append(target)
        finally:
            if intermediate:
                source.unlink(missing_ok=True)
    return written
