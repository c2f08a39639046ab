"""`convert --quant` and `quantize` with `--engine native` (default) vs `--engine llama.cpp`:
identical tensors (types and bytes) for the same checkpoint and the same precision."""

from __future__ import annotations

from pathlib import Path

import convert_fixtures as fx
import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_lite.convert.cli import convert_command, quantize_command
from quant_ref import read_tensors

LEVELS = ["Q4_K_M", "Q5_K_S", "Q8_0"]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return fx.train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module", params=["float32", "float16"])
def ckpt(request, tmp_path_factory, spm_model) -> Path:
    # 256-wide rows so the K-quant rules apply; 4 layers so use_more_bits varies
    return fx.numpy_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny-llama",
        spm_model,
        layers=4,
        hidden=256,
        ff=512,
        heads=4,
        kv_heads=2,
        dtype=request.param,
    )


def _same(a: Path, b: Path) -> None:
    ta, tb = read_tensors(a), read_tensors(b)
    assert ta.keys() == tb.keys()
    differ = [n for n in ta if ta[n][0] != tb[n][0] or not np.array_equal(ta[n][1], tb[n][1])]
    assert not differ, f"{len(differ)}/{len(ta)} tensors differ: {differ[:5]}"
    kinds = {t.name for t, _ in ta.values()}
    assert len(kinds) > 1  # a real mixture, not one type


def _convert(ckpt: Path, out: Path, *args: str) -> list[Path]:
    r = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(out), "-q", *args])
    assert r.exit_code == 0, r.output
    return [Path(p) for p in r.stdout.split()]


@pytest.mark.parametrize("precision", [None, "f32"])
def test_convert_engines_agree(ckpt: Path, tmp_path: Path, precision: str | None) -> None:
    extra = ["--precision", precision] if precision else []
    quants = [a for q in LEVELS for a in ("--quant", q)]
    native = _convert(ckpt, tmp_path / "n", *quants, *extra)
    two_step = _convert(ckpt, tmp_path / "l", *quants, "--engine", "llama.cpp", *extra)
    assert [p.name for p in native] == [p.name for p in two_step]
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == sorted(p.name for p in native)
    for a, b in zip(native, two_step, strict=True):
        _same(a, b)
        ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
        assert (
            ra.get_field("general.file_type").contents()
            == rb.get_field("general.file_type").contents()
        )


def test_quantize_engines_agree(ckpt: Path, tmp_path: Path) -> None:
    [f16] = _convert(ckpt, tmp_path, "--outtype", "f16")
    for engine in ("native", "llama.cpp"):
        r = CliRunner().invoke(
            quantize_command,
            [
                str(f16),
                str(tmp_path / f"{engine}.gguf"),
                "--type",
                "q4_k_m",
                "--engine",
                engine,
                "-q",
            ],
        )
        assert r.exit_code == 0, r.output
    _same(tmp_path / "native.gguf", tmp_path / "llama.cpp.gguf")


def test_native_engine_names_what_it_lacks(ckpt: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(convert_command, [str(ckpt), "-o", str(tmp_path), "--quant", "Q3_K_M"])
    assert r.exit_code == 1 and "--engine llama.cpp" in r.output
    assert list(tmp_path.iterdir()) == []
