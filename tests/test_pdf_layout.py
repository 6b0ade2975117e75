"""PDF paragraphs rebuilt from where pypdf's lines sit (ingest/pdf_layout.py), on PDFs made with
reportlab: wrapped lines joined, paragraphs apart, words split at a line end made whole, a
paragraph kept whole over a page break, and offsets and page numbers still exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_ingest import assert_chunk_invariants, real_counter
from rag_cli.ingest.chunkers import make_chunker
from rag_cli.ingest.loaders import PdfLoader, _clean
from rag_cli.ingest.pdf_layout import Line, extract_lines, rebuild
from rag_cli.models import Document

pytest.importorskip("reportlab")

WORDS = ("the quick survey of river basins found that sediment moves mostly in spring floods while "
         "summer flows carry little of it downstream toward the estuary").split()


def prose(n_words: int, seed: int) -> str:
    """A paragraph of ``n_words`` words, ending with a full stop; a different one for each seed."""
    words = [WORDS[(seed * 7 + k * 3) % len(WORDS)] for k in range(n_words)]
    words[0] = f"Paragraph{seed}"
    return " ".join(words) + "."


def platypus_pdf(path: Path, paragraphs: list[str], *, space_after: float = 6, first_indent: float = 0,
                 heading: str | None = None) -> None:
    """Paragraphs set by reportlab's layout engine: wrapped to the frame, broken over pages."""
    from reportlab.lib.pagesizes import A5
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    body = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=13, spaceAfter=space_after,
                          firstLineIndent=first_indent)
    flow = [Paragraph(heading, ParagraphStyle("h", fontName="Helvetica-Bold", fontSize=16, leading=20,
                                              spaceAfter=8))] if heading else []
    flow += [Paragraph(p, body) for p in paragraphs]
    SimpleDocTemplate(str(path), pagesize=A5, title="Sediment survey").build(flow)


def canvas_pdf(path: Path, pages: list[list[tuple[float, str]]], size: float = 10) -> None:
    """Lines drawn where told: each page a list of (baseline y, text), in Helvetica at ``size``."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=(420, 595))
    for lines in pages:
        c.setFont("Helvetica", size)
        for y, text in lines:
            c.drawString(40, y, text)
        c.showPage()
    c.save()


def read(path: Path) -> Document:
    loaded = PdfLoader().load(path, path.name)
    assert loaded.warnings == []
    (doc,) = loaded.documents
    return doc


def segment_texts(doc: Document) -> list[str]:
    return [doc.text[s.start:s.end] for s in doc.segments]


def test_wrapped_lines_become_one_paragraph_each(tmp_path: Path) -> None:
    paragraphs = [prose(60, 1), prose(45, 2), prose(12, 3), prose(80, 4)]
    path = tmp_path / "survey.pdf"
    platypus_pdf(path, paragraphs, heading="Sediment survey")
    doc = read(path)
    assert doc.metadata["pages"] == 1
    # Each paragraph is one segment, its lines joined by single spaces: the source text exactly.
    assert segment_texts(doc) == ["Sediment survey", *paragraphs]
    assert doc.text == "\n\n".join(["Sediment survey", *paragraphs])


def test_paragraphs_set_without_space_between_are_told_apart_by_their_short_last_line(tmp_path: Path) -> None:
    paragraphs = [prose(50, 1), prose(40, 2), prose(55, 3)]
    path = tmp_path / "indented.pdf"
    platypus_pdf(path, paragraphs, space_after=0, first_indent=18)
    assert segment_texts(read(path)) == paragraphs


def test_a_paragraph_over_a_page_break_is_one_segment_with_exact_pages(tmp_path: Path) -> None:
    paragraphs = [prose(40, 1), prose(700, 2), prose(40, 3)]  # A5 holds some 300 words: 2 runs onto page 2
    path = tmp_path / "long.pdf"
    platypus_pdf(path, paragraphs)
    doc = read(path)
    assert doc.metadata["pages"] >= 2 and len(doc.page_starts) == doc.metadata["pages"]
    assert segment_texts(doc) == paragraphs  # not cut in two at a page end
    second = doc.page_starts[1]
    assert doc.text[second - 1] == " " and doc.text[second - 2] != " "  # mid-paragraph: a space, not a blank line
    sections = {s.start for s in doc.segments if s.starts_section}
    for start in doc.page_starts[1:]:  # a page goes on with the section of the paragraph it continues
        assert (start in sections) == (doc.text[start - 2:start] == "\n\n")
    # Every word of page 2 is on page 2: its first line starts exactly at page_starts[1].
    from pypdf import PdfReader

    first_line = PdfReader(str(path)).pages[1].extract_text().split("\n")[0].strip()
    assert doc.text[second:].startswith(first_line)
    assert doc.page_at(second - 2) == 1 and doc.page_at(second) == 2
    counter = real_counter()
    chunks = make_chunker("structure", counter, size=128, overlap=16).chunk(doc)
    assert_chunk_invariants(doc, chunks, counter, 128)
    across = [c for c in chunks if c.page_start == 1 and c.page_end == 2]
    assert across and all(c.start < second <= c.end for c in across)


def test_a_word_split_by_a_hyphen_at_a_line_end_is_joined(tmp_path: Path) -> None:
    full = "Measurements of the river bed were taken every week by the survey team, and the exper-"
    path = tmp_path / "hyphen.pdf"
    canvas_pdf(path, [[(700 - 12 * k, text) for k, text in enumerate([
        full,
        "iment was repeated at each of the nine stations along the river in self-",
        "aware fashion by a team that knew the water, and in the cold of a winter week.",
        "Short last line.",
    ])]])
    (paragraph,) = segment_texts(read(path))
    assert "experiment was repeated" in paragraph  # a hyphen before a lower-case letter: one word
    assert "self-aware fashion" in paragraph  # a compound's prefix keeps its hyphen
    assert "\n" not in paragraph.replace("week.\nShort", "")


def test_a_paragraph_whose_last_page_line_is_a_full_line_runs_on_but_a_running_header_does_not(
        tmp_path: Path) -> None:
    long_line = "The survey team measured sediment at the nine stations along the river, in the"
    page1 = [(560, "Sediment survey 2024"), (530, long_line), (518, long_line.replace("The", "and the")),
             (506, long_line.replace("The survey", "then the"))]
    page2 = [(560, "Sediment survey 2024"), (530, "morning, every day of the spring floods."),
             (500, "A new paragraph starts after the gap, and is short.")]
    path = tmp_path / "header.pdf"
    canvas_pdf(path, [page1, page2])
    doc = read(path)
    # The header at the top of page 2 is a paragraph of its own: page 1's paragraph does not run
    # into it, so the page break stays a paragraph break.
    assert doc.text[doc.page_starts[1] - 2:doc.page_starts[1]] == "\n\n"
    assert segment_texts(doc)[-3:] == ["Sediment survey 2024", "morning, every day of the spring floods.",
                                        "A new paragraph starts after the gap, and is short."]

    path = tmp_path / "no-header.pdf"
    canvas_pdf(path, [page1[1:], page2[1:]])
    doc = read(path)
    texts = segment_texts(doc)
    assert texts[0].endswith("river, in the morning, every day of the spring floods.")
    assert len(texts) == 2 and doc.page_at(doc.text.index("morning")) == 2


def test_table_rows_and_short_lines_keep_their_line_breaks(tmp_path: Path) -> None:
    rows = ["Station Sediment Flow", "North 1,200 3,400 5.1", "Bridge 980 2,750 4.2", "Estuary 2,310 6,020 9.8"]
    prose_line = "The table below gives the sediment in tonnes and the flow in cubic metres at each station"
    path = tmp_path / "table.pdf"
    canvas_pdf(path, [[(700, prose_line), (688, "this spring:"), *[(664 - 12 * k, r) for k, r in enumerate(rows)]]])
    texts = segment_texts(read(path))
    assert texts == [f"{prose_line} this spring:", "\n".join(rows)]


def test_lines_keep_their_baseline_and_size(tmp_path: Path) -> None:
    path = tmp_path / "two.pdf"
    canvas_pdf(path, [[(700, "First line of text"), (650, "Second line, lower down")]], size=12)
    from pypdf import PdfReader

    text, lines = extract_lines(PdfReader(str(path)).pages[0], _clean)
    assert lines is not None and [line.text for line in lines] == text.split("\n")
    assert [(round(line.y), round(line.size)) for line in lines if line.text] == [(700, 12), (650, 12)]


def test_a_page_whose_pieces_do_not_add_up_keeps_pypdfs_text() -> None:
    class Page:  # pypdf's text with no pieces reported for it: no layout to trust
        def extract_text(self, visitor_text=None):
            return "one\ntwo\r\nthree"

    assert extract_lines(Page(), _clean) == ("one\ntwo\nthree", None)


def test_lines_without_a_position_keep_their_breaks() -> None:
    nan = float("nan")
    layout = rebuild([Line("first line", nan, nan), Line("second line", nan, nan)])
    assert layout.text == "first line\nsecond line"


def test_pdfs_indexed_before_a_new_layout_key_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from indexing_helpers import invoke
    from rag_cli.ingest import pdf_layout

    docs = tmp_path / "docs"
    docs.mkdir()
    platypus_pdf(docs / "survey.pdf", [prose(60, 1), prose(45, 2)])

    def statuses() -> dict[str, str]:
        result = invoke(["index", "docs", "--json"], tmp_path, RAG_NO_SERVE="1", RAG_EMBEDDING_BACKEND="hash")
        assert result.exit_code == 0, result.output
        return {Path(d["path"]).name: d["status"] for d in json.loads(result.stdout)["details"]}

    assert statuses() == {"survey.pdf": "added"}
    assert statuses() == {"survey.pdf": "unchanged"}  # the same bytes, read the same way: not read
    reads = []
    real = pdf_layout.rebuild
    monkeypatch.setattr(pdf_layout, "rebuild", lambda lines: reads.append(1) or real(lines))
    monkeypatch.setattr(pdf_layout, "READ_KEY", "layout=paragraphs-next")
    statuses()
    assert reads, "a PDF read with an older way of rebuilding its paragraphs is read again"
