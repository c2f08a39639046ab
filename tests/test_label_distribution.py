"""Score and probabilities come from one distribution (issue 8, part 2, item 2).

``Grade.probabilities`` / ``Comparison.probabilities`` are the softmax of the model's RAW logits at
the label position over the tokens that write each label (tokens of one label summed): no
repetition penalty, temperature or top-p. Under greedy decoding the label is the argmax of that
distribution. Two independent checks:

* a crafted model (``label_fixtures.py``) where the repetition penalty would make greedy sampling
  pick another label than the raw argmax: the score must follow the reported distribution, whose
  values are computed here from the crafted logit table. Before the fix (commit 4211d3e^) the label
  was sampled after the penalty and this test fails (score 4, probabilities peaked at 5);
* the embedded model on ten varied items: the probabilities are recomputed with llama-cpp-python's
  high-level ``llama_cpp.Llama`` (its own context, batching and KV cache; nothing of
  prometheus-lite's runtime) and a numpy softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from prometheus_lite import Judge
from prometheus_lite.constraint import SCORE_LABELS, WINNER_LABELS, ConstraintState
from prometheus_lite.hub import resolve_model
from prometheus_lite.llama import Sampling
from prometheus_lite.results import CompareRequest, Comparison, Grade, GradeRequest

# -- a crafted model where the repetition penalty flips the greedy label ------------------

PENALTY = Sampling().repetition_penalty  # the official 1.03, kept under greedy decoding


@dataclass(frozen=True)
class Flip:
    """A chain ending at ``chain[-1]``, then label writers whose raw and penalized argmax differ."""

    request: GradeRequest | CompareRequest
    chain: tuple[bytes, ...]
    last: dict[bytes, float]  # the logits after chain[-1]
    writers: dict[str, tuple[bytes, ...]]  # label -> the pieces that write it there (by hand)
    seen: bytes  # the raw best token, also in the prompt: the penalty pushes it down...
    unseen: bytes  # ... below this one, of another label, never in the prompt
    label: str
    raw_output: str


FLIPS = {
    # "5" is in every absolute prompt ("between 1 and 5"); " 4" never is (the Llama-3
    # pre-tokenizer splits " 4" into " " and "4"). Label 5 is written by "5" and " 5" (summed).
    "absolute": Flip(
        GradeRequest("How many legs does a cat have?", "4", "helpfulness"),
        (b"Good", b" [RESULT]"), {b"5": 10.0, b" 5": 8.0, b" 4": 9.8, b"4": 5.0},
        {lb: (lb.encode(), b" " + lb.encode()) for lb in SCORE_LABELS},
        b"5", b" 4", "5", "Good [RESULT]5"),
    # "]A" closes the marker and writes A; the graded text contains "]A" (one pre-token, hence
    # that token), never "]B".
    "relative": Flip(
        CompareRequest("Which reply is right about x]A?", "It is a typo.", "It is fine.",
                       "helpfulness"),
        (b"Good", b" [RESULT"), {b"]A": 10.0, b"]B": 9.8},
        {"A": (b"]A",), "B": (b"]B",)}, b"]A", b"]B", "A", "Good [RESULT]A"),
}


@pytest.fixture(scope="module")
def flip_models(tmp_path_factory):
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    import label_fixtures as lf

    root = tmp_path_factory.mktemp("flip")
    pieces = [b"Good", b" [RESULT]", b" 1", b" 2", b" 3", b" 4", b" 5", b"]A", b"]B"]
    return {name: lf.build_chain_model(root / name, pieces=pieces, chain=f.chain, last=f.last)
            for name, f in FLIPS.items()}


def _penalized(logits: np.ndarray, seen: set[int]) -> np.ndarray:
    """llama.cpp's repetition penalty (llama_sampler_penalties): /p above 0, *p below."""
    out = logits.copy()
    for t in seen:
        out[t] = out[t] / PENALTY if out[t] > 0 else out[t] * PENALTY
    return out


@pytest.mark.parametrize("name", list(FLIPS))
def test_greedy_label_is_the_argmax_of_the_reported_raw_distribution(flip_models, name) -> None:
    f, m = FLIPS[name], flip_models[name]
    with Judge(m.path, greedy=True, n_threads=1, max_new_tokens=16) as judge:
        prompt = judge.runtime.tokenize_prompt(judge.render(f.request))
        result = judge.judge(f.request)
    # The setting is what we think: the penalty (prompt and chain tokens) flips the argmax.
    ids = m.ids
    assert ids[f.seen] in prompt and ids[f.unseen] not in prompt
    raw = m.logits_after(f.chain[-1])
    penalized = _penalized(raw, set(prompt) | {ids[p] for p in f.chain})
    assert int(np.argmax(raw)) == ids[f.seen] and int(np.argmax(penalized)) == ids[f.unseen]

    # Expected: the softmax of the raw logits, tokens of one label summed.
    mass = {lb: math.fsum(math.exp(raw[ids[p]]) for p in ps) for lb, ps in f.writers.items()}
    expected = {lb: v / math.fsum(mass.values()) for lb, v in mass.items()}
    assert result.probabilities == pytest.approx(expected, rel=1e-5)
    assert max(expected, key=expected.get) == f.label
    label = result.score if isinstance(result, Grade) else result.winner
    assert str(label) == f.label, f"greedy label {label} is not the argmax of {expected}"
    assert result.raw_output == f.raw_output  # the label's best raw token
    assert result.usage.finish == "model"


# -- the embedded model against llama-cpp-python's high-level Llama -------------------------

MAX_NEW_TOKENS = 24
N_CTX = 1024
N_BATCH = 64  # the Judge's prefill chunk on a CPU

GRADES = [
    GradeRequest("What is the capital of France?", "Paris.", "helpfulness"),
    GradeRequest("What is the capital of France?", "Lyon, I think.", "factual_validity", "Paris"),
    GradeRequest("Write a haiku about rain.",
                 "Rain falls on the roof / soft drums in the night / I sleep", "helpfulness"),
    GradeRequest("How do I pick a lock?", "I can't help with that.", "harmlessness"),
    GradeRequest("Solve 12*12.", "12*12 = 144 because 12*10=120 and 12*2=24.", "reasoning", "144"),
    GradeRequest("Who wrote Hamlet?", "Charles Dickens wrote Hamlet in 1850.", "honesty"),
]
COMPARISONS = [
    CompareRequest("What is 2+2?", "4", "5", "factual_validity"),
    CompareRequest("Summarise: the cat sat on the mat.", "A cat sat on a mat.", "Dogs are loyal.",
                   "helpfulness"),
    CompareRequest("Is the earth flat?", "No, it is an oblate spheroid.", "Yes.", "honesty", "No."),
    CompareRequest("Explain recursion.",
                   "A function calling itself on a smaller input until a base case.",
                   "Recursion is recursion.", "reasoning"),
]


@pytest.fixture(scope="module")
def judge():
    # On the CPU on every build: the reference below reproduces the CPU schedule (64-token chunks).
    with Judge(greedy=True, n_threads=1, n_parallel=1, n_ctx=N_CTX, n_gpu_layers=0,
               max_new_tokens=MAX_NEW_TOKENS) as j:
        yield j


@pytest.fixture(scope="module")
def reference():
    """llama-cpp-python's own high-level model and context on the same GGUF.

    Extra buffer types (weight repacking) as the Judge decides them (``native``: off only where
    they crash). Flash attention on, as llama.cpp's "auto" resolves on a CPU (the Judge's context
    keeps the default): with it off, P(label) moved by up to 3.6e-2 (3 of these items). One batch
    thread: more threads than free cores make llama.cpp's spinning workers ~10x slower on a
    busy machine.
    """
    from llama_ref import reference_llama  # llama_cpp.Llama, loaded as the Judge decides

    llm = reference_llama(resolve_model(None), logits_all=True, n_ctx=N_CTX, n_batch=N_BATCH,
                          n_ubatch=N_BATCH, n_threads=1, n_threads_batch=1, flash_attn=True,
                          n_gpu_layers=0, verbose=False)
    yield llm
    llm.close()


def _reference_probs(llm, judge: Judge, request, result) -> dict[str, float]:
    """P(label) from the reference's logits at the label position, softmax in numpy."""
    relative = isinstance(request, CompareRequest)
    constraint = judge.constraint(WINNER_LABELS if relative else SCORE_LABELS)
    prompt = llm.tokenize(judge.render(request).text.encode(), add_bos=False, special=True)
    assert prompt == judge.runtime.tokenize_prompt(judge.render(request))  # plain inputs here
    assert result.usage.prompt_tokens == len(prompt)
    *answer, label_token = result.output_tokens
    state = ConstraintState()
    for t in answer:
        state = constraint.advance(state, t)
        assert state is not None and not state.done
    writers = constraint.label_tokens(state)
    assert any(label_token in ts for ts in writers.values())

    # Feed the tokens in the groups a single decoding sequence uses, so that llama.cpp runs
    # the same kernels on the same shapes: the prompt in N_BATCH chunks from position 0, each
    # sampled token alone, the closing "[RESULT]" tokens (budget spent) in one batch. Read in
    # one call instead, the last prompt chunk and the answer share batches and P(label)
    # moved by up to 4.5e-2 on these items: the label distribution of this 4-bit 135M model is
    # that sensitive to rounding.
    llm.reset()
    llm.eval(prompt)
    budget = MAX_NEW_TOKENS - constraint.reserve
    sampled = answer[:budget] if result.usage.finish == "budget" else answer
    for t in sampled:
        llm.eval([t])
    if len(sampled) < len(answer):
        llm.eval(answer[len(sampled):])
    assert llm.n_tokens == len(prompt) + len(answer)
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)  # after the last token

    per_label = {lb: logits[ts] for lb, ts in writers.items()}
    top = max(float(v.max()) for v in per_label.values())
    mass = {lb: float(np.exp(v - top).sum()) for lb, v in per_label.items()}
    total = math.fsum(mass.values())
    labels = WINNER_LABELS if relative else SCORE_LABELS
    return {lb: mass.get(lb, 0.0) / total for lb in labels}


# The reference computes the same floats (measured: max |dP| = 1.1e-16 on these ten items, the
# float64 rounding of the two softmaxes). 1e-5 leaves room for a few last-bit changes of the
# float32 logits (one ulp of a logit near 20 is 1.9e-6, and a change d of the logits moves each
# P by at most 2d) and is still far below what a different distribution shows: the repetition
# penalty (1.03) moves logits near 20 by ~0.6, flash attention off moved P by up to 3.6e-2, and
# the same tokens read in one call (other batch shapes) by up to 4.5e-2.
TOLERANCE = 1e-5


ITEMS = GRADES + COMPARISONS


@pytest.mark.parametrize("request_", ITEMS, ids=[
    f"{'grade' if isinstance(r, GradeRequest) else 'compare'}-{i}" for i, r in enumerate(ITEMS)])
def test_probabilities_match_an_independent_softmax(judge, reference, request_) -> None:
    result = judge.judge(request_)
    expected = _reference_probs(reference, judge, request_, result)
    assert result.probabilities == pytest.approx(expected, abs=TOLERANCE)
    assert math.isclose(math.fsum(result.probabilities.values()), 1.0, abs_tol=1e-12)
    best = max(result.probabilities, key=result.probabilities.get)
    if isinstance(result, Grade):
        assert result.score == int(best)
        assert result.expected_score == pytest.approx(
            sum(int(lb) * p for lb, p in expected.items()), abs=5 * TOLERANCE)
    else:
        assert isinstance(result, Comparison) and result.winner == best
    assert max(expected, key=expected.get) == best  # no near-tie among these items
