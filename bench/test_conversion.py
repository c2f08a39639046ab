"""Conversion memory and speed: peak RSS of `convert` on a generated checkpoint vs its size.

The claim under test: conversion streams tensor by tensor, so peak memory stays near the fixed
cost of the interpreter plus about twice the largest single tensor, whatever the checkpoint size.
A Llama-shaped checkpoint (13B-like proportions, random weights) is written to disk without
holding it in memory, converted in a child process, and the child's peak RSS is reported next to
the checkpoint size. The normal test run smoke-tests it on a tiny checkpoint.

    pytest bench/test_conversion.py --benchmark-enable -s                      # 2 GB, fp32
    PL_BENCH_CONVERT_GB=4 PL_BENCH_CONVERT_DTYPE=bf16 pytest bench/test_conversion.py \
        --benchmark-enable -s
    PL_BENCH_CONVERT_FORMAT=bin ...          # fp32 .bin shards, like prometheus-13b-v1.0
    PL_BENCH_CONVERT_OUTTYPE=q8_0 ...        # or f32 / f16 (default) / bf16 / "" (quant only)
    PL_BENCH_CONVERT_QUANT=Q4_K_M ...        # add a quantization level
    PL_BENCH_CONVERT_ENGINE=llama.cpp ...    # --quant engine: native (default) or llama.cpp
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import convert_fixtures as fx  # noqa: E402

GB = float(os.environ.get("PL_BENCH_CONVERT_GB", "2"))
DTYPE = os.environ.get("PL_BENCH_CONVERT_DTYPE", "fp32")  # fp32 | bf16 | fp16
FORMAT = os.environ.get("PL_BENCH_CONVERT_FORMAT", "safetensors")  # safetensors | bin
OUTTYPE = os.environ.get("PL_BENCH_CONVERT_OUTTYPE", "f16") or None  # "": only --quant
QUANT = os.environ.get("PL_BENCH_CONVERT_QUANT", "")
ENGINE = os.environ.get("PL_BENCH_CONVERT_ENGINE", "native")
SHARD_BYTES = 512 * 2**20

_ST_DTYPE = {"fp32": ("F32", 4), "bf16": ("BF16", 2), "fp16": ("F16", 2)}


def _shapes(target_bytes: float, itemsize: int, tiny: bool) -> tuple[dict, dict]:
    """Llama tensor shapes whose total is at least target_bytes; plus the config."""
    if tiny:
        h, ff, heads, vocab, layers = 64, 128, 4, fx.SPM_VOCAB, 2
    else:
        h, ff, heads, vocab = 2048, 5504, 16, 32000  # 13B proportions at 1/2.5 the width
        per_layer = (4 * h * h + 3 * h * ff + 2 * h) * itemsize
        layers = max(1, math.ceil((target_bytes - 2 * vocab * h * itemsize) / per_layer))
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,),
              "lm_head.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{n}.weight"] = (h, h)
        shapes[p + "mlp.gate_proj.weight"] = (ff, h)
        shapes[p + "mlp.up_proj.weight"] = (ff, h)
        shapes[p + "mlp.down_proj.weight"] = (h, ff)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": h, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    }
    return shapes, config


def _random(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    x = rng.random(shape, dtype=np.float32) - 0.5
    if dtype == "bf16":
        return (x.view(np.uint32) >> 16).astype(np.uint16)
    return x.astype(np.float16) if dtype == "fp16" else x


def _write_safetensors(path: Path, shapes: dict, dtype: str, rng: np.random.Generator) -> None:
    """Stream a safetensors file: header, then each tensor generated and written in turn."""
    label, size = _ST_DTYPE[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": label, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for shape in shapes.values():
            f.write(_random(shape, dtype, rng).tobytes())


def _write_bin(path: Path, shapes: dict, dtype: str, rng: np.random.Generator) -> None:
    import torch

    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    state = {}
    for name, shape in shapes.items():
        arr = _random(shape, dtype, rng)
        t = torch.from_numpy(arr.view(np.int16)).view(tdt) if dtype == "bf16" else \
            torch.from_numpy(arr)
        state[name] = t
    torch.save(state, path)


def generate_checkpoint(root: Path, target_bytes: float, dtype: str, fmt: str,
                        tiny: bool) -> dict:
    """Write a sharded Llama checkpoint of about target_bytes; return its facts."""
    itemsize = _ST_DTYPE[dtype][1]
    shapes, config = _shapes(target_bytes, itemsize, tiny)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    fx.write_tokenizer_files(root, fx.train_sentencepiece(root / "_spm"))
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * itemsize
        if current and size + n > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += n
    shards.append(current)
    ext, index = (("safetensors", "model.safetensors.index.json") if fmt == "safetensors"
                  else ("bin", "pytorch_model.bin.index.json"))
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    rng = np.random.default_rng(0)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}"
        writer = _write_safetensors if fmt == "safetensors" else _write_bin
        writer(root / fname, shard, dtype, rng)
        weight_map.update({k: fname for k in shard})
    (root / index).write_text(json.dumps({"weight_map": weight_map}))
    largest = max(int(np.prod(s)) for s in shapes.values())
    return {
        "checkpoint_bytes": sum(int(np.prod(s)) * itemsize for s in shapes.values()),
        "largest_tensor_bytes": largest * itemsize,
        "largest_tensor_f32_bytes": largest * 4,
        "layers": config["num_hidden_layers"],
        "shards": len(shards),
    }


# Peak RSS is the child's VmHWM (high-water mark of its own address space). Not ru_maxrss: Linux
# carries the forking parent's RSS into it across exec, so it would report pytest's size.
_CHILD = textwrap.dedent("""
    import json, sys, time

    def vm_hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

    t0 = time.perf_counter()
    from prometheus_lite.convert.convert import convert_checkpoint
    import prometheus_lite.convert.quantize, llama_cpp  # import cost counted in the baseline
    args = json.loads(sys.argv[1])
    if args["run"]:
        convert_checkpoint(args["ckpt"], args["out"], outtype=args["outtype"],
                           quants=args["quants"], engine=args["engine"])
    print(json.dumps({"peak_rss_bytes": vm_hwm(), "seconds": time.perf_counter() - t0}))
""")


def _child(args: dict) -> dict:
    out = subprocess.run([sys.executable, "-P", "-c", _CHILD, json.dumps(args)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_conversion_peak_rss(benchmark, tmp_path):
    tiny = benchmark.disabled
    facts = generate_checkpoint(tmp_path / "bench-llama", GB * 1e9, DTYPE, FORMAT, tiny)
    args = {"ckpt": str(tmp_path / "bench-llama"), "out": str(tmp_path / "out"),
            "outtype": OUTTYPE, "quants": [QUANT] if QUANT else [], "engine": ENGINE, "run": True}

    result: dict = {}

    def run() -> None:
        result.update(_child(args))

    t0 = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    wall = time.perf_counter() - t0
    baseline = _child({**args, "run": False})["peak_rss_bytes"]
    out_bytes = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.gguf"))
    report = {
        **facts, "format": FORMAT, "dtype": DTYPE, "outtype": OUTTYPE, "quant": QUANT or None,
        "engine": ENGINE if QUANT else None,
        "output_bytes": out_bytes, "peak_rss_bytes": result["peak_rss_bytes"],
        "import_baseline_rss_bytes": baseline, "seconds": round(wall, 1),
        "peak_rss_over_checkpoint": round(result["peak_rss_bytes"] / facts["checkpoint_bytes"], 3),
        "peak_rss_minus_baseline_over_largest_tensor": round(
            (result["peak_rss_bytes"] - baseline) / facts["largest_tensor_bytes"], 2),
    }
    benchmark.extra_info.update(report)
    print("\nconversion:", json.dumps(report))
    # Bounded: interpreter + libraries, plus about twice the largest tensor, plus a fixed margin.
    assert result["peak_rss_bytes"] <= baseline + 2 * facts["largest_tensor_f32_bytes"] + 300e6
