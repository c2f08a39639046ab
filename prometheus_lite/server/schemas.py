"""Request and response schemas of the HTTP service (pydantic; no handlers here).

The judge endpoints take the same items as a batch input line (``batch.parse_line`` reads
them, so the Feedback Collection's ``orig_*`` names work too) and answer the same record
as a batch output line (``batch.result_record``). The OpenAI-compatible endpoints take
OpenAI's request bodies plus vLLM's ``repetition_penalty``. The OpenAPI document at
``/openapi.json`` is generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompareItem",
    "CompletionRequest",
    "ErrorBody",
    "GradeItem",
    "RubricObject",
    "SamplingFields",
]

# Bounds that keep every value something llama.cpp accepts (a 4xx, never a crash).
MAX_SEED = 2**32 - 1  # llama.cpp samplers take a uint32 seed
MAX_TOKENS_LIMIT = 1_000_000


class _Open(BaseModel):
    """Unknown keys are kept (batch lines may carry extra fields; OpenAI clients send
    options that do not apply to a judge, such as ``user`` or ``stop``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# --------------------------------------------------------------------------- judge items


class RubricObject(_Open):
    """A custom rubric: the criteria and what each score 1-5 means."""

    criteria: str = Field(description="The question the judge answers.")
    score1_description: str
    score2_description: str
    score3_description: str
    score4_description: str
    score5_description: str


_RUBRIC_DOC = (
    "A preset name (helpfulness, harmlessness, honesty, factual_validity, reasoning; see "
    "GET /v1/rubrics) or a rubric object. May be left out when the item carries the "
    "Feedback Collection's orig_criteria / orig_score1_description.. fields."
)
_ID_DOC = "Echoed in the result (batch default: the item's 1-based position)."

# The item's rubric and id are checked by batch.parse_line (its messages name the missing
# rubric key or the id's type), so pydantic takes them as they are; the schema says more.
RubricField = Annotated[
    Any,
    WithJsonSchema({"anyOf": [{"type": "string"}, RubricObject.model_json_schema(),
                              {"type": "null"}], "description": _RUBRIC_DOC}),
]
IdField = Annotated[
    Any,
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
                    "description": _ID_DOC}),
]


class GradeItem(_Open):
    """One response to grade 1-5 (a batch input line of ``prometheus-lite grade``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "q1",
                    "instruction": "What is the capital of Australia?",
                    "response": "Sydney.",
                    "reference_answer": "Canberra.",
                    "rubric": "factual_validity",
                }
            ]
        }
    )

    id: IdField = None
    instruction: str | None = Field(
        None, description="The instruction the response answers (or orig_instruction)."
    )
    response: str | None = Field(None, description="The response to grade (or orig_response).")
    reference_answer: str | None = Field(
        None, description="Optional: an answer that would get a score of 5."
    )
    rubric: RubricField = None


class CompareItem(_Open):
    """Two responses to compare, A or B (a batch input line of ``prometheus-lite compare``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "instruction": "Translate 'good morning' into French.",
                    "response_a": "Bonne nuit.",
                    "response_b": "Bonjour.",
                    "rubric": "helpfulness",
                }
            ]
        }
    )

    id: IdField = None
    instruction: str | None = Field(None, description="The instruction both responses answer.")
    response_a: str | None = Field(None, description="Response A (or orig_response_A).")
    response_b: str | None = Field(None, description="Response B (or orig_response_B).")
    reference_answer: str | None = Field(None, description="Optional reference answer.")
    rubric: RubricField = None  # relative grading shows the judge only its criteria


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, authentication_error, ...")
    param: str | None = Field(None, description="The request field at fault, if one is.")
    code: str | None = Field(None, description="A machine-readable reason.")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer (OpenAI's error shape)."""

    error: ErrorDetail


# --------------------------------------------------------------------------- OpenAI


class SamplingFields(_Open):
    """Sampling options honoured by the OpenAI-compatible endpoints (others are ignored:
    the answer is always constrained to ``feedback [RESULT] label``)."""

    model: str | None = Field(
        None,
        description="Ignored: the server judges with the model it was started with "
        "(GET /v1/models names it). A request can never choose a model file.",
    )
    temperature: float | None = Field(
        None, ge=0, le=100, description="0 means greedy decoding [default: the server's]."
    )
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description="Budget for feedback + result; past it the feedback is closed and the "
        "result still written [default: the server's --max-tokens].",
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    repetition_penalty: float | None = Field(
        None, gt=0, le=100, description="As vLLM-style servers accept it (1.0 = none)."
    )
    n: int | None = Field(
        None, ge=1, le=16, description="Choices per prompt (seeds seed, seed+1, ..)."
    )
    stream: bool | None = Field(False, description="Server-sent events, OpenAI style.")


class ContentPart(_Open):
    type: str
    text: str | None = None


class ChatMessage(_Open):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = False


class ChatCompletionRequest(SamplingFields):
    """A Prometheus grading prompt as chat messages: an optional system message and one
    user message with the filled template (as prometheus-eval and LiteLLM send it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "prometheus",
                    "messages": [
                        {"role": "system", "content": "You are a fair judge assistant ..."},
                        {"role": "user", "content": "###Task Description:\n...###Feedback: "},
                    ],
                    "temperature": 1.0,
                    "max_tokens": 256,
                    "logprobs": True,
                    "top_logprobs": 5,
                }
            ]
        }
    )

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = Field(False, description="Log-probabilities of the label token.")
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream_options: StreamOptions | None = None


class CompletionRequest(SamplingFields):
    """One Prometheus grading prompt as text (bare, or wrapped by FastChat's llama-2 or
    mistral template, as prometheus-eval's vLLM path renders it), or a list of them."""

    prompt: str | list[str] = Field(description="The rendered prompt(s).")
    logprobs: int | None = Field(None, ge=0, le=5, description="Top label log-probabilities.")
    echo: bool | None = Field(False, description="Must be false (not supported).")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1 (vLLM-style clients).")
    stream_options: StreamOptions | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "prometheus-lite"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def openapi_batch_body() -> dict[str, Any]:
    """The request body of POST /v1/batch for the OpenAPI document (read by hand, since it
    may be a JSON array or JSON lines)."""
    item = {"anyOf": [{"$ref": "#/components/schemas/GradeItem"},
                      {"$ref": "#/components/schemas/CompareItem"}]}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": item, "minItems": 1}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    }
