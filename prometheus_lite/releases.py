"""Known judge releases (Prometheus, M-Prometheus, Selene, Flow-Judge) that users can name
by a short name (data only).

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
    """A released judge checkpoint and where its GGUF files live."""

    name: str  # short name users type, lower case
    # "v1", "v2" (shared/reference/prometheus-format.md), "chat" (the v2 text in the model's
    # own chat template), "selene" or "flow-judge" (shared/reference/judges/SUMMARY.md).
    prompt_format: str
    source_repo: str  # the authors' Hugging Face checkpoint
    base_model: str
    # config.json ``architectures[0]`` of the checkpoint (prometheus-format.md, "Models"). A
    # checkpoint that names no release but is built like one (this architecture and the
    # base model's SentencePiece tokenizer) is taken to speak this release's prompt.
    architecture: str
    paper: str  # arXiv id
    gguf_repos: tuple[GGUFRepo, ...]
    default_quant: str = DEFAULT_QUANT
    family: str = "prometheus"  # a key of families.FAMILIES


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
    # M-Prometheus (Unbabel; arXiv 2504.04953): Qwen2.5-Instruct bases (third-party
    # summaries of the paper; the cards say "prompted in the same way as Prometheus-2"), HF
    # tag qwen2 (shared/reference/judges/SUMMARY.md section 3). No GGUF repo listing was
    # found for any size: convert the checkpoint with `prometheus-lite convert`.
    Release(
        name="m-prometheus-3b",
        prompt_format="chat",
        source_repo="Unbabel/M-Prometheus-3B",
        base_model="Qwen2.5-3B-Instruct",
        architecture="Qwen2ForCausalLM",
        paper="2504.04953",
        gguf_repos=(),
        family="m-prometheus",
    ),
    Release(
        name="m-prometheus-7b",
        prompt_format="chat",
        source_repo="Unbabel/M-Prometheus-7B",
        base_model="Qwen2.5-7B-Instruct",
        architecture="Qwen2ForCausalLM",
        paper="2504.04953",
        gguf_repos=(),
        family="m-prometheus",
    ),
    Release(
        name="m-prometheus-14b",
        prompt_format="chat",
        source_repo="Unbabel/M-Prometheus-14B",
        base_model="Qwen2.5-14B-Instruct",
        architecture="Qwen2ForCausalLM",
        paper="2504.04953",
        gguf_repos=(),
        family="m-prometheus",
    ),
    # Selene-1-Mini (Atla; arXiv 2501.17195): "Post-trained from Llama-3.1-8B" (README).
    Release(
        name="selene-1-mini",
        prompt_format="selene",
        source_repo="AtlaAI/Selene-1-Mini-Llama-3.1-8B",
        base_model="Llama-3.1-8B",
        architecture="LlamaForCausalLM",
        paper="2501.17195",
        family="selene",
        gguf_repos=(
            GGUFRepo(  # the authors' own quantization
                repo_id="AtlaAI/Selene-1-Mini-Llama-3.1-8B-Q4_K_M-GGUF",
                file_pattern="selene-1-mini-llama-3.1-8b-{quant}.gguf",
                quants=("Q4_K_M",),
                lowercase_quant=True,
                source=(
                    "huggingface.co/AtlaAI/Selene-1-Mini-Llama-3.1-8B-Q4_K_M-GGUF/tree/"
                    "dd712e84027fdd797164426709d1bb480d2936e4"
                ),
            ),
            GGUFRepo(
                repo_id="DevQuasar/AtlaAI.Selene-1-Mini-Llama-3.1-8B-GGUF",
                file_pattern="AtlaAI.Selene-1-Mini-Llama-3.1-8B.{quant}.gguf",
                quants=tuple("Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0".split()),
                source="huggingface.co/DevQuasar/AtlaAI.Selene-1-Mini-Llama-3.1-8B-GGUF/tree/main",
            ),
        ),
    ),
    # Flow-Judge-v0.1 (Flow AI; no paper): Phi-3.5-mini-instruct base (card; the W4A16
    # variant's config.json: Phi3ForCausalLM).
    Release(
        name="flow-judge-v0.1",
        prompt_format="flow-judge",
        source_repo="flowaicom/Flow-Judge-v0.1",
        base_model="Phi-3.5-mini-instruct",
        architecture="Phi3ForCausalLM",
        paper="",
        family="flow-judge",
        gguf_repos=(
            GGUFRepo(
                repo_id="mradermacher/Flow-Judge-v0.1-GGUF",
                file_pattern="Flow-Judge-v0.1.{quant}.gguf",
                quants=tuple(
                    "IQ3_M IQ3_S Q2_K Q3_K_L Q3_K_M Q3_K_S Q4_K_M Q4_K_S Q6_K Q8_0".split()
                ),
                source=(
                    "huggingface.co/mradermacher/Flow-Judge-v0.1-GGUF/tree/"
                    "56ee23c9cfae6fbadc01380ff8deba2e7bfdbfde"
                ),
            ),
            GGUFRepo(
                repo_id="QuantFactory/Flow-Judge-v0.1-GGUF",
                file_pattern="Flow-Judge-v0.1.{quant}.gguf",
                quants=tuple("Q4_0 Q4_1 Q4_K_M Q5_K_M Q5_K_S Q6_K Q8_0".split()),
                source=(
                    "huggingface.co/QuantFactory/Flow-Judge-v0.1-GGUF/tree/"
                    "2d410347f3437bb79f356b9e111343445b3b32ee"
                ),
            ),
        ),
    ),
)
