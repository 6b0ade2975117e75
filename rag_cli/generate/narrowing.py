"""Narrowing the context: keep only the sentences of the retrieved sources that are closest to
the question (by the embedding model that is already loaded), so a small model reads little
and what it reads matters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from rag_cli.generate.prompts import Source
from rag_cli.ingest import splitting
from rag_cli.store.embedders import Embedder


def sentence_scores(question: str, sentences: Sequence[str], embedder: Embedder,
                    lexical: Callable[[str], float] | None = None, lexical_weight: float = 0.5) -> list[float]:
    """Each sentence's cosine similarity to the question, plus ``lexical_weight`` x
    ``lexical(sentence)`` when given: how `narrow` and `best_sentence` rank sentences."""
    q = embedder.embed_query(question)
    scores = [sum(a * b for a, b in zip(q, v)) for v in embedder.embed_documents(list(sentences))]
    if lexical is not None:
        scores = [score + lexical_weight * lexical(text) for score, text in zip(scores, sentences)]
    return scores


def narrow(question: str, sources: Sequence[Source], embedder: Embedder, *, keep: int,
           neighbours: int = 0, per_source: bool = False, lexical: Callable[[str], float] | None = None,
           lexical_weight: float = 0.5, best_first: bool = False) -> list[Source]:
    """The sources cut down to their ``keep`` best sentences (overall, or in each source with
    ``per_source``), plus ``neighbours`` sentences on each side of a kept one, in document
    order; sources left empty are dropped and the rest renumbered. A sentence scores its cosine
    similarity to the question, plus ``lexical_weight`` x ``lexical(sentence)`` when given (the
    share of the question's words it holds). With ``best_first`` the sources come in the order
    of their best kept sentence, else in their own. ``keep`` <= 0 returns the sources unchanged."""
    if keep <= 0 or not sources:
        return list(sources)
    pieces = [(i, s, e) for i, src in enumerate(sources) for s, e in splitting.sentences(src.text, 0, len(src.text))]
    if len(pieces) <= keep or (per_source and all(
            sum(1 for p in pieces if p[0] == i) <= keep for i in range(len(sources)))):
        return list(sources)
    scores = sentence_scores(question, [sources[i].text[s:e] for i, s, e in pieces], embedder, lexical, lexical_weight)
    order = sorted(range(len(pieces)), key=lambda k: scores[k], reverse=True)
    if per_source:
        best = [k for i in range(len(sources)) for k in [k for k in order if pieces[k][0] == i][:keep]]
    else:
        best = order[:keep]
    chosen = set()
    for k in best:
        for j in range(k - neighbours, k + neighbours + 1):
            if 0 <= j < len(pieces) and pieces[j][0] == pieces[k][0]:
                chosen.add(j)
    best_of = {i: max((scores[k] for k in best if pieces[k][0] == i), default=float("-inf"))
               for i in range(len(sources))}
    order_of_sources = sorted(range(len(sources)), key=lambda i: -best_of[i]) if best_first else range(len(sources))
    out: list[Source] = []
    for i in order_of_sources:
        src = sources[i]
        kept = [pieces[k] for k in sorted(chosen) if pieces[k][0] == i]
        if not kept:
            continue
        parts, last_end = [], None
        for _, s, e in kept:
            if last_end is not None:
                parts.append(" " if src.text[last_end:s].strip() == "" else " … ")
            parts.append(src.text[s:e])
            last_end = e
        out.append(replace(src, number=len(out) + 1, text="".join(parts)))
    return out


def best_sentence(question: str, sources: Sequence[Source], embedder: Embedder, *,
                  lexical: Callable[[str], float] | None = None,
                  lexical_weight: float = 0.5) -> tuple[int, str] | None:
    """(source number, sentence) of the sentence of ``sources`` closest to the question, scored
    as ``narrow`` scores them; None when the sources hold no sentence."""
    pieces = [(src.number, " ".join(src.text[s:e].split())) for src in sources
              for s, e in splitting.sentences(src.text, 0, len(src.text))]
    pieces = [(n, text) for n, text in pieces if any(ch.isalnum() for ch in text)]
    if not pieces:
        return None
    scores = sentence_scores(question, [text for _, text in pieces], embedder, lexical, lexical_weight)
    return pieces[max(range(len(pieces)), key=lambda k: (scores[k], -k))]
