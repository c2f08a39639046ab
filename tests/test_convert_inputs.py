"""Converter input handling: unsafe pickles, bad checkpoints, atomic writes, CLI surface.

These tests need no torch: checkpoints are written with numpy + safetensors, pickles by hand.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import convert_fixtures as fx
import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_lite.convert import arch
from prometheus_lite.convert.checkpoint import open_checkpoint
from prometheus_lite.convert.cli import convert_command, format_tensor_table, quantize_command
from prometheus_lite.convert.convert import convert_checkpoint, rotary_row_order
from prometheus_lite.convert.pickle_reader import UnsafeCheckpointError, read_torch_zip
from prometheus_lite.convert.quantize import QUANT_TYPES, quantize_file

from prometheus_lite.errors import ConversionError, QuantizationError
from prometheus_lite.gguf_keys import PROMPT_FORMAT_KEY

pytest.importorskip("sentencepiece")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return fx.train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture()
def ckpt(tmp_path, spm_model) -> Path:
    return fx.numpy_checkpoint(tmp_path / "tiny-mistral", spm_model, shards=2)


def _kv(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {f.name: f.contents() for f in reader.fields.values()}


# ---------------------------------------------------------------------------- malicious pickles

class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_like_zip(path: Path, payload: object, protocol: int = 2) -> Path:
    """A zip laid out like torch.save whose data.pkl is the given (malicious) pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=protocol))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    bad = _torch_like_zip(tmp_path / "pytorch_model.bin",
                          {"model.embed_tokens.weight": _Boom(marker)}, protocol)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_torch_zip(bad)
    assert not marker.exists()
    msg = str(err.value)
    assert "system" in msg and str(bad) in msg and "not tensor data" in msg


def test_malicious_pickle_through_the_cli(tmp_path, spm_model):
    marker = tmp_path / "pwned"
    folder = fx.numpy_checkpoint(tmp_path / "evil", spm_model)
    (folder / "model.safetensors").unlink()
    _torch_like_zip(folder / "pytorch_model.bin", {"x": _Boom(marker)})
    result = CliRunner().invoke(convert_command, [str(folder), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1, result.output
    assert "refused to load" in result.output
    assert not marker.exists()
    assert not list(tmp_path.glob("out/*.gguf"))


def test_pickle_with_builtins_eval_is_refused(tmp_path):
    # Hand-written protocol-0 pickle: builtins.eval("__import__('os')...")
    marker = tmp_path / "pwned"
    raw = (b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode()
           + b"')\ntR.")
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", raw)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        read_torch_zip(path)
    assert not marker.exists()


def test_non_zip_bin_is_a_clear_error(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConversionError, match="not a zip-format PyTorch file"):
        read_torch_zip(path)


# ---------------------------------------------------------------------------- bad checkpoints

def test_unsupported_architecture(ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(ckpt, tmp_path / "out")
    msg = str(err.value)
    assert "config.json" in msg and "GPT2LMHeadModel" in msg and "MixtralForCausalLM" in msg


def test_missing_shard_names_the_file(ckpt, tmp_path):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="model-00002-of-00002.safetensors") as err:
        convert_checkpoint(ckpt, tmp_path / "out")
    assert "download" in str(err.value)


def test_missing_tensor_in_index(ckpt, tmp_path):
    index = ckpt / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.layers.0.mlp.extra.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="model.layers.0.mlp.extra.weight") as err:
        open_checkpoint(ckpt)
    assert "model-00001-of-00002.safetensors" in str(err.value)


def test_missing_layer_tensor(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 2  # weights hold one layer
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match=r"blk\.1\.attn_norm\.weight"):
        convert_checkpoint(folder, tmp_path / "out")


def _add_tensors(folder: Path, extra: dict) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors.update(extra)
    save_file(tensors, str(folder / "model.safetensors"))


def test_rotary_inv_freq_buffers_are_ignored(tmp_path, spm_model):
    """Llama-2-era checkpoints (prometheus-13b-v1.0) carry rotary_emb.inv_freq buffers."""
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    _add_tensors(folder, {"model.layers.0.self_attn.rotary_emb.inv_freq":
                          np.ones(8, dtype=np.float32)})
    [out] = convert_checkpoint(folder, tmp_path / "out", outtype="f32")
    assert len(gguf.GGUFReader(out).tensors) == 12


def test_unexpected_tensor_is_named(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    _add_tensors(folder, {"vision_tower.patch_embed.weight": np.ones((4, 4), np.float32)})
    with pytest.raises(ConversionError,
                       match="unexpected tensor 'vision_tower.patch_embed.weight'"):
        convert_checkpoint(folder, tmp_path / "out")


def test_truncated_shard_is_detected(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated") as err:
        convert_checkpoint(folder, tmp_path / "out")
    assert "model.safetensors" in str(err.value) and "re-download" in str(err.value)


def test_shape_mismatch(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="shape mismatch") as err:
        convert_checkpoint(folder, tmp_path / "out")
    assert "model.safetensors" in str(err.value)


def test_vocab_size_mismatch_config_vs_weights(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = fx.SPM_VOCAB + 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="vocabulary size mismatch"):
        convert_checkpoint(folder, tmp_path / "out")


def test_tokenizer_larger_than_model_vocab(tmp_path, spm_model):
    folder = fx.numpy_checkpoint(tmp_path / "m", spm_model, vocab=256)
    with pytest.raises(ConversionError, match="not the model's tokenizer") as err:
        convert_checkpoint(folder, tmp_path / "out")
    assert "--tokenizer" in str(err.value)


def test_missing_tokenizer_says_to_pass_one(tmp_path):
    folder = fx.numpy_checkpoint(tmp_path / "prometheus-13b-v1.0", None,
                                 architecture="LlamaForCausalLM", kv_heads=4)
    with pytest.raises(ConversionError, match="--tokenizer"):
        convert_checkpoint(folder, tmp_path / "out")


def test_tokenizer_from_separate_folder_and_v1_defaults(tmp_path, spm_model):
    """The v1 13B case: no tokenizer in the checkpoint, Llama-2 chat template, prompt format v1."""
    folder = fx.numpy_checkpoint(tmp_path / "prometheus-13b-v1.0", None,
                                 architecture="LlamaForCausalLM", kv_heads=4)
    tok = tmp_path / "llama2-tokenizer"
    tok.mkdir()
    shutil.copy(spm_model, tok / "tokenizer.model")
    [out] = convert_checkpoint(folder, tmp_path / "out", outtype="f32", tokenizer=str(tok))
    assert out.name == "prometheus-13b-v1.0.F32.gguf"
    kv = _kv(out)
    assert kv[PROMPT_FORMAT_KEY] == "v1"
    assert kv["tokenizer.chat_template"] == arch.LLAMA2_CHAT_TEMPLATE
    assert kv["tokenizer.ggml.add_bos_token"] is True
    assert kv["tokenizer.ggml.bos_token_id"] == 1 and kv["tokenizer.ggml.eos_token_id"] == 2


def test_tokenizer_repo_id_is_fetched_with_huggingface_hub(tmp_path, spm_model, monkeypatch):
    import huggingface_hub

    folder = fx.numpy_checkpoint(tmp_path / "prometheus-13b-v1.0", None,
                                 architecture="LlamaForCausalLM", kv_heads=4)
    cache = tmp_path / "hub-cache"
    fx.write_tokenizer_files(cache, spm_model)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(cache)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    [out] = convert_checkpoint(folder, tmp_path / "out", tokenizer="meta-llama/Llama-2-13b-chat-hf")
    assert calls[0][0] == "meta-llama/Llama-2-13b-chat-hf" and "tokenizer.model" in calls[0][1]
    assert out.name == "prometheus-13b-v1.0.F16.gguf"  # f16 when neither --outtype nor --quant

    def offline(repo_id, **kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConversionError, match="could not download the tokenizer"):
        convert_checkpoint(folder, tmp_path / "out", tokenizer="meta-llama/Llama-2-13b-chat-hf")


def test_name_from_hugging_face_cache_snapshot(tmp_path, spm_model):
    snap = tmp_path / "models--prometheus-eval--prometheus-7b-v2.0" / "snapshots" / "abc123"
    fx.numpy_checkpoint(snap, spm_model)
    [out] = convert_checkpoint(snap, tmp_path / "out", outtype="f16", prompt_format=None)
    assert out.name == "prometheus-7b-v2.0.F16.gguf"
    assert _kv(out)["general.name"] == "prometheus-7b-v2.0"


def test_prompt_format_override_and_name_default(ckpt, tmp_path):
    [out] = convert_checkpoint(ckpt, tmp_path / "out", outtype="f16", prompt_format="v1")
    assert _kv(out)[PROMPT_FORMAT_KEY] == "v1"
    [out2] = convert_checkpoint(ckpt, tmp_path / "out2", outtype="f16")
    assert _kv(out2)[PROMPT_FORMAT_KEY] == "v2"  # Mistral -> Prometheus 2 wrapping


def test_not_enough_disk_space(ckpt, tmp_path, monkeypatch):
    import prometheus_lite.convert.gguf_out as go

    monkeypatch.setattr(go.shutil, "disk_usage",
                        lambda p: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="not enough disk space") as err:
        convert_checkpoint(ckpt, out, quants=["Q4_K_M"])
    assert str(out) in str(err.value) and "-o" in str(err.value)
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------- output layout

def test_rotary_row_order_matches_llama_cpp_permute():
    """Reference: LlamaModel.permute in llama.cpp's convert_hf_to_gguf.py (re-derived)."""
    n_head, hd, cols = 4, 8, 3
    w = np.arange(n_head * hd * cols).reshape(n_head * hd, cols)
    expected = w.reshape(n_head, 2, hd // 2, cols).swapaxes(1, 2).reshape(w.shape)
    assert (w[rotary_row_order(n_head * hd, n_head)] == expected).all()


@pytest.mark.parametrize("outtype, big", [("f32", "F32"), ("f16", "F16"), ("bf16", "BF16"),
                                          ("q8_0", "Q8_0")])
def test_outtypes_and_tensor_layout(ckpt, tmp_path, outtype, big):
    [out] = convert_checkpoint(ckpt, tmp_path / "out", outtype=outtype)
    assert out.name == f"tiny-mistral.{big}.gguf"
    reader = gguf.GGUFReader(out)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["output_norm.weight"] == "F32" and types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == big and types["token_embd.weight"] == big
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    assert shapes["blk.0.attn_k.weight"] == (64, 32)  # GGUF order: (in, out)
    kv = _kv(out)
    assert kv["general.architecture"] == "llama"
    assert kv["general.file_type"] == int(
        {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
         "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
    assert kv["llama.attention.head_count_kv"] == 2 and kv["llama.rope.dimension_count"] == 16
    assert len(kv["tokenizer.ggml.tokens"]) == fx.SPM_VOCAB


def test_q8_0_bytes_match_gguf_reference_quantizer(ckpt, tmp_path):
    [out] = convert_checkpoint(ckpt, tmp_path / "out", outtype="q8_0")
    reader = gguf.GGUFReader(out)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    ref = open_checkpoint(ckpt).tensors["model.layers.0.mlp.down_proj.weight"].load()
    expected = gguf.quants.quantize(ref.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(np.asarray(t.data).reshape(expected.shape), expected)


def test_info_tensor_table(ckpt, tmp_path):
    [out] = convert_checkpoint(ckpt, tmp_path / "out", outtype="q8_0")
    table = format_tensor_table(out)
    assert "blk.0.attn_q.weight" in table and "Q8_0" in table and "F32" in table
    assert table.splitlines()[-1].startswith("12 tensors")


# ---------------------------------------------------------------------------- atomic writes

_SLOW_CONVERT = textwrap.dedent("""
    import sys, time
    from prometheus_lite.convert.convert import NumpyEncoder, convert_checkpoint

    class Slow(NumpyEncoder):
        def encode(self, rows, qtype):
            time.sleep(0.3)
            return super().encode(rows, qtype)

    convert_checkpoint(sys.argv[1], sys.argv[2], outtype="f16", encoder=Slow("f16"))
""")


def test_killed_conversion_leaves_no_finished_looking_file(ckpt, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-P", "-c", _SLOW_CONVERT, str(ckpt), str(out)],
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*.partial-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "tiny-mistral.F16.gguf").exists()
    assert not list(out.glob("*.gguf"))
    partial = [p.name for p in out.glob("*.partial-*")]
    assert partial == [f"tiny-mistral.F16.gguf.partial-{proc.pid}"]


def test_interrupt_removes_partial_and_keeps_previous_file(ckpt, tmp_path):
    from prometheus_lite.convert.convert import NumpyEncoder

    out = tmp_path / "out"
    [first] = convert_checkpoint(ckpt, out, outtype="f16")
    before = first.read_bytes()

    class Interrupting(NumpyEncoder):
        calls = 0

        def encode(self, rows, qtype):
            Interrupting.calls += 1
            if Interrupting.calls == 5:
                raise KeyboardInterrupt
            return super().encode(rows, qtype)

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(ckpt, out, outtype="f16", encoder=Interrupting("f16"))
    assert first.read_bytes() == before  # the old finished file is untouched
    assert sorted(p.name for p in out.iterdir()) == [first.name]


# ---------------------------------------------------------------------------- quantize

def test_quant_type_table_mirrors_llama_h():
    llama_cpp = pytest.importorskip("llama_cpp")
    for name, value in QUANT_TYPES.items():
        prefix = "LLAMA_FTYPE_ALL_" if name == "F32" else "LLAMA_FTYPE_MOSTLY_"
        assert getattr(llama_cpp, prefix + name) == value, name
    assert {"Q4_K_M", "Q5_K_M", "Q8_0", "Q4_0", "F16"} <= set(QUANT_TYPES)


def test_quantize_command_and_its_errors(ckpt, tmp_path):
    [f16] = convert_checkpoint(ckpt, tmp_path / "out", outtype="f16")
    q = tmp_path / "out" / "tiny.Q8_0.gguf"
    result = CliRunner().invoke(quantize_command, [str(f16), str(q), "--type", "q8_0", "-q",
                                                   "--engine", "llama.cpp"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(q)
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(q).tensors}
    assert "Q8_0" in kinds and not list(q.parent.glob("*.partial-*"))

    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_file(q, tmp_path / "again.gguf", "Q4_0")
    with pytest.raises(QuantizationError, match="unknown quantization type 'Q9_X'"):
        quantize_file(f16, tmp_path / "x.gguf", "Q9_X")
    result = CliRunner().invoke(quantize_command, [str(tmp_path / "nope.gguf"), "o.gguf",
                                                   "--type", "Q4_K_M"])
    assert result.exit_code == 1 and "no such file" in result.output


def test_convert_cli_quant_levels_remove_intermediate(ckpt, tmp_path):
    """--engine llama.cpp: llama_model_quantize on an intermediate F16 file, removed afterwards."""
    out = tmp_path / "out"
    result = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(out), "--quant", "Q4_K_M",
                                                  "--quant", "Q5_K_M", "-q",
                                                  "--engine", "llama.cpp"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tiny-mistral.Q4_K_M.gguf", "tiny-mistral.Q5_K_M.gguf"]
    assert result.stdout.split() == [str(out / n) for n in names]
    kv = _kv(out / "tiny-mistral.Q4_K_M.gguf")
    assert kv["general.file_type"] == QUANT_TYPES["Q4_K_M"]
    assert kv[PROMPT_FORMAT_KEY] == "v2"  # our key survives llama.cpp's quantizer


def test_convert_cli_errors_are_one_line_messages(tmp_path):
    result = CliRunner().invoke(convert_command, [str(tmp_path / "missing"), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "not a folder" in result.output
