"""Chunkers with the real tokenizer of the bundled embedding model: the invariants every
strategy keeps on generated documents, then what each strategy does on hand-made ones."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_ingest import (
    assert_chunk_invariants,
    markdown_document,
    pdf_like_document,
    real_counter,
    text_document,
)
from rag_cli.errors import ConfigError
from rag_cli.ingest import splitting
from rag_cli.ingest.chunkers import CHUNKERS, make_chunker
from rag_cli.models import Chunk, Document

STRATEGIES = ("structure", "sentence", "fixed")
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def counter():
    return real_counter()


# -- generated documents ----------------------------------------------------------------

WORDS = (
    "the a of bread flour water salt starter dough loaf oven crust crumb rise proof fold knead "
    "temperature hydration gluten yeast bacteria culture jar scale gram minutes hours overnight "
    "e.g. i.e. Dr. Mr. etc. approx. J. R. 3.5 75% 1,000 2024-01-01 café naïve Größe 日本語 "
    "—dash (parenthesis) [bracket] \"quoted\" it's well-known https://example.com/a/b?c=d "
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis "
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz x_y_z snake_case CamelCaseWord"
).split()

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=14).map(" ".join)


@st.composite
def sentence(draw) -> str:
    body = draw(words)
    return body[:1].upper() + body[1:] + draw(st.sampled_from([".", ".", "!", "?", "", "...", ".\"", ")."]))


@st.composite
def paragraph(draw) -> str:
    parts = draw(st.lists(sentence(), min_size=1, max_size=8))
    return "".join(p + draw(st.sampled_from([" ", " ", "\n", "  "])) for p in parts).rstrip()


@st.composite
def prose_text(draw) -> str:
    paras = draw(st.lists(paragraph(), min_size=1, max_size=8))
    out = draw(st.sampled_from(["", "\n", "  \n"]))
    for p in paras:
        out += p + draw(st.sampled_from(["\n\n", "\n\n\n", "\n \t\n", "\n"]))
    return out


CODE_LINES = st.sampled_from([
    "def f(x):", "    return x * 2", "for i in range(10):", "    print(i, file=sys.stderr)",
    "x = {'a': 1, 'b': [1, 2, 3]}", "", "    # a comment. With a full stop. And another", "}",
    "if (a && b) { c(); }", "SELECT name, count(*) FROM loaves GROUP BY name;",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
])


@st.composite
def code_block(draw) -> str:
    lang = draw(st.sampled_from(["", "python", "sql"]))
    body = draw(st.lists(CODE_LINES, min_size=1, max_size=40))
    return f"```{lang}\n" + "\n".join(body) + "\n```"


@st.composite
def table_block(draw) -> str:
    cols = draw(st.integers(1, 4))
    cell = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
    header = "| " + " | ".join(draw(cell) for _ in range(cols)) + " |"
    rows = ["| " + " | ".join(draw(cell) for _ in range(cols)) + " |" for _ in range(draw(st.integers(1, 25)))]
    return "\n".join([header, "|" + "---|" * cols, *rows])


@st.composite
def list_block(draw) -> str:
    items = draw(st.lists(sentence(), min_size=1, max_size=10))
    ordered = draw(st.booleans())
    return "\n".join(f"{k + 1}. {s}" if ordered else f"- {s}" for k, s in enumerate(items))


@st.composite
def heading_block(draw) -> str:
    return "#" * draw(st.integers(1, 4)) + " " + draw(words)


@st.composite
def markdown_text(draw) -> str:
    blocks = draw(st.lists(
        st.one_of(heading_block(), heading_block(), paragraph(), code_block(), table_block(), list_block(),
                  paragraph().map(lambda p: "> " + p.replace("\n", "\n> "))),
        min_size=1, max_size=12))
    front = draw(st.sampled_from(["", "---\ntitle: Generated\n---\n"]))
    return front + "\n\n".join(blocks) + draw(st.sampled_from(["", "\n", "\n\n"]))


# Arbitrary characters too: control characters, lone combining marks, emoji, tabs, CR.
raw_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400,
)


@st.composite
def chunker_settings(draw) -> dict:
    size = draw(st.integers(32, 254))
    return {
        "size": size,
        "overlap": draw(st.integers(0, size // 2)),
        "context_header": draw(st.booleans()),
        "document_prefix": draw(st.sampled_from(["", "passage: ", "search_document: "])),
    }


def _chunk(strategy: str, doc: Document, cfg: dict) -> list[Chunk]:
    chunker = make_chunker(strategy, real_counter(), **cfg)
    return chunker.chunk(doc)


# -- invariants on generated documents --------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPERTY
@given(text=prose_text(), cfg=chunker_settings(), title=st.sampled_from(["", "Notes", "A long title " * 12]))
def test_invariants_on_prose(strategy, text, cfg, title):
    doc = text_document(text, title=title)
    chunks = _chunk(strategy, doc, cfg)
    assert_chunk_invariants(doc, chunks, real_counter(), cfg["size"])
    assert chunks, "a document with text gives at least one chunk"


@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPERTY
@given(text=markdown_text(), cfg=chunker_settings())
def test_invariants_on_markdown(strategy, text, cfg):
    doc = markdown_document(text)
    chunks = _chunk(strategy, doc, cfg)
    assert_chunk_invariants(doc, chunks, real_counter(), cfg["size"])


@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPERTY
@given(pages=st.lists(prose_text().map(str.strip), min_size=1, max_size=5), cfg=chunker_settings())
def test_invariants_on_pdf_like_documents(strategy, pages, cfg):
    doc = pdf_like_document(pages)
    chunks = _chunk(strategy, doc, cfg)
    assert_chunk_invariants(doc, chunks, real_counter(), cfg["size"])
    for c in chunks:
        assert c.page_start == doc.page_at(c.start)
        assert c.page_end == doc.page_at(c.end - 1)
        assert c.page_start <= c.page_end


@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPERTY
@given(text=raw_text, cfg=chunker_settings())
def test_invariants_on_arbitrary_characters(strategy, text, cfg):
    doc = text_document(text)
    chunks = _chunk(strategy, doc, cfg)
    assert_chunk_invariants(doc, chunks, real_counter(), cfg["size"])
    assert bool(chunks) == bool(text.strip())
