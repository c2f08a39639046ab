"""One-pass quantization for ``convert --engine native``: the ``TensorEncoder`` that writes
the final mixture (Q4_K_M, ...) straight from checkpoint rows, with no intermediate file.

It gives byte-identical tensors to the two-step path (``--engine llama.cpp``: write an
F16 - BF16 for all-BF16 checkpoints - GGUF, then ``llama_model_quantize`` it), because:

- the type of every tensor comes from ``mixtures.choose_types`` over the whole tensor plan,
  with each tensor's *intermediate* type as its current type (what llama.cpp would see);
- values are rounded to the intermediate precision before quantizing (``intermediate``:
  "f16" / "bf16" rounds, "f32" does not), exactly as writing and re-reading the
  intermediate file would round them; tensors llama.cpp keeps (norms, routers, fallbacks to
  F16) are written as the intermediate holds them.

Default: round like the two-step path's intermediate (``intermediate_for``), so both engines
agree bit for bit and files match llama.cpp-made quants of the same checkpoint. With F16 or
BF16 checkpoints the rounding is a no-op; only F32 checkpoints lose anything to it, and
"f32" is available for them (then the two-step path needs an F32 intermediate to match).
"""

from __future__ import annotations

from collections.abc import Iterable

import gguf
import numpy as np

from prometheus_lite.errors import QuantizationError

from . import kernels
from .mixtures import ModelInfo, TensorInfo, choose_types
from .quant_types import mixture

__all__ = ["INTERMEDIATES", "NativeEncoder", "intermediate_for", "round_rows"]

T = gguf.GGMLQuantizationType
INTERMEDIATES = {"f16": T.F16, "bf16": T.BF16, "f32": T.F32}


def intermediate_for(source_dtypes: Iterable[str]) -> str:
    """The two-step path's intermediate type: BF16 for all-BF16 checkpoints, else F16."""
    return "bf16" if set(source_dtypes) == {"BF16"} else "f16"


def round_rows(rows: np.ndarray, intermediate: str) -> np.ndarray:
    """float32 rows as they read back from an ``intermediate``-typed GGUF tensor."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if intermediate == "f32":
        return rows
    if intermediate == "f16":
        with np.errstate(over="ignore"):  # beyond 65504 -> inf, as in the intermediate file
            return rows.astype(np.float16).astype(np.float32)
    if (
        intermediate == "bf16"
    ):  # gguf-py's rounding (what the intermediate writer uses), read back exactly
        bits = gguf.quants.quantize(rows, T.BF16).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(rows.shape)
    raise QuantizationError(
        f"intermediate precision {intermediate!r}: choose one of {', '.join(INTERMEDIATES)}"
    )


class NativeEncoder:
    """Encoder for one mixture ``level``.

    ``tensors``: (GGUF name, numpy-order shape, intermediate type) of every output tensor,
    the intermediate type being what the two-step path's F16/BF16 file holds for it
    (F32 for norms and routers). ``model``: the hyper-parameters the rules read.
    """

    def __init__(
        self,
        level: str,
        model: ModelInfo,
        tensors: Iterable[tuple[str, tuple[int, ...], T]],
        *,
        intermediate: str = "f16",
        n_threads: int | None = None,
    ) -> None:
        if intermediate not in INTERMEDIATES:
            raise QuantizationError(
                f"intermediate precision {intermediate!r}: choose one of {', '.join(INTERMEDIATES)}"
            )
        try:
            self.mixture = mixture(level)
        except KeyError as e:
            raise QuantizationError(str(e.args[0])) from None
        self.file_type = self.mixture.ftype
        self.intermediate = intermediate
        self.n_threads = n_threads
        infos = [TensorInfo(name, tuple(shape), T(t)) for name, shape, t in tensors]
        self.types = choose_types(infos, model, self.mixture.name)

    def tensor_type_by_name(self, name: str) -> T:
        """Output type of tensor ``name`` (llama.cpp's rules need the name: they count layers)."""
        try:
            return self.types[name]
        except KeyError:
            raise QuantizationError(
                f"tensor {name} is not in the plan this encoder was built for"
            ) from None

    def tensor_type(self, kind: object, shape: tuple[int, ...]) -> T:
        raise QuantizationError(
            "NativeEncoder chooses types by tensor name: call tensor_type_by_name"
        )

    def encode(self, rows: np.ndarray, qtype: T) -> np.ndarray:
        """float32 rows -> bytes of ``qtype``, after the intermediate's rounding."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if qtype == T.F32:  # kept as F32 (norms, routers): never rounded
            return rows
        if qtype == INTERMEDIATES[self.intermediate]:  # kept as the intermediate holds it
            if qtype == T.BF16:
                return gguf.quants.quantize(rows, T.BF16)
            with np.errstate(over="ignore"):
                return rows.astype(np.float16)
        rows = round_rows(
            rows, self.intermediate
        )  # what llama.cpp reads back from the intermediate
        if qtype == T.F16:  # fallback for odd rows: ggml's RNE = numpy's
            with np.errstate(over="ignore"):
                return rows.astype(np.float16)
        return kernels.quantize(rows, qtype, n_threads=self.n_threads)
