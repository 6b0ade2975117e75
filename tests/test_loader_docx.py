"""The DOCX loader (ingest/word.py): structure as the Markdown loader lays it out, metadata for
--where, and every bad .docx a DocumentError naming what is wrong. Files are built in tmp_path
(tests/docx_files.py)."""

from __future__ import annotations

import io
import json
import resource
import time
import zipfile
from pathlib import Path

import pytest

from docx_files import (
    ENCRYPTED_DOCX,
    WORD_97_DOC,
    compound_file,
    simple_docx,
    structured_docx,
    table_docx,
    write,
    zip_bomb_docx,
)
from helpers_ingest import assert_chunk_invariants, real_counter
from indexing_helpers import invoke, settings_in
from rag_cli.errors import DocumentError
from rag_cli.ingest import word
from rag_cli.ingest.chunkers import make_chunker
from rag_cli.ingest.formats import loader_for
from rag_cli.ingest.word import MAX_DOCUMENT_XML_BYTES, DocxLoader
from rag_cli.models import Document

NO_SERVE = {"RAG_NO_SERVE": "1"}


def load_docx(data: bytes, name: str = "handbook.docx"):
    return DocxLoader().load(Path("/docs") / name, name, data)


@pytest.fixture(scope="module")
def handbook() -> Document:
    loaded = load_docx(structured_docx())
    assert loaded.warnings == [] and len(loaded.documents) == 1
    return loaded.documents[0]


def blocks(doc: Document) -> list[tuple[str, tuple[str, ...], str]]:
    return [(s.kind, s.heading, doc.text[s.start:s.end]) for s in doc.segments]


# -- structure ----------------------------------------------------------------------------

def test_docx_is_laid_out_as_markdown_with_the_blocks_in_body_order(handbook) -> None:
    assert handbook.kind == "docx" and loader_for(Path("a.DOCX")).kind == "docx"
    t = "Quince handbook"  # the Title paragraph: above Heading 1
    assert [(kind, heading) for kind, heading, _ in blocks(handbook)] == [
        ("heading", (t,)), ("paragraph", (t,)),
        ("heading", (t, "Growing")), ("paragraph", (t, "Growing")),
        ("heading", (t, "Growing", "Soil")), ("paragraph", (t, "Growing", "Soil")), ("list", (t, "Growing", "Soil")),
        ("heading", (t, "Growing", "Soil", "Pruning")), ("list", (t, "Growing", "Soil", "Pruning")),
        ("table", (t, "Growing", "Soil", "Pruning")), ("quote", (t, "Growing", "Soil", "Pruning")),
        ("heading", (t, "Harvest")), ("paragraph", (t, "Harvest")), ("code", (t, "Harvest")),
        ("paragraph", (t, "Harvest")),
        ("heading", (t, "Notes")), ("paragraph", (t, "Notes")), ("paragraph", (t, "Notes")),
    ]
    assert [s.starts_section for s in handbook.segments] == [s.kind == "heading" for s in handbook.segments]
    texts = [text for _, _, text in blocks(handbook)]
    assert texts[0] == "# Quince handbook" and texts[2] == "# Growing" and texts[4] == "## Soil"
    assert texts[7] == "### Pruning"
    assert texts[6] == "- Loam\n  - Good drainage"
    assert texts[8] == "1. Remove dead wood\n2. Thin crowded shoots"
    assert texts[10] == "> A quince in the hand is worth two on the tree."
    assert texts[13] == "```\nripe = colour == 'gold'\n```"
    # Blocks are separated by a blank line, as in a Markdown file.
    assert all(handbook.text[a.end:b.start] == "\n\n" for a, b in zip(handbook.segments, handbook.segments[1:]))


def test_docx_table_rows_are_lines_with_merged_cells_once_and_nested_tables_flattened(handbook) -> None:
    table = next(text for kind, _, text in blocks(handbook) if kind == "table")
    assert table.split("\n") == [
        "| variety | yield | notes |",
        "| --- | --- | --- |",
        "| Vranja | 41 | early late |",  # python-docx's merge joins the texts; the merged cell is read once
        "| Meech nested, cell | 12 |  |",  # the nested table inside the first cell
    ]


def test_docx_hyperlink_text_footnotes_and_endnotes_are_kept_and_page_headers_are_not(handbook) -> None:
    text = handbook.text
    assert "Read the medlar society's guide before picking.[^e1]" in text
    assert "in a sheltered spot.[^1]" in text
    assert text.endswith("# Notes\n\n[^1]: Quinces need a cold winter to fruit.\n\n"
                         "[^e1]: The society was founded in 1911.\n")
    assert "CONFIDENTIAL" not in text and "footer" not in text


def test_docx_metadata_from_the_core_properties(handbook) -> None:
    assert handbook.title == "Quince handbook"
    assert handbook.metadata == {
        "title": "Quince handbook", "author": "Jane Doe", "last_modified_by": "John Roe", "subject": "Orchards",
        "keywords": "quince, medlar", "created": 20230506, "last_modified": 20240201}


def test_docx_title_from_core_then_title_or_heading_1_then_file_name() -> None:
    import docx

    assert load_docx(structured_docx(title="")).documents[0].title == "Quince handbook"  # the Title paragraph
    d = docx.Document()
    d.core_properties.title = ""
    d.add_paragraph("Before any heading.")
    d.add_heading("Second level first", level=2)
    d.add_heading("The first chapter", level=1)
    out = io.BytesIO()
    d.save(out)
    assert load_docx(out.getvalue()).documents[0].title == "The first chapter"
    assert load_docx(simple_docx("No heading at all."), "plain notes.docx").documents[0].title == "plain notes"


def test_docx_custom_styles_with_an_outline_level_are_headings_and_numbered_paragraphs_are_lists() -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    d = docx.Document()
    chapter = d.styles.add_style("Chapter Heading", WD_STYLE_TYPE.PARAGRAPH)
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), "0")
    chapter.element.get_or_add_pPr().append(outline)
    d.add_paragraph("Orchard chapter", style="Chapter Heading")
    d.add_paragraph("Under the custom heading.")
    # A Normal paragraph numbered directly (numPr in its own properties), as Word's toolbar does.
    number_id = d.styles["List Number"].element.pPr.numPr.numId.val
    for text in ("first step", "second step"):
        p = d.add_paragraph(text)
        numpr = p._p.get_or_add_pPr().get_or_add_numPr()
        numpr.get_or_add_ilvl().val = 0
        numpr.get_or_add_numId().val = number_id
    out = io.BytesIO()
    d.save(out)
    doc = load_docx(out.getvalue()).documents[0]
    assert blocks(doc) == [("heading", ("Orchard chapter",), "# Orchard chapter"),
                           ("paragraph", ("Orchard chapter",), "Under the custom heading."),
                           ("list", ("Orchard chapter",), "1. first step\n2. second step")]


def test_the_structure_chunker_cuts_docx_by_heading_and_keeps_the_table_whole(handbook) -> None:
    chunker = make_chunker("structure", real_counter(), size=64, overlap=8, min_size=8)
    chunks = chunker.chunk(handbook)
    assert_chunk_invariants(handbook, chunks, real_counter(), chunker.size)
    table = next(s for s in handbook.segments if s.kind == "table")
    assert any(c.start <= table.start and table.end <= c.end for c in chunks), "the table fits: one chunk holds it"
    t = "Quince handbook"
    assert {c.heading for c in chunks} >= {(t, "Growing", "Soil", "Pruning"), (t, "Harvest"), (t, "Notes")}


def test_a_20000_row_table_is_read_in_bounded_time_and_memory_and_cut_between_rows(tmp_path) -> None:
    data = table_docx(20_000)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    doc = load_docx(data, "ledger.docx").documents[0]
    seconds = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert [s.kind for s in doc.segments] == ["heading", "table"]
    rows = doc.text[doc.segments[1].start:doc.segments[1].end].split("\n")
    assert len(rows) == 20_001 and rows[2] == "| row1 cell0 value7 | row1 cell1 value8 | row1 cell2 value9 |"
    assert seconds < 20, f"{seconds:.1f} s"  # ~1 s here; generous for a shared machine
    assert grown_mb < 800, f"{grown_mb:.0f} MB"
    chunker = make_chunker("structure", real_counter(), size=128, overlap=16)
    chunks = chunker.chunk(doc)
    assert len(chunks) > 100
    table_chunks = [c for c in chunks if c.start >= doc.segments[1].start]
    assert all(c.text.startswith("|") and c.text.endswith("|") for c in table_chunks), "cut between rows"
    assert all(c.tokens <= chunker.size for c in chunks)


# -- bad files ------------------------------------------------------------------------------

def _truncated() -> bytes:
    data = structured_docx()
    return data[: len(data) // 2]


def _plain_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("photos/readme.txt", "holiday pictures")
    return out.getvalue()


def _odt() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", "<office:document-content/>")
    return out.getvalue()


def _broken_xml() -> bytes:
    src = zipfile.ZipFile(io.BytesIO(simple_docx("fine")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            body = src.read(info.filename)
            z.writestr(info, body[: len(body) // 2] if info.filename == "word/document.xml" else body)
    return out.getvalue()


BAD_FILES = {
    "truncated zip": (_truncated, "truncated or corrupt .docx"),
    "html named .docx": (lambda: b"<!DOCTYPE html>\n<html><body><p>Saved from the web</p></body></html>",
                         "an HTML file named .docx"),
    "mhtml": (lambda: b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=x\r\n\r\n", "MHTML"),
    "rtf": (lambda: b"{\\rtf1\\ansi Hello}", "an RTF file"),
    "word 97 doc": (lambda: compound_file(*WORD_97_DOC), "a Word 97-2003 .doc file, not .docx: save it as .docx"),
    "encrypted": (lambda: compound_file(*ENCRYPTED_DOCX), "password-protected"),
    "other ole": (lambda: compound_file("Workbook"), "an OLE compound file"),
    "pdf named .docx": (lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "not a .docx (not a zip archive)"),
    "plain zip": (_plain_zip, "a zip archive, not a Word document"),
    "odt": (_odt, "an OpenDocument (.odt) file"),
    "broken xml": (_broken_xml, "corrupt .docx"),
    "random bytes": (lambda: bytes(range(256)) * 8, "not a .docx"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_docx_is_a_document_error_naming_what_is_wrong(name) -> None:
    make, reason = BAD_FILES[name]
    with pytest.raises(DocumentError) as caught:
        load_docx(make())
    assert reason in caught.value.reason, caught.value.reason
    assert "\n" not in caught.value.reason


def test_a_zip_bomb_is_refused_before_it_is_unpacked() -> None:
    data = zip_bomb_docx(MAX_DOCUMENT_XML_BYTES + 1024)
    assert len(data) < MAX_DOCUMENT_XML_BYTES // 200  # ~130 KB for 128 MB
    started = time.perf_counter()
    with pytest.raises(DocumentError, match=r"word/document.xml unpacks to 134,218,\d+ bytes, more than the 128 MB"):
        load_docx(data)
    assert time.perf_counter() - started < 2  # refused from the zip directory, nothing unpacked


def test_the_whole_package_is_capped_too(monkeypatch) -> None:
    monkeypatch.setattr(word, "MAX_PACKAGE_BYTES", 10_000)
    with pytest.raises(DocumentError, match="unpacks to .* bytes, more than the 0 MB"):
        load_docx(simple_docx("small"))


def test_an_empty_docx_gives_no_documents_and_a_zero_byte_one_too() -> None:
    import docx

    out = io.BytesIO()
    docx.Document().save(out)
    assert load_docx(out.getvalue()).documents == []
    assert load_docx(simple_docx("", "   ")).documents == []
    assert load_docx(b"").documents == []


# -- through the commands -----------------------------------------------------------------

def test_chunk_preview_on_a_docx(tmp_path) -> None:
    write(tmp_path / "handbook.docx", structured_docx())
    result = invoke(["chunk-preview", "handbook.docx", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert preview["documents"] == 1 and preview["chunks"]
    headings = [c["heading"] for c in preview["chunks"]]
    assert any("Growing" in h for h in headings), headings
    plain = invoke(["chunk-preview", "handbook.docx"], tmp_path)
    assert plain.exit_code == 0 and "Quince handbook > Growing" in plain.stdout, plain.stdout


def test_docx_earlier_chunks_are_kept_when_the_file_turns_bad(tmp_path) -> None:
    from indexing_helpers import index_state

    docs = tmp_path / "docs"
    write(docs / "handbook.docx", structured_docx())
    assert invoke(["index", "docs"], tmp_path).exit_code == 0
    settings = settings_in(tmp_path, embedding__backend="hash")
    before = index_state(settings)
    assert any(k.startswith("handbook.docx::") for k in before)
    write(docs / "handbook.docx", compound_file(*ENCRYPTED_DOCX))  # saved again with a password
    result = invoke(["index", "docs", "--json"], tmp_path)
    assert result.exit_code == 3, result.output
    detail = json.loads(result.stdout)["details"][0]
    assert detail["status"] == "failed" and "password-protected" in detail["reason"]
    assert index_state(settings) == before


def test_where_author_and_heading_citations_on_a_real_index(tmp_path, real_embedder) -> None:
    from rag_cli.ask import Asker
    from rag_cli.cli.env import Env
    from rag_cli.cli.render import render_answer
    from rag_cli.indexer import index_paths
    from rag_cli.retrieve.filters import parse_where
    from rag_cli.retrieve.search import Searcher
    from rag_cli.testing.fakes import ScriptedGenerator

    docs = tmp_path / "docs"
    write(docs / "handbook.docx", structured_docx(author="Jane Doe"))
    write(docs / "other.docx", structured_docx(author="Someone Else", title="Another handbook"))
    (docs / "notes.md").write_text("# Notes\n\nQuinces need a cold winter to fruit, says the almanac.\n")
    settings = settings_in(tmp_path)
    report = index_paths(settings, [docs], embedder=real_embedder)
    assert {Path(f.path).name: f.status.value for f in report.files} == {
        "handbook.docx": "added", "other.docx": "added", "notes.md": "added"}
    real = {"RAG_EMBEDDING_BACKEND": "sentence-transformers", **NO_SERVE}
    question = "Why do quinces need a cold winter?"
    for where, doc_ids in (("author=Jane Doe", {"handbook.docx"}), ("author=Someone Else", {"other.docx"}),
                           ("created>=20230101", {"handbook.docx", "other.docx"}), ("type=docx", None)):
        result = invoke(["ask", "--retrieve-only", "--json", "--where", where, question], tmp_path, **real)
        assert result.exit_code == 0, result.output
        got = {p["doc_id"] for p in json.loads(result.stdout)["passages"]}
        assert got and got <= (doc_ids or {"handbook.docx", "other.docx"}), (where, got)
        if doc_ids and len(doc_ids) == 1:
            assert got == doc_ids
    plain = invoke(["ask", "--retrieve-only", "--where", "author=Jane Doe", question], tmp_path, **real)
    assert plain.exit_code == 0 and "handbook.docx · Quince handbook" in plain.stdout, plain.stdout

    # An answer cites the DOCX by its heading path (no pages).
    loose = settings.with_values({"ask.min_support": 0.0, "retrieval.min_score": 0.0}, "test")
    asker = Asker(loose, searcher=Searcher(loose, embedder=real_embedder),
                  generators={"bundled": ScriptedGenerator("They need a cold winter to fruit [1].")})
    answer = asker.ask(question, where=parse_where(["author=Jane Doe"]), use_cache=False)
    cited = [c for c in answer.citations if c.cited]
    assert cited and cited[0].doc_id == "handbook.docx" and cited[0].page_start is None and cited[0].heading
    out, err = io.StringIO(), io.StringIO()
    env = Env(stdout=out, stderr=err)
    from rich.console import Console

    env.out = Console(file=out, force_terminal=True, color_system=None, width=200)
    render_answer(env, answer, as_json=False, streamed=False)
    assert f"handbook.docx · {cited[0].heading}" in out.getvalue(), out.getvalue()
