"""The output constraint on its own: a synthetic vocabulary, no llama.cpp."""

from __future__ import annotations

import random

import numpy as np
import pytest

from prometheus_lite.constraint import (
    MARKER,
    SCORE_LABELS,
    WINNER_LABELS,
    ConstraintState,
    OutputConstraint,
)

# A vocabulary with the awkward pieces real tokenizers have: every byte, pieces that
# split the marker in odd places, pieces that run past it, a space-label piece.
PIECES = [bytes([b]) for b in range(256)] + [
    b"",  # 256: end of sequence (banned)
    b"",  # 257: a control token the runtime forgot to ban (empty piece)
    b" [",
    b"[RES",
    b"ULT]",
    b"[RESULT]",
    b"[RESULT] 5",
    b" 4",
    b"RESULT]",
    b"]:",
    b" Good",
    b"Feedback:",
    b"5.",
    b" A",
    b"\n[",
]
EOS = 256
BANNED = np.zeros(len(PIECES), dtype=bool)
BANNED[EOS] = True
TOK = {p: i for i, p in enumerate(PIECES) if p}


@pytest.fixture
def scores() -> OutputConstraint:
    return OutputConstraint(PIECES, BANNED, SCORE_LABELS)


def run(c: OutputConstraint, pieces: list[bytes]) -> ConstraintState | None:
    state: ConstraintState | None = ConstraintState()
    for p in pieces:
        assert state is not None
        state = c.advance(state, TOK[p])
    return state


@pytest.mark.parametrize(
    "pieces, label",
    [
        ([b" Good", b" [", b"RESULT]", b" ", b"4"], "4"),  # "... [RESULT] 4"
        ([b" Good", b"\n[", b"RESULT]", b" 4"], "4"),  # newline form, space-label piece
        ([b"Feedback:", b" Good", b" ", b"[RES", b"ULT]", b" ", b"1"], "1"),
        ([b"G", b"[RESULT]", b"5"], "5"),  # no space at all is tolerated
        ([b"x", b"[", b"[", b"RESULT]", b" ", b"3"], "3"),  # "[[RESULT]"
    ],
)
def test_accepts_trained_forms(scores: OutputConstraint, pieces: list[bytes], label: str) -> None:
    state = run(scores, pieces)
    assert state is not None and state.done and state.label == label


@pytest.mark.parametrize("pieces", [[b"[RESULT]"], [b" ", b"[RESULT]"], [b" ", b"\n[", b"RESULT]"]])
def test_feedback_must_say_something(scores: OutputConstraint, pieces: list[bytes]) -> None:
    assert run(scores, pieces) is None


def test_marker_lookalikes_are_feedback(scores: OutputConstraint) -> None:
    state = run(scores, [b" Good", b"[RES", b"]:", b"[", b"R"])  # "[RES]:[R" is plain text
    assert state is not None and not state.done and state.matched == 2


def test_one_piece_may_end_exactly_at_the_label(scores: OutputConstraint) -> None:
    state = run(scores, [b" Good", b"[RESULT] 5"])
    assert state is not None and state.done and state.label == "5"


@pytest.mark.parametrize(
    "prefix, bad",
    [
        ([b" Good", b"[RESULT]"], b"5."),  # label followed by more text in the same piece
        ([b" Good", b"[RESULT]"], b"7"),  # not a score
        ([b" Good", b"[RESULT]"], b"A"),  # a winner label is not a score
        ([b" Good", b"[RESULT]", b" "], b" "),  # two spaces
        ([b" Good", b"[RESULT]"], b"]:"),
    ],
)
def test_rejects_after_marker(scores: OutputConstraint, prefix: list[bytes], bad: bytes) -> None:
    state = run(scores, prefix)
    assert state is not None
    assert scores.advance(state, TOK[bad]) is None


def test_banned_and_empty_tokens_rejected(scores: OutputConstraint) -> None:
    assert scores.advance(ConstraintState(), EOS) is None
    assert scores.advance(ConstraintState(), 257) is None  # an empty piece never advances
    assert scores.advance(ConstraintState(), len(PIECES)) is None  # out of range


def test_mask_agrees_with_advance_everywhere(scores: OutputConstraint) -> None:
    """For states reached by random walks, the mask is exactly the set advance() accepts."""
    rng = random.Random(0)
    seen = 0
    for _ in range(40):
        state = ConstraintState()
        for _ in range(12):
            mask = scores.allowed_mask(state)
            expect = np.array([scores.advance(state, t) is not None for t in range(len(PIECES))])
            assert (mask == expect).all()
            allowed = np.flatnonzero(mask)
            nxt = scores.advance(state, int(rng.choice(allowed)))
            assert nxt is not None
            seen += 1
            if nxt.done:
                break
            state = nxt
    assert seen > 100


def test_label_tokens_group_by_label(scores: OutputConstraint) -> None:
    after = run(scores, [b" Good", b"[RESULT]"])
    assert after is not None
    groups = scores.label_tokens(after)
    assert sorted(groups) == list(SCORE_LABELS)
    assert set(groups["4"]) == {TOK[b"4"], TOK[b" 4"]}
    spaced = scores.advance(after, TOK[b" "])
    assert spaced is not None
    assert scores.label_tokens(spaced)["4"] == [TOK[b"4"]]
    assert scores.label_tokens(ConstraintState()) == {}


def test_winner_labels() -> None:
    c = OutputConstraint(PIECES, BANNED, WINNER_LABELS)
    state = run(c, [b" Good", b"[RESULT]"])
    assert state is not None
    assert c.advance(state, TOK[b" A"]) == ConstraintState(2, label="A")
    assert c.advance(state, TOK[b"5"]) is None


@pytest.mark.parametrize(
    "prefix, expect",
    [
        ([b" Good"], b" [RESULT] "),
        ([b" Good", b" "], b"[RESULT] "),
        ([b" Good", b"\n"], b"[RESULT] "),
        ([b" Good", b" [", b"R", b"E"], b"SULT] "),
        ([b" Good", b"[RESULT]"], b" "),
    ],
)
def test_closing_completes_the_marker(
    scores: OutputConstraint, prefix: list[bytes], expect: bytes
) -> None:
    state = run(scores, prefix)
    assert state is not None
    last = prefix[-1][-1]
    tokens, after = scores.closing(state, last)
    assert b"".join(PIECES[t] for t in tokens) == expect
    text = b"".join(prefix) + expect
    assert text.count(MARKER) == 1 and text.endswith(b"] ")
    assert scores.label_tokens(after)  # a label comes next


def test_spell_is_exact_and_reserve_counts_the_close(scores: OutputConstraint) -> None:
    for text in (b" [RESULT] ", b"\xe2\x82\xac x", b""):
        assert b"".join(PIECES[t] for t in scores.spell(text)) == text
    # The longest close, e.g. completing "[RE" byte by byte ("S", "U", "L", ...) here.
    closes = [b" [RESULT] "] + [MARKER[j:] + b" " for j in range(1, len(MARKER))]
    assert scores.reserve == max(len(scores.spell(t)) for t in closes) + 1
    for j in range(1, len(MARKER)):  # every partial marker: its close fits the reserve
        state = run(scores, [b" Good"] + [MARKER[i : i + 1] for i in range(j)])
        assert state is not None and state.matched == j
        assert len(scores.closing(state, None)[0]) + 1 <= scores.reserve
