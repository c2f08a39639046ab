"""Each family's output constraint on a synthetic vocabulary (no llama.cpp), checked by the
family's own parser (loaded from shared/reference/judges/): every output the constraint lets
through, including budget-closed ones and ones full of marker look-alikes, parses to the
label the constraint reports."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from family_parsers import flow_parser, prometheus_parser, selene_parsers

from prometheus_lite.constraint import ConstraintState, OutputConstraint
from prometheus_lite.families import (
    FLOW_JUDGE_OUTPUT,
    PROMETHEUS_OUTPUT,
    SCALES,
    SELENE_OUTPUT,
    WINNER_LABELS,
)

# Every byte, plus the pieces that build (and break) each family's tags.
TRICKY = [
    b"<feedback>", b"</feedback>", b"<score>", b"</score>", b"<score>5</score>", b"<sc",
    b"ore>", b"</", b"feedback>", b"**Reasoning:** ", b"**Result:**", b"**Result:** 3",
    b"**", b"Result:**", b"[RESULT]", b"[RESULT] 5", b"[RES", b"ULT]", b"\n\n", b" \n",
    b" Yes", b"Yes", b" No", b"No", b" Good", b" bad", b"\n**Result:** No", b">4", b" 4",
    b":** Yes", b"\n<score>", b"Feedback:",
]
PIECES = [bytes([b]) for b in range(256)] + [b""] + TRICKY
EOS = 256
BANNED = np.zeros(len(PIECES), dtype=bool)
BANNED[EOS] = True
TOK = {p: i for i, p in enumerate(PIECES) if p}
FAVOURED = [TOK[p] for p in TRICKY] + [TOK[b"a"], TOK[b" "], TOK[b"\n"]]


def walk(c: OutputConstraint, rng: random.Random, budget: int) -> tuple[bytes, str, bool]:
    """A random answer: favoured pieces when allowed, else any allowed token; the budget
    close after ``budget`` tokens. Returns (text, label, closed by budget)."""
    state, out, closed = ConstraintState(), b"", False
    for _ in range(400):
        if state.phase == 0 and len(out) >= budget:
            tokens, state = c.closing(state, out[-1] if out else None)
            out += b"".join(PIECES[t] for t in tokens)
            closed = True
            continue
        if state.phase != 0 or rng.random() < 0.2:
            writers = c.label_tokens(state)
            if writers and (state.phase != 0 or rng.random() < 0.3):
                label = rng.choice(sorted(writers))
                token = rng.choice(writers[label])
                nxt = c.advance(state, token)
                assert nxt is not None and nxt.done and nxt.label == label
                return out + PIECES[token], label, closed
        token = rng.choice(FAVOURED) if rng.random() < 0.5 else rng.randrange(len(PIECES))
        nxt = c.advance(state, token)
        if nxt is None:
            allowed = np.flatnonzero(c.allowed_mask(state))
            token = int(rng.choice(allowed))
            nxt = c.advance(state, token)
            assert nxt is not None
        if nxt.done:
            return out + PIECES[token], nxt.label or "", closed
        state, out = nxt, out + PIECES[token]
    raise AssertionError("the walk did not end")


def answers(fmt, labels, n=300, seed=0):
    c = OutputConstraint(PIECES, BANNED, labels, fmt)
    rng = random.Random(seed)
    out = [walk(c, rng, rng.choice([3, 10, 40, 1000])) for _ in range(n)]
    assert any(closed for *_, closed in out) and not all(closed for *_, closed in out)
    return c, out


@pytest.mark.parametrize("scale", ["0-1", "1-3", "1-5"])
def test_flow_judge_parser_accepts_every_answer(shared_dir: Path, scale: str) -> None:
    parse = flow_parser(shared_dir)
    c, out = answers(FLOW_JUDGE_OUTPUT, SCALES[scale].labels)
    for text, label, _ in out:
        raw = text.decode("utf-8", errors="replace") + c.suffix
        parsed = parse(raw, fail_on_parse_error=True)
        assert parsed.score == int(label), raw
        assert raw.startswith("<feedback>") and raw.endswith(f"{label}</score>")


@pytest.mark.parametrize("labels", [SCALES["1-5"].labels, SCALES["yes-no"].labels, WINNER_LABELS])
def test_selene_parser_accepts_every_answer(shared_dir: Path, labels: tuple[str, ...]) -> None:
    absolute, strings = selene_parsers(shared_dir)
    c, out = answers(SELENE_OUTPUT, labels)
    for text, label, _ in out:
        raw = text.decode("utf-8", errors="replace")
        critique, result = (absolute if label.isdigit() else strings)(raw)
        assert result == (int(label) if label.isdigit() else label), raw
        assert critique is not None, raw


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_prometheus_parser_accepts_every_answer(shared_dir: Path, mode: str) -> None:
    parse = prometheus_parser(shared_dir)
    labels = SCALES["1-5"].labels if mode == "absolute" else WINNER_LABELS
    _, out = answers(PROMETHEUS_OUTPUT, labels)
    for text, label, _ in out:
        raw = text.decode("utf-8", errors="replace")
        _, result = parse(raw, mode)
        assert str(result) == label, raw


def run(c: OutputConstraint, pieces: list[bytes]) -> ConstraintState | None:
    state: ConstraintState | None = ConstraintState()
    for p in pieces:
        if state is None:
            return None
        state = c.advance(state, TOK[p])
    return state


def test_flow_tags() -> None:
    c = OutputConstraint(PIECES, BANNED, SCALES["1-3"].labels, FLOW_JUDGE_OUTPUT)
    ok = run(c, [b"<feedback>", b" Good", b"</feedback>", b"\n<score>", b"2"])
    assert ok is not None and ok.done and ok.label == "2"
    assert run(c, [b" ", b"<feedback>"]) is None  # the opener comes first
    assert run(c, [b"<feedback>", b"</feedback>"]) is None  # empty feedback
    assert run(c, [b"<feedback>", b" Good", b"<score>"]) is None  # "<score>" in the feedback
    assert run(c, [b"<feedback>", b" Good", b"</feedback>", b"a"]) is None  # text after it
    assert run(c, [b"<feedback>", b" Good", b"</feedback>", b"\n<score>", b"4"]) is None
    # A piece can close the marker and write the label: "<sc" + "ore>" .. ">4" is a 1-5 label.
    state = run(c, [b"<feedback>", b"x", b"</feedback>", b"<sc"])
    assert state is not None and state.phase == 0 and state.closed
    tokens, after = c.closing(state, None)
    assert b"".join(PIECES[t] for t in tokens) == b"ore>"
    assert sorted(c.label_tokens(after)) == ["1", "2", "3"]


def test_selene_result_counts_only_at_line_start() -> None:
    c = OutputConstraint(PIECES, BANNED, SCALES["yes-no"].labels, SELENE_OUTPUT)
    mid = run(c, [b"**Reasoning:** ", b" Good", b" ", b"**Result:**", b" Yes"])
    assert mid is not None and not mid.done  # mid-line: plain feedback text
    ok = run(c, [b"**Reasoning:** ", b" Good", b"\n\n", b"**Result:**", b" Yes"])
    assert ok is not None and ok.done and ok.label == "Yes"
    assert run(c, [b"**Reasoning:** ", b"\n"]) is None  # the first line must say something
    tokens, _ = c.closing(run(c, [b"**Reasoning:** ", b" Good"]), ord("d"))
    assert b"".join(PIECES[t] for t in tokens) == b"\n\n**Result:** "


@pytest.mark.parametrize("fmt", [PROMETHEUS_OUTPUT, SELENE_OUTPUT, FLOW_JUDGE_OUTPUT])
def test_reserve_covers_every_closing(fmt) -> None:
    """The engine keeps ``reserve`` tokens for the close plus the label: no closing text,
    from any state a walk reaches (the opener included), is longer."""
    labels = SCALES["1-5"].labels
    c = OutputConstraint(PIECES, BANNED, labels, fmt)
    rng = random.Random(1)
    for _ in range(200):
        state, out = ConstraintState(), b""
        for _ in range(rng.randrange(0, 30)):
            allowed = np.flatnonzero(c.allowed_mask(state))
            token = int(rng.choice(allowed))
            nxt = c.advance(state, token)
            assert nxt is not None
            if nxt.phase != 0:
                break
            state, out = nxt, out + PIECES[token]
        if state.phase != 0:
            continue
        tokens, after = c.closing(state, out[-1] if out else None)
        assert len(tokens) + 1 <= c.reserve
        assert set(c.label_tokens(after)) == set(labels)


def test_a_label_the_vocabulary_cannot_write_is_refused() -> None:
    pieces = [bytes([b]) for b in range(256)]
    with pytest.raises(ValueError, match="no single token writing the label"):
        OutputConstraint(pieces, np.zeros(256, dtype=bool), SCALES["yes-no"].labels, SELENE_OUTPUT)
