"""bench/format_parity.py's writers: a small Markdown file written as HTML, DOCX, EPUB, PDF and an
image-only PDF reads back, each with its own library, with the same headings and text (no model)."""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

MARKDOWN = """# Sourdough starter

A starter is flour and water, fed daily & kept warm.

## Feeding

Feed it twice a day with equal weights of flour and water.

- rye flour works fastest
- keep the jar loosely covered

1. discard half
2. add flour and water

| flour | hydration |
| --- | --- |
| rye | 100% |
| wheat | 80% |

## Baking

Bake when the starter has doubled: about six hours at 24 °C.
"""
HEADINGS = [(1, "Sourdough starter"), (2, "Feeding"), (2, "Baking")]
SENTENCES = ["A starter is flour and water, fed daily & kept warm.",
             "Feed it twice a day with equal weights of flour and water.",
             "rye flour works fastest", "keep the jar loosely covered", "discard half", "add flour and water",
             "Bake when the starter has doubled: about six hours at 24 °C."]
CELLS = ["flour", "hydration", "rye", "100%", "wheat", "80%"]


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("format_parity", REPO / "bench" / "format_parity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["format_parity"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("format_parity", None)


@pytest.fixture(scope="module")
def article(parity):
    return parity.parse_markdown(MARKDOWN, "starter")


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_markdown_blocks(article) -> None:
    assert article.title == "Sourdough starter"
    assert [(b.level, b.text) for b in article.blocks if b.kind == "heading"] == HEADINGS
    kinds = [b.kind for b in article.blocks]
    assert kinds == ["heading", "paragraph", "heading", "paragraph", "bullets", "numbers", "table", "heading",
                     "paragraph"]
    table = next(b for b in article.blocks if b.kind == "table")
    assert table.rows == (("flour", "hydration"), ("rye", "100%"), ("wheat", "80%"))


def test_html(parity, article, tmp_path: Path) -> None:
    from bs4 import BeautifulSoup

    path = tmp_path / "starter.html"
    parity.write_html(article, path)
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "lxml")
    assert soup.title is not None and "Sourdough starter" in soup.title.get_text()
    assert soup.nav is not None and soup.footer is not None
    main = soup.find("main")
    assert main is not None
    assert [(int(h.name[1]), h.get_text()) for h in main.find_all(re.compile("^h[1-6]$"))] == HEADINGS
    text = _squash(main.get_text(" "))
    for piece in SENTENCES + CELLS:
        assert piece in text
    assert [li.get_text() for li in main.find_all("li")][:2] == SENTENCES[2:4]


def test_docx(parity, article, tmp_path: Path) -> None:
    import docx

    path = tmp_path / "starter.docx"
    parity.write_docx(article, path)
    document = docx.Document(str(path))
    assert document.core_properties.title == "Sourdough starter"
    paragraphs = [(p.style.name, p.text) for p in document.paragraphs]
    assert [(s, t) for s, t in paragraphs if s.startswith("Heading")] == [(f"Heading {n}", t) for n, t in HEADINGS]
    assert ("Normal", SENTENCES[0]) in paragraphs
    assert [t for s, t in paragraphs if s == "List Bullet"] == SENTENCES[2:4]
    assert [t for s, t in paragraphs if s == "List Number"] == SENTENCES[4:6]
    [table] = document.tables
    assert [c.text for row in table.rows for c in row.cells] == CELLS


def test_epub(parity, article, tmp_path: Path) -> None:
    import ebooklib
    from bs4 import BeautifulSoup
    from ebooklib import epub

    path = tmp_path / "starter.epub"
    parity.write_epub(article, path)
    assert zipfile.ZipFile(path).read("mimetype") == b"application/epub+zip"
    book = epub.read_epub(str(path))
    assert book.get_metadata("DC", "title")[0][0] == "Sourdough starter"
    chapters = [item for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT)
                if not isinstance(item, epub.EpubNav) and "nav" not in item.get_name()]
    soups = [BeautifulSoup(c.get_content(), "xml") for c in chapters]  # XHTML
    # one chapter per top-level section: the title with its paragraph, then each level-2 section
    assert [[h.get_text() for h in s.find_all(re.compile("^h[1-6]$"))] for s in soups] == \
        [["Sourdough starter"], ["Feeding"], ["Baking"]]
    text = _squash(" ".join(s.get_text(" ") for s in soups))
    for piece in SENTENCES + CELLS:
        assert piece in text
    assert [t.title for t in book.toc] == ["Sourdough starter", "Feeding", "Baking"]


def test_pdf_and_scanned_pdf(parity, article, tmp_path: Path) -> None:
    import pypdf

    path = tmp_path / "starter.pdf"
    parity.write_pdf(article, path)
    reader = pypdf.PdfReader(str(path))
    assert reader.metadata is not None and reader.metadata.title == "Sourdough starter"
    text = _squash(" ".join(page.extract_text() or "" for page in reader.pages))
    for _, heading in HEADINGS:
        assert heading in text
    for piece in SENTENCES + CELLS:
        assert piece in text

    scanned = tmp_path / "scanned.pdf"
    pages = parity.write_scanned_pdf(path, scanned, dpi=72)
    reader = pypdf.PdfReader(str(scanned))
    assert len(reader.pages) == pages == 1
    assert not "".join(page.extract_text() or "" for page in reader.pages).strip()  # no text layer
    assert reader.pages[0].images  # only the page's picture


def test_question_ids_follow_the_files(parity, tmp_path: Path) -> None:
    rows = [{"id": "a", "question": "q?", "answers": ["x"], "relevant": ["01_Warsaw.md"], "answerable": True},
            {"id": "b", "question": "r?", "answers": ["y"], "relevant": ["08_Sky.md"], "answerable": True}]
    out = tmp_path / "q.jsonl"
    assert parity.write_questions(rows, ".docx", out) == 2
    assert '"relevant": ["01_Warsaw.docx"]' in out.read_text(encoding="utf-8")
    assert parity.write_questions(rows, ".pdf", out, only=("08_Sky",)) == 1
    assert '"08_Sky.pdf"' in out.read_text(encoding="utf-8")
