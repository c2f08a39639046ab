"""The output constraint: feedback text, then ``[RESULT]``, one label, end.

Prometheus answers ``{feedback} [RESULT] {score}`` (absolute, score 1-5) or
``{feedback} [RESULT] {A|B}`` (relative). This module decides, token by token,
whether a token keeps the output inside that language. It works on the bytes of
each token's piece, so it knows nothing about llama.cpp: the runtime gives it the
vocabulary's pieces once and asks about one sampled token per step.

Why check the sampled token instead of masking the vocabulary at every step: a
mask costs a pass over the whole vocabulary (49k pieces for SmolLM2, 32k for
Llama/Mistral) per token. Checking the one sampled token costs a few byte
comparisons; only when it is rejected (rare: the model tried to stop early or to
break the marker) does the runtime ask for the full mask and resample. This is
what llama.cpp's own sampler does with grammars (common/sampling.cpp).

The language accepted (bytes)::

    FEEDBACK  := any bytes without "[RESULT]", with at least one non-space byte
    OUTPUT    := FEEDBACK "[RESULT]" " "? LABEL      (then generation stops)

The space or newline the model writes before ``[RESULT]`` is part of the feedback,
so both trained forms (``... [RESULT] 4`` and ``...\\n[RESULT] 4``) pass untouched,
as does a leading ``Feedback:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MARKER", "SCORE_LABELS", "WINNER_LABELS", "ConstraintState", "OutputConstraint"]

MARKER = b"[RESULT]"
SCORE_LABELS = ("1", "2", "3", "4", "5")
WINNER_LABELS = ("A", "B")

_FEEDBACK, _AFTER, _DONE = 0, 1, 2
_WHITESPACE = frozenset(b" \t\r\n")


@dataclass(frozen=True)
class ConstraintState:
    """Where the output is. Immutable: a rejected token leaves the state as it was."""

    phase: int = _FEEDBACK
    matched: int = 0  # FEEDBACK: length of the marker prefix the text currently ends with
    content: bool = False  # FEEDBACK: a non-space byte outside the marker has been written
    after: bytes = b""  # AFTER: bytes written since the marker ("" or " ")
    label: str | None = None  # DONE: the label written

    @property
    def done(self) -> bool:
        return self.phase == _DONE


def _feed(state: ConstraintState, piece: bytes, labels: Sequence[bytes]) -> ConstraintState | None:
    """The state after ``piece``, or None if the piece leaves the language."""
    if not piece or state.phase == _DONE:
        return None
    phase, matched, content, after = state.phase, state.matched, state.content, state.after
    for i, b in enumerate(piece):
        if phase == _FEEDBACK:
            if b == MARKER[matched]:
                matched += 1
                if matched == len(MARKER):
                    if not content:
                        return None  # the feedback must say something before the result
                    phase, after = _AFTER, b""
                continue
            if matched:
                content = True  # a broken marker prefix ("[RES...") is ordinary text
            matched = 1 if b == MARKER[0] else 0
            if not matched and b not in _WHITESPACE:
                content = True
        else:  # _AFTER: " "? LABEL, and the label must end the piece
            after += bytes((b,))
            for label in labels:
                if after == label or after == b" " + label:
                    if i != len(piece) - 1:
                        return None
                    return ConstraintState(_DONE, label=label.decode())
            if after != b" ":
                return None
    if phase == _FEEDBACK:
        return ConstraintState(_FEEDBACK, matched, content)
    return ConstraintState(_AFTER, after=after)


class OutputConstraint:
    """Accepts or rejects tokens for one vocabulary and one label set.

    Built once per model and label set (the tables depend only on the vocabulary);
    the per-generation state is a :class:`ConstraintState` the caller carries.

    Args:
        pieces: the bytes of every token, indexed by token id.
        banned: tokens never allowed (end-of-generation and control tokens).
        labels: the labels that may follow the marker ("1".."5" or "A","B").
    """

    def __init__(self, pieces: Sequence[bytes], banned: np.ndarray, labels: Sequence[str]) -> None:
        self.pieces = pieces
        self.labels = tuple(label.encode() for label in labels)
        self.n_vocab = len(pieces)
        self._banned = np.asarray(banned, dtype=bool)
        self._masks: dict[ConstraintState, np.ndarray] = {}
        # Tokens that can appear after the marker are few; index them by piece once.
        wanted = {b" "} | set(self.labels) | {b" " + label for label in self.labels}
        self._after_tokens: dict[bytes, list[int]] = {}
        for token, piece in enumerate(pieces):
            if piece in wanted and not self._banned[token]:
                self._after_tokens.setdefault(piece, []).append(token)
        # Pieces that could end a label (``] 5``, ``T]A``): a label at the very end.
        self._label_ending: dict[bytes, list[int]] = {}
        for token, piece in enumerate(pieces):
            if not self._banned[token] and any(piece.endswith(lb) for lb in self.labels):
                self._label_ending.setdefault(piece, []).append(token)
        self._labels_at: dict[ConstraintState, dict[str, list[int]]] = {}
        self._by_piece: dict[bytes, int] = {}
        for token, piece in enumerate(pieces):
            if piece and not self._banned[token]:
                self._by_piece.setdefault(piece, token)
        # Tokens to keep in the budget for closing: the marker, a space and the label.
        self.reserve = len(self.spell(b" " + MARKER + b" ")) + 1

    # -- per step --------------------------------------------------------------------
    def advance(self, state: ConstraintState, token: int) -> ConstraintState | None:
        """The state after ``token``, or None if the token is not allowed here."""
        if token < 0 or token >= self.n_vocab or self._banned[token]:
            return None
        return _feed(state, self.pieces[token], self.labels)

    def allowed_mask(self, state: ConstraintState) -> np.ndarray:
        """Boolean mask over the vocabulary of the tokens allowed in ``state`` (cached)."""
        mask = self._masks.get(state)
        if mask is None:
            if state.phase == _AFTER:
                mask = np.zeros(self.n_vocab, dtype=bool)
                for piece, tokens in self._after_tokens.items():
                    if _feed(state, piece, self.labels) is not None:
                        mask[tokens] = True
            else:
                labels, pieces, banned = self.labels, self.pieces, self._banned
                mask = np.fromiter(
                    (
                        not banned[t] and _feed(state, pieces[t], labels) is not None
                        for t in range(self.n_vocab)
                    ),
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
            nxt = _feed(state, piece, self.labels)
            if nxt is not None and nxt.done:
                out.setdefault(nxt.label or "", []).extend(tokens)
        self._labels_at[state] = out
        return out

    # -- closing the feedback when the budget runs out ---------------------------------
    def closing(
        self, state: ConstraintState, last_byte: int | None
    ) -> tuple[list[int], ConstraintState]:
        """Tokens that close the feedback and open the label, and the state after them.

        Used when the feedback budget runs out: instead of cutting the output off,
        the runtime writes these tokens so that the label still comes next.
        """
        if state.phase == _AFTER:
            text = b" " if state.after == b"" else b""
        elif state.matched:
            text = MARKER[state.matched :] + b" "
        else:
            sep = b"" if last_byte is not None and last_byte in _WHITESPACE else b" "
            text = sep + MARKER + b" "
        return self.spell(text), ConstraintState(_AFTER, after=b" ")

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
