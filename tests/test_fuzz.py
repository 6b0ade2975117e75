"""Property-based fuzzing of the loaders and the chunkers (hypothesis, derandomized so CI is
deterministic).

Loaders, given any bytes or any text: they return documents or raise DocumentError, nothing
else, and what they return is well formed (segment offsets inside the text, text that can be
tokenized, hashed and stored). Chunkers, given any text or Markdown: the contract of
``rag_cli.ingest.chunkers`` (every chunk is ``doc.text[start:end]``, chunks in order cover
the text, the embedded text never exceeds ``size`` tokens, no chunk exceeds ``max_chars``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, example, given, settings, strategies as st

from helpers_ingest import assert_chunk_invariants, real_counter
from rag_cli.errors import DocumentError
from rag_cli.ingest import splitting, tokens
from rag_cli.ingest.chunkers import make_chunker
from rag_cli.ingest.epub import EpubLoader
from rag_cli.ingest.html import HtmlLoader
from rag_cli.ingest.loaders import JsonlLoader, Loaded, MarkdownLoader, PdfLoader, TextLoader
from rag_cli.ingest.word import DocxLoader
from rag_cli.models import Document

# RAG_FUZZ_EXAMPLES=4000 for a longer search (passes; ~2 min).
FUZZ = settings(max_examples=int(os.environ.get("RAG_FUZZ_EXAMPLES", "250")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LOADERS = {"text": TextLoader(), "markdown": MarkdownLoader(), "jsonl": JsonlLoader(), "docx": DocxLoader(),
           "html": HtmlLoader(), "epub": EpubLoader()}


def load(kind: str, data: bytes) -> Loaded | None:
    """The loader's result, or None for a DocumentError; anything else escapes (a bug)."""
    loader = LOADERS[kind]
    try:
        return loader.load(Path("/fuzz/file" + loader.suffixes[0]), "file" + loader.suffixes[0], data)
    except DocumentError as exc:
        assert exc.reason and "\n" not in exc.reason, "a reason is one line a person can act on"
        return None


def assert_well_formed(loaded: Loaded) -> None:
    ids = [doc.doc_id for doc in loaded.documents]
    assert len(ids) == len(set(ids)), "document ids are unique"
    for doc in loaded.documents:
        assert_storable(doc.doc_id, doc.title, doc.text)
        assert "\r" not in doc.text and "\x00" not in doc.text
        assert doc.text.strip(), "an empty document is not returned"
        n = len(doc.text)
        starts = [seg.start for seg in doc.segments]
        assert starts == sorted(starts)
        for seg in doc.segments:
            assert 0 <= seg.start <= seg.end <= n, (seg, n)
        for key, value in doc.metadata.items():
            assert_storable(key)
            assert isinstance(value, (str, int, float, bool)), (key, value)
            assert not isinstance(value, float) or math.isfinite(value), (key, value)
            assert not isinstance(value, int) or isinstance(value, bool) or -2**63 <= value < 2**63
            if isinstance(value, str):
                assert_storable(value)
    for line in (*loaded.warnings, *loaded.notes):
        assert line and "\n" not in line
        assert_storable(line)


def assert_storable(*texts: str) -> None:
    """Text SQLite, Chroma and the tokenizer accept: valid Unicode (no lone surrogates)."""
    for text in texts:
        text.encode("utf-8")


# -- loaders ------------------------------------------------------------------------------

@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), data=st.binary(max_size=600))
@example(kind="text", data=b"\xff\xfe" + b"\x01\x00" * 200)  # UTF-16 by its BOM, control characters
@example(kind="text", data=bytes(i % 200 for i in range(0, 400)))  # small 16-bit numbers: NULs like UTF-16
@example(kind="markdown", data=b"---\ntitle: x\n---\n\x85\x0c# h\n```\n")
@example(kind="html", data=b"<meta charset=utf-8><h1>\xff</h1><pre>\r\n\x00</pre><table><tr><td>|</td></tr></table>")
@example(kind="html", data=b"<meta charset=nonsense><ul><li><ol start=x><li>a")
@example(kind="epub", data=b"PK\x03\x04" + bytes(40))
def test_loaders_take_any_bytes(kind, data):
    loaded = load(kind, data)
    if loaded is not None:
        assert_well_formed(loaded)


text_alphabet = st.characters(blacklist_categories=("Cs",))
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252"])


@FUZZ
@given(kind=st.sampled_from(["text", "markdown"]), text=st.text(text_alphabet, max_size=300), encoding=encodings)
def test_text_and_markdown_loaders_take_any_text_in_any_encoding(kind, text, encoding):
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # cp1252 has no such character
        return
    loaded = load(kind, data)
    if loaded is None:
        return
    assert_well_formed(loaded)
    plain = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if encoding == "utf-8":
        plain = plain.removeprefix("\ufeff")  # read as a UTF-8 byte-order mark
    if loaded.documents and not loaded.notes and encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-32"):
        # Read back exactly, whatever the characters (nothing but line endings and NULs change).
        assert loaded.documents[0].text == plain
    if plain.isprintable() and plain.strip() and encoding == "utf-8":
        assert loaded.documents, "printable text is never taken for binary"


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(st.characters(), max_size=20))  # lone surrogates included
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(st.characters(), max_size=5), inner, max_size=3), max_leaves=8)


@st.composite
def jsonl_lines(draw) -> str:
    import json

    record = draw(st.dictionaries(st.sampled_from(["id", "_id", "text", "title", "year", "tags", "meta", "\ud800"]),
                                  json_values, max_size=6))
    line = json.dumps(record, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return draw(st.sampled_from([line, line, line[: len(line) // 2], "[" * 5000 + "]" * 5000,
                                 '{"id": 1, "text": "x", "n": ' + "9" * 5000 + "}", "  ", "null"]))


@FUZZ
@given(lines=st.lists(jsonl_lines(), max_size=8), newline=st.sampled_from(["\n", "\r\n"]))
def test_jsonl_loader_drops_bad_lines_and_keeps_good_ones(lines, newline):
    data = newline.join(lines).encode("utf-8", "surrogatepass")
    loaded = load("jsonl", data)
    if loaded is None:  # the file as a whole is not text (invalid UTF-8 read as cp1252 is still text)
        return
    assert_well_formed(loaded)
    assert len(loaded.documents) + len(loaded.warnings) <= len([line for line in lines if line.strip()])


def damage(data: st.DataObject, blob: bytearray, how: str) -> None:
    """``blob`` damaged in place as ``data`` draws: bytes flipped, the tail cut, a run deleted, or
    bytes inserted (``how``), at a drawn offset."""
    at = data.draw(st.integers(0, len(blob) - 1))
    if how == "flip":
        for k in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=20)):
            blob[k] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del blob[at:]
    elif how == "delete":
        del blob[at:at + data.draw(st.integers(1, 500))]
    else:
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=200))


@settings(FUZZ, max_examples=max(40, FUZZ.max_examples // 5))
@given(data=st.data())
def test_pdf_loader_on_damaged_pdfs(data):
    """A real PDF with bytes flipped, cut or inserted: a document or a DocumentError, and nothing
    printed (pypdf logs its recoveries; the loader keeps them quiet)."""
    sample = (Path(__file__).resolve().parent.parent / "samples" / "recipes" / "country-loaf.pdf").read_bytes()
    blob = bytearray(sample)
    damage(data, blob, data.draw(st.sampled_from(["flip", "cut", "delete", "insert"])))
    try:
        loaded = PdfLoader().load(Path("/fuzz/f.pdf"), "f.pdf", bytes(blob))
    except DocumentError:
        return
    assert_well_formed(loaded)


@settings(FUZZ, max_examples=max(40, FUZZ.max_examples // 5))
@given(data=st.data())
def test_docx_loader_on_damaged_docx(data):
    """A real .docx with bytes of the zip flipped, cut or inserted, or its document.xml damaged
    inside a sound zip (so the structure reader meets the damage): a document or a DocumentError."""
    import io
    import zipfile

    sample = _docx_sample()
    how = data.draw(st.sampled_from(["flip", "cut", "insert", "xml"]))
    if how == "xml":
        src = zipfile.ZipFile(io.BytesIO(sample))
        xml = bytearray(src.read("word/document.xml"))
        for _ in range(data.draw(st.integers(1, 5))):
            at = data.draw(st.integers(0, len(xml) - 1))
            piece = data.draw(st.sampled_from([b"", b"<", b">", b"/>", b"<w:p>", b"</w:tbl>", b"<w:t>x</w:t>",
                                               b'w:val="0"', b'w:val="-3"', b"<w:numPr/>", b"\x00", b"&#1;"]))
            xml[at:at + data.draw(st.integers(0, 40))] = piece
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, bytes(xml) if info.filename == "word/document.xml" else src.read(info.filename))
        blob = bytearray(out.getvalue())
    else:
        blob = bytearray(sample)
        damage(data, blob, how)
    try:
        loaded = DocxLoader().load(Path("/fuzz/f.docx"), "f.docx", bytes(blob))
    except DocumentError as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert_well_formed(loaded)


_DOCX: list[bytes] = []


def _docx_sample() -> bytes:
    if not _DOCX:
        from docx_files import structured_docx

        _DOCX.append(structured_docx())
    return _DOCX[0]


@settings(FUZZ, max_examples=max(40, FUZZ.max_examples // 5))
@given(data=st.data())
def test_epub_loader_on_damaged_epubs(data):
    """A real EPUB with bytes flipped, cut, deleted or inserted: a document or a DocumentError."""
    from helpers_epub import chapter, epub_bytes

    blob = bytearray(epub_bytes({"a.xhtml": chapter("One", "Quinces ripen late."),
                                 "b.xhtml": chapter("Two", "Medlars need frost.")}, toc={"a.xhtml": "One"}))
    damage(data, blob, data.draw(st.sampled_from(["flip", "cut", "delete", "insert"])))
    try:
        loaded = EpubLoader().load(Path("/fuzz/f.epub"), "f.epub", bytes(blob))
    except DocumentError as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert_well_formed(loaded)
    for doc in loaded.documents:
        for seg in doc.segments:
            assert doc.text[seg.start:seg.end].strip()


# -- chunkers -----------------------------------------------------------------------------

MARKDOWN_PIECES = [
    "# ", "## ", "### ", "\n", "\n\n", "\n\n\n", " ", "\t", "---\n", "...\n", "```", "```python\n", "~~~\n", "    ",
    "> ", "- ", "* ", "1. ", "  - ", "| a | b |\n|---|---|\n| 1 | 2 |\n", "<div>\n", "</div>\n", "<!-- c -->",
    "title: Fuzzed\n", "[ref]: https://example.com\n", "word ", "Sentence one. ", "Dr. Who? ", "e.g. this ",
    "日本語の文。", "Größe ", "naïve ", "\u2028", "\x85", "\x0c", "\u200b", "🙂 ", "x" * 120 + " ", "ab" * 70,
    "deadbeef" * 40, "def f(x):\n    return x\n", "a_b_c ", "https://x.io/a?b=c ",
]
markdown_texts = st.lists(st.sampled_from(MARKDOWN_PIECES), max_size=90).map("".join)
any_texts = st.text(text_alphabet, max_size=500)


@st.composite
def chunker_settings(draw) -> dict:
    size = draw(st.integers(16, 300))  # above the model's 254 content tokens: capped
    effective = min(size, real_counter().max_tokens)
    return {
        "strategy": draw(st.sampled_from(["structure", "sentence", "fixed"])),
        "size": size,
        "overlap": draw(st.integers(0, effective - 1)),
        "min_size": draw(st.integers(0, 120)),
        "context_header": draw(st.booleans()),
        "document_prefix": draw(st.sampled_from(["", "passage: ", "search_document: "])),
    }


def chunk_and_check(doc: Document, cfg: dict) -> None:
    cfg = dict(cfg)
    chunker = make_chunker(cfg.pop("strategy"), real_counter(), **cfg)
    chunks = chunker.chunk(doc)
    assert_chunk_invariants(doc, chunks, real_counter(), chunker.size)
    for chunk in chunks:
        assert chunk.end - chunk.start <= chunker.max_chars, "no chunk is one enormous token"
        assert chunk.title == doc.title and chunk.metadata == doc.metadata


@FUZZ
@given(text=markdown_texts, cfg=chunker_settings())
def test_chunkers_on_arbitrary_markdown(text, cfg):
    loaded = load("markdown", text.encode("utf-8"))
    for doc in loaded.documents if loaded else []:
        chunk_and_check(doc, cfg)


@FUZZ
@given(text=any_texts, cfg=chunker_settings())
def test_chunkers_on_arbitrary_text(text, cfg):
    loaded = load("text", text.encode("utf-8"))
    for doc in loaded.documents if loaded else []:
        chunk_and_check(doc, cfg)


@FUZZ
@given(text=st.lists(st.sampled_from(["word", "Größe", "x" * 130, "a.b", "日本", "\n\n", "\n", "  ", "e.g.",
                                      "zz" * 40, "."]), max_size=200).map(" ".join),
       cfg=chunker_settings(), piece=st.integers(8, 200))
def test_chunkers_when_long_text_is_tokenized_in_pieces(text, cfg, piece):
    """The code paths of huge files (pieces of a few characters instead of 64 KB) keep the contract."""
    with mock.patch.object(tokens, "PIECE_CHARS", piece):
        loaded = load("text", text.encode("utf-8"))
        for doc in loaded.documents if loaded else []:
            chunk_and_check(doc, cfg)


# -- the pieces huge files go through -----------------------------------------------------

@FUZZ
@given(words=st.lists(st.sampled_from(["the", "flour", "Größe", "日本語", "e.g.", "3.5", "x" * 30, "\n\n", "\t"]),
                      max_size=300),
       budget=st.integers(1, 64), piece=st.integers(8, 400), data=st.data())
def test_token_windows_are_the_same_when_tokenized_in_pieces(words, budget, piece, data):
    """Cutting the text into pieces at whitespace (so a 50 MB file is never one encoding) gives
    the same windows as tokenizing it whole, when no word is longer than a quarter piece."""
    text = " ".join(words)
    overlap = data.draw(st.integers(0, max(0, budget - 1)))
    whole = splitting.token_windows(text, 0, len(text), real_counter(), budget, overlap)
    with mock.patch.object(tokens, "PIECE_CHARS", piece):
        pieces = splitting.token_windows(text, 0, len(text), real_counter(), budget, overlap)
    if all(len(w) < piece // 4 for w in words):
        assert pieces == whole
    covered = bytearray(len(text))
    for s, e in pieces:
        assert text[s:e] == text[s:e].strip() != ""
        covered[s:e] = b"\x01" * (e - s)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


@FUZZ
@given(texts=st.lists(st.text(st.sampled_from("ab \n.日x"), max_size=3000), max_size=6), cap=st.integers(0, 40))
@example(texts=[" " * 200 + "x" * 150], cap=1)  # the head would end inside a word: more pieces than its [UNK]
@example(texts=["a " * 5 + "q" * 5000], cap=10)
def test_count_capped_is_exact_up_to_the_cap(texts, cap):
    counter = real_counter()
    exact = counter.count_many(texts)
    capped = tokens.count_capped(counter, texts, cap)
    for n, c in zip(exact, capped):
        assert c == n if n <= cap else c > cap


@FUZZ
@given(text=st.text(st.sampled_from("ab \n\t日"), max_size=2000), size=st.integers(1, 300))
def test_char_windows_cut_anything_into_bounded_pieces(text, size):
    spans = splitting.char_windows(text, 0, len(text), size)
    assert all(0 < e - s <= size and text[s:e] == text[s:e].strip() for s, e in spans)
    assert "".join("".join(text[s:e].split()) for s, e in spans) == "".join(text.split())


# -- HTML ---------------------------------------------------------------------------------

HTML_PIECES = [
    "<h1>", "</h1>", "<h3>", "<p>", "</p>", "<br>", "<pre>", "</pre>", "<code>", "</code>", "<ul>", "<li>", "</ul>",
    "<ol start=3>", "<table>", "<tr>", "<td colspan=5>", "<th>", "</table>", "<blockquote>", "<main>", "</main>",
    "<nav>", "</nav>", "<script>", "</script>", "<div hidden>", "<div>", "</div>", "<!-- c -->", "<dl><dt>", "<dd>",
    "word ", "Sentence one. ", "| pipe ", "```", "\n", "  ", "\r\n", "\x00", "\ud800", "日本語", "&amp;", "&#0;",
    "\x85", "<title>T</title>", "<?xml version='1.0' encoding='latin-1'?>", "<meta charset=koi8-r>", "x" * 120,
]
html_texts = st.lists(st.sampled_from(HTML_PIECES), max_size=80).map("".join)


@FUZZ
@given(text=html_texts, cfg=chunker_settings())
def test_html_loader_and_chunkers_on_arbitrary_html(text, cfg):
    """Any tag soup: a well-formed document whose segments lie inside the text, in order and not
    overlapping, each ``text[start:end]`` a block of its own; and the chunk invariants."""
    loaded = load("html", text.encode("utf-8", "surrogatepass"))
    for doc in loaded.documents if loaded else []:
        assert_well_formed(loaded)
        assert all(a.end <= b.start for a, b in zip(doc.segments, doc.segments[1:]))
        for seg in doc.segments:
            block = doc.text[seg.start:seg.end]
            assert block == block.strip("\n") and block.strip()
        chunk_and_check(doc, cfg)


OCR_PIECES = ["1", "0", "9", "o", "O", "l", "a", "C", "F", ".", ",", " ", "°", "%", "-", "x", "日"]


@FUZZ
@given(text=st.lists(st.sampled_from(OCR_PIECES), max_size=40).map("".join))
def test_ocr_tidy_changes_only_zeros_and_spaces(text):
    """ocr.tidy on any box text: the same characters once spaces are set aside, but for an o or
    O that became a 0; a second pass changes nothing (no rule feeds another)."""
    from rag_cli.ingest import ocr

    tidied = ocr.tidy(text)
    before, after = text.replace(" ", ""), tidied.replace(" ", "")
    assert len(before) == len(after)
    assert all(a == b or (a in "oO" and b == "0") for a, b in zip(before, after))
    assert ocr.tidy(tidied) == tidied
