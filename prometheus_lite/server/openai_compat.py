"""OpenAI wire format: request options to judge options, results to OpenAI responses.

Pure translation (no HTTP, no llama.cpp). The answer is the model's constrained output
(``feedback [RESULT] label``); ``logprobs`` cover the *label token only*: the label's
log-probability among the allowed labels (renormalised over them, exactly the grade's
``probabilities``), with the other labels as ``top_logprobs``. Each choice also carries
the extension field ``prometheus``: the same record a batch output line holds (score or
winner, probabilities, expected score, feedback, token counts).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..batch import result_record
from ..llama import Sampling
from ..results import Comparison, Grade
from .errors import ApiError, error_body
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields

__all__ = [
    "DONE",
    "chat_messages",
    "chat_response",
    "completion_response",
    "error_event",
    "final_event",
    "judge_options",
    "label_logprobs",
    "role_event",
    "stream_base",
    "text_event",
    "usage_event",
]

NEG_INF_LOGPROB = -9999.0  # what OpenAI reports for a token of probability 0


def judge_options(
    body: SamplingFields,
    default: Sampling,
    default_seed: int,
    default_max_tokens: int,
    max_tokens_cap: int | None,
    max_tokens: int | None = None,
) -> tuple[Sampling, int, int]:
    """(sampling, seed, max_new_tokens) for ``judge.submit`` from an OpenAI request:
    fields left out keep the server's defaults; temperature 0 means greedy."""
    temperature = default.temperature if body.temperature is None else body.temperature
    sampling = replace(
        default,
        temperature=temperature,
        top_p=default.top_p if body.top_p is None else body.top_p,
        repetition_penalty=(
            default.repetition_penalty
            if body.repetition_penalty is None
            else body.repetition_penalty
        ),
        greedy=default.greedy if body.temperature is None else temperature == 0,
    )
    budget = max_tokens or body.max_tokens or default_max_tokens
    if max_tokens_cap is not None and budget > max_tokens_cap:
        raise ApiError(
            400,
            f"max_tokens is {budget}, more than this server allows ({max_tokens_cap}, its "
            "--max-tokens-cap); ask for fewer tokens",
            param="max_tokens",
        )
    seed = default_seed if body.seed is None else body.seed
    return sampling, seed, budget


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Plain ``{role, content}`` dicts; text content parts are joined, others refused."""
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise ApiError(
                        400,
                        f"messages[{i}].content[{j}] is of type {part.type!r}; a judge reads "
                        "text only (parts of type 'text' with a 'text' field)",
                        param=f"messages[{i}].content",
                    )
                texts.append(part.text)
            content = "".join(texts)
        if content is None:
            raise ApiError(
                400, f"messages[{i}] has no content; give the message text as 'content'",
                param=f"messages[{i}].content",
            )
        out.append({"role": m.role, "content": content})
    return out


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else NEG_INF_LOGPROB


def _label(result: Grade | Comparison) -> str:
    return str(result.score) if isinstance(result, Grade) else result.winner


def _ranked(result: Grade | Comparison) -> list[tuple[str, float]]:
    return sorted(result.probabilities.items(), key=lambda kv: (-kv[1], kv[0]))


def _mode(result: Grade | Comparison) -> str:
    return "grade" if isinstance(result, Grade) else "compare"


def _finish(result: Grade | Comparison) -> str:
    return "length" if result.usage.finish == "budget" else "stop"


def _extension(result: Grade | Comparison) -> dict[str, Any]:
    return result_record(result, _mode(result))  # type: ignore[arg-type]


def _usage(results: Sequence[Grade | Comparison]) -> dict[str, Any]:
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": sum(r.usage.cached_prompt_tokens for r in results)
        },
    }


def _chat_logprobs(result: Grade | Comparison, top: int) -> dict[str, Any]:
    label = _label(result)

    def entry(token: str, p: float) -> dict[str, Any]:
        return {"token": token, "logprob": _logprob(p), "bytes": list(token.encode())}

    chosen = entry(label, result.probabilities[label])
    chosen["top_logprobs"] = [entry(t, p) for t, p in _ranked(result)[:top]]
    return {"content": [chosen], "refusal": None}


def chat_response(
    body: ChatCompletionRequest, results: Sequence[Grade | Comparison], model: str
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice per result."""
    choices = []
    for i, r in enumerate(results):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": r.raw or r.raw_output, "refusal": None},
            "finish_reason": _finish(r),
            "logprobs": _chat_logprobs(r, body.top_logprobs or 0) if body.logprobs else None,
            "prometheus": _extension(r),
        }
        choices.append(choice)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(results),
        "system_fingerprint": None,
    }


def _completion_logprobs(result: Grade | Comparison, top: int) -> dict[str, Any]:
    label = _label(result)
    return {
        "tokens": [label],
        "token_logprobs": [_logprob(result.probabilities[label])],
        "top_logprobs": [{t: _logprob(p) for t, p in _ranked(result)[:top]}],
        "text_offset": [len(result.raw_output) - len(label)],
    }


def completion_response(
    body: CompletionRequest, results: Sequence[Grade | Comparison], model: str
) -> dict[str, Any]:
    """A ``text_completion`` object; choice ``i`` of prompt ``k`` is at index k * n + i."""
    choices = [
        {
            "index": i,
            "text": r.raw or r.raw_output,
            "finish_reason": _finish(r),
            "logprobs": (
                _completion_logprobs(r, body.logprobs) if body.logprobs is not None else None
            ),
            "prometheus": _extension(r),
        }
        for i, r in enumerate(results)
    ]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(results),
        "system_fingerprint": None,
    }


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=True)}\n\n".encode()


def stream_base(kind: str, model: str) -> dict[str, Any]:
    """The fields every event of one streamed response repeats."""
    chat = kind == "chat"
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }


def role_event(base: dict[str, Any], index: int) -> bytes:
    """A chat stream's first event for one choice (OpenAI's: the role, empty content)."""
    delta = {"role": "assistant", "content": ""}
    return _sse({**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                      "finish_reason": None}]})


def text_event(
    base: dict[str, Any], index: int, text: str, logprobs: dict[str, Any] | None = None
) -> bytes:
    """New text of one choice (the label's event carries its ``logprobs``)."""
    if base["object"] == "chat.completion.chunk":
        choice: dict[str, Any] = {"index": index, "delta": {"content": text},
                                  "logprobs": logprobs, "finish_reason": None}
    else:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}
    return _sse({**base, "choices": [choice]})


def label_logprobs(base: dict[str, Any], result: Grade | Comparison, top: int | None
                   ) -> dict[str, Any] | None:
    """The label event's ``logprobs`` (None when the request did not ask for them)."""
    if top is None:
        return None
    if base["object"] == "chat.completion.chunk":
        return _chat_logprobs(result, top)
    return _completion_logprobs(result, top)


def final_event(base: dict[str, Any], index: int, result: Grade | Comparison) -> bytes:
    """One choice's last event: why it finished and the ``prometheus`` record."""
    choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": _finish(result),
                              "prometheus": _extension(result)}
    if base["object"] == "chat.completion.chunk":
        choice["delta"] = {}
    else:
        choice["text"] = ""
    return _sse({**base, "choices": [choice]})


def usage_event(base: dict[str, Any], results: Sequence[Grade | Comparison]) -> bytes:
    return _sse({**base, "choices": [], "usage": _usage(results)})


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    """An error after the stream started (the openai client raises it as an APIError)."""
    return _sse(error_body(status, message, code=code))


DONE = b"data: [DONE]\n\n"
