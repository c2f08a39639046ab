"""One token that ends the ``[RESULT]`` marker and writes the label (issue 8, part 2, item 1).

BPE vocabularies (Llama-3, Qwen, Mistral-Nemo) have pieces such as ``]A``, ``] 5`` or ``T] 4``.
No vocabulary on this machine has them, so these tests build a real GGUF that does (a byte-level
BPE vocabulary converted with this project's converter, see ``label_fixtures.py``) with weights
crafted so that greedy decoding walks a known chain of tokens ending in such a piece. The
expected probabilities are computed here from the crafted logit table, independently of the
runtime.

Before the fix (commit d71980f^) the runtime took the label tokens from the state before the
piece, found none, did not stop, and the next step raised ``RuntimeError`` from
``allowed_mask(DONE)``; ``Judge.batch`` let it through and aborted the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

import label_fixtures as lf  # noqa: E402

from prometheus_lite import Judge  # noqa: E402
from prometheus_lite.constraint import SCORE_LABELS, WINNER_LABELS, ConstraintState  # noqa: E402
from prometheus_lite.results import (  # noqa: E402
    CompareRequest,
    Comparison,
    Failure,
    Grade,
    GradeRequest,
)

PIECES = [b"Good", b" answer", b" [RESULT", b" [RESUL", b"] 1", b"] 2", b"] 4", b"] 5", b"]5",
          b"]A", b"]B", b"T] 4", b"T] 2", b"T]A"]

# Two models: the chain stops right before the marker's "]" or before its "T]".
MODELS = {
    "marker": dict(
        chain=[b"Good", b" answer", b" [RESULT"],
        last={b"] 5": 10.0, b"]A": 9.0, b"] 4": 8.0, b"]5": 7.0, b"]B": 6.0, b"] 1": 2.0},
    ),
    "split": dict(
        chain=[b"Good", b" [RESUL"],
        last={b"T] 4": 10.0, b"T]A": 9.0, b"T] 2": 7.0},
    ),
}


@dataclass(frozen=True)
class Case:
    model: str
    relative: bool
    piece: bytes  # the token that closes the marker and writes the label
    label: str
    # label -> the pieces that write it from the state before ``piece`` (worked out by hand)
    writers: dict[str, list[bytes]]


CASES = [
    # "] 5" has the highest logit; "]5" also writes 5, "] 2" (logit 0) writes 2, "] 3" is no token.
    Case("marker", False, b"] 5", "5",
         {"1": [b"] 1"], "2": [b"] 2"], "4": [b"] 4"], "5": [b"] 5", b"]5"]}),
    # Relative: "] 5" and "] 4" are rejected by the constraint, "]A" is the best allowed token.
    Case("marker", True, b"]A", "A", {"A": [b"]A"], "B": [b"]B"]}),
    Case("split", False, b"T] 4", "4", {"2": [b"T] 2"], "4": [b"T] 4"]}),
    Case("split", True, b"T]A", "A", {"A": [b"T]A"]}),
]
IDS = [f"{c.model}-{'relative' if c.relative else 'absolute'}-{c.piece.decode()}" for c in CASES]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, lf.ChainModel]:
    root = tmp_path_factory.mktemp("label-pieces")
    return {name: lf.build_chain_model(root / name, pieces=PIECES, **spec)  # type: ignore[arg-type]
            for name, spec in MODELS.items()}


@pytest.fixture(scope="module")
def judges(models):
    opened = {name: Judge(m.path, greedy=True, n_threads=1, max_new_tokens=16)
              for name, m in models.items()}
    yield opened
    for j in opened.values():
        j.close()


def _request(relative: bool, i: int = 0) -> GradeRequest | CompareRequest:
    if relative:
        return CompareRequest(f"Question {i}: 2 + 2?", "4", "five", "helpfulness", id=f"c{i}")
    return GradeRequest(f"Question {i}: 2 + 2?", "4", "helpfulness", id=f"g{i}")


def _expected_probs(model: lf.ChainModel, case: Case) -> dict[str, float]:
    """Softmax of the crafted logits over the tokens writing each label (summed per label)."""
    logits = model.logits_after(model.chain[-1])
    mass = {lb: math.fsum(math.exp(logits[model.ids[p]]) for p in ps)
            for lb, ps in case.writers.items()}
    total = math.fsum(mass.values())
    labels = WINNER_LABELS if case.relative else SCORE_LABELS
    return {lb: mass.get(lb, 0.0) / total for lb in labels}


def test_the_vocabulary_has_the_pieces(models, judges) -> None:
    """llama.cpp reads the crafted pieces back as single tokens with exactly these bytes."""
    for name, m in models.items():
        pieces = judges[name].runtime.pieces
        for piece in PIECES:
            assert pieces[m.ids[piece]] == piece


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_constraint_lists_the_piece_as_a_label_token(models, judges, case: Case) -> None:
    m, judge = models[case.model], judges[case.model]
    c = judge.constraint(WINNER_LABELS if case.relative else SCORE_LABELS)
    state = ConstraintState()
    for piece in m.chain:
        nxt = c.advance(state, m.ids[piece])
        assert nxt is not None and not nxt.done
        state = nxt
    expected = {lb: sorted(m.ids[p] for p in ps) for lb, ps in case.writers.items()}
    assert {lb: sorted(ts) for lb, ts in c.label_tokens(state).items()} == expected
    done = c.advance(state, m.ids[case.piece])
    assert done is not None and done.done and done.label == case.label


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_judge_stops_at_the_piece_and_reports_its_label(models, judges, case: Case) -> None:
    m, judge = models[case.model], judges[case.model]
    result = judge.judge(_request(case.relative))
    chain_text = b"".join(m.chain).decode()
    assert result.raw_output == chain_text + case.piece.decode()  # well-formed, ends in the piece
    if case.relative:
        assert isinstance(result, Comparison) and result.winner == case.label
    else:
        assert isinstance(result, Grade) and result.score == int(case.label)
    assert result.usage.finish == "model"  # the model wrote the marker and label itself
    assert result.feedback == chain_text.split("[RESUL")[0].strip()
    assert result.output_tokens == tuple(m.ids[p] for p in (*m.chain, case.piece))
    assert math.isclose(math.fsum(result.probabilities.values()), 1.0, abs_tol=1e-12)
    # float32 weights and logits: ~1e-7 relative error in each logit.
    assert result.probabilities == pytest.approx(_expected_probs(m, case), rel=1e-5, abs=1e-9)
    assert max(result.probabilities, key=result.probabilities.get) == case.label


def test_batch_with_such_pieces_never_aborts(judges) -> None:
    """A batch of grades, comparisons and one bad item: every item answers, in order."""
    judge = judges["marker"]
    requests = [_request(i % 2 == 1, i) for i in range(8)]
    requests.insert(5, GradeRequest("q", "r", "no-such-rubric", id="bad"))
    results = list(judge.batch(requests))
    assert [r.id for r in results] == [r.id for r in requests]
    for request, result in zip(requests, results, strict=True):
        if request.id == "bad":
            assert isinstance(result, Failure) and "no-such-rubric" in result.error
        elif isinstance(request, CompareRequest):
            assert isinstance(result, Comparison) and result.winner == "A"
            assert result.raw_output == "Good answer [RESULT]A"
        else:
            assert isinstance(result, Grade) and result.score == 5
            assert result.raw_output == "Good answer [RESULT] 5"


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=IDS[:2])
def test_sampled_results_with_such_pieces_end_well_formed(models, case: Case) -> None:
    """The official sampler (not greedy): whichever label piece is drawn, the output ends there.

    After ``" [RESULT"`` top-p 0.9 keeps ``] 5``, ``]A`` and ``] 4`` (P = 0.63, 0.23, 0.09). In
    a grade a drawn ``]A`` is rejected and the constraint resamples from the allowed tokens; in
    a comparison ``] 5`` and ``] 4`` are (P = 0.76 per seed: in 8 seeds it happens with
    P > 0.9999), and the resample writes ``]A``.
    """
    m = models[case.model]
    writers = {p: lb for lb, ps in case.writers.items() for p in ps}
    results = []
    for seed in range(8):  # one judge per seed: every item of a judge is sampled from its seed
        with Judge(m.path, n_threads=1, max_new_tokens=16, seed=seed) as judge:
            results.append(judge.judge(_request(case.relative, seed)))
    for r in results:
        ends = [p for p in writers if r.raw_output == "Good answer [RESULT" + p.decode()]
        assert len(ends) == 1, r.raw_output
        label = r.winner if isinstance(r, Comparison) else str(r.score)
        assert label == writers[ends[0]] and r.usage.finish == "model"
        assert r.output_tokens[-1] == m.ids[ends[0]]
        # The reported distribution is the raw one, whatever was drawn.
        assert r.probabilities == pytest.approx(_expected_probs(m, case), rel=1e-5, abs=1e-9)
