"""OCR of scanned PDF pages (index.ocr, ingest/ocr.py): the real RapidOCR on small pages made here.

A page is an image of known words (Pillow) saved as an image-only PDF; one page takes ~1-4 s to
recognise on this machine, so the pages are small and few.
"""

from __future__ import annotations

import io
import json
import socket
import sys
from pathlib import Path

import pytest

from indexing_helpers import invoke
from rag_cli.errors import DocumentError
from rag_cli.ingest import ocr
from rag_cli.ingest.loaders import PdfLoader

pytest.importorskip("rapidocr_onnxruntime")
pytest.importorskip("pypdfium2")

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
ZEBRAS = "Zebras graze near the river at dawn."
NO_SERVE = {"RAG_NO_SERVE": "1"}


def page_image(lines: list[str], size: tuple[int, int] = (640, 140), font_size: int = 28):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, font_size) if Path(FONT).exists() else ImageFont.load_default(font_size)
    for i, line in enumerate(lines):
        draw.text((24, 24 + i * int(font_size * 1.6)), line, fill=0, font=font)
    return image


def scan_pdf(*pages: list[str]) -> bytes:
    """An image-only PDF: one page per list of lines, no text layer."""
    images = [page_image(lines) for lines in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=100, save_all=True, append_images=images[1:])
    return out.getvalue()


def text_pdf(text: str, *, with_image: bool = False) -> bytes:
    """A PDF with a text layer (reportlab); ``with_image``: a scan-like image under the whole page."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=(460, 100))
    if with_image:
        c.drawImage(ImageReader(page_image([ZEBRAS])), 0, 0, width=460, height=100)
    c.setFont("Helvetica", 14)
    c.drawString(20, 50, text)
    c.save()
    return out.getvalue()


def load(tmp_path: Path, data: bytes, mode: str, name: str = "scan.pdf"):
    path = tmp_path / name
    path.write_bytes(data)
    return PdfLoader(ocr_mode=mode).load(path, name, data)


@pytest.fixture
def engine_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pages reached the OCR engine."""
    calls: list[int] = []
    real = ocr.recognise

    def counted(image):
        calls.append(1)
        return real(image)

    monkeypatch.setattr(ocr, "recognise", counted)
    return calls


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


# -- the loader -------------------------------------------------------------------------

def test_auto_recognises_a_page_without_a_text_layer(tmp_path: Path, engine_calls: list[int]) -> None:
    seen: list[tuple[int, int, int]] = []
    with ocr.reporting(lambda source, page, done, total: seen.append((page, done, total))):
        loaded = load(tmp_path, scan_pdf([ZEBRAS]), "auto")
    doc = loaded.documents[0]
    assert {"zebras", "graze", "river", "dawn"} <= words(doc.text)
    assert doc.ocr_pages == (1,)
    assert engine_calls == [1]
    assert seen == [(1, 0, 1), (1, 1, 1)]  # before the page, after it


def test_auto_leaves_a_page_with_a_text_layer_alone(tmp_path: Path, engine_calls: list[int]) -> None:
    loaded = load(tmp_path, text_pdf("Quinces perfume a room when they ripen in October."), "auto", "text.pdf")
    doc = loaded.documents[0]
    assert "Quinces perfume a room" in doc.text
    assert doc.ocr_pages == ()
    assert engine_calls == []


def test_auto_recognises_a_short_text_layer_over_a_full_page_image(tmp_path: Path, engine_calls: list[int]) -> None:
    # A scan whose text layer holds only a page number: fewer than FEW_CHARS characters, an image
    # over the whole page.
    doc = load(tmp_path, text_pdf("7", with_image=True), "auto").documents[0]
    assert engine_calls == [1]
    assert doc.ocr_pages == (1,)
    assert {"zebras", "river"} <= words(doc.text)


def test_a_short_text_layer_without_an_image_is_not_recognised(tmp_path: Path, engine_calls: list[int]) -> None:
    doc = load(tmp_path, text_pdf("Page 7"), "auto", "short.pdf").documents[0]
    assert doc.text == "Page 7"
    assert engine_calls == []


def test_force_recognises_a_page_with_a_text_layer(tmp_path: Path, engine_calls: list[int]) -> None:
    doc = load(tmp_path, text_pdf("Medlars ripen after the first frost."), "force", "text.pdf").documents[0]
    assert engine_calls == [1]
    assert doc.ocr_pages == (1,)
    assert {"medlars", "ripen", "frost"} <= words(doc.text)


def test_off_keeps_the_old_error(tmp_path: Path, engine_calls: list[int]) -> None:
    with pytest.raises(DocumentError, match=r"no extractable text \(a scanned PDF\? it needs OCR first\)"):
        load(tmp_path, scan_pdf([ZEBRAS]), "off")
    assert engine_calls == []


def test_without_the_extra_the_warning_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PdfReader, PdfWriter

    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # `import pypdfium2` raises ImportError
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    monkeypatch.setattr(ocr, "_ENGINE", None)
    assert not ocr.available()
    assert ocr.read_key("auto") == "ocr=unavailable"
    hint = "install the OCR extra (pip install 'rag-cli[ocr]') or set index.ocr"
    with pytest.raises(DocumentError, match="page 1 has no text layer: " + hint.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, scan_pdf([ZEBRAS]), "auto")
    writer = PdfWriter()  # page 1 with text, page 2 a scan
    for part in (text_pdf("Quinces perfume a room when they ripen in October."), scan_pdf([ZEBRAS])):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    loaded = load(tmp_path, out.getvalue(), "auto", "mixed.pdf")
    assert "Quinces" in loaded.documents[0].text
    assert loaded.warnings == [f"page 2 has no text layer: {hint} = \"off\""]


def test_ocr_runs_with_the_network_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args, **kwargs):
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket.socket, "connect_ex", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    monkeypatch.setattr(ocr, "_ENGINE", None)  # the engine is made (its models loaded) under the block
    doc = load(tmp_path, scan_pdf([ZEBRAS]), "auto").documents[0]
    assert {"zebras", "river"} <= words(doc.text)
    assert ocr._ENGINE is not None


def test_the_words_of_a_scan_are_kept_apart(tmp_path: Path) -> None:
    # RapidOCR's own decoding read these as "Invoice4471 was paid ..." and "for 31 8.5 0 euros.".
    lines = ["Invoice 4471 was paid on 12 March", "for 318.50 euros.", "Herons wait."]
    image = page_image(lines, size=(720, 200))
    out = io.BytesIO()
    image.save(out, "PDF", resolution=100)
    text = load(tmp_path, out.getvalue(), "force").documents[0].text
    assert " ".join(text.split()) == " ".join(lines)


def damaged_second_image(data: bytes) -> bytes:
    """The PDF with the JPEG data of its second image overwritten (same length, no JPEG markers)."""
    first = data.index(b"\xff\xd8\xff")
    second = data.index(b"\xff\xd8\xff", first + 3)
    return data[:second] + b"\x00" * 400 + data[second + 400:]


def test_a_damaged_image_warns_for_its_page_and_keeps_the_others(tmp_path: Path) -> None:
    data = damaged_second_image(scan_pdf([ZEBRAS], ["Rowan berries make a bitter jelly."]))
    loaded = load(tmp_path, data, "auto")
    doc = loaded.documents[0]
    assert {"zebras", "river"} <= words(doc.text)
    assert doc.ocr_pages == (1,)
    assert len(doc.page_starts) == 2
    assert [w for w in loaded.warnings if w.startswith("page 2:")], loaded.warnings
    assert not [w for w in loaded.warnings if w.startswith("page 1")]


# -- reading order (no engine) ------------------------------------------------------------

def test_reading_order_reads_columns_one_after_the_other() -> None:
    B = ocr.Box
    boxes = [
        B(320, 100, 560, 120, "right one"), B(20, 100, 260, 120, "left one"),
        B(20, 130, 260, 150, "left two"), B(320, 130, 560, 150, "right two"),
        B(20, 20, 560, 50, "Title across"),
    ]
    assert ocr.reading_order(boxes) == "Title across\n\nleft one\nleft two\n\nright one\nright two"


def test_reading_order_joins_the_boxes_of_one_line() -> None:
    B = ocr.Box
    boxes = [B(200, 10, 300, 30, "world"), B(10, 12, 100, 31, "hello"), B(10, 40, 120, 60, "next line")]
    assert ocr.reading_order(boxes) == "hello world\nnext line"


def test_a_box_of_symbols_alone_is_not_text() -> None:
    """The recogniser reads a filled square as "■" and a rule as "|": a page of drawings alone
    has no text (tests/test_nasty_files.py: drawing-only.pdf fails with "no extractable text")."""
    assert not ocr.is_text("■") and not ocr.is_text(" | ") and not ocr.is_text("—·—")
    assert ocr.is_text("a1") and ocr.is_text("§ 4") and ocr.is_text("Ü")


@pytest.mark.parametrize(("read", "meant"), [
    ("over 1o0,o00 digiboxes", "over 100,000 digiboxes"),  # o for 0 inside a number
    ("nearly 9o% of", "nearly 90% of"),
    ("from 15-1o0,000.", "from 15-100,000."),
    ("26. 7% of", "26.7% of"),  # the decimal point's gap read as a space
    ("exceed 32 ° C (90 ° F)", "exceed 32 °C (90 °F)"),
    ("in dollars,oil producers", "in dollars, oil producers"),
    # Left alone: letters that belong to a word, a thousands separator, a comma and a space.
    ("O2, CO2 and H2O", "O2, CO2 and H2O"),
    ("the 1990s and 10os", "the 1990s and 10os"),
    ("1,000,000 in 1999, 2000", "1,000,000 in 1999, 2000"),
    ("Oslo. 7 of 10 ° here", "Oslo. 7 of 10 ° here"),
])
def test_tidy_puts_right_what_the_recogniser_misreads_in_numbers(read: str, meant: str) -> None:
    assert ocr.tidy(read) == meant


def test_the_decoder_puts_back_the_spaces_the_blank_hid() -> None:
    np = pytest.importorskip("numpy")
    classes = ["blank", "a", "b", " "]

    def frame(best: int, space: float = 0.0) -> list[float]:
        row = [0.0, 0.0, 0.0, space]
        row[best] = 1.0 - space
        return row

    # a, a blank frame where the space is likely enough, b, a blank where it is not, a, a
    # repeated a (merged), a real space frame, then b less sure (0.6, the blank 0.4).
    line = [frame(1), frame(0, 0.2), frame(2), frame(0, 0.001), frame(1), frame(1), frame(3), [0.4, 0.0, 0.6, 0.0]]
    decoded = ocr.SpacingDecoder(classes)(np.array([line], dtype=np.float32))
    assert [text for text, _ in decoded] == ["a ba b"]
    assert decoded[0][1] == pytest.approx((1 + 1 + 1 + 1 + 0.6) / 5)  # over the characters kept


# -- the pipeline -----------------------------------------------------------------------

def test_a_scanned_pdf_is_searchable_and_its_chunks_say_ocr(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "scan.pdf").write_bytes(scan_pdf([ZEBRAS]))
    (docs / "notes.txt").write_text("Sorrel soup needs a squeeze of lemon.\n")
    assert invoke(["index", "docs"], tmp_path, RAG_INDEX_OCR="off").exit_code != 0  # the scan fails
    result = invoke(["index", "docs", "--json"], tmp_path)  # auto: the unchanged scan is read again
    assert result.exit_code == 0, result.output
    files = {Path(f["path"]).name: f["status"] for f in json.loads(result.stdout)["details"]}
    assert files["scan.pdf"] in ("added", "updated")
    found = json.loads(invoke(["ask", "--retrieve-only", "--json", "zebras graze river"], tmp_path,
                              **NO_SERVE).stdout)
    top = found["passages"][0]
    assert top["doc_id"] == "scan.pdf" and top["ocr"] is True
    assert "zebras" in top["text"].lower()
    shown = invoke(["ask", "--retrieve-only", "zebras graze river"], tmp_path, **NO_SERVE).stdout
    assert "p. 1 (OCR)" in shown
    again = json.loads(invoke(["index", "docs", "--json"], tmp_path).stdout)  # nothing read again
    assert {Path(f["path"]).name: f["status"] for f in again["details"]}["scan.pdf"] == "unchanged"


def test_chunk_preview_of_a_scanned_pdf(tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(scan_pdf([ZEBRAS]))
    result = invoke(["chunk-preview", "scan.pdf", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    chunks = json.loads(result.stdout)["chunks"]
    assert chunks and all(c["ocr"] for c in chunks)
    assert "zebras" in chunks[0]["text"].lower()
    plain = invoke(["chunk-preview", "scan.pdf"], tmp_path)
    assert "page 1 · OCR" in plain.stdout
