"""Chunkers with the real tokenizer of the bundled embedding model: the invariants every
strategy keeps on generated documents, then what each strategy does on hand-made ones."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers_ingest import (
    SAMPLES,
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

# Made-up words too: long ones are cut inside, where re-tokenizing a piece can change its count.
word = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS),
                 st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=99))
words = st.lists(word, min_size=1, max_size=14).map(" ".join)


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


@PROPERTY
@given(text=markdown_text(), size=st.integers(32, 254), prefix=st.sampled_from(["", "passage: "]))
def test_code_blocks_and_tables_that_fit_are_never_split(text, size, prefix):
    counter = real_counter()
    doc = markdown_document(text)
    chunks = make_chunker("structure", counter, size=size, overlap=size // 4, document_prefix=prefix).chunk(doc)
    # A header takes at most a third of the budget (plus the prefix); a block that fits
    # in what is left is never cut.
    room = size - size // 3 - counter.count(prefix) - 2
    for seg in doc.segments:
        if seg.kind not in ("code", "table"):
            continue
        span = splitting.trim(doc.text, seg.start, seg.end)
        if span and counter.count(doc.text[span[0]:span[1]]) <= room:
            assert any(c.start <= span[0] and span[1] <= c.end for c in chunks), doc.text[span[0]:span[1]]


# -- the structure chunker on hand-made documents ---------------------------------------

def sentences_about(topic: str, n: int) -> str:
    return " ".join(f"Sentence {k} tells you something useful about {topic} and why it matters." for k in range(n))


def structure(counter, size=128, overlap=0, **kw):
    return make_chunker("structure", counter, size=size, overlap=overlap, **kw)


def test_heading_paths(counter):
    text = (
        f"# Guide\n\n{sentences_about('the guide', 5)}\n\n"
        f"## Part A\n\n{sentences_about('part A', 5)}\n\n"
        f"### Detail\n\n{sentences_about('the detail', 5)}\n\n"
        f"## Part B\n\n{sentences_about('part B', 5)}\n"
    )
    doc = markdown_document(text)
    chunks = structure(counter).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 128)
    assert [c.heading for c in chunks] == [
        ("Guide",), ("Guide", "Part A"), ("Guide", "Part A", "Detail"), ("Guide", "Part B")]
    for c in chunks:
        topic = {"Guide": "the guide", "Part A": "part A", "Detail": "the detail", "Part B": "part B"}[c.heading[-1]]
        assert c.text.startswith("#") and c.text.endswith(f"about {topic} and why it matters.")
    # The H1 is the title: the header shows the heading path without repeating it.
    assert chunks[2].embed_text.startswith("Guide > Part A > Detail\n\n### Detail")


def test_code_block_and_table_that_fit_are_kept_whole(counter):
    code = "```python\n" + "\n".join(f"total_{k} = mix(flour, {k})" for k in range(5)) + "\n```"
    table = "| Ingredient | Weight |\n|---|---|\n" + "\n".join(f"| flour {k} | {k * 100} g |" for k in range(6))
    text = (f"# Bake\n\n{sentences_about('baking', 6)}\n\n{code}\n\n{sentences_about('mixing', 6)}\n\n"
            f"{table}\n\n{sentences_about('ovens', 6)}\n")
    doc = markdown_document(text)
    for size in (120, 160, 254):
        chunks = structure(counter, size=size, overlap=16).chunk(doc)
        assert_chunk_invariants(doc, chunks, counter, size)
        for block in (code, table):
            assert counter.count(block) < size // 2
            b0 = text.index(block)
            holders = [c for c in chunks if c.start <= b0 and b0 + len(block) <= c.end]
            assert holders, f"size {size}: block split"
            # ...and no chunk holds only part of it.
            for c in chunks:
                inside = max(0, min(c.end, b0 + len(block)) - max(c.start, b0))
                assert inside in (0, len(block)), f"size {size}: chunk {c.index} holds part of a block"


def test_an_oversized_code_block_is_cut_between_lines(counter):
    body = "\n".join(f"    result_{k} = mix(flour={k}, water={k * 3}, salt=0.{k})  # step {k}" for k in range(60))
    code = f"```python\n{body}\n```"
    text = f"# Code\n\nA long listing follows.\n\n{code}\n\nAfter the listing.\n"
    doc = markdown_document(text)
    chunks = structure(counter, size=64, overlap=0).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 64)
    b0, b1 = text.index(code), text.index(code) + len(code)
    inner = [c for c in chunks if b0 < c.end < b1 or b0 < c.start < b1]
    assert len(inner) > 3
    for c in chunks:
        if b0 < c.end < b1:
            assert text[c.end] == "\n", f"chunk {c.index} ends mid-line: {text[c.end - 20:c.end + 5]!r}"
        if b0 < c.start < b1:
            line_start = text.rindex("\n", 0, c.start) + 1
            assert text[line_start:c.start].strip() == "", f"chunk {c.index} starts mid-line"


def test_a_heading_only_section_joins_the_next_one(counter):
    text = (
        f"# Bread\n\n{sentences_about('bread', 6)}\n\n"
        "## Ingredients\n\n"
        f"### Flour\n\n{sentences_about('flour', 4)}\n\n"
        f"## Method\n\n{sentences_about('the method', 6)}\n"
    )
    doc = markdown_document(text)
    chunks = structure(counter, size=200).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 200)
    assert not any(c.text.strip() == "## Ingredients" for c in chunks)
    joined = next(c for c in chunks if "## Ingredients" in c.text)
    assert joined.text.startswith("## Ingredients\n\n### Flour")
    assert joined.heading == ("Bread", "Ingredients", "Flour")
    assert [c.heading for c in chunks] == [("Bread",), ("Bread", "Ingredients", "Flour"), ("Bread", "Method")]


def test_sections_that_are_big_enough_are_not_merged(counter):
    text = f"# A\n\n{sentences_about('a', 5)}\n\n# B\n\n{sentences_about('b', 5)}\n"
    doc = markdown_document(text)
    chunks = structure(counter, size=254, min_size=48).chunk(doc)
    assert [c.heading for c in chunks] == [("A",), ("B",)]


def test_pdf_pages_give_page_numbers(counter):
    pages = [sentences_about(f"page {n}", 6) for n in (1, 2, 3)]
    doc = pdf_like_document(pages)
    chunks = structure(counter, size=128).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 128)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (2, 2), (3, 3)]
    for c in chunks:
        assert f"about page {c.page_start} and" in c.text


def test_a_long_page_and_a_near_empty_page(counter):
    pages = [sentences_about("page one", 20), "Page 2", sentences_about("page three", 3)]
    doc = pdf_like_document(pages)
    chunks = structure(counter, size=64, overlap=0).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 64)
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 3
    assert all(c.page_start == c.page_end == 1 for c in chunks if c.end <= doc.page_starts[1])
    # The near-empty page 2 joins page 3 rather than making a chunk of its own.
    tail = next(c for c in chunks if "Page 2" in c.text)
    assert (tail.page_start, tail.page_end) == (2, 3)
    assert tail.text.startswith("Page 2")


def test_real_pdf_sample_chunks_know_their_pages(counter):
    from rag_cli.ingest.loaders import PdfLoader

    doc = PdfLoader().load(SAMPLES / "recipes" / "country-loaf.pdf", "country-loaf.pdf").documents[0]
    for strategy in STRATEGIES:
        chunks = make_chunker(strategy, counter, size=96, overlap=16).chunk(doc)
        assert_chunk_invariants(doc, chunks, counter, 96)
        assert {c.page_start for c in chunks} == {1, 2, 3}
        for c in chunks:
            assert c.page_start == doc.page_at(c.start) and c.page_end == doc.page_at(c.end - 1)


@pytest.mark.parametrize("overlap", [0, 24])
def test_overlap_within_a_section(counter, overlap):
    text = f"# Long\n\n{sentences_about('overlap', 30)}\n"
    doc = markdown_document(text)
    chunks = structure(counter, size=80, overlap=overlap).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 80)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        assert a.heading == b.heading
        if overlap:
            assert b.start < a.end, "consecutive chunks share text"
            shared = text[b.start:a.end]
            assert counter.count(shared) <= overlap
            assert shared.endswith("matters.") and shared.startswith("Sentence"), "whole sentences"
        else:
            assert a.end <= b.start, "no overlap asked, none given"


def test_no_overlap_across_sections(counter):
    text = f"# One\n\n{sentences_about('one', 12)}\n\n# Two\n\n{sentences_about('two', 12)}\n"
    doc = markdown_document(text)
    chunks = structure(counter, size=80, overlap=32).chunk(doc)
    two = text.index("# Two")
    first_of_two = next(c for c in chunks if c.heading == ("Two",))
    assert first_of_two.start == two
    assert all(c.end < two for c in chunks if c.heading == ("One",))


def test_context_header(counter):
    text = "---\ntitle: Baking notes\n---\n# Starter\n\n## Feeding\n\n" + sentences_about("feeding", 8) + "\n"
    doc = markdown_document(text)
    assert doc.title == "Baking notes"
    with_header = structure(counter, size=100, document_prefix="passage: ").chunk(doc)
    assert_chunk_invariants(doc, with_header, counter, 100)
    for c in with_header:
        assert c.embed_text.startswith("passage: Baking notes\n")
        assert c.embed_text == "passage: Baking notes\n" + " > ".join(c.heading) + "\n\n" + c.text
    assert any(c.heading == ("Starter", "Feeding") for c in with_header)

    bare = structure(counter, size=100, context_header=False, document_prefix="passage: ").chunk(doc)
    assert_chunk_invariants(doc, bare, counter, 100)
    assert all(c.embed_text == "passage: " + c.text for c in bare)
    no_prefix = structure(counter, size=100, context_header=False).chunk(doc)
    assert all(c.embed_text == c.text for c in no_prefix)


def test_a_long_title_is_capped_so_text_still_fits(counter):
    doc = text_document(sentences_about("titles", 10), title="An extremely long title " * 40)
    for strategy in STRATEGIES:
        chunks = make_chunker(strategy, counter, size=48, overlap=0).chunk(doc)
        assert_chunk_invariants(doc, chunks, counter, 48)
        header = chunks[0].embed_text[: -len(chunks[0].text)]
        assert header.startswith("An extremely long title")
        assert counter.count(header) <= 48 // 3


@pytest.mark.parametrize("path", ["guides/starter.md", "guides/baking-day.md", "faq.txt", "glossary.rst"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_documents(counter, path, strategy):
    from rag_cli.ingest.formats import loader_for

    file = SAMPLES / path
    doc = loader_for(file).load(file, path).documents[0]
    chunks = make_chunker(strategy, counter, size=128, overlap=24).chunk(doc)
    assert len(chunks) > 1
    assert_chunk_invariants(doc, chunks, counter, 128)
    if strategy == "structure" and doc.kind == "markdown":
        assert all(c.heading for c in chunks)


# -- fixed and sentence -----------------------------------------------------------------

@pytest.mark.parametrize("overlap", [0, 8, 20])
def test_fixed_windows_overlap_by_k_tokens(counter, overlap):
    text = sentences_about("fixed windows", 20)
    doc = text_document(text)
    chunks = make_chunker("fixed", counter, size=64, overlap=overlap).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 64)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        if overlap:
            assert b.start < a.end
            assert 1 <= counter.count(text[b.start:a.end]) <= overlap
        else:
            assert a.end <= b.start
    # Windows fill the budget: all but the last hold most of it.
    assert all(c.tokens > 64 * 3 // 4 for c in chunks[:-1])


def test_fixed_windows_ignore_structure(counter):
    text = "\n\n".join(f"Short paragraph {k}." for k in range(40))
    doc = text_document(text)
    chunks = make_chunker("fixed", counter, size=40, overlap=0).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 40)
    assert any("\n\n" in c.text for c in chunks)


def test_sentence_chunks_end_at_sentence_boundaries(counter):
    text = "\n".join(sentences_about(f"block {k}", 4) for k in range(6))
    doc = text_document(text)
    ends = {e for _, e in splitting.sentences(text, 0, len(text))}
    starts = {s for s, _ in splitting.sentences(text, 0, len(text))}
    for overlap in (0, 16):
        chunks = make_chunker("sentence", counter, size=64, overlap=overlap).chunk(doc)
        assert_chunk_invariants(doc, chunks, counter, 64)
        assert len(chunks) > 3
        for c in chunks:
            assert c.start in starts and c.end in ends, c.text


def test_sentence_chunker_cuts_an_oversized_sentence(counter):
    long_sentence = "This sentence goes on " + "and on " * 120 + "until it stops."
    text = f"Short one. {long_sentence} Another short one."
    doc = text_document(text)
    chunks = make_chunker("sentence", counter, size=48, overlap=0).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 48)
    assert len(chunks) > 3


# -- the registry -----------------------------------------------------------------------

def test_registry_names():
    assert set(CHUNKERS) == set(STRATEGIES)
    for name in STRATEGIES:
        assert make_chunker(name, real_counter(), size=100, overlap=10).strategy == name


def test_unknown_strategy_lists_the_valid_ones(counter):
    with pytest.raises(ConfigError) as info:
        make_chunker("semantic", counter, size=100, overlap=10)
    assert "semantic" in info.value.message
    assert info.value.hint is not None
    for name in STRATEGIES:
        assert name in info.value.hint


@pytest.mark.parametrize("size, overlap", [(100, 100), (100, 150), (1000, 300)])
def test_overlap_must_be_smaller_than_size(counter, size, overlap):
    with pytest.raises(ConfigError, match="overlap"):
        make_chunker("structure", counter, size=size, overlap=overlap)


def test_size_is_capped_at_what_the_model_can_embed(counter):
    chunker = make_chunker("fixed", counter, size=10_000, overlap=0)
    assert chunker.size == counter.max_tokens == 254
    chunks = chunker.chunk(text_document(sentences_about("caps", 60)))
    assert max(c.tokens for c in chunks) <= 254


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_and_whitespace_documents_give_no_chunks(counter, strategy):
    chunker = make_chunker(strategy, counter, size=64, overlap=8)
    assert chunker.chunk(text_document("")) == []
    assert chunker.chunk(text_document(" \n\n\t ")) == []


def test_chunks_carry_document_fields(counter):
    doc = text_document(sentences_about("fields", 3), doc_id="notes/a.txt", title="A")
    doc.metadata["lang"] = "en"
    (chunk,) = make_chunker("structure", counter, size=128, overlap=0).chunk(doc)
    assert (chunk.doc_id, chunk.source, chunk.kind, chunk.title) == (
        "notes/a.txt", "/docs/notes/a.txt.txt", "text", "A")
    assert chunk.metadata == {"lang": "en"}
    assert chunk.chunk_id == "notes/a.txt::0"
    assert chunk.page_start is None and chunk.page_end is None


def test_chunks_stay_in_document_order_when_a_window_is_cut_again(counter):
    # Long made-up words are cut inside; a window's text then tokenizes past the budget
    # and is cut again, and its last piece used to come after the next (overlapping)
    # window's start.
    text = ("iexvwojdtzfnofndgrzhbokffjlonntwjqrybjuzmsesugidgvvsxshfcbblszkcjwkyrpasikvsuulxhaulkqjt "
            "uhopvuzebixwmouhklkcgmwht jb j rawud kg v yuna darabgp d axu "
            "qtqagwbpcidqchqearffcuaoebvhgnwomx")
    doc = text_document(text)
    chunks = make_chunker("fixed", counter, size=43, overlap=18).chunk(doc)
    assert len(chunks) >= 3
    assert_chunk_invariants(doc, chunks, counter, 43)
