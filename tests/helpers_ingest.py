"""Shared pieces for the ingest tests: the real token counter, document builders and the
chunk invariants every chunker must keep."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rag_cli.ingest import splitting
from rag_cli.ingest.tokens import HFTokenCounter, load_token_counter
from rag_cli.models import Chunk, Document, Segment

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED_EVAL = REPO.parent / "shared" / "eval"


@lru_cache(maxsize=1)
def real_counter() -> HFTokenCounter:
    """The bundled model's own tokenizer (Rust `tokenizers` only, no torch): milliseconds to load.

    A plain cached function rather than a fixture so that hypothesis tests can use it too
    (function-scoped fixtures and ``@given`` do not mix)."""
    return load_token_counter(EMBEDDING_MODEL)


def text_document(text: str, *, doc_id: str = "doc", title: str = "") -> Document:
    """A plain-text document with one paragraph segment per blank-line block, as TextLoader makes."""
    segments = [Segment(s, e, "paragraph") for s, e in splitting.paragraphs(text, 0, len(text))]
    return Document(doc_id=doc_id, source=f"/docs/{doc_id}.txt", kind="text", text=text, title=title,
                    segments=segments)


def markdown_document(text: str, *, doc_id: str = "doc.md", title: str = "doc") -> Document:
    from rag_cli.ingest.loaders import MarkdownLoader

    return MarkdownLoader().parse(text, doc_id=doc_id, source=f"/docs/{doc_id}", default_title=title)


def pdf_like_document(pages: list[str], *, doc_id: str = "book.pdf", title: str = "book") -> Document:
    """A document laid out the way PdfLoader lays out a PDF: pages joined by a blank line,
    ``page_starts`` at each page, a section starting at each page's first paragraph."""
    from rag_cli.ingest.loaders import paged_document

    return paged_document(pages, doc_id=doc_id, source=f"/docs/{doc_id}", title=title)


def uncovered(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Offsets of non-whitespace characters of ``text`` that no span covers."""
    covered = bytearray(len(text))
    for s, e in spans:
        covered[s:e] = b"\x01" * (e - s)
    return [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]


def assert_chunk_invariants(doc: Document, chunks: list[Chunk], counter: HFTokenCounter, size: int) -> None:
    """What every chunker promises, whatever the strategy and the document."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.start:chunk.end]
        assert chunk.text.strip(), f"empty chunk {chunk.index}"
        assert chunk.text == chunk.text.strip(), f"chunk {chunk.index} is not trimmed"
        assert chunk.embed_text.endswith(chunk.text)
        assert chunk.tokens == counter.count(chunk.embed_text)
        assert chunk.tokens <= size, f"chunk {chunk.index} has {chunk.tokens} tokens > {size}"
        assert chunk.doc_id == doc.doc_id and chunk.source == doc.source and chunk.kind == doc.kind
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    missing = uncovered(doc.text, [(c.start, c.end) for c in chunks])
    assert not missing, f"characters left out of every chunk: {[doc.text[i] for i in missing[:20]]} at {missing[:20]}"
