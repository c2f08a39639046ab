"""One-pass encoder (convert/one_pass.py) == two-step path (intermediate GGUF, then
llama_model_quantize).

The two-step path is simulated without the converter: the same float32 tensors are written as
an F16 / BF16 / F32 GGUF and quantized by llama.cpp; the one-pass encoder gets the float32
values directly. Types and bytes must be equal for every tensor.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from prometheus_lite.convert.mixtures import ModelInfo
from prometheus_lite.convert.one_pass import NativeEncoder, intermediate_for, round_rows
from prometheus_lite.convert.quant_types import MIXTURES
from quant_ref import llama_quantize, read_tensors, write_llama_gguf

from prometheus_lite.errors import QuantizationError

T = gguf.GGMLQuantizationType
INTER_TYPE = {"f16": T.F16, "bf16": T.BF16, "f32": T.F32}
NP_DTYPE = {"f16": np.float16, "bf16": "bf16", "f32": np.float32}


def _tensors(n_layer: int) -> dict[str, np.ndarray]:
    """float32 values that F16/BF16 cannot hold exactly, 256-wide rows plus odd 48/80 ones."""
    rng = np.random.default_rng(3)
    t = {
        "token_embd.weight": rng.standard_normal((4, 256)).astype(np.float32) * 0.02,
        "output_norm.weight": np.ones(256, np.float32),
        "output.weight": rng.standard_normal((2, 256)).astype(np.float32) * 0.02,
    }
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = rng.standard_normal(256).astype(np.float32)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):
            t[p + n + ".weight"] = rng.standard_normal((2, 256)).astype(np.float32) * 0.02
        t[p + "ffn_down.weight"] = (
            rng.standard_normal((2, 80 if i == 1 else 512)).astype(np.float32) * 3e-5
        )
    t["blk.0.attn_q.weight"] = rng.standard_normal((2, 48)).astype(np.float32)  # -> F16 fallback
    return t


@pytest.mark.parametrize("intermediate", ["f16", "bf16", "f32"])
@pytest.mark.parametrize("level", ["Q4_K_M", "Q5_K_S", "Q6_K", "Q4_0", "Q8_0"])
def test_one_pass_equals_two_step(level: str, intermediate: str, tmp_path: Path) -> None:
    n_layer = 8
    values = _tensors(n_layer)
    src, ref = tmp_path / "inter.gguf", tmp_path / "ref.gguf"
    write_llama_gguf(
        src, values, n_layer=n_layer, n_embd=256, n_ff=512, dtype=NP_DTYPE[intermediate]
    )
    llama_quantize(src, ref, MIXTURES[level].ftype, nthread=2)
    want = read_tensors(ref)

    plan = [
        (n, v.shape, T.F32 if v.ndim == 1 else INTER_TYPE[intermediate]) for n, v in values.items()
    ]
    enc = NativeEncoder(
        level,
        ModelInfo(n_layer=n_layer, n_head=4, n_head_kv=4),
        plan,
        intermediate=intermediate,
        n_threads=2,
    )
    assert enc.file_type == MIXTURES[level].ftype
    bad = []
    for name, v in values.items():
        t = enc.tensor_type_by_name(name)
        data = np.ascontiguousarray(enc.encode(v, t)).view(np.uint8).reshape(-1)
        if t != want[name][0] or not np.array_equal(data, want[name][1]):
            bad.append(f"{name}: ours {t.name}, llama.cpp {want[name][0].name}")
    assert not bad, f"{len(bad)}/{len(values)} tensors differ: {bad[:6]}"


def test_rounding_and_defaults() -> None:
    x = np.array([[1.0 + 2**-12, 3.14159265, 1e-8, 70000.0]], np.float32)
    assert np.array_equal(round_rows(x, "f32"), x)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(round_rows(x, "f16"), x.astype(np.float16).astype(np.float32))
    assert np.isinf(round_rows(x, "f16")[0, 3])
    assert round_rows(x, "bf16")[0, 1] == np.float32(3.140625)
    assert intermediate_for({"BF16"}) == "bf16" and intermediate_for({"F32", "BF16"}) == "f16"
    with pytest.raises(QuantizationError, match="choose one of"):
        NativeEncoder("Q4_K_M", ModelInfo(n_layer=1), [], intermediate="f8")
    with pytest.raises(QuantizationError, match="choose one of"):
        NativeEncoder("Q2_K_XXL", ModelInfo(n_layer=1), [])
