"""Chunkers: a document in, chunks within the embedding model's token budget out.

Three strategies share one packing routine:

- ``structure`` keeps headings (Markdown) and pages (PDF) as section boundaries, keeps
  code blocks and tables whole when they fit, and cuts oversized blocks between
  paragraphs, then sentences, then lines, then tokens;
- ``sentence`` packs sentences, ignoring the document's structure;
- ``fixed`` takes token windows.

Every chunk's text is a contiguous span of the document (``doc.text[start:end]``); its
``embed_text`` (prefix, title and heading path, then the text) never exceeds ``size``
tokens of the embedding model.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from rag_cli.errors import ConfigError
from rag_cli.ingest import splitting
from rag_cli.ingest.splitting import Span
from rag_cli.ingest.tokens import TokenCounter, count_capped
from rag_cli.models import Chunk, Document, Segment

_LINE_KINDS = frozenset({"code", "table", "html"})  # cut between lines, never between "sentences"
# Most characters in a chunk, per token of its size. Real text has 3-6 characters a token; a
# word the tokenizer cannot split (over 100 characters for WordPiece) is one [UNK] token
# however long, so a hex dump or a 5 MB "word" would otherwise be one enormous chunk.
CHARS_PER_TOKEN = 32


class Chunker(Protocol):
    """A document in, chunks of at most ``size`` embedding-model tokens out."""

    @property
    def strategy(self) -> str: ...  # chunking.strategy: its name in CHUNKERS

    size: int  # most tokens in a chunk's embed_text
    overlap: int  # tokens shared by consecutive chunks

    def chunk(self, doc: Document) -> list[Chunk]: ...


@dataclass
class _Section:
    heading: tuple[str, ...]
    segments: list[Segment] = field(default_factory=list)


@dataclass
class BaseChunker:
    counter: TokenCounter
    size: int = 200
    overlap: int = 32
    min_size: int = 48
    context_header: bool = True
    document_prefix: str = ""
    strategy: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        self.size = min(self.size, self.counter.max_tokens)
        if self.overlap >= self.size:
            raise ConfigError(f"chunking.overlap ({self.overlap}) must be smaller than chunking.size ({self.size})")

    def chunk(self, doc: Document) -> list[Chunk]:
        """The strategy's chunks of ``doc`` (each subclass cuts its own way)."""
        raise NotImplementedError

    # -- the header in front of every chunk's text --------------------------------------
    def header(self, doc: Document, heading: tuple[str, ...]) -> str:
        parts: list[str] = []
        if self.context_header:
            if doc.title and not (heading and heading[0].strip().lower() == doc.title.strip().lower()):
                parts.append(doc.title)
            if heading:
                parts.append(" > ".join(heading))
        context = "\n".join(parts)
        cap = self.size // 3  # a long title must leave room for the text
        if context and self.counter.count(context) > cap:
            spans = self.counter.token_spans(context)
            context = context[: spans[cap - 1][1]] if cap > 0 else ""
        return self.document_prefix + (context + "\n\n" if context else "")

    def text_budget(self, header: str) -> int:
        return max(1, self.size - (self.counter.count(header) if header else 0))

    # -- cutting and packing -------------------------------------------------------------
    @property
    def max_chars(self) -> int:
        return CHARS_PER_TOKEN * self.size

    def fit_counted(self, text: str, span: Span, kind: str, budget: int,
                    tokens: int | None = None) -> list[tuple[Span, int | None]]:
        """Cut ``span`` into pieces of at most ``budget`` tokens (and ``max_chars``), at the
        coarsest boundary that works: paragraphs, sentences, lines, then tokens (code and
        tables: lines first); with the token count of each piece where it is already known. ``tokens``
        need only be exact up to ``budget`` (``tokens.count_capped``): a huge span is never
        tokenized whole just to learn that it does not fit."""
        if tokens is None:
            tokens = count_capped(self.counter, [text[span[0]:span[1]]], budget)[0]
        if tokens <= budget and span[1] - span[0] <= self.max_chars:
            return [(span, tokens)]
        cutters: list[Callable[[str, int, int], list[Span]]]
        if kind in _LINE_KINDS:
            cutters = [splitting.lines]
        else:
            cutters = [splitting.paragraphs, splitting.sentences, splitting.lines]
        for cut in cutters:
            parts = cut(text, *span)
            if len(parts) > 1:
                counts = count_capped(self.counter, [text[s:e] for s, e in parts], budget)
                out: list[tuple[Span, int | None]] = []
                for part, n in zip(parts, counts):
                    out.extend(self.fit_counted(text, part, kind, budget, n))
                return out
        return [(piece, None) for piece in self.windows(text, *span, budget)]

    def windows(self, text: str, start: int, end: int, budget: int, overlap: int = 0) -> list[Span]:
        """Token windows, with any window longer than ``max_chars`` (enormous tokens) cut again
        by characters, at whitespace where there is some."""
        out: list[Span] = []
        for s, e in splitting.token_windows(text, start, end, self.counter, budget, overlap):
            out.extend(splitting.char_windows(text, s, e, self.max_chars) if e - s > self.max_chars else [(s, e)])
        return out

    def counted(self, text: str, pieces: list[tuple[Span, int | None]]) -> tuple[list[Span], list[int]]:
        """The pieces' spans and token counts, counting only those not known yet."""
        missing = [k for k, (_, n) in enumerate(pieces) if n is None]
        found = self.counter.count_many([text[pieces[k][0][0]:pieces[k][0][1]] for k in missing])
        counts = [n or 0 for _, n in pieces]
        for k, n in zip(missing, found):
            counts[k] = n
        return [span for span, _ in pieces], counts

    def pack(self, units: list[Span], counts: list[int], budget: int) -> list[Span]:
        """Greedy packing of consecutive units into spans of at most ``budget`` tokens (and
        ``max_chars``), each new span starting with the last units of the previous one up to
        ``overlap`` tokens."""
        spans: list[Span] = []
        limit = self.max_chars
        i = 0
        while i < len(units):
            first, total = i, counts[i]
            j = i + 1
            while j < len(units) and total + counts[j] <= budget and units[j][1] - units[first][0] <= limit:
                total += counts[j]
                j += 1
            spans.append((units[first][0], units[j - 1][1]))
            if j >= len(units):
                break
            # Overlap: step back over whole units that fit in `overlap` and leave room for unit j.
            back, carried = j, 0
            while back - 1 > first and carried + counts[back - 1] <= self.overlap \
                    and carried + counts[back - 1] + counts[j] <= budget \
                    and units[j][1] - units[back - 1][0] <= limit:
                back -= 1
                carried += counts[back]
            i = back
        return spans

    def make_chunks(self, doc: Document, spans: list[tuple[Span, tuple[str, ...], str]]) -> list[Chunk]:
        """Chunks from (span, heading, header) triples, with exact token counts; a span that
        tokenizes past the budget once joined (rare) is cut again into token windows."""
        pieces_all: list[tuple[Span, str, int, tuple[str, ...]]] = []
        embed_texts = [header + doc.text[s:e] for (s, e), _, header in spans]
        counts = self.counter.count_many(embed_texts)
        for ((s, e), heading, header), embed_text, n in zip(spans, embed_texts, counts):
            pieces = [((s, e), embed_text, n)]
            if n > self.size:
                budget = self.text_budget(header)
                while True:
                    windows = self.windows(doc.text, s, e, budget)
                    texts = [header + doc.text[a:b] for a, b in windows]
                    ns = self.counter.count_many(texts)
                    if max(ns) <= self.size or budget == 1:
                        break
                    budget = max(1, budget - (max(ns) - self.size))
                pieces = list(zip(windows, texts, ns))
            pieces_all.extend((span, text, count, heading) for span, text, count in pieces)
        # A span cut again can end past where the next (overlapping) span starts: keep
        # chunks in document order.
        pieces_all.sort(key=lambda piece: piece[0])
        return [
            Chunk(doc_id=doc.doc_id, source=doc.source, kind=doc.kind, index=index,
                  text=doc.text[a:b], start=a, end=b, tokens=count, embed_text=text,
                  heading=heading, page_start=doc.page_at(a), page_end=doc.page_at(b - 1),
                  title=doc.title, metadata=doc.metadata, ocr=doc.ocr_between(doc.page_at(a), doc.page_at(b - 1)))
            for index, ((a, b), text, count, heading) in enumerate(pieces_all)
        ]

    @staticmethod
    def headings_at(doc: Document, offsets: list[int]) -> list[tuple[str, ...]]:
        """The heading path at each offset (one pass over the segments, not one per offset)."""
        starts = [seg.start for seg in doc.segments]
        out = []
        for offset in offsets:
            i = bisect.bisect_right(starts, offset) - 1
            out.append(doc.segments[i].heading if i >= 0 else ())
        return out


class StructureChunker(BaseChunker):
    """Sections by heading (Markdown) or page (PDF), then blocks, then sentences."""

    strategy = "structure"

    def chunk(self, doc: Document) -> list[Chunk]:
        out: list[tuple[Span, tuple[str, ...], str]] = []
        text = doc.text
        for section in self._sections(doc):
            header = self.header(doc, section.heading)
            budget = self.text_budget(header)
            blocks = [(span, seg.kind) for seg in section.segments
                      if (span := splitting.trim(text, seg.start, seg.end))]
            if not blocks:
                continue
            sizes = count_capped(self.counter, [text[s:e] for (s, e), _ in blocks], budget)
            pieces = [piece for (span, kind), n in zip(blocks, sizes)
                      for piece in self.fit_counted(text, span, kind, budget, n)]
            units, counts = self.counted(text, pieces)
            out.extend((span, section.heading, header) for span in self.pack(units, counts, budget))
        return self.make_chunks(doc, out)

    def _sections(self, doc: Document) -> list[_Section]:
        sections: list[_Section] = []
        for seg in _complete(doc):
            if not sections or seg.starts_section:
                sections.append(_Section(heading=seg.heading))
            sections[-1].segments.append(seg)
        # A tiny section (a heading alone, a near-empty page) joins the next one when both fit.
        merged: list[_Section] = []
        # Exact up to `size`: beyond it a section never merges, and a whole book of one section
        # (a plain text file) is not tokenized just for this.
        sizes = count_capped(self.counter, [doc.text[s.segments[0].start:s.segments[-1].end] for s in sections],
                             self.size)
        k = 0
        while k < len(sections):
            current, size = sections[k], sizes[k]
            while size < self.min_size and k + 1 < len(sections) and size + sizes[k + 1] <= self.size:
                nxt = sections[k + 1]
                current = _Section(_joined_heading(current.heading, nxt.heading),
                                   current.segments + nxt.segments)
                size += sizes[k + 1]
                k += 1
            merged.append(current)
            k += 1
        return merged


class SentenceChunker(BaseChunker):
    """Sentences packed up to the budget, across blocks (not across pages' text order)."""

    strategy = "sentence"

    def chunk(self, doc: Document) -> list[Chunk]:
        header = self.header(doc, ())
        budget = self.text_budget(header)
        text = doc.text
        sentences = splitting.sentences(text, 0, len(text))
        if not sentences:
            return []
        sizes = count_capped(self.counter, [text[s:e] for s, e in sentences], budget)
        pieces = [piece for span, n in zip(sentences, sizes)
                  for piece in self.fit_counted(text, span, "paragraph", budget, n)]
        units, counts = self.counted(text, pieces)
        spans = self.pack(units, counts, budget)
        headings = self.headings_at(doc, [sp[0] for sp in spans])
        return self.make_chunks(doc, [(sp, heading, header) for sp, heading in zip(spans, headings)])


class FixedChunker(BaseChunker):
    """Windows of ``size`` tokens, ``overlap`` tokens apart."""

    strategy = "fixed"

    def chunk(self, doc: Document) -> list[Chunk]:
        header = self.header(doc, ())
        spans = self.windows(doc.text, 0, len(doc.text), self.text_budget(header), self.overlap)
        headings = self.headings_at(doc, [sp[0] for sp in spans])
        return self.make_chunks(doc, [(sp, heading, header) for sp, heading in zip(spans, headings)])


CHUNKERS: dict[str, type[BaseChunker]] = {
    "structure": StructureChunker,
    "sentence": SentenceChunker,
    "fixed": FixedChunker,
}


def make_chunker(strategy: str, counter: TokenCounter, *, size: int, overlap: int, min_size: int = 48,
                 context_header: bool = True, document_prefix: str = "") -> Chunker:
    """The chunker registered under ``strategy``."""
    try:
        cls = CHUNKERS[strategy]
    except KeyError:
        raise ConfigError(f"unknown chunking strategy {strategy!r}",
                          hint=f"valid strategies: {', '.join(CHUNKERS)}") from None
    return cls(counter=counter, size=size, overlap=overlap, min_size=min_size,
               context_header=context_header, document_prefix=document_prefix)


def _complete(doc: Document) -> list[Segment]:
    """The document's segments in order, with any text they leave out added as paragraphs
    (so that every character of the document belongs to some chunk)."""
    text = doc.text
    if not doc.segments:
        return [Segment(s, e, "paragraph") for s, e in splitting.paragraphs(text, 0, len(text))]
    out: list[Segment] = []
    pos = 0
    for seg in sorted(doc.segments, key=lambda s: s.start):
        if seg.start > pos and splitting.trim(text, pos, seg.start):
            heading = out[-1].heading if out else ()
            out.extend(Segment(s, e, "paragraph", heading) for s, e in splitting.paragraphs(text, pos, seg.start))
        start = max(seg.start, pos)
        if seg.end > start:
            out.append(Segment(start, seg.end, seg.kind, seg.heading, seg.starts_section))
            pos = seg.end
    if splitting.trim(text, pos, len(text)):
        heading = out[-1].heading if out else ()
        out.extend(Segment(s, e, "paragraph", heading) for s, e in splitting.paragraphs(text, pos, len(text)))
    return out


def _joined_heading(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The heading of two merged sections: the deeper one if one contains the other, else
    what they share."""
    if b[: len(a)] == a:
        return b
    if a[: len(b)] == b:
        return a
    common = []
    for x, y in zip(a, b):
        if x != y:
            break
        common.append(x)
    return tuple(common)
