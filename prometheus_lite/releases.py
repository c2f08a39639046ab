"""Known Prometheus GGUF releases that users can name by a short name (data only).

``prometheus-lite`` accepts ``<short name>[:<QUANT>]`` wherever it takes a model, e.g.
``prometheus-7b-v2.0:Q4_K_M``; :func:`prometheus_lite.hub.resolve_model` turns that
into a file from one of the GGUF repositories below (first one that has it wins).

Every GGUF repository and file name here was checked against its Hugging Face file
listing (the ``source`` of each entry says which page, with the commit where one was
shown). Only the quantization levels actually seen in those listings are listed; a repo
may hold more. Repos are third-party community quantizations, not the authors' own.
Nothing here is guessed: add an entry only with a listing that shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONVERTED_FILE_PATTERN",
    "DEFAULT_QUANT",
    "RELEASES",
    "GGUFRepo",
    "Release",
]

# The quantization picked when a short name comes without ``:QUANT``: every release
# below has it, and it is the usual size/quality compromise for llama.cpp.
DEFAULT_QUANT = "Q4_K_M"

# File names that ``prometheus-lite convert`` writes: ``<model-name>.<QUANT>.gguf``,
# e.g. ``prometheus-7b-v2.0.Q4_K_M.gguf`` (the same scheme as the repos below).
CONVERTED_FILE_PATTERN = "{model}.{quant}.gguf"


@dataclass(frozen=True)
class GGUFRepo:
    """One Hugging Face repository holding GGUF files of a release."""

    repo_id: str
    # File name with a ``{quant}`` placeholder, e.g. "prometheus-7b-v2.0.{quant}.gguf".
    file_pattern: str
    # Quantization levels seen in the repo's listing, upper case (Q4_K_M, IQ4_XS, ...).
    quants: tuple[str, ...]
    # True when the repo spells the tag in lower case in its file names (q4_k_m).
    lowercase_quant: bool = False
    # Where the listing was seen.
    source: str = ""


@dataclass(frozen=True)
class Release:
    """A released Prometheus judge checkpoint and where its GGUF files live."""

    name: str  # short name users type, lower case
    prompt_format: str  # "v1" or "v2": see shared/reference/prometheus-format.md
    source_repo: str  # the authors' Hugging Face checkpoint
    base_model: str
    # config.json ``architectures[0]`` of the checkpoint (prometheus-format.md, "Models"). A
    # checkpoint that names no release but is built like one (this architecture and the
    # base model's SentencePiece tokenizer) is taken to speak this release's prompt.
    architecture: str
    paper: str  # arXiv id
    gguf_repos: tuple[GGUFRepo, ...]
    default_quant: str = DEFAULT_QUANT


RELEASES: tuple[Release, ...] = (
    Release(
        name="prometheus-13b-v1.0",
        prompt_format="v1",
        # Was kaist-ai/prometheus-13b-v1.0 (prometheus-format.md, "Models").
        source_repo="prometheus-eval/prometheus-13b-v1.0",
        base_model="Llama-2-Chat-13B",
        architecture="LlamaForCausalLM",
        paper="2310.08491",
        gguf_repos=(
            GGUFRepo(
                repo_id="TheBloke/prometheus-13B-v1.0-GGUF",
                # Note the repo says "13B", the files "13b".
                file_pattern="prometheus-13b-v1.0.{quant}.gguf",
                quants=tuple("Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_K_S Q4_K_M Q5_0 Q5_K_S".split()),
                source=(
                    "huggingface.co/TheBloke/prometheus-13B-v1.0-GGUF/tree/"
                    "1750b02be318e4c8eba580a70727ac9d19280e1d; Q5_K_S added in commit 2cd2b67"
                ),
            ),
        ),
    ),
    Release(
        name="prometheus-7b-v1.0",
        # Same paper, training data and prompt as the 13B v1.0 (Llama-2-Chat 7B base).
        prompt_format="v1",
        source_repo="prometheus-eval/prometheus-7b-v1.0",  # featherless.ai model page
        base_model="Llama-2-Chat-7B",
        architecture="LlamaForCausalLM",
        paper="2310.08491",
        default_quant="Q8_0",  # the only GGUF file we could verify
        gguf_repos=(
            GGUFRepo(
                repo_id="lmg-anon/prometheus-7b-v1.0-gguf",
                file_pattern="prometheus-7b-v1.0-{quant}.gguf",
                quants=("Q8_0",),
                lowercase_quant=True,
                source="huggingface.co/lmg-anon/prometheus-7b-v1.0-gguf/tree/main (commit e2a0fd1)",
            ),
        ),
    ),
    Release(
        name="prometheus-7b-v2.0",
        prompt_format="v2",
        source_repo="prometheus-eval/prometheus-7b-v2.0",
        base_model="Mistral-7B-Instruct-v0.2",
        architecture="MistralForCausalLM",
        paper="2405.01535",
        gguf_repos=(
            GGUFRepo(
                repo_id="vsevolodl/prometheus-7b-v2.0-GGUF",
                file_pattern="prometheus-7b-v2.0.{quant}.gguf",
                quants=tuple("Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_K_S Q4_K_M Q5_0 Q5_K_M".split()),
                source="huggingface.co/vsevolodl/prometheus-7b-v2.0-GGUF/tree/main (at d2811a7)",
            ),
            GGUFRepo(
                repo_id="RichardErkhov/prometheus-eval_-_prometheus-7b-v2.0-gguf",
                file_pattern="prometheus-7b-v2.0.{quant}.gguf",
                quants=tuple(
                    "IQ3_XS IQ3_S IQ3_M IQ4_XS IQ4_NL Q2_K Q3_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 "
                    "Q4_K Q4_K_S Q4_K_M Q8_0".split()
                ),
                source=(
                    "huggingface.co/RichardErkhov/prometheus-eval_-_prometheus-7b-v2.0-gguf/tree/"
                    "18598543c0d273ae91fb82f4818af63e2fca999e and .../commits/main/"
                    "prometheus-7b-v2.0.Q8_0.gguf"
                ),
            ),
            GGUFRepo(
                repo_id="AlekseiPravdin/prometheus-7b-v2_0-gguf",
                file_pattern="prometheus-7b-v2_0.{quant}.gguf",
                quants=tuple(
                    "Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_K_S Q5_K_M "
                    "Q8_0".split()
                ),
                lowercase_quant=True,
                source=(
                    "huggingface.co/AlekseiPravdin/prometheus-7b-v2_0-gguf/tree/ 5ace418 (q8_0), "
                    "af1665d (q5_k_m), a37951a (q5_k_s), f776ce4 (q5_0), d2d0c45 (q4_k_s)"
                ),
            ),
        ),
    ),
    Release(
        name="prometheus-8x7b-v2.0",
        prompt_format="v2",
        source_repo="prometheus-eval/prometheus-8x7b-v2.0",
        base_model="Mixtral-8x7B-Instruct-v0.1",
        architecture="MixtralForCausalLM",
        paper="2405.01535",
        gguf_repos=(
            GGUFRepo(
                repo_id="mradermacher/prometheus-8x7b-v2.0-GGUF",
                file_pattern="prometheus-8x7b-v2.0.{quant}.gguf",
                quants=tuple(
                    "IQ4_XS Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0".split()
                ),
                source=(
                    "huggingface.co/mradermacher/prometheus-8x7b-v2.0-GGUF/tree/ "
                    "799be577bafee826b0bd862833ba9d047b8837ac and 0e89ae7 (IQ4_XS)"
                ),
            ),
            GGUFRepo(
                repo_id="vsevolodl/prometheus-8x7b-v2.0-GGUF",
                file_pattern="prometheus-8x7b-v2.0.{quant}.gguf",
                quants=tuple("Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_K_S Q4_K_M Q5_0 Q5_K_M".split()),
                source=(
                    "huggingface.co/vsevolodl/prometheus-8x7b-v2.0-GGUF/tree/"
                    "22d2bfe7f687cfa70f5efcf5041d3f42611d8374"
                ),
            ),
        ),
    ),
)
