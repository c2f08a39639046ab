"""Rope scaling: the hyper-parameters and the factor tensors llama.cpp expects.

Mirrors llama-cpp-python 0.3.36's ``vendor/llama.cpp/conversion``: ``TextModel.__init__`` and
``set_gguf_parameters`` (base.py: which config holds the rope parameters, linear scaling),
``LlamaModel.generate_extra_tensors`` (llama.py: ``rope_freqs`` for rope type llama3) and
``Phi3MiniModel.generate_extra_tensors`` (phi.py: ``rope_factors_long``/``_short`` and the
attention factor for longrope). Logic only; which architecture accepts which type is data in
``arch.ArchSpec.rope_types``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from prometheus_lite.errors import ConversionError

__all__ = ["rope_parameters", "rope_type", "llama3_factors", "rope_scaling"]

_F32 = np.float32


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """The rope parameters as TextModel.__init__ reads them: transformers 5's
    ``rope_parameters`` or a release's ``rope_scaling``, with the top-level ``rope_theta``,
    ``partial_rotary_factor`` and ``original_max_position_embeddings`` mirrored in and
    ``type`` copied to ``rope_type``."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        if key not in params and config.get(key) is not None:
            params[key] = config[key]
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    return params


def rope_type(params: dict[str, Any]) -> str:
    return str(params.get("rope_type") or "default").lower()


def llama3_factors(params: dict[str, Any], head_dim: int) -> np.ndarray:
    """``rope_freqs`` for rope type llama3: one factor per rotary pair, as
    LlamaModel.generate_extra_tensors computes them in float32 torch arithmetic.

    Each step is rounded as torch rounds it: ``a / tensor`` is ``tensor.reciprocal() * a``,
    every operation in float32. One difference is left: torch's vectorised ``base ** t``
    (Sleef's powf, up to 1 ulp off) against the correctly rounded power here; for
    Llama-3.1's own parameters (theta 500000, head_dim 128) the two agree bit for bit
    (tests/test_convert_families.py checks both)."""
    base = float(params.get("rope_theta", 10000.0))
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old = float(params.get("original_max_position_embeddings", 8192))
    exps = np.arange(0, head_dim, 2, dtype=_F32) / _F32(head_dim)
    freqs = _F32(1.0) / np.power(np.float64(base), exps.astype(np.float64)).astype(_F32)
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = (_F32(1.0) / freq) * _F32(2 * math.pi)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = ((_F32(1.0) / wavelen) * _F32(old) - _F32(low)) / _F32(high - low)
            out.append(_F32(1.0) / ((_F32(1.0) - smooth) / _F32(factor) + smooth))
    return np.array(out, dtype=_F32)


def rope_scaling(config: dict[str, Any], arch_name: str, accepted: frozenset[str],
                 rope_dims: int, where: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """GGUF keys and generated tensors (GGUF name -> float32 data) for the config's rope
    scaling; a clear error for a type this architecture's converter does not write."""
    params = rope_parameters(config)
    kind = rope_type(params)
    if kind not in accepted:
        raise ConversionError(
            f"{where}: rope scaling {kind!r} is not supported for {config['architectures'][0]} "
            f"(supported: {', '.join(sorted(accepted))}); use llama.cpp's convert_hf_to_gguf.py")
    keys: dict[str, Any] = {}
    tensors: dict[str, np.ndarray] = {}
    names = gguf.TENSOR_NAMES
    if kind == "linear":
        keys[gguf.Keys.Rope.SCALING_TYPE.format(arch=arch_name)] = gguf.RopeScalingType.LINEAR.value
        keys[gguf.Keys.Rope.SCALING_FACTOR.format(arch=arch_name)] = float(params["factor"])
    elif kind == "llama3":
        tensors[names[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = llama3_factors(
            params, rope_dims)
    elif kind in ("longrope", "su"):
        long, short = params.get("long_factor"), params.get("short_factor")
        if not long:  # Phi3MiniModel writes nothing without long factors
            return keys, tensors
        if short is None or len(long) != len(short) or len(long) != rope_dims / 2:
            raise ConversionError(
                f"{where}: rope_scaling long_factor and short_factor must both have "
                f"{rope_dims // 2} entries (rope dimensions / 2); got "
                f"{len(long)} and {len(short or [])}. Is config.json complete?")
        orig = params.get("original_max_position_embeddings")
        scale = config["max_position_embeddings"] / orig
        attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
        keys[gguf.Keys.Rope.SCALING_ATTN_FACTOR.format(arch=arch_name)] = attn
        tensors[names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight"] = np.array(long, _F32)
        tensors[names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight"] = np.array(short, _F32)
    return keys, tensors
