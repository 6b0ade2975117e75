"""Loaders: bytes of a file in, documents with their structure out, or a DocumentError a
person can act on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from helpers_ingest import SAMPLES, SHARED_EVAL
from rag_cli.errors import DocumentError
from rag_cli.ingest.epub import EpubLoader
from rag_cli.ingest.formats import loader_for
from rag_cli.ingest.html import HtmlLoader
from rag_cli.ingest.loaders import (
    JsonlLoader,
    MarkdownLoader,
    PdfLoader,
    TextLoader,
    decode_text,
)
from rag_cli.ingest.word import DocxLoader
from rag_cli.models import Document

SAMPLE_PDF = SAMPLES / "recipes" / "country-loaf.pdf"


def load(loader, tmp_path: Path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return loader.load(path, name)


def only_document(loaded) -> Document:
    assert len(loaded.documents) == 1
    return loaded.documents[0]


def segment_texts(doc: Document, kind: str | None = None) -> list[str]:
    return [doc.text[s.start:s.end].strip() for s in doc.segments if kind is None or s.kind == kind]


def assert_segments_well_formed(doc: Document) -> None:
    for seg in doc.segments:
        assert 0 <= seg.start < seg.end <= len(doc.text)
    starts = [s.start for s in doc.segments]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(doc.segments, doc.segments[1:])), "segments do not overlap"


# -- choosing a loader ------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [
    ("a.md", "markdown"), ("b.MARKDOWN", "markdown"), ("c.txt", "text"), ("d.rst", "text"),
    ("e.pdf", "pdf"), ("f.jsonl", "jsonl"), ("g.ndjson", "jsonl"), ("h.docx", "docx"), ("i.DOCX", "docx"),
    ("h.html", "html"), ("i.HTM", "html"), ("j.xhtml", "html"), ("k.epub", "epub"),
])
def test_loader_for_suffix(name, kind):
    assert loader_for(Path(name)).kind == kind


def test_no_loader_for_unknown_types():
    assert loader_for(Path("photo.png")) is None
    assert loader_for(Path("Makefile")) is None


# -- Markdown ---------------------------------------------------------------------------

GUIDE = """\
---
title: "Baking day"
author: someone
# a YAML comment, not a heading
---
# Sourdough guide

An introduction.

## Mixing

Mix the flour and water.

Shaping by hand
---------------

Shape the dough. See [the glossary][gl].

[gl]: https://example.com/glossary "Glossary"

```python
# not a heading: inside a fence
def bake(minutes):
    return minutes
```

| Step | Minutes |
|------|---------|
| bake | 45      |

- first item
- second item

### Scoring

> A quote about scoring.

## Baking

Bake it.
"""


@pytest.fixture(scope="module")
def guide() -> Document:
    return MarkdownLoader().parse(GUIDE, doc_id="guide.md", source="/docs/guide.md", default_title="guide")


def test_markdown_front_matter_gives_the_title_and_is_a_block_of_its_own(guide):
    assert guide.title == "Baking day"  # front matter wins over the first H1, quotes stripped
    first = guide.segments[0]
    assert (first.start, first.kind, first.heading, first.starts_section) == (0, "code", (), False)
    assert guide.text[first.start:first.end].startswith("---\ntitle:")
    assert guide.text[first.start:first.end].rstrip().endswith("---")
    assert "a YAML comment, not a heading" not in [s.heading[-1] for s in guide.segments if s.heading]


def test_markdown_heading_paths(guide):
    headings = [(guide.text[s.start:s.end].strip(), s.heading) for s in guide.segments if s.kind == "heading"]
    assert headings == [
        ("# Sourdough guide", ("Sourdough guide",)),
        ("## Mixing", ("Sourdough guide", "Mixing")),
        ("Shaping by hand\n---------------", ("Sourdough guide", "Shaping by hand")),  # setext H2
        ("### Scoring", ("Sourdough guide", "Shaping by hand", "Scoring")),
        ("## Baking", ("Sourdough guide", "Baking")),
    ]
    assert all(s.starts_section for s in guide.segments if s.kind == "heading")
    assert not any(s.starts_section for s in guide.segments if s.kind != "heading")


def test_markdown_blocks_sit_under_their_heading(guide):
    by_text = {guide.text[s.start:s.end].strip(): s for s in guide.segments}
    assert by_text["Mix the flour and water."].heading == ("Sourdough guide", "Mixing")
    assert by_text["Mix the flour and water."].kind == "paragraph"
    assert by_text["> A quote about scoring."].kind == "quote"
    assert by_text["> A quote about scoring."].heading == ("Sourdough guide", "Shaping by hand", "Scoring")
    assert by_text["- first item\n- second item"].kind == "list"
    assert by_text["Bake it."].heading == ("Sourdough guide", "Baking")


def test_markdown_code_fence_is_one_block_and_hides_headings(guide):
    (code,) = [t for t in segment_texts(guide, "code") if t.startswith("```")]
    assert code == "```python\n# not a heading: inside a fence\ndef bake(minutes):\n    return minutes\n```"
    assert not any("not a heading" in h for s in guide.segments for h in s.heading)


def test_markdown_table_is_one_block(guide):
    assert segment_texts(guide, "table") == ["| Step | Minutes |\n|------|---------|\n| bake | 45      |"]


def test_markdown_link_reference_definition_is_kept_in_the_text(guide):
    # markdown-it gives no block for a link reference definition; its text stays in the
    # document (the chunker picks up any text between segments) and nothing shifts.
    definition = '[gl]: https://example.com/glossary "Glossary"'
    assert definition in guide.text
    at = guide.text.index(definition)
    assert not any(s.start <= at < s.end for s in guide.segments if s.kind != "paragraph")
    assert "Shape the dough. See [the glossary][gl]." in segment_texts(guide, "paragraph")
    assert_segments_well_formed(guide)


def test_markdown_text_is_kept_verbatim(guide):
    assert guide.text == GUIDE
    assert_segments_well_formed(guide)


def test_markdown_title_from_first_h1_then_file_name(tmp_path):
    doc = only_document(load(MarkdownLoader(), tmp_path, "notes.md", "Intro.\n\n# First\n\n# Second\n"))
    assert doc.title == "First"
    doc = only_document(load(MarkdownLoader(), tmp_path, "notes.md", "## Only an H2\n\nText.\n"))
    assert doc.title == "notes"
    assert doc.kind == "markdown" and doc.doc_id == "notes.md" and doc.source == str(tmp_path / "notes.md")


def test_markdown_front_matter_without_title_and_dots_terminator(tmp_path):
    doc = only_document(load(MarkdownLoader(), tmp_path, "x.md", "---\ndate: 2024\n...\n# Heading\n\nBody.\n"))
    assert doc.title == "Heading"
    assert doc.segments[0].kind == "code" and doc.text[: doc.segments[0].end] == "---\ndate: 2024\n...\n"


def test_markdown_heading_levels_can_skip(tmp_path):
    doc = only_document(load(MarkdownLoader(), tmp_path, "x.md", "# A\n\n### C\n\ntext\n\n## B\n\ntext\n\n# D\n"))
    assert [s.heading for s in doc.segments if s.kind == "heading"] == [("A",), ("A", "C"), ("A", "B"), ("D",)]


def test_markdown_with_windows_line_endings(tmp_path):
    data = b"# Title\r\n\r\nBody text.\r\n\r\n## Sub\r\n\r\nMore.\r\n"
    doc = only_document(load(MarkdownLoader(), tmp_path, "x.md", data))
    assert "\r" not in doc.text
    assert segment_texts(doc) == ["# Title", "Body text.", "## Sub", "More."]
    assert [s.heading for s in doc.segments][-1] == ("Title", "Sub")


def test_markdown_sample_files():
    for path in (SAMPLES / "guides").glob("*.md"):
        doc = only_document(MarkdownLoader().load(path, path.name))
        assert doc.text == path.read_text(encoding="utf-8")
        assert any(s.kind == "heading" for s in doc.segments)
        assert_segments_well_formed(doc)


def nested_markdown(nest: str, depth: int) -> str:
    if nest == "list":
        body = "".join("  " * i + f"- level{i} words\n" for i in range(depth))
    else:  # each quote level on a line of its own, then a blank quote line
        body = "".join(">" * (i + 1) + f" level{i} words\n" + ">" * (i + 1) + "\n" for i in range(depth))
    return "# Nested\n\nBefore the nesting.\n\n" + body + "\n## Results\n\nAfter the nesting.\n"


@pytest.mark.parametrize("depth", [10, 30, 100, 1000])
@pytest.mark.parametrize("nest", ["list", "quote"])
def test_markdown_nested_beyond_max_nesting_keeps_every_word_and_the_headings_after(nest, depth):
    """markdown-it-py makes no tokens below its maxNesting (20 in its commonmark preset; a list
    level takes two) and skips the rest of the enclosing block: for a list, the rest of the
    document, whose headings then started no section. A loader reading token contents would lose
    the deep text too. Blocks come from the top-level tokens' line ranges, nesting is allowed to
    100 levels, and below that what follows is parsed again: every word is in a block and a
    chunk, and the heading after the nesting starts its section."""
    from markdown_it import MarkdownIt

    from helpers_ingest import real_counter, uncovered
    from rag_cli.ingest.chunkers import make_chunker

    text = nested_markdown(nest, depth)
    tokens = MarkdownIt("commonmark").disable("inline").parse(text)
    if depth >= 30 or nest == "list":
        assert f"level{depth - 1} " not in " ".join(t.content for t in tokens)  # what the parser drops
    doc = MarkdownLoader().parse(text, doc_id="nested.md", source="/docs/nested.md", default_title="nested")
    assert_segments_well_formed(doc)
    assert not uncovered(doc.text, [(s.start, s.end) for s in doc.segments])
    assert segment_texts(doc)[-2:] == ["## Results", "After the nesting."]
    assert doc.segments[-1].heading == ("Nested", "Results") and doc.segments[-2].starts_section
    if depth <= 100:  # 1,000 quote levels are a megabyte of `>`: the blocks are what matter
        chunks = make_chunker("structure", real_counter(), size=200, overlap=32).chunk(doc)
        joined = " ".join(c.text for c in chunks)
        assert all(f"level{i} words" in joined for i in range(depth))


# -- plain text -------------------------------------------------------------------------

def test_text_paragraphs(tmp_path):
    content = "First paragraph,\nstill first.\n\n\nSecond.\n  \nThird.\n"
    doc = only_document(load(TextLoader(), tmp_path, "notes.txt", content))
    assert (doc.kind, doc.title, doc.text) == ("text", "notes", content)
    assert segment_texts(doc) == ["First paragraph,\nstill first.", "Second.", "Third."]
    assert all(s.kind == "paragraph" and s.heading == () for s in doc.segments)


def test_rst_is_read_as_text():
    path = SAMPLES / "glossary.rst"
    loaded = loader_for(path).load(path, "glossary.rst")
    doc = only_document(loaded)
    assert doc.kind == "text" and doc.title == "glossary"
    assert loaded.notes == [] and loaded.warnings == []
    assert len(doc.segments) > 5
    assert_segments_well_formed(doc)


def test_latin1_text_is_decoded_with_a_note(tmp_path):
    content = "Café crème, naïve résumé.\n\nSecond paragraph ±."
    loaded = load(TextLoader(), tmp_path, "old.txt", content.encode("latin-1"))
    assert only_document(loaded).text == content
    assert len(loaded.notes) == 1 and "not UTF-8" in loaded.notes[0] and "byte 3" in loaded.notes[0]
    assert loaded.warnings == []


def test_windows_1252_punctuation(tmp_path):
    content = "“Smart quotes” – and €5."
    loaded = load(TextLoader(), tmp_path, "w.txt", content.encode("cp1252"))
    assert only_document(loaded).text == content
    assert loaded.notes


def test_utf8_needs_no_note(tmp_path):
    loaded = load(TextLoader(), tmp_path, "u.txt", "Größe 日本語 ✓".encode())
    assert loaded.notes == [] and only_document(loaded).text == "Größe 日本語 ✓"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_unicode_encodings_with_and_without_bom(tmp_path, encoding):
    content = "Café au lait.\n\nA second paragraph, in UTF-16 or so."
    loaded = load(TextLoader(), tmp_path, "u.txt", content.encode(encoding))
    doc = only_document(loaded)
    assert doc.text == content
    assert loaded.notes == []
    assert segment_texts(doc) == ["Café au lait.", "A second paragraph, in UTF-16 or so."]


def test_line_endings_are_normalised(tmp_path):
    doc = only_document(load(TextLoader(), tmp_path, "crlf.txt", b"one\r\ntwo\r\n\r\nthree\rfour"))
    assert doc.text == "one\ntwo\n\nthree\nfour"


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
    b"text with a NUL \x00 and more \x00\x01\x02\x03 bytes" * 20,
])
def test_binary_file_is_a_document_error(tmp_path, content):
    with pytest.raises(DocumentError, match="binary") as info:
        load(TextLoader(), tmp_path, "blob.txt", content)
    assert "binary" in info.value.reason


def test_control_characters_without_nul_are_binary_too():
    with pytest.raises(DocumentError, match="binary"):
        decode_text(bytes(range(1, 32)) * 40)


def test_bad_utf16_after_a_bom_is_an_error():
    with pytest.raises(DocumentError, match="UTF-16"):
        decode_text(b"\xff\xfe" + "ok".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate


@pytest.mark.parametrize("loader", [TextLoader(), MarkdownLoader(), JsonlLoader(), DocxLoader(), HtmlLoader()],
                         ids=lambda x: x.kind)
@pytest.mark.parametrize("content", [b"", b"   \n\n\t\n"], ids=["empty", "blank"])
def test_empty_file_gives_no_documents(tmp_path, loader, content):
    loaded = load(loader, tmp_path, "empty" + loader.suffixes[0], content)
    assert loaded.documents == [] and loaded.warnings == []


@pytest.mark.parametrize("content", [
    b"<!DOCTYPE html><html><head><title>Only a title</title><script>var x = 1;</script></head><body></body></html>",
    b"<html><body><nav>Home | About</nav><!-- a comment --><footer>(c) 2024</footer></body></html>",
], ids=["title-only", "boilerplate-only"])
def test_html_without_content_gives_no_documents(tmp_path, content):
    assert load(HtmlLoader(), tmp_path, "empty.html", content).documents == []


def test_empty_epub_gives_no_documents(tmp_path):
    assert load(EpubLoader(), tmp_path, "empty.epub", b"").documents == []


def test_unreadable_file_is_a_document_error(tmp_path):
    with pytest.raises(DocumentError, match="cannot read"):
        TextLoader().load(tmp_path / "missing.txt", "missing.txt")


def test_given_bytes_are_used_instead_of_the_file(tmp_path):
    doc = only_document(TextLoader().load(tmp_path / "not-there.txt", "x", b"From memory."))
    assert doc.text == "From memory."


# -- PDF --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaf() -> Document:
    loaded = PdfLoader().load(SAMPLE_PDF, "recipes/country-loaf.pdf")
    assert loaded.warnings == []
    return only_document(loaded)


def test_pdf_pages(loaf):
    assert loaf.kind == "pdf" and loaf.title == "Country loaf" and loaf.metadata == {"pages": 3}
    assert len(loaf.page_starts) == 3 and loaf.page_starts[0] == 0
    headings = ["Country Loaf: Ingredients", "Country Loaf: Method", "Country Loaf: Troubleshooting"]
    for start, heading in zip(loaf.page_starts, headings):
        assert loaf.text[start:].startswith(heading)
    for start in loaf.page_starts[1:]:
        assert loaf.text[start - 2:start] == "\n\n"  # pages are joined by a blank line


def test_pdf_page_at(loaf):
    p2, p3 = loaf.page_starts[1], loaf.page_starts[2]
    assert loaf.page_at(0) == 1
    assert loaf.page_at(p2 - 1) == 1
    assert loaf.page_at(p2) == 2
    assert loaf.page_at(p3 - 1) == 2
    assert loaf.page_at(p3) == 3
    assert loaf.page_at(len(loaf.text) - 1) == 3
    assert Document("d", "s", "text", "no pages").page_at(3) is None


def test_pdf_segments_start_a_section_on_each_page(loaf):
    section_starts = [s.start for s in loaf.segments if s.starts_section]
    assert section_starts == loaf.page_starts
    assert_segments_well_formed(loaf)


def test_pdf_title_falls_back_to_the_file_name(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=str(SAMPLE_PDF))
    writer.add_metadata({"/Title": ""})
    path = tmp_path / "untitled.pdf"
    writer.write(path)
    assert only_document(PdfLoader().load(path, "untitled.pdf")).title == "untitled"


@pytest.mark.parametrize("content", [
    b"%PDF-1.7\n" + bytes(range(256)) * 20,
    b"%PDF-1.4\n",
    SAMPLE_PDF.read_bytes()[:2000],
    SAMPLE_PDF.read_bytes()[: SAMPLE_PDF.stat().st_size // 2],
    b"not a pdf at all",
], ids=["random-bytes", "header-only", "truncated-2k", "truncated-half", "not-pdf"])
def test_corrupt_pdf_is_a_document_error(tmp_path, content):
    with pytest.raises(DocumentError, match="corrupt or unreadable PDF"):
        load(PdfLoader(), tmp_path, "broken.pdf", content)


def _encrypted(user_password: str) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=str(SAMPLE_PDF))
    writer.encrypt(user_password, owner_password="owner-secret")  # RC4: no cryptography package needed
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_with_a_password_is_a_document_error(tmp_path):
    with pytest.raises(DocumentError, match="password"):
        load(PdfLoader(), tmp_path, "locked.pdf", _encrypted("secret"))


def test_pdf_encrypted_with_an_empty_user_password_opens(tmp_path, loaf):
    doc = only_document(load(PdfLoader(), tmp_path, "owner-only.pdf", _encrypted("")))
    assert doc.text == loaf.text
    assert doc.page_starts == loaf.page_starts


def test_pdf_without_text_is_a_document_error(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(DocumentError, match="no extractable text"):
        load(PdfLoader(), tmp_path, "scan.pdf", out.getvalue())


def test_pdf_blank_pages_keep_page_numbers(tmp_path, loaf):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.append(str(SAMPLE_PDF))
    path = tmp_path / "with-cover.pdf"
    writer.write(path)
    doc = only_document(PdfLoader().load(path, "with-cover.pdf"))
    assert doc.metadata["pages"] == 4 and len(doc.page_starts) == 4
    assert doc.page_at(doc.text.index("Country Loaf: Ingredients")) == 2
    assert doc.page_at(doc.text.index("Country Loaf: Troubleshooting")) == 4
    assert doc.text.strip() == loaf.text


# -- JSONL ------------------------------------------------------------------------------

def jsonl(*records) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def test_jsonl_records(tmp_path):
    content = jsonl(
        {"id": "a", "title": "  Alpha ", "text": "First text.", "year": 2020, "score": 0.5, "ok": True,
         "meta": {"lang": "en", "deep": {"x": 1}}, "tags": ["x", "y"], "missing": None},
        {"_id": 42, "text": "Numbered."},
        {"id": 7, "_id": "ignored", "text": "Both ids."},
    )
    loaded = load(JsonlLoader(), tmp_path, "corpus.jsonl", content)
    assert loaded.warnings == []
    a, b, c = loaded.documents
    assert (a.doc_id, a.title, a.text, a.kind) == ("a", "Alpha", "First text.", "jsonl")
    assert a.source == str(tmp_path / "corpus.jsonl")
    assert a.metadata == {
        "year": 2020, "score": 0.5, "ok": True,
        "meta.lang": "en", "meta.deep": '{"x": 1}',  # one level flattened, deeper kept as JSON text
        "tags": '["x", "y"]',
    }
    assert (b.doc_id, b.text, b.title, b.metadata) == ("42", "Numbered.", "", {})
    assert c.doc_id == "7" and c.metadata == {}


def test_jsonl_bad_lines_are_dropped_with_warnings_naming_the_line(tmp_path):
    content = jsonl(
        {"id": "ok1", "text": "Fine."},          # 1
        "{not json",                             # 2
        "",                                      # 3: blank lines are skipped silently
        {"text": "No id here."},                 # 4
        {"id": "empty", "text": "   "},          # 5
        {"id": "ok1", "text": "Again."},         # 6
        [1, 2, 3],                               # 7
        {"id": True, "text": "Boolean id."},     # 8
        {"id": "", "text": "Empty id."},         # 9
        {"id": "n", "text": 12},                 # 10
        {"id": "t", "title": "Title only"},      # 11: the title becomes the text
        {"id": "ok2", "text": "Also fine."},     # 12
        {"id": "bare"},                          # 13
        {"id": "nul", "text": None},             # 14
    )
    loaded = load(JsonlLoader(), tmp_path, "c.jsonl", content)
    assert [d.doc_id for d in loaded.documents] == ["ok1", "t", "ok2"]
    assert loaded.documents[0].text == "Fine."  # the first of a duplicate id is kept
    assert loaded.documents[1].text == "Title only"
    warned = {int(w.split(":")[0].removeprefix("line ")): w for w in loaded.warnings}
    assert sorted(warned) == [2, 4, 5, 6, 7, 8, 9, 10, 13, 14]
    assert "not valid JSON" in warned[2]
    assert "no 'id'" in warned[4] and "no 'id'" in warned[8] and "no 'id'" in warned[9]
    assert "no text" in warned[5] and "record 'bare' has no text" in warned[13] and "no text" in warned[14]
    assert "duplicate id 'ok1'" in warned[6] and "line 1" in warned[6]
    assert "not a JSON object" in warned[7]
    assert "must be strings" in warned[10]


def test_jsonl_windows_line_endings_and_bom(tmp_path):
    content = ("\ufeff" + jsonl({"id": "a", "text": "x\r\ny"}, {"id": "b", "text": "z"})).replace("\n", "\r\n")
    loaded = load(JsonlLoader(), tmp_path, "c.jsonl", content)
    assert [d.doc_id for d in loaded.documents] == ["a", "b"]
    assert loaded.documents[0].text == "x\ny"
    assert loaded.warnings == []


def test_jsonl_scifact_corpus_head(tmp_path):
    lines = (SHARED_EVAL / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    loaded = load(JsonlLoader(), tmp_path, "corpus.jsonl", "\n".join(lines) + "\n")
    assert loaded.warnings == [] and loaded.notes == []
    assert len(loaded.documents) == 50
    records = [json.loads(line) for line in lines]
    assert [d.doc_id for d in loaded.documents] == [str(r["id"]) for r in records]
    for doc, record in zip(loaded.documents, records):
        assert doc.title == record["title"].strip() and doc.title
        assert doc.text == record["text"]
        assert doc.metadata == {}
