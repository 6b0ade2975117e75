"""One folder of every format, through the installed `rag` command (issue 19's "done when"): each
file is indexed with its structure, and `rag ask` with the bundled model cites Word, HTML and
EPUB by heading and a scanned PDF by page, marked OCR.

The documents are written here with the libraries the tests already use (python-docx, reportlab,
ebooklib via helpers_epub, Pillow for the scan); each holds one fact the others do not.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_epub import chapter, epub_bytes

pytest.importorskip("rapidocr_onnxruntime")

RAG = str(Path(sys.executable).with_name("rag"))  # the installed command


def more(topic: str) -> str:
    """Sentences enough to make a section a chunk of its own (a section under chunking.min_size
    tokens is merged with the next), about ``topic`` only."""
    return " ".join(f"Remark {n} on {topic}: this is written down in the logbook of week {n} with care." for n in
                    range(1, 9))
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

NOTES_MD = """# Beekeeping notes

## Winter

In winter the bees form a tight cluster and shiver their flight muscles to keep the queen warm.

{winter}

## Summer

In summer the bees forage for nectar from dawn until dusk.

{summer}
"""

PAGE_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Kettle guide</title></head>
<body><nav><a href="/">Home</a> <a href="/shop">Shop</a></nav>
<main><h1>Kettle guide</h1>
<h2>Descaling</h2><p>Descale the kettle with citric acid once a month to remove limescale.</p>
<p>{descaling}</p>
<h2>Warranty</h2><p>The kettle carries a two-year warranty against defects.</p><p>{warranty}</p></main>
<footer>Copyright kettle makers</footer></body></html>
"""


def handbook_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.author = "Rowan Ash"
    d.add_paragraph("Orchard handbook", style="Title")
    d.add_heading("Pruning", level=1)
    d.add_paragraph("Prune medlar trees in late winter, before the buds break.")
    d.add_paragraph(more("pruning"))
    d.add_heading("Harvest", level=1)
    d.add_paragraph("Pick quinces when they turn golden and smell sweet.")
    d.add_paragraph(more("harvest"))
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


# Page 1 of each PDF is longer than a chunk (200 tokens), so the fact on page 2 is in a second chunk,
# whose pages end at 2 (it starts on page 1: the overlap, and paragraphs run on across pages).
INSTALLATION = ["Pump manual. Installation: mount the pump level on a solid concrete base.",
                "Connect the inlet hose first, then the outlet hose, and tighten both clamps.",
                "Fill the housing with clean water before the first start to prime the pump.",
                "Keep the power cable away from the water and use a grounded outlet only.",
                "Check that the motor turns freely by hand before switching the power on.",
                "Run the pump for five minutes and check every joint for leaks afterwards.",
                "Fit the strainer basket to the suction side so that leaves and grit stay out.",
                "Bolt the frame down with the four anchors supplied and torque them evenly.",
                "Lay the discharge pipe with a gentle slope so that no air pocket can form.",
                "Fit a non-return valve close to the outlet to stop the water running back.",
                "Mark the isolating switch clearly so that anyone can stop the pump at once.",
                "Protect an outdoor pump from frost with the insulated cover in the box.",
                "Write the date of installation and the serial number in the log at the back."]
SURVEY = ["Field notes from the savanna survey, written each evening.", "The survey team walked the eastern transect",
          "and counted birds, antelope and warthogs there.", "The weather was dry and the grass was short.",
          "Two vehicles carried water, tents and the radio."]


def manual_pdf() -> bytes:
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=(500, 320))
    c.setFont("Helvetica", 12)
    for k, line in enumerate(INSTALLATION):
        c.drawString(30, 295 - 18 * k, line)
    c.showPage()
    c.setFont("Helvetica", 12)
    c.drawString(30, 250, "Maintenance: replace the pump filter every ninety days.")
    c.save()
    return out.getvalue()


def scanned_pdf() -> bytes:
    """Two image-only pages (no text layer); the fact is on page 2."""
    from PIL import Image, ImageDraw, ImageFont

    def page(lines: list[str]) -> Image.Image:
        image = Image.new("L", (900, 60 + 50 * len(lines)), 255)
        font = ImageFont.truetype(FONT, 30) if Path(FONT).exists() else ImageFont.load_default(30)
        for k, line in enumerate(lines):
            ImageDraw.Draw(image).text((30, 30 + 50 * k), line, fill=0, font=font)
        return image

    first, second = page(SURVEY), page(["Zebras graze near the river at dawn."])
    out = io.BytesIO()
    first.save(out, "PDF", resolution=100, save_all=True, append_images=[second])
    return out.getvalue()


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_NO_SERVE": "1", "NO_COLOR": "1"}
    return subprocess.run([RAG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("mixed")
    docs = work / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text(NOTES_MD.format(winter=more("winter"), summer=more("summer")))
    (docs / "plain.txt").write_text("The ferry to the island leaves at seven every morning.\n")
    (docs / "manual.pdf").write_bytes(manual_pdf())
    (docs / "handbook.docx").write_bytes(handbook_docx())
    (docs / "page.html").write_text(PAGE_HTML.format(descaling=more("descaling"), warranty=more("the warranty")))
    (docs / "book.epub").write_bytes(epub_bytes(
        {"one.xhtml": chapter("Lamps", "The lighthouse keeper lit the great lamp every evening at dusk.",
                              more("lamps")),
         "two.xhtml": chapter("Storms", "In a storm the keeper sounded the foghorn through the night.",
                              more("storms"))},
        toc={"one.xhtml": "Chapter 1. Lamps", "two.xhtml": "Chapter 2. Storms"}, title="The keeper"))
    (docs / "scan.pdf").write_bytes(scanned_pdf())
    result = run(["index", "docs", "--json"], work)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    statuses = {Path(f["path"]).name: f["status"] for f in report["details"]}
    assert statuses == dict.fromkeys(
        ["notes.md", "plain.txt", "manual.pdf", "handbook.docx", "page.html", "book.epub", "scan.pdf"], "added")
    return work


def passages(work: Path, question: str, kind: str) -> list[dict]:
    result = run(["ask", "--retrieve-only", "--json", "--where", f"type={kind}", question], work)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["passages"]


@pytest.mark.parametrize("kind, doc_id, question, heading", [
    ("markdown", "notes.md", "How do bees keep the queen warm in winter?", "Beekeeping notes > Winter"),
    ("docx", "handbook.docx", "When should medlar trees be pruned?", "Orchard handbook > Pruning"),
    ("html", "page.html", "How do I descale the kettle?", "Kettle guide > Descaling"),
    ("epub", "book.epub", "When did the keeper light the lamp?", "Lamps"),  # its own heading, not the TOC's title
])
def test_each_format_keeps_its_headings(mixed: Path, kind: str, doc_id: str, question: str, heading: str) -> None:
    found = passages(mixed, question, kind)
    assert found and {p["doc_id"] for p in found} == {doc_id}
    assert found[0]["heading"].startswith(heading) and found[0]["page_start"] is None


def test_pdfs_keep_their_pages_and_the_scan_says_ocr(mixed: Path) -> None:
    text = passages(mixed, "How often is the pump filter replaced?", "pdf")
    assert text[0]["doc_id"] == "manual.pdf" and text[0]["page_end"] == 2 and not text[0]["ocr"]
    pages = sorted((p["page_start"], p["page_end"]) for p in text if p["doc_id"] == "manual.pdf")
    assert pages == [(1, 1), (1, 2)]
    scan = passages(mixed, "Where do zebras graze at dawn?", "pdf")
    top = scan[0]
    assert top["doc_id"] == "scan.pdf" and top["ocr"] is True and top["page_start"] == 2
    assert "zebras" in top["text"].lower()


@pytest.mark.parametrize("question, doc_id, shown", [
    ("When should medlar trees be pruned?", "handbook.docx", "handbook.docx · Orchard handbook > Pruning"),
    ("How do I descale the kettle?", "page.html", "page.html · Kettle guide > Descaling"),
    ("When did the lighthouse keeper light the lamp?", "book.epub", "book.epub · Lamps"),
    ("Where do zebras graze at dawn?", "scan.pdf", "scan.pdf · p. 2 (OCR)"),
])
def test_ask_cites_by_heading_and_the_scan_by_page(mixed: Path, question: str, doc_id: str, shown: str) -> None:
    """The real bundled model answers; the citation names the heading (Word, HTML, EPUB) or the
    page with OCR (the scan), in --json and on the plain output."""
    result = run(["ask", "--json", "--no-cache", question], mixed)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert not answer["refused"], answer
    cited = [c for c in answer["citations"] if c.get("cited", True)]
    assert cited and cited[0]["doc_id"] == doc_id, answer
    if doc_id == "scan.pdf":
        # Its two chunks touch, so they are one source of pages 1-2 (generate/packing.merge_neighbours).
        assert cited[0]["page_start"] <= 2 <= cited[0]["page_end"] and cited[0]["ocr"] is True
    else:
        assert cited[0]["heading"] and cited[0]["page_start"] is None
    plain = run(["ask", "--retrieve-only", question], mixed)  # piped, `rag ask` prints only the answer
    assert plain.returncode == 0, plain.stderr
    assert shown in plain.stdout, plain.stdout
