"""The output constraint: feedback, then the family's result marker, one label, end.

Every judge family writes a feedback and then a label (``families.OutputFormat``):

* Prometheus / M-Prometheus: ``{feedback} [RESULT] {label}``
* Selene: ``**Reasoning:** {feedback}`` then, on a line of its own, ``**Result:** {label}``
* Flow-Judge: ``<feedback>{feedback}</feedback>`` then ``<score>{label}`` (the closing
  ``</score>`` is the format's ``suffix``, appended to the answer when the result is built)

This module decides, token by token, whether a token keeps the output inside that
language. It works on the bytes of each token's piece, so it knows nothing about
llama.cpp: the runtime gives it the vocabulary's pieces once and asks about one sampled
token per step.

Why check the sampled token instead of masking the vocabulary at every step: a mask
costs a pass over the whole vocabulary (49k pieces for SmolLM2, 150k for Qwen2) per
token. Checking the one sampled token costs a few byte comparisons; only when it is
rejected (rare: the model tried to stop early or to break the format) does the runtime
ask for the full mask and resample. This is what llama.cpp's own sampler does with
grammars (common/sampling.cpp).

The language accepted (bytes), for an ``OutputFormat`` ``f``::

    FEEDBACK := bytes without f.closer (or f.marker when there is no closer) and
                without any of f.forbidden, with at least one non-space byte
    OUTPUT   := f.opener FEEDBACK f.closer WS* f.marker PREFIX LABEL   (then it stops)

where PREFIX is one of ``f.label_prefixes`` (``""`` or ``" "`` for Prometheus). With
``f.marker_at_line_start`` (Selene) the marker counts only at the start of a line (after
spaces/tabs at most); in mid-line it is plain text, since the parser reads whole lines.
The space or newline the model writes before ``[RESULT]`` is part of the feedback, so
both trained Prometheus forms (``... [RESULT] 4`` and ``...\\n[RESULT] 4``) pass
untouched, as does a leading ``Feedback:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .families import PROMETHEUS_OUTPUT, SCALES, WINNER_LABELS, OutputFormat

__all__ = [
    "MARKER",
    "SCORE_LABELS",
    "WINNER_LABELS",
    "ConstraintState",
    "OutputConstraint",
]

MARKER = PROMETHEUS_OUTPUT.marker
SCORE_LABELS = SCALES["1-5"].labels

_FEEDBACK, _AFTER, _DONE = 0, 1, 2
_WHITESPACE = frozenset(b" \t\r\n")
# Bytes that certainly start a character Python's str.strip() keeps (the parsers strip
# lines): printable ASCII, and UTF-8 lead bytes of no whitespace character (Unicode's
# spaces start with C2, E1, E2 or E3). Other bytes may belong to whitespace.
_CONTENT = frozenset(range(0x21, 0x7F)) | frozenset(range(0xC3, 0xE1)) | frozenset(
    range(0xE4, 0xF5)
)
# Where the current line stands (formats whose marker must start a line).
_MID_LINE, _LINE_START, _LINE_BLANKISH = 0, 1, 2


@dataclass(frozen=True)
class ConstraintState:
    """Where the output is. Immutable: a rejected token leaves the state as it was.

    ``phase`` 0 is the feedback (the opener, the feedback text, and for a format with a
    closer the whitespace after it): the engine closes it when the budget runs out.
    """

    phase: int = _FEEDBACK
    tail: bytes = b""  # FEEDBACK: the longest end of the text that begins a watched string
    content: bool = False  # FEEDBACK: a non-space byte outside watched strings was written
    after: bytes = b""  # AFTER: bytes written since the marker
    label: str | None = None  # DONE: the label written
    opened: int = 0  # FEEDBACK: bytes of the opener written so far
    closed: bool = False  # FEEDBACK: the closer was written; only whitespace and the marker
    # FEEDBACK, formats whose marker must start a line: _MID_LINE, _LINE_START (only
    # spaces/tabs since the last newline) or _LINE_BLANKISH (bytes that may be whitespace).
    line: int = _MID_LINE

    @property
    def done(self) -> bool:
        return self.phase == _DONE

    @property
    def matched(self) -> int:
        """Length of the partial watched string (marker prefix) the text ends with."""
        return len(self.tail)


class _Language:
    """The per-byte automaton of one output format and label set (memoised steps)."""

    def __init__(self, fmt: OutputFormat, labels: Sequence[bytes]) -> None:
        self.fmt = fmt
        self.end = fmt.closer or fmt.marker  # what ends the feedback text
        self.watched = (self.end, *(w for w in fmt.forbidden if w != self.end))
        self.prefixes = frozenset(w[:k] for w in self.watched for k in range(1, len(w)))
        self.longest = max(len(w) for w in self.watched)
        self._steps: dict[tuple[bytes, int], tuple[bytes, bytes, bytes | None]] = {}
        self.completions = {p + lb: lb.decode() for p in fmt.label_prefixes for lb in labels}
        self.partials = frozenset(
            c[:k] for c in self.completions for k in range(1, len(c))
        ) - set(self.completions)
        for c in self.completions:
            for d in self.completions:
                if c != d and d.startswith(c):
                    raise ValueError(f"ambiguous labels: {c!r} is the start of {d!r}")

    def body_step(self, tail: bytes, b: int) -> tuple[bytes, bytes, bytes | None]:
        """(committed bytes, new tail, watched string completed or None); memoised."""
        key = (tail, b)
        step = self._steps.get(key)
        if step is None:
            s = tail + bytes((b,))
            hit = next((w for w in self.watched if s.endswith(w)), None)
            if hit is not None:
                step = (s[: -len(hit)], b"", hit)
            else:
                step = (s, b"", None)
                for k in range(min(len(s), self.longest - 1), 0, -1):
                    if s[-k:] in self.prefixes:
                        step = (s[:-k], s[-k:], None)
                        break
            self._steps[key] = step
        return step

    def feed(self, state: ConstraintState, piece: bytes) -> ConstraintState | None:
        """The state after ``piece``, or None if the piece leaves the language."""
        if not piece or state.phase == _DONE:
            return None
        fmt = self.fmt
        opener = fmt.opener
        phase, tail, content, after = state.phase, state.tail, state.content, state.after
        opened, closed, line = state.opened, state.closed, state.line
        lines = fmt.marker_at_line_start or fmt.first_line_content
        last = len(piece) - 1
        for i, b in enumerate(piece):
            if phase == _AFTER:
                after += bytes((b,))
                label = self.completions.get(after)
                if label is not None:
                    return ConstraintState(_DONE, label=label) if i == last else None
                if after not in self.partials:
                    return None
            elif opened < len(opener):
                if b != opener[opened]:
                    return None
                opened += 1
            elif closed:  # after the closer: whitespace, then the marker
                s = tail + bytes((b,))
                if fmt.marker.startswith(s):
                    if s == fmt.marker:
                        phase, after, tail = _AFTER, b"", b""
                    else:
                        tail = s
                elif tail or b not in _WHITESPACE:
                    return None
            else:
                committed, tail, hit = self.body_step(tail, b)
                for c in committed:
                    if c == 0x0A:
                        if fmt.first_line_content and not content:
                            return None  # the parser keeps the first line: say something
                        line = _LINE_START if lines else _MID_LINE
                    elif c in _CONTENT:
                        content, line = True, _MID_LINE
                    elif line == _LINE_START and c not in b" \t":
                        line = _LINE_BLANKISH
                if hit is None:
                    continue
                if hit != self.end:
                    return None  # a forbidden string (Flow-Judge: "<score>" in the feedback)
                if fmt.marker_at_line_start and line != _LINE_START:
                    if line == _LINE_BLANKISH:
                        return None  # a stripped line would start with the marker
                    # Mid-line marker: plain text; its own end may begin the next one.
                    s, tail = hit, b""
                    for k in range(min(len(s), self.longest - 1), 0, -1):
                        if s[-k:] in self.prefixes:
                            tail = s[-k:]
                            break
                    content = True
                    continue
                if not content:
                    return None  # the feedback must say something before the result
                if fmt.closer:
                    closed = True
                else:
                    phase, after = _AFTER, b""
        if phase == _AFTER:
            return ConstraintState(_AFTER, after=after)
        return ConstraintState(_FEEDBACK, tail, content, b"", None, opened, closed, line)


class OutputConstraint:
    """Accepts or rejects tokens for one vocabulary, output format and label set.

    Built once per model, format and label set (the tables depend only on the
    vocabulary); the per-generation state is a :class:`ConstraintState` the caller carries.

    Args:
        pieces: the bytes of every token, indexed by token id.
        banned: tokens never allowed (end-of-generation and control tokens).
        labels: the labels that may follow the marker ("1".."5", "A"/"B", "Yes"/"No", ...).
        output_format: the family's format (default: Prometheus ``[RESULT]``).
    """

    def __init__(
        self,
        pieces: Sequence[bytes],
        banned: np.ndarray,
        labels: Sequence[str],
        output_format: OutputFormat = PROMETHEUS_OUTPUT,
    ) -> None:
        self.pieces = pieces
        self.format = output_format
        self.labels = tuple(label.encode() for label in labels)
        self.suffix = output_format.suffix
        self.n_vocab = len(pieces)
        self._banned = np.asarray(banned, dtype=bool)
        self._lang = _Language(output_format, self.labels)
        self._masks: dict[ConstraintState, np.ndarray] = {}
        # Tokens that can appear after the marker are few; index them by piece once.
        wanted = self._lang.partials | set(self._lang.completions)
        self._after_tokens: dict[bytes, list[int]] = {}
        # Pieces that could end a label (``] 5``, ``T]A``): a label at the very end.
        self._label_ending: dict[bytes, list[int]] = {}
        self._by_piece: dict[bytes, int] = {}
        for token, piece in enumerate(pieces):
            if not piece or self._banned[token]:
                continue
            if piece in wanted:
                self._after_tokens.setdefault(piece, []).append(token)
            if any(piece.endswith(lb) for lb in self.labels):
                self._label_ending.setdefault(piece, []).append(token)
            self._by_piece.setdefault(piece, token)
        self._labels_at: dict[ConstraintState, dict[str, list[int]]] = {}
        fmt = output_format
        # Tokens to keep in the budget for closing: the longest closing text and the label.
        # Closing texts run from anywhere in the opener, or complete a partial end/marker.
        end = self._lang.end
        after_end = (b"\n" + fmt.marker if fmt.closer else b"") + fmt.close_prefix
        texts = [fmt.opener[k:] + fmt.close_separator + end + after_end
                 for k in range(len(fmt.opener) + 1)]
        texts += [end[j:] + after_end for j in range(1, len(end))]
        texts += [fmt.marker[j:] + fmt.close_prefix for j in range(len(fmt.marker))]
        self.reserve = max(len(self.spell(t)) for t in texts) + 1
        _, ready = self.closing(ConstraintState(_FEEDBACK, content=True), None)
        missing = [lb for lb in labels if lb not in self.label_tokens(ready)]
        if missing:
            raise ValueError(
                f"the vocabulary has no single token writing the label(s) {missing} after "
                f"{fmt.marker.decode()!r}; this model cannot answer in the {fmt.name} format"
            )

    # -- per step --------------------------------------------------------------------
    def advance(self, state: ConstraintState, token: int) -> ConstraintState | None:
        """The state after ``token``, or None if the token is not allowed here."""
        if token < 0 or token >= self.n_vocab or self._banned[token]:
            return None
        return self._lang.feed(state, self.pieces[token])

    def allowed_mask(self, state: ConstraintState) -> np.ndarray:
        """Boolean mask over the vocabulary of the tokens allowed in ``state`` (cached)."""
        mask = self._masks.get(state)
        if mask is None:
            feed, pieces, banned = self._lang.feed, self.pieces, self._banned
            opener = self.format.opener
            if state.phase == _AFTER:
                mask = np.zeros(self.n_vocab, dtype=bool)
                for piece, tokens in self._after_tokens.items():
                    if feed(state, piece) is not None:
                        mask[tokens] = True
            elif state.phase == _FEEDBACK and state.opened < len(opener):
                rest = opener[state.opened :]  # only pieces agreeing with the opener
                mask = np.fromiter(
                    (
                        bool(p)
                        and not banned[t]
                        and (
                            rest.startswith(p)
                            or (p.startswith(rest) and feed(state, p) is not None)
                        )
                        for t, p in enumerate(pieces)
                    ),
                    dtype=bool,
                    count=self.n_vocab,
                )
            else:
                mask = np.fromiter(
                    (not banned[t] and feed(state, p) is not None for t, p in enumerate(pieces)),
                    dtype=bool,
                    count=self.n_vocab,
                )
            if not mask.any():  # cannot happen for a vocabulary with byte tokens
                raise RuntimeError(f"no token can continue the output from {state}")
            self._masks[state] = mask
        return mask

    def label_tokens(self, state: ConstraintState) -> dict[str, list[int]]:
        """Label -> the tokens that write that label (and end the output) from ``state``.

        Usually asked right after the marker, but a token can also close the marker
        and write the label at once (BPE pieces such as ``] 5`` or ``]A``), so any
        state works. Empty when no token can complete a label here. The runtime
        reads the model's distribution over these tokens where the label is written.
        Cached per state.
        """
        out = self._labels_at.get(state)
        if out is not None:
            return out
        out = {}
        if state.phase == _AFTER:
            candidates = self._after_tokens.items()
        elif state.phase == _DONE:
            candidates = {}.items()
        else:  # FEEDBACK: only pieces ending in a label can finish the output now
            candidates = self._label_ending.items()
        for piece, tokens in candidates:
            nxt = self._lang.feed(state, piece)
            if nxt is not None and nxt.done:
                out.setdefault(nxt.label or "", []).extend(tokens)
        self._labels_at[state] = out
        return out

    # -- closing the feedback when the budget runs out ---------------------------------
    def closing_text(self, state: ConstraintState, last_byte: int | None) -> bytes:
        """The bytes that close the feedback from ``state`` and open the label."""
        fmt = self.format
        if state.phase == _AFTER:
            return fmt.close_prefix if state.after == b"" else b""
        text = fmt.opener[state.opened :]
        if state.closed:
            return text + fmt.marker[len(state.tail) :] + fmt.close_prefix
        end = self._lang.end
        in_opener = state.opened < len(fmt.opener)
        at_line = state.line == _LINE_START and not in_opener
        if state.tail and end.startswith(state.tail) and (not fmt.marker_at_line_start or at_line):
            text += end[len(state.tail) :]
        else:
            prev = text[-1] if text else last_byte
            if fmt.marker_at_line_start:
                sep = b"" if at_line else fmt.close_separator
            elif prev is not None and prev in _WHITESPACE:
                sep = b""
            else:
                sep = fmt.close_separator
            text += sep + end
        if fmt.closer:
            text += b"\n" + fmt.marker
        return text + fmt.close_prefix

    def closing(
        self, state: ConstraintState, last_byte: int | None
    ) -> tuple[list[int], ConstraintState]:
        """Tokens that close the feedback and open the label, and the state after them.

        Used when the feedback budget runs out: instead of cutting the output off,
        the runtime writes these tokens so that the label still comes next.
        """
        after = state.after if state.phase == _AFTER and state.after else self.format.close_prefix
        return self.spell(self.closing_text(state, last_byte)), ConstraintState(_AFTER, after=after)

    def spell(self, text: bytes) -> list[int]:
        """Tokens whose pieces concatenate to exactly ``text`` (greedy longest match).

        Not the tokenizer's canonical split, but exact in bytes and independent of
        tokenizer quirks such as SentencePiece's added leading space.
        """
        tokens, i = [], 0
        while i < len(text):  # the texts spelled are a few bytes: try every end, longest first
            for j in range(len(text), i, -1):
                token = self._by_piece.get(text[i:j])
                if token is not None:
                    tokens.append(token)
                    i = j
                    break
            else:
                raise ValueError(f"the vocabulary cannot spell byte {text[i]:#04x}")
        return tokens
