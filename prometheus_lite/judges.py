"""The one place that maps a model to its judge: family, prompt format, output format.

Pure decisions over names and metadata (no llama_cpp, no file reading): used for GGUF
files (``models.read_model_info`` calls :func:`detect_family` and
:func:`detect_prompt_format`; the judge calls :func:`resolve_prompt_format`) and by the
converter for checkpoints (:func:`decide_prompt_format`, :func:`decide_family`). The data
lives elsewhere: releases in ``releases.py``, families (output formats, scales) in
``families.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PromptError
from .families import FAMILIES
from .gguf_keys import FAMILY_KEY, FAMILY_VALUES, PROMPT_FORMAT_KEY, PROMPT_FORMAT_VALUES
from .prompts import PromptFormat
from .releases import RELEASES, Release

if TYPE_CHECKING:
    from .models import ModelInfo

__all__ = [
    "decide_family",
    "decide_prompt_format",
    "describe_output",
    "detect_family",
    "detect_prompt_format",
    "family_of_name",
    "judge_family",
    "prometheus_version",
    "resolve_prompt_format",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Prompt format: the one place that maps a model to its prompt format
# ---------------------------------------------------------------------------------------
# Used for GGUF files (detect_prompt_format, resolve_prompt_format) and by the converter
# for checkpoints (``prometheus_lite.convert``); the per-release facts are data in
# ``releases.py``.

# Metadata that can name the model, most specific first.
_NAME_FIELDS = (
    "general.name",
    "general.basename",
    "general.finetune",
    "general.source.repo_url",
    "general.source.url",
    "general.source.huggingface.repository",
    "general.repo_url",
    "general.url",
)
_NAME_PARTS = ("general.basename", "general.size_label", "general.finetune", "general.version")
_BASE_MODEL_FIELD = re.compile(r"general\.base_model\.\d+\.(name|repo_url|url)")

# Every Prometheus release uses its base model's SentencePiece tokenizer
# (tokenizer.ggml.model "llama"); a byte-level BPE ("gpt2") model is not one of them.
SENTENCEPIECE = "llama"


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def prometheus_version(text: str) -> str | None:
    """ "v1"/"v2" when ``text`` names a Prometheus release, else None.

    A known release (``releases.RELEASES``: its name or the authors' repo, any case and
    separators, so ``prometheus-7b-v2_0`` counts) gives its prompt format; other
    Prometheus names go by their version or size (``v2``, ``2``, ``8x7b``, ``bgb``: v2;
    ``v1``, ``13b``: v1)."""
    s = text.lower()
    if "prometheus" not in s:
        return None
    words = _words(s)
    joined = "-".join(words)
    for release in RELEASES:
        if release.family != "prometheus":
            continue
        for known in (release.name, release.source_repo.rsplit("/", 1)[-1]):
            if "-".join(_words(known)) in joined:
                return release.prompt_format
    if "v2" in words or re.search(r"prometheus[-_ ]?2(?![0-9])", s):
        return "v2"
    if "v1" in words:
        return "v1"
    if "8x7b" in words or "bgb" in words:
        return "v2"
    if "13b" in words:
        return "v1"
    return None


# Names of the other judge families, as words of a model name (any case and separators):
# "M-Prometheus-7B", "Selene-1-Mini-Llama-3.1-8B", "Flow-Judge-v0.1" (the authors' repos).
_FAMILY_WORDS = (
    ("m-prometheus", ("m-prometheus", "mprometheus")),
    ("selene", ("selene",)),
    ("flow-judge", ("flow-judge", "flowjudge")),
)


def family_of_name(text: str) -> str | None:
    """The judge family other than Prometheus that ``text`` names (a release's short name
    or authors' repo, or the family's name), else None."""
    joined = "-".join(_words(text))
    padded = f"-{joined}-"
    for release in RELEASES:
        if release.family == "prometheus":
            continue
        for known in (release.name, release.source_repo.rsplit("/", 1)[-1]):
            if f"-{'-'.join(_words(known))}-" in padded:
                return release.family
    for family, spellings in _FAMILY_WORDS:
        if any(f"-{w}-" in padded for w in spellings):
            return family
    return None


def decide_family(names: Sequence[tuple[str, Any]], *, key: str | None = None) -> tuple[str, str]:
    """Which judge family a model belongs to: (a key of families.FAMILIES, why).

    Our ``prometheus.family`` key (``key``) wins; then an M-Prometheus, Selene or
    Flow-Judge release or family named in ``names`` ((where, text) pairs, most specific
    first); anything else is "prometheus" (Prometheus, or a model that is not a judge,
    which is given the Prometheus prompts)."""
    if key in FAMILY_VALUES:
        return key, f"metadata key {FAMILY_KEY} = {key!r}"  # type: ignore[return-value]
    if key is not None:
        logger.warning("Ignoring %s = %r (expected one of %s)", FAMILY_KEY, key, FAMILY_VALUES)
    for where, value in names:
        if isinstance(value, str) and (family := family_of_name(value)):
            return family, f"{where} {value!r} names a {family} model"
    return "prometheus", "no other judge family named"


def describe_output(family: str) -> str:
    """One line on what a family's judge writes: its answer's shape, scales and pairs."""
    fam = FAMILIES[family]
    out = fam.output
    sep = out.closer + b"\n" if out.closer else out.close_separator
    shape = (out.opener + b"FEEDBACK" + sep + out.marker + out.close_prefix).decode()
    shape += "LABEL" + out.suffix
    pairs = "; compares A/B" if fam.pairwise else "; no pairwise"
    return f"{shape!r}; scales {', '.join(fam.scales)}{pairs}"


def judge_family(prompt_format: str, family: str) -> str:
    """The family whose output format a judge uses: the Selene and Flow-Judge prompt
    formats bring their own; the Prometheus ones (v1, v2, chat) the Prometheus format,
    for M-Prometheus too (``family``, the model's own, tells those two apart)."""
    if prompt_format in ("selene", "flow-judge"):
        return prompt_format
    return family if FAMILIES[family].output is FAMILIES["prometheus"].output else "prometheus"


def _built_like_release(
    architecture: str, tokenizer_model: str | None, chat_template: str | None
) -> Release | None:
    """The release a checkpoint that names none is built like: same architecture, the
    SentencePiece tokenizer, and no chat template or a Llama-2/Mistral ``[INST]`` one."""
    if tokenizer_model != SENTENCEPIECE:
        return None
    if chat_template and "[INST]" not in chat_template:
        return None
    return next(
        (r for r in RELEASES if r.family == "prometheus" and r.architecture == architecture), None
    )


def decide_prompt_format(
    names: Sequence[tuple[str, Any]],
    *,
    chat_template: str | None,
    key: str | None = None,
    architecture: str | None = None,
    tokenizer_model: str | None = None,
    family: str | None = None,
    family_key: str | None = None,
) -> tuple[str, str]:
    """Which prompt a model wants: ("v1" | "v2" | "chat" | "selene" | "flow-judge", why).
    The one place that decides.

    First the family (``family``, or :func:`decide_family` of ``names`` and
    ``family_key``): Selene and Flow-Judge models speak their own templates. Then, in
    order: our ``prometheus.prompt_format`` key (``key``: a file we converted); for
    M-Prometheus, the v2 text in its own chat template ("chat"); a
    Prometheus release named in ``names`` ((where, text) pairs); for a checkpoint being
    converted (``architecture``, its config's ``architectures[0]``, and
    ``tokenizer_model``, "llama" for SentencePiece or "gpt2" for byte-level BPE), being
    built like a release (see :func:`_built_like_release`). Anything else is not a
    Prometheus model: "chat", its own chat template with the v2 prompt text, or "v2",
    the Prometheus 2 wrapper, when it has no chat template.
    """
    if family is None:
        family, why = decide_family(names, key=family_key)
    else:
        why = f"family {family}"
    if family in ("selene", "flow-judge"):
        return family, f"a {family} model ({why}): its own templates"
    if key in PROMPT_FORMAT_VALUES:
        return key, f"metadata key {PROMPT_FORMAT_KEY} = {key!r}"  # type: ignore[return-value]
    if key is not None:
        logger.warning(
            "Ignoring %s = %r (expected one of %s)", PROMPT_FORMAT_KEY, key, PROMPT_FORMAT_VALUES
        )
    if family == "m-prometheus":
        if chat_template:
            return "chat", f"an M-Prometheus model ({why}): the v2 text in its own chat template"
        return "v2", f"an M-Prometheus model ({why}) without a chat template: the v2 wrapper"
    for where, value in names:
        if isinstance(value, str) and (version := prometheus_version(value)):
            return version, f"{where} {value!r} names a Prometheus {version} release"
    if architecture is not None:
        release = _built_like_release(architecture, tokenizer_model, chat_template)
        if release is not None:
            template = "an [INST] chat template" if chat_template else "no chat template"
            return release.prompt_format, (
                f"no Prometheus release named, but built like {release.name} ({architecture}, "
                f"SentencePiece tokenizer, {template})"
            )
    if chat_template:
        return "chat", (
            "not a Prometheus release (none named): using the model's chat template with the "
            "v2 prompt text"
        )
    return "v2", (
        "not a Prometheus release (none named) and the model has no chat template: using the "
        "Prometheus 2 (v2) wrapper"
    )


def detect_prompt_format(info: ModelInfo) -> tuple[str, str]:
    """Which prompt a GGUF file wants: ("v1" | "v2" | "chat", why).

    Our ``prometheus.prompt_format`` key wins; then a Prometheus release named in the
    metadata (name, basename, finetune, source repo, base model), then in the file name
    or the Hugging Face repo it was cached from. Anything else is "chat" (the model's
    own chat template with the v2 prompt text), or "v2" if the file has no chat template.
    """
    return decide_prompt_format(
        _name_sources(info), chat_template=info.chat_template, key=info.prompt_format_key,
        family=info.family,
    )


def _name_sources(info: ModelInfo) -> list[tuple[str, Any]]:
    """(where, text) pairs of a GGUF that can name the model, most specific first."""
    sources: list[tuple[str, Any]] = [(k, info.general.get(k)) for k in _NAME_FIELDS]
    # convert_hf_to_gguf splits "prometheus-8x7b-v2.0" into basename/size_label/version.
    parts = [info.general.get(k) for k in _NAME_PARTS]
    joined = " ".join(str(p) for p in parts if p is not None)
    sources.insert(1, ("+".join(k.removeprefix("general.") for k in _NAME_PARTS), joined))
    sources += [(k, v) for k, v in info.general.items() if _BASE_MODEL_FIELD.fullmatch(k)]
    sources.append(("file name", info.path.name))
    sources += [("cache folder", part) for part in info.path.parts if part.startswith("models--")]
    return sources


def detect_family(info: ModelInfo) -> tuple[str, str]:
    """Which judge family a GGUF file belongs to, and why (see :func:`decide_family`)."""
    return decide_family(_name_sources(info), key=info.family_key)


_CHAT_WITHOUT_TEMPLATE_WARNED: set[Path] = set()


def resolve_prompt_format(requested: str, info: ModelInfo) -> tuple[str, str]:
    """The prompt format a judge uses and why: ``requested`` ("auto", "v1", "v2",
    "chat") made concrete for this file. "chat" for a file without a chat template
    becomes "v2", the wrapper that is then actually used (one warning per file)."""
    if requested == "auto":
        return detect_prompt_format(info)
    valid = ("auto", *(f.value for f in PromptFormat))
    if requested not in valid:
        raise PromptError(f"unknown prompt format {requested!r}; use one of: {', '.join(valid)}")
    if requested == PromptFormat.CHAT.value and not info.chat_template:
        if info.path not in _CHAT_WITHOUT_TEMPLATE_WARNED:
            _CHAT_WITHOUT_TEMPLATE_WARNED.add(info.path)
            logger.warning(
                "--prompt-format chat: %s has no chat template; using the Prometheus 2 (v2) "
                "wrapper instead", info.path.name,
            )
        return "v2", (
            "--prompt-format chat, but the file has no chat template: using the Prometheus 2 "
            "(v2) wrapper"
        )
    return requested, "chosen with --prompt-format"


