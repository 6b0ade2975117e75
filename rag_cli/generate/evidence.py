"""Quoted evidence: each sentence of an answer tied to the span of a chunk that supports it.

``quote`` splits the answer into sentences and, for each, finds the contiguous span of the chunks
the model was given (one or two of their sentences, trimmed to the clauses that matter) that holds
the most of its content words: a lexical score like ``answering.support``, no model, so it costs
milliseconds. Spans are searched in the chunks' own text (``Hit.text == Document.text[start:end]``),
not in the sources as the prompt showed them (merged, narrowed, cut, made plain), so that a span's
offsets are offsets into the document and its text is the document's text there.

``faithfulness`` is `rag eval`'s metric over the same spans: what the user is shown and the number
agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag_cli.generate.answering import content_words, strip_citations
from rag_cli.ingest import splitting
from rag_cli.models import Evidence, Hit

_CLAUSE_END = re.compile(r"[,;:—–](?=\s)")
_EDGE = " \t\n,;:—–"


@dataclass(frozen=True)
class _Piece:
    """A sentence of a chunk: its chunk-relative span and its content words."""

    chunk: int
    start: int
    end: int
    words: frozenset[str]


def _pieces(chunks: Sequence[Hit]) -> list[_Piece]:
    out = []
    for c, hit in enumerate(chunks):
        for s, e in splitting.sentences(hit.text, 0, len(hit.text)):
            out.append(_Piece(c, s, e, frozenset(content_words(hit.text[s:e]))))
    return out


def _tighten(text: str, start: int, end: int, wanted: frozenset[str]) -> tuple[int, int]:
    """The shortest run of clauses of ``text[start:end]`` holding as many ``wanted`` words as the
    whole span does, without the punctuation at its edges."""
    cuts = [m.end() for m in _CLAUSE_END.finditer(text, start, end)]
    bounds = [start, *cuts, end]
    clauses = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    # A cut follows punctuation and precedes whitespace, so no word straddles two clauses.
    held = [wanted.intersection(content_words(text[a:b])) for a, b in clauses]
    need = len(set().union(*held))
    best = (start, end)
    for i in range(len(clauses)):
        got: set[str] = set()
        for j in range(i, len(clauses)):
            a, b = clauses[i][0], clauses[j][1]
            if b - a >= best[1] - best[0]:
                break
            got |= held[j]
            if len(got) == need:
                best = (a, b)
                break
    a, b = best
    while a < b and text[a] in _EDGE:
        a += 1
    while b > a and text[b - 1] in _EDGE:
        b -= 1
    return a, b


def _page(hit: Hit) -> tuple[int | None, int | None]:
    # The store keeps each chunk's first and last page, not where its pages break: a span is on
    # one known page when its chunk is, else somewhere in the chunk's pages.
    return hit.page_start, hit.page_end


def quote(answer: str, chunks: Sequence[Hit], *, min_score: float) -> tuple[Evidence, ...]:
    """For each sentence of ``answer`` that has content words (a bare "Yes." has none and is left
    out), the span of ``chunks`` holding the largest share of them: one sentence of a chunk, or two
    adjacent ones when the second adds words, cut to the clauses that hold them; of equal shares the
    shorter span, then the earlier chunk. A sentence whose best share is below ``min_score`` is
    unsupported and carries no span."""
    pieces = _pieces(chunks)
    out: list[Evidence] = []
    for s, e in splitting.sentences(answer, 0, len(answer)):
        sentence = answer[s:e]
        wanted = frozenset(content_words(strip_citations(sentence)))
        if not wanted:
            continue
        best: tuple[float, int, int, int, int] | None = None  # score, -length, chunk, start, end
        for k, piece in enumerate(pieces):
            runs = [(piece.words, piece.end)]
            nxt = pieces[k + 1] if k + 1 < len(pieces) else None
            if nxt is not None and nxt.chunk == piece.chunk and nxt.words - piece.words:
                runs.append((piece.words | nxt.words, nxt.end))
            for words, end in runs:
                share = len(wanted & words) / len(wanted)
                key = (share, -(end - piece.start), -piece.chunk, piece.start, end)
                if share > 0 and (best is None or key[:3] > best[:3]):
                    best = key
        if best is None or best[0] < min_score:
            out.append(Evidence(sentence=sentence, supported=False, score=best[0] if best else 0.0))
            continue
        score, _, neg_chunk, a, b = best
        hit = chunks[-neg_chunk]
        a, b = _tighten(hit.text, a, b, wanted)
        first, last = _page(hit)
        out.append(Evidence(sentence=sentence, supported=True, score=score, doc_id=hit.doc_id,
                            chunk_id=hit.chunk_id, path=hit.source, page_start=first, page_end=last,
                            heading=hit.heading, start=hit.start + a, end=hit.start + b, text=hit.text[a:b]))
    return tuple(out)


def drop_unsupported(answer: str, evidence: Sequence[Evidence]) -> str:
    """``answer`` without its unsupported sentences (ask.unsupported = "drop"); "" when no
    sentence with content words is left."""
    unsupported = [e.sentence for e in evidence if not e.supported]
    if not unsupported:
        return answer
    if all(not e.supported for e in evidence):
        return ""
    kept, last = [], 0
    for s, e in splitting.sentences(answer, 0, len(answer)):
        if answer[s:e] in unsupported:
            unsupported.remove(answer[s:e])
            kept.append(answer[last:s])
            last = e
    kept.append(answer[last:])
    return re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()


def faithfulness(evidence: Sequence[Evidence]) -> float:
    """The share of the answer's content words that its quoted spans hold, each sentence weighed by
    its content words; an unsupported sentence holds none. 0.0 without evidence."""
    weights = [len(set(content_words(strip_citations(e.sentence)))) for e in evidence]
    total = sum(weights)
    if not total:
        return 0.0
    return sum(w * e.score for w, e in zip(weights, evidence) if e.supported) / total
