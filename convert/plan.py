"""The tensor plan: every GGUF tensor of a model, where its data comes from, checked.

``plan_tensors`` maps each checkpoint tensor to its GGUF name with gguf-py's ``TensorNameMap``
(Mixtral's per-expert tensors are stacked), adds the tensors llama.cpp's converter generates
from the config (rope factors), and checks the set and every shape against the architecture's
table (``arch.ArchSpec``). ``chunks`` then produces one tensor's encoded bytes in row blocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import gguf
import numpy as np

from prometheus_lite.errors import ConversionError

from . import arch
from .checkpoint import FLOAT_DTYPES, TensorRef, to_f32

if TYPE_CHECKING:
    from .convert import Model

__all__ = ["TensorSource", "rotary_row_order", "plan_tensors", "chunks"]

# Elements per encoded chunk (16 Mi float32 = 64 MiB): bounds the temporaries of encode().
CHUNK_ELEMENTS = 16 * 2**20


class _Encoder(Protocol):
    def encode(self, rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray: ...


@dataclass
class TensorSource:
    """One output tensor before encoding: checkpoint parts stacked on axis 0 (or generated
    ``data``), with an optional row permutation."""

    name: str
    kind: gguf.MODEL_TENSOR
    shape: tuple[int, ...]
    parts: list[TensorRef] = field(default_factory=list)
    rotary_heads: int | None = None  # permute rows for llama.cpp's rope (per part)
    data: np.ndarray | None = None  # generated from the config (rope factors), float32


_EXPERT = re.compile(
    r"^(model\.layers\.(\d+)\.block_sparse_moe\.experts)\.(\d+)\.(w[123])\.weight$")


def rotary_row_order(n_rows: int, n_heads: int) -> np.ndarray:
    """Row order llama.cpp's converter gives Q/K: out[i] = w[order[i]].

    Hugging Face keeps each head's rotary halves apart (rotate_half); llama.cpp rotates adjacent
    pairs. Same reordering as LlamaModel.permute in convert_hf_to_gguf.py:
    reshape(n_heads, 2, head_dim // 2).swapaxes(1, 2).
    """
    return np.arange(n_rows).reshape(n_heads, 2, n_rows // n_heads // 2).swapaxes(1, 2).reshape(-1)


def _expected(model: Model) -> dict[str, tuple[gguf.MODEL_TENSOR, tuple[str, ...]]]:
    """GGUF name -> (kind, shape symbols) of every tensor a complete checkpoint has."""
    spec = model.spec
    out: dict[str, tuple[gguf.MODEL_TENSOR, tuple[str, ...]]] = {}
    for (kind, suffix), sym in arch.GLOBAL_TENSORS.items():
        out[f"{gguf.TENSOR_NAMES[kind]}.{suffix}"] = (kind, sym)
    per_block = {**spec.block_tensors, **spec.ffn_tensors}
    for bid in range(model.dims["n_layer"]):
        for (kind, suffix), sym in per_block.items():
            out[f"{gguf.TENSOR_NAMES[kind].format(bid=bid)}.{suffix}"] = (kind, sym)
    return out


def _kind_of(name: str) -> gguf.MODEL_TENSOR:
    base = name.rsplit(".", 1)[0]
    return next(k for k, n in gguf.TENSOR_NAMES.items() if n == base)


def plan_tensors(model: Model) -> list[TensorSource]:
    """Map every checkpoint tensor to its GGUF tensor and check nothing is missing or misshapen."""
    ckpt, dims = model.checkpoint, model.dims
    tmap = gguf.get_tensor_name_map(model.spec.gguf_arch, dims["n_layer"])
    plans: dict[str, TensorSource] = {}
    experts: dict[str, dict[int, TensorRef]] = {}

    for key, ref in ckpt.tensors.items():
        if key.endswith(arch.IGNORED_TENSOR_SUFFIXES):
            continue
        m = _EXPERT.match(key)
        hf_name = f"{m.group(1)}.{m.group(4)}.weight" if m else key
        found = tmap.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ConversionError(f"{ref.path}: unexpected tensor {key!r} for a "
                                  f"{ckpt.architecture} checkpoint; the file may belong to another "
                                  "model or use a layout this converter does not know")
        kind, gguf_name = found
        if ref.dtype not in FLOAT_DTYPES:
            raise ConversionError(f"{ref.path}: tensor {key} has dtype {ref.dtype}; expected "
                                  "float32, float16 or bfloat16 weights")
        if m:
            experts.setdefault(gguf_name, {})[int(m.group(3))] = ref
            plans.setdefault(gguf_name, TensorSource(gguf_name, kind, ()))
        else:
            plans[gguf_name] = TensorSource(gguf_name, kind, ref.shape, [ref])

    for gguf_name, parts in experts.items():
        want = list(range(dims["experts"]))
        if sorted(parts) != want:
            absent = sorted(set(want) - set(parts))
            raise ConversionError(f"{ckpt.path}: {gguf_name} is missing experts {absent} "
                                  "(tensors ...experts.N.w*); a shard is incomplete, "
                                  "re-download it")
        plan = plans[gguf_name]
        plan.parts = [parts[i] for i in want]
        shapes = {p.shape for p in plan.parts}
        if len(shapes) != 1:
            raise ConversionError(f"{ckpt.path}: experts of {gguf_name} differ in shape {shapes}")
        plan.shape = (len(want), *plan.parts[0].shape)

    expected = _expected(model)
    tied = ckpt.config.get("tie_word_embeddings", False)
    for gguf_name, (kind, sym) in expected.items():
        if gguf_name not in plans:
            if kind == gguf.MODEL_TENSOR.OUTPUT and tied:
                continue
            raise ConversionError(
                f"{ckpt.path}: the checkpoint has no tensor for {gguf_name} (a "
                f"{ckpt.architecture} with {dims['n_layer']} layers needs it); the weights are "
                "incomplete: re-download the missing shard or check config.json"
            )
        plan = plans[gguf_name]
        want_shape = tuple(dims[s] for s in sym)
        if plan.shape != want_shape:
            src = plan.parts[0]
            what = "vocabulary size" if "vocab" in sym else "shape"
            raise ConversionError(
                f"{src.path}: {src.name} has shape {list(plan.shape)} but config.json implies "
                f"{list(want_shape)} ({what} mismatch); the config and the weights do not belong "
                "together"
            )
        if model.spec.rotary_permute and kind in arch.ROTARY_PERMUTED:
            plan.rotary_heads = dims[arch.ROTARY_PERMUTED[kind]]
    extra = sorted(set(plans) - set(expected))
    if extra:
        src = plans[extra[0]].parts[0]
        hint = (" (attention biases: is attention_bias set in config.json?)"
                if extra[0].endswith(".bias") else "")
        raise ConversionError(f"{src.path}: tensor {src.name} ({extra[0]}) is not used by a "
                              f"{dims['n_layer']}-layer {ckpt.architecture}{hint}; check "
                              "config.json")
    # Generated tensors first (ModelBase.prepare_tensors: generate_extra_tensors, then the
    # checkpoint's), then token_embd, output, and the blocks in order.
    generated = [TensorSource(name, _kind_of(name), data.shape, data=data)
                 for name, data in model.extra_tensors.items()]
    order = {n: i for i, n in enumerate(expected)}
    return generated + sorted(plans.values(), key=lambda p: order[p.name])


def chunks(src: TensorSource, qtype: gguf.GGMLQuantizationType,
           encoder: _Encoder) -> Callable[[], Iterator[np.ndarray]]:
    """Producer of ``src``'s encoded bytes in blocks of rows (at most CHUNK_ELEMENTS each)."""
    def produce() -> Iterator[Any]:
        if src.data is not None:
            yield encoder.encode(src.data.reshape(1, -1).astype(np.float32), qtype)
            return
        for part in src.parts:
            raw = part.load()  # the only full tensor held: one part, in its stored dtype
            rows = raw.reshape(1, -1) if raw.ndim == 1 else raw.reshape(raw.shape[0], -1)
            order = rotary_row_order(rows.shape[0], src.rotary_heads) if src.rotary_heads else None
            step = max(1, CHUNK_ELEMENTS // rows.shape[1])
            for a in range(0, rows.shape[0], step):
                picked = rows[order[a:a + step]] if order is not None else rows[a:a + step]
                yield encoder.encode(to_f32(picked, part.dtype), qtype)
            del raw, rows
    return produce
