"""PDFs beyond pypdf 7's own bounds (100,000 elements in an array, 2,000,000 tokens in a content
stream, 75 MB in a stream): real filings have arrays larger than pypdf's default and are read; a
file beyond the bounds rag-cli sets (`index.pdf_*`) gets a warning, or a failure reason, that names
the bound and the setting that raises it; raising it reads the file again on the next run, and
nothing indexed before is lost meanwhile.

The PDFs are built here as raw bytes (nothing binary is committed); `bench/bench_pdf_limits.py`
uses the same builders to measure what each bound costs. The bounds are tested set low, on small
files, rather than on files of millions of elements.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from indexing_helpers import index_state, invoke, settings_in
from rag_cli.errors import DocumentError, ExitCode
from rag_cli.ingest.formats import loader_for
from rag_cli.ingest.loaders import PdfLimits, PdfLoader

NO_SERVE = {"RAG_NO_SERVE": "1"}  # never a `rag serve` of the developer's
FIRST_PAGE = "Quarterly report of the Quince Orchard Company. Net sales rose eight percent."
LAST_WORDS = "The board declared a dividend of 42 cents per medlar share."


# -- building PDFs --------------------------------------------------------------------------

def raw_pdf(pages: list[bytes], *, page_entries: bytes = b"", resources: bytes = b"",
            extra_objects: tuple[bytes, ...] = (), compress: bool = False) -> bytes:
    """A PDF of ``pages`` (content streams) in Helvetica (font /F1). ``page_entries`` and
    ``resources`` go into every page dictionary and its /Resources; ``extra_objects`` are
    numbered from 3 + 2 × len(pages) + 1 on."""
    count = len(pages)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, content in enumerate(pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> "
                       + resources + b" >> " + page_entries + b" /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(stream_object(content, compress=compress))
    objects.extend(extra_objects)
    return assemble(objects)


def stream_object(data: bytes, *, compress: bool = False, entries: bytes = b"") -> bytes:
    if compress:
        data, entries = zlib.compress(data, 6), entries + b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), entries) + data + b"\nendstream"


def assemble(objects: list[bytes]) -> bytes:
    """Objects 1..n with a cross-reference table; object 1 is the catalog."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def shown(text: str) -> bytes:
    """A line of ``text`` with Tj, as most generators write it."""
    return b"BT /F1 11 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET\n"


def kerned(elements: int, last_words: str = LAST_WORDS) -> bytes:
    """One TJ array of ``elements`` elements (one fewer when even): the glyphs of a repeated sentence
    and then ``last_words``, one by one with a kerning number after each but the last (how some
    generators position every glyph). Built by repeating the sentence's bytes, so ten million
    elements take seconds and no more memory than the result."""
    def glyphs(text: str) -> bytes:
        return b"".join(b"(%s) %s " % ((b"\\" if ch in "()\\" else b"") + ch.encode("latin-1"),
                                      b"-12" if i % 3 else b"8") for i, ch in enumerate(text))

    filler = "Net sales by product category and geographic segment. "
    count = (elements + 1) // 2 - len(last_words)  # glyphs before the last words
    body = glyphs(filler) * (count // len(filler)) + glyphs(filler[: count % len(filler)]) + glyphs(last_words)
    return b"BT /F1 9 Tf 36 760 Td [" + body.rsplit(b" ", 2)[0] + b"] TJ ET\n"  # no kerning after the last


def many_shows(tokens: int) -> bytes:
    """A content stream of about ``tokens`` tokens: short `(word) Tj` operations on new lines."""
    ops = [b"BT /F1 8 Tf 36 770 Td"]
    ops += [b"(quince) Tj 0 -9 Td" if k % 40 == 39 else b"(quince ) Tj" for k in range(tokens // 2)]
    return b"\n".join(ops + [b"ET\n"])


def marked(entries: int) -> bytes:
    """Text inside marked content whose property list is a dictionary of ``entries`` entries."""
    props = b" ".join(b"/k%d %d" % (k, k) for k in range(entries))
    return b"/Span << " + props + b" >> BDC\n" + shown("Marked content about medlars.") + b"EMC\n"


def big_font_pdf(glyphs: int, text: str) -> bytes:
    """One page showing ``text`` in a Type0 font (Identity-H; the ToUnicode map sends each two-byte
    code to the same Unicode) whose /W array gives each of ``glyphs`` glyphs its own width (`c c w`,
    3 elements a glyph): the widths of a large font, an object-level array that text extraction reads."""
    widths = b" ".join(b"%d %d 500" % (c, c) for c in range(glyphs))
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /U def "
            b"1 begincodespacerange <0000> <FFFF> endcodespacerange 1 beginbfrange <0020> <007E> <0020> "
            b"endbfrange endcmap CMapName currentdict /CMap defineresource pop end end")
    codes = "".join(f"{ord(ch):04X}" for ch in text).encode()
    return assemble([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 7 0 R >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Big /Encoding /Identity-H /DescendantFonts [5 0 R] "
        b"/ToUnicode 6 0 R >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /Big /CIDSystemInfo << /Registry (Adobe) "
        b"/Ordering (Identity) /Supplement 0 >> /W [" + widths + b"] >>",
        stream_object(cmap),
        stream_object(b"BT /F1 12 Tf 72 720 Td <" + codes + b"> Tj ET"),
    ])


def forms_pdf(invocations: int) -> bytes:
    """One page that shows a form XObject (a word) ``invocations`` times, then a closing line."""
    form = stream_object(shown("quince"), entries=b" /Type /XObject /Subtype /Form /BBox [0 0 200 20] "
                                                  b"/Resources << /Font << /F1 3 0 R >> >>")
    content = b"q 1 0 0 1 0 -1 cm /Fm0 Do Q\n" * invocations + shown(LAST_WORDS)
    return raw_pdf([content], resources=b"/XObject << /Fm0 6 0 R >>", extra_objects=(form,))


def load(data: bytes, limits: PdfLimits | None = None):
    return PdfLoader(limits).load(Path("/docs/filing.pdf"), "filing.pdf", data)


def text_of(loaded) -> str:
    assert len(loaded.documents) == 1
    return loaded.documents[0].text


# -- real documents beyond pypdf's default bounds are read -----------------------------------

def pypdf_default(field: str) -> int:
    import pypdf

    return getattr(pypdf.Configuration(), field)


def test_a_kerned_tj_array_beyond_pypdfs_default_is_read_and_indexed(tmp_path: Path) -> None:
    elements = 150_000
    assert elements > pypdf_default("array_maximum_element_count")  # what pypdf 7 alone refuses
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "filing.pdf").write_bytes(raw_pdf([shown(FIRST_PAGE), kerned(elements)], compress=True))
    result = invoke(["index", "docs", "--json"], tmp_path, **NO_SERVE)  # the indexer's reader thread
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (detail,) = report["details"]
    assert detail["status"] == "added" and not detail.get("warnings") and not report["problems"], detail
    # Keyword search: the page is 74 chunks of like words, which the hash embedder cannot tell apart.
    passages = json.loads(invoke(["ask", "--retrieve-only", "--json", LAST_WORDS], tmp_path, **NO_SERVE,
                                 RAG_RETRIEVAL_MODE="keyword").stdout)["passages"]
    assert passages[0]["page_start"] == 2 and LAST_WORDS in passages[0]["text"], "the end of the array was read"


def test_the_widths_of_a_large_font_beyond_pypdfs_default_are_read() -> None:
    data = big_font_pdf(40_000, "Net sales rose 8 percent.")  # /W: 120,000 elements
    assert 3 * 40_000 > pypdf_default("array_maximum_element_count")
    assert text_of(load(data)).strip() == "Net sales rose 8 percent."


def test_the_bounds_hold_on_a_reading_thread_and_are_undone_after_each_file() -> None:
    import threading

    import pypdf

    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(text_of(load(big_font_pdf(40_000, "On a thread.")))))
    reader.start()
    reader.join()
    assert got == ["On a thread."]
    assert pypdf.get_configuration() == pypdf.Configuration()  # nothing left behind


def test_overwrites_name_only_fields_the_installed_pypdf_has(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import pypdf

    fields = {f.name for f in dataclasses.fields(pypdf.Configuration)}
    wanted = PdfLimits(max_elements=123_456).overwrites()
    assert wanted and set(wanted) <= fields
    assert wanted["array_maximum_element_count"] == wanted["dictionary_maximum_element_count"] == 123_456

    @dataclasses.dataclass(frozen=True)
    class OlderConfiguration:  # a pypdf 7.x with fewer bounds
        array_maximum_element_count: int = 100_000

    monkeypatch.setattr(pypdf, "Configuration", OlderConfiguration)
    assert PdfLimits().overwrites() == {"array_maximum_element_count": 1_000_000}
    monkeypatch.delattr(pypdf, "Configuration")  # before pypdf 7
    assert PdfLimits().overwrites() == {}


def test_loader_for_keeps_working_without_limits() -> None:
    assert loader_for(Path("a.pdf")).limits == PdfLimits()  # type: ignore[union-attr]
    low = PdfLimits(max_elements=1_000)
    assert loader_for(Path("a.pdf"), low).limits == low  # type: ignore[union-attr]
    assert loader_for(Path("a.md"), low).kind == "markdown"  # type: ignore[union-attr]


# -- beyond the bounds: a warning or a reason that names the setting ---------------------------

@pytest.mark.parametrize("page, limits, warning", [
    (kerned(5_000), PdfLimits(max_elements=1_000),
     "index.pdf_max_elements (an array of more than 1,000 elements); raise index.pdf_max_elements to read it"),
    (marked(2_000), PdfLimits(max_elements=1_000),
     "index.pdf_max_elements (a dictionary of more than 1,000 entries); raise index.pdf_max_elements to read it"),
    (many_shows(4_000), PdfLimits(max_tokens=1_000),
     "index.pdf_max_tokens (a content stream of more than 1,000 tokens); raise index.pdf_max_tokens to read it"),
    (shown("quince " * 300_000), PdfLimits(max_stream_mb=1),  # 2.1 MB decoded, 6 KB in the file
     "index.pdf_max_stream_mb (a stream of more than 1 MB); raise index.pdf_max_stream_mb to read it"),
], ids=["array", "dictionary", "tokens", "stream-bytes"])
def test_a_page_beyond_a_bound_is_a_warning_naming_the_setting(page: bytes, limits: PdfLimits, warning: str) -> None:
    data = raw_pdf([shown(FIRST_PAGE), page], compress=True)
    loaded = load(data, limits)
    assert loaded.warnings == [f"page 2: text not extracted: it exceeds {warning}"]
    assert text_of(loaded).strip() == FIRST_PAGE  # the other pages are read
    assert not load(data).warnings  # the default bounds read it


def test_a_file_whose_every_page_is_beyond_a_bound_fails_with_the_setting_not_as_a_scan() -> None:
    with pytest.raises(DocumentError) as caught:
        load(raw_pdf([kerned(5_000), kerned(5_000)]), PdfLimits(max_elements=1_000))
    assert caught.value.reason == ("no text read: page 1: it exceeds index.pdf_max_elements (an array of more "
                                   "than 1,000 elements); raise index.pdf_max_elements to read it (and 1 more pages)")


def test_a_file_that_cannot_be_opened_within_a_bound_names_it() -> None:
    annots = b"/Annots [" + b" ".join(b"%d" % k for k in range(2_000)) + b"]"  # in every page dictionary
    with pytest.raises(DocumentError, match=r"^PDF not read: it exceeds index.pdf_max_elements \(an array of more "
                                            r"than 1,000 elements\); raise index.pdf_max_elements to read it$"):
        load(raw_pdf([shown(FIRST_PAGE)], page_entries=annots), PdfLimits(max_elements=1_000))


def test_a_page_with_more_form_xobjects_than_pypdf_follows_warns_instead_of_losing_text_quietly() -> None:
    loaded = load(forms_pdf(5_010))
    text = text_of(loaded)
    assert text.count("quince") == 5_000 and LAST_WORDS in text  # pypdf's bound: 5,000 a page
    assert loaded.warnings == ["page 1: text partly not extracted: it shows more than 5,000 form XObjects, "
                               "pypdf's bound for one page; the rest were skipped"]
    assert not load(forms_pdf(50)).warnings


def pypdf_error(message: str) -> Exception:
    from pypdf.errors import LimitReachedError

    return LimitReachedError(message)


@pytest.mark.parametrize("message, setting", [
    ("Reached maximum array element count.", "pdf_max_elements"),
    ("Reached maximum number of dictionary entries.", "pdf_max_elements"),
    ("Reached maximum number of tokens.", "pdf_max_tokens"),
    ("Reached maximum number of tokens per stream.", "pdf_max_tokens"),
    ("Limit reached while decompressing. 400254 bytes remaining.", "pdf_max_stream_mb"),
    ("Limit reached while decompressing: 75000001 > 75000000", "pdf_max_stream_mb"),  # LZW
    ("Declared stream length of 80000000 exceeds maximum allowed length.", "pdf_max_stream_mb"),
    ("Requested length of 80000000 exceeds maximum allowed length.", "pdf_max_stream_mb"),
    ("Read stream length of 75000016 exceeds maximum allowed length of 75000000.", "pdf_max_stream_mb"),
    ("Array-based stream has at least 75000001 > 75000000 output bytes.", "pdf_max_stream_mb"),
    ("Stream decoding exceeded the maximum accumulated decoding work of 300000000 bytes.", "pdf_max_stream_mb"),
    # pypdf's own bounds, and damaged files: not ours to name
    ("Recovery limit reached while decompressing. 10 bytes remaining.", None),
    ("Detected cycle in /Pages hierarchy when retrieving page.", None),
    ("Too many character widths: 100001 > 100000.", None),
    ("Maximum /ToUnicode size limit reached: 100001 > 100000.", None),
])
def test_pypdf_limit_messages_map_to_the_setting_that_raises_them(message: str, setting: str | None) -> None:
    explained = PdfLimits().explain(pypdf_error(message))
    if setting is None:
        assert explained is None
    else:
        assert explained is not None and f"it exceeds index.{setting} (" in explained
        assert explained.endswith(f"raise index.{setting} to read it")
    assert PdfLimits().explain(ValueError(message)) is None


def test_only_a_bound_raised_since_makes_a_file_worth_reading_again() -> None:
    reason = PdfLimits(max_elements=1_000).explain(pypdf_error("Reached maximum array element count."))
    warning = f"page 3: text not extracted: {reason}"
    assert PdfLimits(max_elements=1_001).may_read_more(["", warning])
    assert not PdfLimits(max_elements=1_000).may_read_more([warning])
    assert not PdfLimits(max_elements=500, max_tokens=10**9).may_read_more([warning])  # another bound raised
    assert not PdfLimits().may_read_more(["corrupt or unreadable PDF (PdfReadError: EOF marker not found)"])


# -- through `rag index`: nothing indexed is lost, and raising the bound reads the file again ---

def index(work: Path, **env: str) -> tuple[int, dict]:
    result = invoke(["index", "docs", "--json"], work, **NO_SERVE, **env)
    assert "Traceback" not in result.output, result.output
    report = json.loads(result.stdout)
    return result.exit_code, {os.path.basename(d["path"]): d for d in report["details"]}


def test_a_filing_beyond_a_bound_keeps_its_earlier_chunks_and_is_read_once_the_bound_is_raised(
        tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    filing = docs / "filing.pdf"
    filing.write_bytes(raw_pdf([shown(FIRST_PAGE)]))
    (docs / "notes.txt").write_text("Medlars ripen after the first frost.\n")
    low = {"RAG_INDEX_PDF_MAX_ELEMENTS": "1000"}
    assert index(tmp_path, **low)[0] == 0
    before = index_state(settings_in(tmp_path, embedding__backend="hash"))

    filing.write_bytes(raw_pdf([kerned(5_000)]))  # the next quarter: one page, one big array
    code, got = index(tmp_path, **low)
    assert code == ExitCode.PARTIAL and got["filing.pdf"]["status"] == "failed"
    assert "raise index.pdf_max_elements to read it" in got["filing.pdf"]["reason"]
    assert index_state(settings_in(tmp_path, embedding__backend="hash")) == before, "the earlier chunks are kept"
    code, got = index(tmp_path, **low)  # unchanged, same bound: not read again
    assert code == ExitCode.PARTIAL and "(file unchanged since)" in got["filing.pdf"]["reason"]

    code, got = index(tmp_path, RAG_INDEX_PDF_MAX_ELEMENTS="10000")  # raised: read again, untouched
    assert code == 0 and got["filing.pdf"]["status"] == "updated", got["filing.pdf"]
    passages = json.loads(invoke(["ask", "--retrieve-only", "--json", LAST_WORDS], tmp_path, **NO_SERVE,
                                 RAG_RETRIEVAL_MODE="keyword").stdout)["passages"]
    assert passages[0]["doc_id"] == "filing.pdf" and LAST_WORDS in passages[0]["text"]


def test_a_page_left_out_by_a_bound_is_read_once_the_bound_is_raised(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "filing.pdf").write_bytes(raw_pdf([shown(FIRST_PAGE), many_shows(4_000)]))
    code, got = index(tmp_path, RAG_INDEX_PDF_MAX_TOKENS="1000")
    assert code == ExitCode.PARTIAL and got["filing.pdf"]["status"] == "added"
    assert got["filing.pdf"]["warnings"] == ["page 2: text not extracted: it exceeds index.pdf_max_tokens (a content "
                                             "stream of more than 1,000 tokens); raise index.pdf_max_tokens to read it"]
    code, got = index(tmp_path, RAG_INDEX_PDF_MAX_TOKENS="1000")  # the same warning, from the manifest
    assert code == ExitCode.PARTIAL and got["filing.pdf"]["status"] == "unchanged" and got["filing.pdf"]["warnings"]
    code, got = index(tmp_path)  # the default bound
    assert code == 0 and got["filing.pdf"]["status"] == "updated" and not got["filing.pdf"].get("warnings")
