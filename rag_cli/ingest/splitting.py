"""Cutting text spans at paragraph, sentence, line and token boundaries.

Every function takes the full text and a (start, end) span and returns sub-spans with
their surrounding whitespace trimmed, so that offsets always point into the original.
"""

from __future__ import annotations

import re

from rag_cli.ingest.tokens import TokenCounter, piece_ends

Span = tuple[int, int]

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
# CJK full stops end a sentence with no space after them (CJK text has no spaces).
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[\"'”’)\]」』]*")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig figs no nos inc ltd co corp approx cf al ca "
    "jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k dept est vol pp ed eds op".split()
)


def trim(text: str, start: int, end: int) -> Span | None:
    """The span without its leading and trailing whitespace; None when nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _cut(text: str, start: int, end: int, cuts: list[int]) -> list[Span]:
    spans, prev = [], start
    for cut in [*cuts, end]:
        span = trim(text, prev, cut)
        if span:
            spans.append(span)
        prev = cut
    return spans


def paragraphs(text: str, start: int, end: int) -> list[Span]:
    """Blocks separated by blank lines."""
    return _cut(text, start, end, [m.start() for m in _BLANK_LINES.finditer(text, start, end)])


def lines(text: str, start: int, end: int) -> list[Span]:
    cuts, pos = [], text.find("\n", start, end)
    while pos != -1:
        cuts.append(pos)
        pos = text.find("\n", pos + 1, end)
    return _cut(text, start, end, cuts)


def sentences(text: str, start: int, end: int) -> list[Span]:
    """Sentences, by punctuation followed by whitespace, sparing common abbreviations and
    initials; blank lines always end a sentence."""
    cuts = [m.start() for m in _BLANK_LINES.finditer(text, start, end)]
    for m in _SENTENCE_END.finditer(text, start, end):
        stop = m.end()
        if text[m.start()] == ".":
            word_start = stop - (m.end() - m.start())
            while word_start > start and not text[word_start - 1].isspace():
                word_start -= 1
            word = text[word_start:m.start()].lower().strip("(\"'")
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
            nxt = stop
            while nxt < end and text[nxt].isspace():
                nxt += 1
            if nxt < end and text[nxt].islower():  # "approx. five", "e.g. this"
                continue
        cuts.append(stop)
    return _cut(text, start, end, sorted(set(cuts)))


class _TokenStream:
    """Token offsets of ``text[start:end]``, read a piece at a time (``tokens.piece_ends``) and
    forgotten once passed: a window never needs more than the tokens around it."""

    def __init__(self, text: str, start: int, end: int, counter: TokenCounter) -> None:
        self._text, self._counter = text, counter
        ends = piece_ends(text, start, end)
        self._pieces = iter(zip([start, *ends], ends))
        self._buf: list[tuple[int, int]] = []
        self._base = 0  # index of _buf[0] among all the tokens
        self.exhausted = False

    def known(self, want: int) -> int:
        """How many tokens there are, up to at least ``want`` if the text holds that many."""
        while self._base + len(self._buf) < want and not self.exhausted:
            piece = next(self._pieces, None)
            if piece is None:
                self.exhausted = True
                break
            a, b = piece
            self._buf.extend((s + a, e + a) for s, e in self._counter.token_spans(self._text[a:b]))
        return self._base + len(self._buf)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return self._buf[index - self._base]

    def forget_before(self, index: int) -> None:
        drop = index - self._base
        if drop > 4096:  # in big steps: deleting a list's head moves the rest
            del self._buf[:drop]
            self._base = index


def token_windows(text: str, start: int, end: int, counter: TokenCounter, budget: int,
                  overlap: int = 0) -> list[Span]:
    """Windows of at most ``budget`` tokens, each starting ``budget - overlap`` tokens after
    the previous one. Windows end at word boundaries where the tokenizer allows it."""
    offsets = _TokenStream(text, start, end, counter)
    if not offsets.known(1):
        span = trim(text, start, end)
        return [span] if span else []
    budget = max(1, budget)
    overlap = min(overlap, budget - 1)
    spans: list[Span] = []
    first, cursor = 0, start  # cursor: where the previous window ended (no text is left out)
    while True:
        count = offsets.known(first + budget + 1)
        last = min(first + budget, count) - 1
        if last + 1 < count:
            # Prefer to stop where the next token starts a new word, if one is within reach.
            probe = last
            while probe > first and offsets[probe + 1][0] == offsets[probe][1]:
                probe -= 1
            if probe > first + budget // 2:
                last = probe
        done = last + 1 >= count
        span = trim(text, min(cursor, offsets[first][0]), end if done else offsets[last][1])
        if span:
            spans.append(span)
        if done:
            break
        cursor = offsets[last][1]
        first = max(first + 1, last + 1 - overlap)
        # An overlap starts at a word, not inside one: a word's tail tokenizes differently
        # (the window would outgrow its budget) and reads badly.
        while first <= last and offsets[first][0] == offsets[first - 1][1]:
            first += 1
        offsets.forget_before(first - 1)
    return spans


def char_windows(text: str, start: int, end: int, size: int) -> list[Span]:
    """Pieces of at most ``size`` characters, cut at whitespace where the last quarter of a
    piece has some: the last resort for text made of tokens too long to cut between."""
    ends = piece_ends(text, start, end, max(1, size))
    return _cut(text, start, end, ends[:-1])
