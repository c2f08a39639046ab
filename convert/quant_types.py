"""Quantization type data: GGML block types the native kernels handle, and the
llama.cpp file-type mixtures (``--quant`` / ``--type`` names).

DATA only; the logic lives in ``kernels.py`` (bytes) and ``mixtures.py`` (which
type each tensor gets). Sizes and enum values are taken from gguf-py, which
mirrors ``ggml.h`` / ``llama.h`` ("ALL VALUES SHOULD BE THE SAME HERE AS THEY
ARE OVER THERE", gguf/constants.py); ``tests/test_kernels.py`` checks them against
the llama.cpp build in llama-cpp-python and against the C library.
"""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

__all__ = [
    "MIXTURES",
    "NATIVE_TYPES",
    "GGMLQuantizationType",
    "LlamaFileType",
    "Mixture",
    "block_size",
    "mixture",
    "row_bytes",
    "type_size",
]

T = GGMLQuantizationType
F = LlamaFileType

# Block types kernels/ implements (quantize and dequantize), by GGML type id
# (enum ggml_type, ggml.h). The C side has the same ids in threads.c.
NATIVE_TYPES: tuple[GGMLQuantizationType, ...] = (
    T.Q4_0,
    T.Q4_1,
    T.Q5_0,
    T.Q5_1,
    T.Q8_0,
    T.Q4_K,
    T.Q5_K,
    T.Q6_K,
)


class Mixture:
    """One llama.cpp file type: ``name`` as users type it, ``ftype`` = llama_ftype
    (llama.h, via gguf.LlamaFileType), ``default`` = the tensor type most tensors get
    (llama_ftype_get_default_type, src/llama-quant.cpp)."""

    __slots__ = ("default", "ftype", "name")

    def __init__(self, name: str, ftype: LlamaFileType, default: GGMLQuantizationType) -> None:
        self.name, self.ftype, self.default = name, ftype, default

    def __repr__(self) -> str:
        return f"Mixture({self.name}, ftype={int(self.ftype)}, default={self.default.name})"


# The mixtures prometheus-lite offers. Source: llama_ftype_get_default_type in
# src/llama-quant.cpp (llama.cpp vendored in llama-cpp-python 0.3.36).
MIXTURES: dict[str, Mixture] = {
    m.name: m
    for m in (
        Mixture("Q4_0", F.MOSTLY_Q4_0, T.Q4_0),
        Mixture("Q4_1", F.MOSTLY_Q4_1, T.Q4_1),
        Mixture("Q5_0", F.MOSTLY_Q5_0, T.Q5_0),
        Mixture("Q5_1", F.MOSTLY_Q5_1, T.Q5_1),
        Mixture("Q8_0", F.MOSTLY_Q8_0, T.Q8_0),
        Mixture("Q4_K_S", F.MOSTLY_Q4_K_S, T.Q4_K),
        Mixture("Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K),
        Mixture("Q5_K_S", F.MOSTLY_Q5_K_S, T.Q5_K),
        Mixture("Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K),
        Mixture("Q6_K", F.MOSTLY_Q6_K, T.Q6_K),
    )
}


def mixture(name: str) -> Mixture:
    """The mixture called ``name`` (case-insensitive), or KeyError listing the choices."""
    try:
        return MIXTURES[name.upper()]
    except KeyError:
        raise KeyError(
            f"unknown quantization type {name!r} for the native engine; choose one of "
            f"{', '.join(MIXTURES)} (--engine llama.cpp also makes llama.cpp's other types)"
        ) from None


def block_size(t: GGMLQuantizationType) -> int:
    """Values per block (1 for F32/F16/BF16). gguf.GGML_QUANT_SIZES."""
    return GGML_QUANT_SIZES[GGMLQuantizationType(t)][0]


def type_size(t: GGMLQuantizationType) -> int:
    """Bytes per block. gguf.GGML_QUANT_SIZES."""
    return GGML_QUANT_SIZES[GGMLQuantizationType(t)][1]


def row_bytes(t: GGMLQuantizationType, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` values (must be a multiple of the block size)."""
    bs, ts = GGML_QUANT_SIZES[GGMLQuantizationType(t)]
    if n_per_row % bs:
        raise ValueError(
            f"row of {n_per_row} values is not a multiple of "
            f"{GGMLQuantizationType(t).name}'s block size {bs}"
        )
    return n_per_row // bs * ts
