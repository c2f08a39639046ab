"""Synthetic release-shaped models (``convert --synthetic``, ``bench --synthetic``).

The shapes are checked against independent references: transformers' own module layout for
each architecture (state dict on the meta device), the parameter counts the base models
publish, and the hyper-parameters issue 16/17 list. The full path (random checkpoint ->
converter -> one-pass quantizer -> llama.cpp -> Judge) runs on a tiny shape: the release's
config with a few values overridden, its real vocabulary kept.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner, Result
from prometheus_lite.convert.base_configs import BASE_CONFIGS, PUBLISHED_SIZES, base_config
from prometheus_lite.convert.cli import convert_command
from prometheus_lite.convert.synthetic import (
    HF_LAYOUTS,
    random_tensors,
    release_vocab,
    synthetic_model,
)

from prometheus_lite.errors import ConversionError
from prometheus_lite.gguf_keys import SYNTHETIC_KEY, SYNTHETIC_RELEASE_KEY
from prometheus_lite.models import format_info, read_model_info

# A tiny Mistral-shaped model: K-quant rows need multiples of 256.
TINY = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--override", f"{k}={v}")]
RELEASE = "prometheus-7b-v2.0"


def _convert(out: Path, *extra: str) -> list[Path]:
    result = CliRunner().invoke(convert_command, ["--synthetic", RELEASE, "-o", str(out),
                                                  "--quant", "Q4_K_M", "-q", *TINY_ARGS,
                                                  *extra])
    assert result.exit_code == 0, result.output
    return [Path(line) for line in result.stdout.split()]  # the paths; warnings go to stderr


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = _convert(tmp_path_factory.mktemp("synthetic"))
    return path


# -- shapes against independent references ---------------------------------------------------


def _tiny_config(release: str) -> dict:
    config = dict(base_config(release).config)
    config.update(num_hidden_layers=2, hidden_size=64, intermediate_size=96,
                  num_attention_heads=4)  # vocab kept: special ids must fit (meta device)
    config["num_key_value_heads"] = 2 if config.get("num_key_value_heads") != config[
        "num_attention_heads"] else 4
    if "phi3" == config["model_type"]:
        config["rope_scaling"] = None  # factor lists are sized for the real head_dim
    return config


@pytest.mark.parametrize("release", ["prometheus-7b-v2.0", "prometheus-13b-v1.0",
                                     "m-prometheus-3b", "m-prometheus-7b", "selene-1-mini",
                                     "flow-judge-v0.1"])
def test_layout_is_transformers_state_dict(release: str):
    """HF_LAYOUTS names and shapes = what transformers builds for the architecture."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _tiny_config(release)
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        want.pop("lm_head.weight", None)
    got = {k: r.shape for k, r in random_tensors(config, 0, Path("x")).items()}
    assert got == want


def test_mixtral_layout_is_the_published_checkpoints():
    """Mixtral checkpoints store experts one by one (w1/w2/w3), which transformers 5 fuses on
    load; checked against the published tensor count and parameter count instead."""
    config = base_config("prometheus-8x7b-v2.0").config
    tensors = random_tensors(config, 0, Path("x"))
    # model.safetensors.index.json of Mixtral-8x7B-v0.1 lists 995 tensors: 3 global +
    # 32 layers x (2 norms + 4 attention + router + 8 x 3 experts).
    assert len(tensors) == 3 + 32 * (2 + 4 + 1 + 24) == 995
    assert sum(int(np.prod(r.shape)) for r in tensors.values()) == 46_702_792_704
    assert tensors["model.layers.31.block_sparse_moe.experts.7.w2.weight"].shape == (4096, 14336)


@pytest.mark.parametrize(("release", "params", "hparams"), [
    # Published parameter counts (model cards: 7.24B, 13.0B, 46.7B) and issue 16's shapes.
    ("prometheus-7b-v2.0", 7_241_732_096,
     {"block_count": 32, "embedding_length": 4096, "feed_forward_length": 14336,
      "attention.head_count": 32, "attention.head_count_kv": 8, "vocab_size": 32000,
      "rope.freq_base": 1e6}),
    ("prometheus-13b-v1.0", 13_015_864_320,
     {"block_count": 40, "embedding_length": 5120, "feed_forward_length": 13824,
      "attention.head_count": 40, "attention.head_count_kv": 40, "vocab_size": 32000}),
    ("prometheus-8x7b-v2.0", 46_702_792_704,
     {"block_count": 32, "expert_count": 8, "expert_used_count": 2, "vocab_size": 32000}),
])
def test_release_shapes_through_the_converter(release: str, params: int, hparams: dict):
    """The converter's own plan for the full-size synthetic checkpoint (nothing generated)."""
    from prometheus_lite.convert.convert import plan_tensors

    model = synthetic_model(release)
    plan = plan_tensors(model)
    assert sum(int(np.prod(p.shape)) for p in plan) == params
    for key, value in hparams.items():
        assert model.hparams[f"llama.{key}"] == value, key
    assert model.hparams[SYNTHETIC_KEY] is True
    assert model.vocab.model == "llama" and len(model.vocab.tokens) == 32000


def test_q4_k_m_size_matches_the_published_file():
    """Sizes by the converter's mixture rules for the full 7B: within 1 % of 4.37 GB."""
    from prometheus_lite.convert.convert import _native_encoder, plan_tensors
    from prometheus_lite.convert.gguf_out import tensor_nbytes

    model = synthetic_model(RELEASE)
    plan = plan_tensors(model)
    enc = _native_encoder(model, plan, "Q4_K_M", "f16", 1)
    data = sum(tensor_nbytes(p.shape, enc.types[p.name]) for p in plan)
    published, _ = PUBLISHED_SIZES[(RELEASE, "Q4_K_M")]
    # + metadata (vocabulary: ~0.7 MB) is far below the 1 % margin either way.
    assert abs(data / published - 1) < 0.01, data


def test_vocab_padding_and_special_tokens():
    qwen = release_vocab(base_config("m-prometheus-7b"), 152064)
    assert len(qwen.tokens) == len(qwen.types) == 152064 and qwen.model == "gpt2"
    assert qwen.tokens[-1] == b"[PAD152063]"
    assert qwen.types[-1] == gguf.TokenType.UNUSED
    assert qwen.special.merges and "<|im_start|>" in qwen.special.chat_template
    llama3 = release_vocab(base_config("selene-1-mini"), 128256)
    assert llama3.special.special_token_ids["eos"] == 128009  # <|eot_id|> (Instruct)
    assert llama3.tokens[128009] == b"<|eot_id|>"
    with pytest.raises(ConversionError, match="vocab_size"):
        release_vocab(base_config(RELEASE), 1000)


# -- the full path on a tiny shape ------------------------------------------------------------


def test_same_command_same_bytes(tiny_file: Path, tmp_path: Path):
    (again,) = _convert(tmp_path / "a")
    assert again.name == tiny_file.name
    assert again.read_bytes() == tiny_file.read_bytes()
    (other,) = _convert(tmp_path / "b", "--seed", "1")
    assert other.stat().st_size == tiny_file.stat().st_size
    assert other.read_bytes() != tiny_file.read_bytes()


def test_mark_in_metadata_info_and_warning(tiny_file: Path, caplog: pytest.LogCaptureFixture):
    from prometheus_lite import Judge

    reader = gguf.GGUFReader(tiny_file)
    assert reader.get_field(SYNTHETIC_KEY).contents() is True
    assert reader.get_field(SYNTHETIC_RELEASE_KEY).contents() == RELEASE
    info = read_model_info(tiny_file)
    assert info.synthetic and "SYNTHETIC" in format_info(info)
    with caplog.at_level(logging.WARNING, logger="prometheus_lite.judge"):
        judge = Judge(tiny_file, n_ctx=1024, n_threads=2, greedy=True, max_new_tokens=24,
                      n_parallel=1)
    try:
        assert any("SYNTHETIC" in r.getMessage() for r in caplog.records)
        grade = judge.grade("Say hi.", "Hi!", "helpfulness")
    finally:
        judge.close()
    # Random weights, but the output is still a well-formed Prometheus answer.
    assert grade.score in range(1, 6)
    assert abs(sum(grade.probabilities.values()) - 1) < 1e-4
    assert grade.raw_output.rstrip().endswith(f"[RESULT] {grade.score}")
    assert grade.prompt_format == "v2"


def test_real_files_are_not_marked():
    from prometheus_lite.hub import resolve_model

    info = read_model_info(resolve_model(None))  # the embedded model
    assert not info.synthetic and "SYNTHETIC" not in format_info(info)


def test_bad_input_is_a_clear_error(tmp_path: Path):
    runner = CliRunner()
    r = runner.invoke(convert_command, ["-o", str(tmp_path)])
    assert r.exit_code != 0 and "--synthetic" in r.output
    r = runner.invoke(convert_command, ["--synthetic", "prometheus-99b", "-o", str(tmp_path)])
    assert r.exit_code == 1 and "choose one of" in r.output and "selene-1-mini" in r.output
    r = runner.invoke(convert_command, ["--synthetic", RELEASE, "-o", str(tmp_path),
                                        "--override", "num_layers=2"])
    assert r.exit_code == 1 and "num_layers" in r.output and "config.json" in r.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_every_release_has_a_layout_and_vocabulary():
    from prometheus_lite.convert.synthetic import VOCAB_DIR

    for b in BASE_CONFIGS.values():
        assert b.config["architectures"][0] in HF_LAYOUTS
        assert (VOCAB_DIR / f"{b.vocab_file}.gguf.xz").is_file()
        assert b.chat_template_file is None or (
            VOCAB_DIR / f"{b.chat_template_file}.jinja").is_file()


# -- bench smoke ----------------------------------------------------------------------------


def _bench_tiny(tmp_path: Path, shared_dir: Path, monkeypatch, *extra: str) -> Result:
    """``bench --synthetic`` on the tiny shape, its files cached under tmp_path/cache and
    its report in tmp_path/rep."""
    from prometheus_lite.bench.cli import bench_command

    monkeypatch.setenv("PROMETHEUS_LITE_SYNTHETIC_DIR", str(tmp_path / "cache"))
    args = ["--synthetic", RELEASE, "--quant", "Q4_0", *TINY_ARGS, "--prompts", "2",
            "--prefill-tokens", "16", "--gen-tokens", "4", "--threads", "2", "--n-ctx", "512",
            "--report", str(tmp_path / "rep"),
            "--data", str(shared_dir / "data" / "prometheus-benchmarks"), *extra]
    return CliRunner().invoke(bench_command, args)


def test_bench_synthetic_smoke(tmp_path: Path, shared_dir: Path, monkeypatch):
    from prometheus_lite.bench.synthetic import SyntheticConfig, ensure_files

    r = _bench_tiny(tmp_path, shared_dir, monkeypatch, "--bandwidth-mb", "16")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "synthetic.json").read_text())
    (row,) = report["models"]
    assert report["synthetic"] and row["synthetic"] and "synthetic" in row["label"]
    assert row["prompt_tokens_per_s"] > 0 and row["generation_tokens_per_s"] > 0
    assert row["peak_rss_bytes"] > row["file_size_bytes"]
    assert row["kv_bytes_per_token"] == 2 * 2 * 64 * 2 * 2  # layers x kv heads x dim x K,V x f16
    assert 0 < row["percent_of_bandwidth_ceiling"]
    lengths = row["lengths"]
    assert lengths["prompt_tokens_median"] > 100 and lengths["feedback_tokens_median"] > 10
    assert "SYNTHETIC" in (tmp_path / "rep" / "synthetic.md").read_text()
    made = next((tmp_path / "cache").rglob("*.gguf"))
    assert os.path.getsize(made) == row["file_size_bytes"]
    stamp = made.stat().st_mtime_ns
    # A rerun finds the cached file (what bench --synthetic does before measuring).
    cfg = SyntheticConfig(RELEASE, levels=["Q4_0"], overrides=TINY)
    assert ensure_files(cfg) == {"Q4_0": made}
    assert made.stat().st_mtime_ns == stamp


def test_bench_synthetic_on_gpu_says_when_the_build_has_no_gpu(tmp_path: Path, shared_dir: Path,
                                                                monkeypatch):
    from prometheus_lite.bench.cli import bench_command

    from prometheus_lite.llama import gpu_devices, supports_gpu_offload

    if supports_gpu_offload():
        pytest.skip("this llama.cpp build offloads to a GPU")
    assert gpu_devices() == []
    r = _bench_tiny(tmp_path, shared_dir, monkeypatch, "--n-gpu-layers", "-1")
    assert r.exit_code == 1
    assert "no GPU backend" in r.output and "-DGGML_CUDA=on" in r.output
    assert not (tmp_path / "rep" / "synthetic.json").exists()
    assert not (tmp_path / "cache").exists()  # refused before making any file
    r = CliRunner().invoke(bench_command, ["--n-gpu-layers", "-1"])
    assert r.exit_code == 2 and "--synthetic" in r.output


def test_vocab_reader_equals_gguf_py():
    """synthetic._gguf_kv (fast) reads what gguf-py's GGUFReader reads."""
    import lzma
    import tempfile

    from prometheus_lite.convert.synthetic import VOCAB_DIR, _gguf_kv

    data = lzma.decompress((VOCAB_DIR / "ggml-vocab-phi-3.gguf.xz").read_bytes())
    ours = _gguf_kv(data)
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        reader = gguf.GGUFReader(f.name)
        fields = {k: v for k, v in reader.fields.items() if not k.startswith("GGUF.")}
        assert set(ours) == set(fields)
        for key, fld in fields.items():
            T = gguf.GGUFValueType
            if fld.types[0] == T.ARRAY and fld.types[-1] == T.STRING:
                want = [bytes(fld.parts[i]) for i in fld.data]
            else:
                want = fld.contents()
                want = want.encode() if isinstance(want, str) else want
            assert ours[key] == want, key
        del reader
