"""Loaders: a file in, documents (text plus structure) out.

A loader raises :class:`DocumentError` with a reason a person can act on when a file
cannot be read; the indexer records it and carries on with the next file.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag_cli.errors import DocumentError
from rag_cli.ingest import ocr, pdf_layout, splitting
from rag_cli.models import Document, Segment

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rag_cli.config import IndexSettings


@dataclass
class Loaded:
    documents: list[Document]
    warnings: list[str] = field(default_factory=list)  # content that was dropped on the way in
    notes: list[str] = field(default_factory=list)  # worth knowing, nothing lost (an encoding guess)


class Loader(Protocol):
    kind: str
    suffixes: tuple[str, ...]

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        """Documents of the file at ``path`` (whose bytes, ``data``, may be already read)."""
        ...


# -- text decoding ----------------------------------------------------------------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_text(data: bytes) -> tuple[str, str | None]:
    """Text of a file's bytes and a note when it was not UTF-8. Binary data is an error."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _clean(_not_binary(data.decode(encoding))), None
            except UnicodeDecodeError:
                raise DocumentError(f"not valid {encoding.upper()} despite its byte-order mark") from None
    head = data[:8192]
    if b"\x00" in head:
        # UTF-16 without a byte-order mark has a NUL in every other byte of ASCII text.
        even, odd = head[0::2].count(0), head[1::2].count(0)
        for encoding, nuls, total in (("utf-16-le", odd, len(head[1::2])), ("utf-16-be", even, len(head[0::2]))):
            if total and nuls / total > 0.9:
                try:
                    # A table of small 16-bit numbers has the same NULs: its "text" is control characters.
                    return _clean(_not_binary(data.decode(encoding))), None
                except UnicodeDecodeError:
                    break
        raise DocumentError("binary file (contains NUL bytes), not text")
    try:
        text, note = data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        note = f"not UTF-8 (byte {exc.start}); read as Windows-1252/Latin-1"
    return _clean(_not_binary(text)), note


def _not_binary(text: str) -> str:
    """``text``, unless its head is full of control characters (a binary file)."""
    head = text[:8192]
    controls = sum(1 for ch in head if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    if controls > max(8, len(head) // 100):
        raise DocumentError("binary file (control characters), not text")
    return text


_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    # A lone surrogate (a JSON "\\ud800" escape, a broken PDF text map) is not Unicode: it cannot
    # be tokenized, hashed or stored.
    return _unicode(text)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc.strerror or exc}") from None


def _read(path: Path, data: bytes | None) -> tuple[str, str | None]:
    return decode_text(read_bytes(path) if data is None else data)


# -- loaders ----------------------------------------------------------------------------

class TextLoader:
    """Plain text (.txt, .rst, ...): paragraphs separated by blank lines."""

    kind = "text"
    suffixes: tuple[str, ...] = (".txt", ".text", ".rst", ".rest", ".org", ".adoc", ".asciidoc", ".log")

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        text, note = _read(path, data)
        if not text.strip():
            return Loaded([])
        segments = [Segment(s, e, "paragraph") for s, e in splitting.paragraphs(text, 0, len(text))]
        doc = Document(doc_id=doc_id, source=str(path), kind=self.kind, text=text, title=_unicode(path.stem),
                       segments=segments)
        return Loaded([doc], notes=[note] if note else [])


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_BLOCK_KINDS = {
    "heading_open": "heading", "paragraph_open": "paragraph", "fence": "code", "code_block": "code",
    "table_open": "table", "bullet_list_open": "list", "ordered_list_open": "list",
    "blockquote_open": "quote", "html_block": "html", "hr": "paragraph",
}
# Blocks whose line range is their own text, not that of blocks inside them.
_LEAF_BLOCKS = ("heading_open", "paragraph_open", "fence", "code_block", "table_open", "html_block", "hr")
# markdown-it makes no tokens below this many levels (a list level takes two, a quote one) and skips
# the rest of the enclosing block. Its commonmark preset has 20: an outline 10 lists deep. At 100 its
# recursion stays far from Python's limit (it reaches it near 1,000 levels).
_MAX_NESTING = 100


class MarkdownLoader:
    """Markdown via markdown-it-py tokens: headings give sections and the heading path;
    code blocks, tables, lists and quotes are blocks of their own."""

    kind = "markdown"
    suffixes: tuple[str, ...] = (".md", ".markdown", ".mdown", ".mkd", ".mdx")

    def __init__(self) -> None:
        from markdown_it import MarkdownIt

        # Block structure only: inline parsing (emphasis, links) would build a token tree for every
        # paragraph that nothing reads (a heading's text is its inline token's raw content).
        self._md = MarkdownIt("commonmark", {"maxNesting": _MAX_NESTING}).enable(["table", "strikethrough"])
        self._md.disable("inline")

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        text, note = _read(path, data)
        if not text.strip():
            return Loaded([])
        doc = self.parse(text, doc_id=doc_id, source=str(path), default_title=_unicode(path.stem))
        return Loaded([doc], notes=[note] if note else [])

    def parse(self, text: str, *, doc_id: str, source: str, default_title: str) -> Document:
        line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

        def offset(line: int) -> int:
            return line_starts[line] if line < len(line_starts) else len(text)

        segments: list[Segment] = []
        title = ""
        body = text
        front = _FRONT_MATTER.match(text)
        if front:
            # Keep the front matter as a block of its own, and blank it out for the parser
            # (same number of lines, so the token line maps stay right).
            segments.append(Segment(0, front.end(), "code"))
            fm_title = re.search(r"^title:[ \t]*(.+?)[ \t]*$", front.group(1) or "", re.M)
            title = fm_title.group(1).strip("\"'") if fm_title else ""
            body = "\n" * text.count("\n", 0, front.end()) + text[front.end():]
        stack: list[tuple[int, str]] = []
        for tok, first, last, name in self._blocks(body):
            start, end = offset(first), offset(last)
            kind = _BLOCK_KINDS[tok.type]
            if kind == "heading":
                level = int(tok.tag[1:])
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, name))
                if level == 1 and not title:
                    title = name
                segments.append(Segment(start, end, kind, tuple(n for _, n in stack), starts_section=True))
            else:
                segments.append(Segment(start, end, kind, tuple(n for _, n in stack)))
        return Document(doc_id=doc_id, source=source, kind=self.kind, text=text,
                        title=title or default_title, segments=segments)

    def _blocks(self, body: str) -> list[tuple[Any, int, int, str]]:
        """(token, first line, end line, heading text) of each top-level block of ``body``.

        Below _MAX_NESTING levels markdown-it skips the rest of the enclosing block, and a list's
        runs to the end of the document: its headings would start no section. The text is still
        in that list's block; what follows the last line parsed inside it is parsed again, alone."""
        lines = body.split("\n")
        blocks: list[tuple[Any, int, int, str]] = []
        base = 0
        while True:
            tokens = self._md.parse("\n".join(lines[base:]) if base else body)
            top = [(i, t, t.map) for i, t in enumerate(tokens) if t.level == 0 and t.map and t.type in _BLOCK_KINDS]
            for i, tok, (first, end) in top:
                name = tokens[i + 1].content.strip() if tok.type == "heading_open" and i + 1 < len(tokens) else ""
                blocks.append((tok, base + first, base + end, name))
            if not top or max(t.level for t in tokens) < _MAX_NESTING - 1:
                return blocks
            i, last, (first, end) = top[-1]
            parsed = max((m[1] if t.type in _LEAF_BLOCKS else m[0] + 1)
                         for t in tokens[i:] if (m := t.map))  # where its parsed text ends
            if parsed >= end:
                return blocks
            blocks[-1] = (last, base + first, base + parsed, "")
            base += parsed


# The pypdf messages of the bounds PdfLimits sets, lower-cased: (needles, setting, what was too big).
_PDF_LIMIT_MESSAGES = (
    (("maximum array element count",), "pdf_max_elements", "an array of more than {:,} elements"),
    (("maximum number of dictionary entries",), "pdf_max_elements", "a dictionary of more than {:,} entries"),
    (("maximum number of tokens",), "pdf_max_tokens", "a content stream of more than {:,} tokens"),
    (("limit reached while decompressing", "declared stream length", "exceeds maximum allowed length",
      "output bytes", "stream decoding exceeded"), "pdf_max_stream_mb", "a stream of more than {:,} MB"),
)
_PDF_EXCEEDED = re.compile(r"it exceeds index\.(pdf_max_\w+) \([^()]*?more than ([\d,]+)")


@dataclass(frozen=True)
class PdfLimits:
    """How much one PDF may make pypdf parse: index.pdf_max_elements, index.pdf_max_tokens and
    index.pdf_max_stream_mb (measured by bench/bench_pdf_limits.py).

    pypdf 7 stops at 100,000 elements in one array or dictionary, which real filings exceed (a
    page's text shown by one TJ array, the /W widths of a large font): that bound is raised ten
    times. Its bounds on a content stream's tokens and a stream's bytes are kept: they are what
    keeps one hostile page (a 170 KB file can decompress to 75 MB) under a gigabyte."""

    max_elements: int = 1_000_000
    max_tokens: int = 2_000_000
    max_stream_mb: int = 75

    @classmethod
    def from_settings(cls, index: IndexSettings) -> PdfLimits:
        return cls(index.pdf_max_elements, index.pdf_max_tokens, index.pdf_max_stream_mb)

    def overwrites(self) -> dict[str, int]:
        """The fields of pypdf's Configuration to set: only those the installed pypdf has."""
        import dataclasses

        import pypdf

        config = getattr(pypdf, "Configuration", None)
        if config is None:  # before pypdf 7: none of these bounds
            return {}
        stream = self.max_stream_mb * 1_000_000  # pypdf's 75 MB is 75,000,000 bytes
        wanted = {"array_maximum_element_count": self.max_elements,
                  "dictionary_maximum_element_count": self.max_elements,
                  "stream_parsing_work_maximum_count": self.max_tokens,
                  "maximum_declared_stream_length": stream, "array_based_stream_maximum_output_length": stream,
                  "zlib_maximum_output_length": stream, "lzw_maximum_output_length": stream,
                  "run_length_maximum_output_length": stream, "brotli_maximum_output_length": stream,
                  # the work of all of a stream's filters together: 4 times its output, as pypdf has it
                  "stream_decoding_work_maximum_length": 4 * stream}
        names = {f.name for f in dataclasses.fields(config)}
        return {k: v for k, v in wanted.items() if k in names}

    def explain(self, exc: BaseException) -> str | None:
        """For pypdf's LimitReachedError at one of these bounds: the bound and the setting that
        raises it. None for anything else (pypdf also uses that error for a cycle in a damaged file)."""
        if type(exc).__name__ != "LimitReachedError":
            return None
        text = str(exc).lower()
        if "recovery" in text:  # repairing a damaged stream, not a bound of ours
            return None
        for needles, key, what in _PDF_LIMIT_MESSAGES:
            if any(needle in text for needle in needles):
                value = getattr(self, key.removeprefix("pdf_"))
                return f"it exceeds index.{key} ({what.format(value)}); raise index.{key} to read it"
        return None

    def may_read_more(self, messages: Iterable[str]) -> bool:
        """Whether a file whose last read gave ``messages`` (its failure reason and warnings) met a
        bound that is higher now: then the indexer reads it again, though it has not changed."""
        for message in messages:
            for key, value in _PDF_EXCEEDED.findall(message):
                current = getattr(self, key.removeprefix("pdf_"), None)
                if isinstance(current, int) and current > int(value.replace(",", "")):
                    return True
        return False


# pypdf logs, rather than raises, when it stops following a page's form XObjects (5,000 a page, not
# configurable here): text lost with no error. The handler keeps that message for the page being
# read, found through a context variable (so on the reading thread only), and drops every other
# record of pypdf._page, as the level the loader sets on the pypdf logger does.
_PAGE_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("rag_pdf_page_notes", default=None)


class _SkippedForms(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        notes = _PAGE_NOTES.get()
        if notes is not None and "form XObject invocations" in str(record.msg):
            limit = record.args.get("limit") if isinstance(record.args, dict) else None
            notes.append(f"it shows more than {limit:,} form XObjects, pypdf's bound for one page; the rest "
                         "were skipped" if isinstance(limit, int) else record.getMessage())


_SKIPPED_FORMS = _SkippedForms()


class PdfLoader:
    """PDF text page by page (pypdf); chunks know their first and last page. ``ocr`` (index.ocr):
    pages without a text layer are recognised (auto), every page is (force), or none (off); see
    ingest/ocr.py."""

    kind = "pdf"
    suffixes: tuple[str, ...] = (".pdf",)

    def __init__(self, limits: PdfLimits | None = None, ocr_mode: str = "off") -> None:
        if ocr_mode not in ocr.MODES:
            raise ValueError(f"index.ocr must be one of {', '.join(ocr.MODES)}, not {ocr_mode!r}")
        self.limits = limits or PdfLimits()
        self.ocr = ocr_mode

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        # Its repair notes, and the errors it recovers from (a damaged font encoding is logged at
        # ERROR with a 256-entry table), are noise here: what matters becomes a DocumentError or
        # a page warning, and an unconfigured logger would print them on stderr.
        logging.getLogger("pypdf").setLevel(logging.CRITICAL)
        page_log = logging.getLogger("pypdf._page")
        page_log.addHandler(_SKIPPED_FORMS)  # once: logging keeps a handler a single time
        page_log.propagate = False
        page_log.setLevel(logging.WARNING)
        import pypdf

        # pypdf's configuration is a context variable: set here, it holds for this thread (the
        # indexer's reader) while this file is read, its pages included.
        apply = getattr(pypdf, "apply_configuration", None)
        with apply(**self.limits.overwrites()) if apply else contextlib.nullcontext():
            return self._load(path, doc_id, data)

    def _load(self, path: Path, doc_id: str, data: bytes | None) -> Loaded:
        import io

        from pypdf import PdfReader

        raw = read_bytes(path) if data is None else data
        try:
            reader = PdfReader(io.BytesIO(raw))
            if reader.is_encrypted:
                try:
                    opened = reader.decrypt("")
                except Exception as exc:  # e.g. AES without the cryptography package
                    raise DocumentError(f"encrypted PDF that cannot be opened: {exc}") from None
                if not opened:
                    raise DocumentError("encrypted PDF: it needs a password")
            page_count = len(reader.pages)
        except DocumentError:
            raise
        except OSError as exc:
            raise DocumentError(f"cannot read: {exc.strerror or exc}") from None
        except Exception as exc:  # pypdf raises many types on damaged files
            limit = self.limits.explain(exc)
            if limit:
                raise DocumentError(f"PDF not read: {limit}") from None
            raise DocumentError(f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from None

        warnings: list[str] = []
        texts: list[str] = []
        layouts: list[pdf_layout.PageLayout] = []
        limited: list[str] = []  # "page N: the bound it met", for the pages beyond a PdfLimits bound
        for number in range(page_count):
            notes: list[str] = []
            token = _PAGE_NOTES.set(notes)
            layout = pdf_layout.PageLayout("")
            try:
                page_text, lines = pdf_layout.extract_lines(reader.pages[number], _clean)
                # Paragraphs rebuilt from where the lines sit; pypdf's lines as they are when
                # its pieces do not add up to its text.
                layout = pdf_layout.rebuild(lines) if lines is not None else pdf_layout.PageLayout(page_text)
            except Exception as exc:
                limit = self.limits.explain(exc)
                if limit:
                    limited.append(f"page {number + 1}: {limit}")
                    warnings.append(f"page {number + 1}: text not extracted: {limit}")
                else:
                    warnings.append(f"page {number + 1}: text could not be extracted ({type(exc).__name__})")
            finally:
                _PAGE_NOTES.reset(token)
            warnings.extend(f"page {number + 1}: text partly not extracted: {note}" for note in notes[:1])
            texts.append(layout.text.strip())
            layouts.append(layout)
        file_notes: list[str] = []
        ocr_pages: list[int] = []
        if self.ocr != "off" and not limited:
            ocr_pages = self._recognise(str(path), raw, reader, texts, warnings, file_notes)
        if not any(texts):
            if limited:  # not a scan: say which bound, and how to read the file
                more = f" (and {len(limited) - 1} more pages)" if len(limited) > 1 else ""
                raise DocumentError(f"no text read: {limited[0]}{more}")
            if not page_count:
                raise DocumentError("PDF has no pages")
            if self.ocr == "off":
                raise DocumentError("no extractable text (a scanned PDF? it needs OCR first)")
            said = [w for w in warnings if "text layer" in w] or file_notes
            raise DocumentError(f"no extractable text: {said[0]}" if said else
                                "no extractable text, and no page shows anything to recognise")
        title = ""
        try:
            metadata = reader.metadata
            title = _unicode(str((metadata.get("/Title") if metadata else None) or "").strip())
        except Exception:
            title = ""
        if not re.search(r"[A-Za-z]{3,}\s+[A-Za-z]", title):
            title = ""  # an accession number or "untitled": the file name says more
        joins = _page_joins(texts, layouts, ocr_pages)
        doc = paged_document(texts, doc_id=doc_id, source=str(path), title=title or _unicode(path.stem),
                             ocr_pages=ocr_pages, joins=joins)
        return Loaded([doc], warnings, file_notes)

    def _recognise(self, source: str, raw: bytes, reader: Any, texts: list[str], warnings: list[str],
                   notes: list[str]) -> list[int]:
        """OCR of the pages ``self.ocr`` asks for, their text put in ``texts``; the 1-based numbers
        of the pages whose text is now OCR's."""
        candidates = [i for i, text in enumerate(texts)
                      if self.ocr == "force" or sum(not ch.isspace() for ch in text) < ocr.FEW_CHARS]
        if not candidates:
            return []  # auto, and every page has its text: pypdfium2 is not even imported
        try:
            pdfium = ocr.pdfium()
        except ocr.OcrUnavailable as exc:
            scans = [i for i in candidates if not texts[i] and _shows_image(reader, i)]
            if scans:
                warnings.append(f"{_pages(scans)} {'has' if len(scans) == 1 else 'have'} no text layer: {exc.reason}")
            return []
        done: list[int] = []
        with ocr.PDFIUM_LOCK:
            try:
                pdf = pdfium.PdfDocument(raw)
            except Exception as exc:
                warnings.append(f"pages not recognised (OCR): pdfium cannot open the file "
                                f"({type(exc).__name__}: {exc})")
                return []
            try:
                chosen = []
                for i in candidates:
                    try:
                        page = pdf[i]
                        try:
                            if ocr.should_recognise(self.ocr, texts[i], page):
                                chosen.append(i)
                        finally:
                            page.close()
                    except Exception as exc:
                        warnings.append(f"page {i + 1}: not recognised (OCR: {type(exc).__name__}: {exc})")
                for n, i in enumerate(chosen):
                    ocr.report(source, i + 1, n, len(chosen))
                    try:
                        text = self._recognise_page(pdf, i, texts[i], warnings, notes)
                    except ocr.OcrUnavailable as exc:
                        warnings.append(f"{_pages(chosen[n:])} not recognised: {exc.reason}")
                        break
                    if text is not None:
                        texts[i] = text
                        done.append(i + 1)
                if chosen:
                    ocr.report(source, chosen[-1] + 1, len(chosen), len(chosen))
            finally:
                pdf.close()
        return done

    def _recognise_page(self, pdf: Any, i: int, layer: str, warnings: list[str], notes: list[str]) -> str | None:
        """Page ``i``'s recognised text when it replaces the text layer's ``layer``, else None."""
        page = pdf[i]
        try:
            try:
                text = _clean(ocr.page_text(page)).strip()
            except ocr.OcrUnavailable:
                raise
            except Exception as exc:  # a page pdfium cannot render, an engine error
                log.debug("OCR of page %d failed", i + 1, exc_info=True)
                warnings.append(f"page {i + 1}: not recognised (OCR failed: {type(exc).__name__}: {exc})")
                return None
            if not text:
                if not ocr.images_decode(page):
                    warnings.append(f"page {i + 1}: {'no text layer, and ' if not layer else ''}its image could not "
                                    "be decoded for OCR (damaged image data?)")
                elif not layer:
                    notes.append(f"page {i + 1}: no text layer, and OCR found no text on it")
                return None
        finally:
            page.close()
        if self.ocr == "force" or sum(not ch.isspace() for ch in text) > sum(not ch.isspace() for ch in layer):
            return text
        return None


def _page_joins(texts: list[str], layouts: list[pdf_layout.PageLayout], ocr_pages: Sequence[int]) -> list[str]:
    """What goes between each page's text and the previous page's: a blank line, or where a
    paragraph runs on over the page break, what joins its lines (a hyphen it drops is taken
    off the previous page's text, in ``texts``). Pages read by OCR have no layout: a break."""
    joins = ["\n\n"] * len(texts)
    recognised = set(ocr_pages)  # 1-based: page index i is page i + 1
    for i in range(1, len(texts)):
        if not (texts[i - 1] and texts[i]) or i in recognised or i + 1 in recognised:
            continue
        joint = pdf_layout.runs_on(layouts[i - 1], layouts[i])
        if joint is not None:
            if joint.drop_hyphen:
                texts[i - 1] = texts[i - 1][:-1]
            joins[i] = joint.text
    return joins


def _pages(numbers: list[int]) -> str:
    """ "page 3" or "pages 1-4, 9 (5 pages)", for 0-based page indexes."""
    if len(numbers) == 1:
        return f"page {numbers[0] + 1}"
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0] + 1}-{r[-1] + 1}" if len(r) > 1 else f"{r[0] + 1}" for r in runs)
    return f"pages {text} ({len(numbers)} pages)"


def _shows_image(reader: Any, index: int) -> bool:
    """Whether page ``index`` draws an image XObject (what a scanner makes), by pypdf alone."""
    try:
        resources = reader.pages[index].get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        if xobjects is None:
            return False
        return any(xobjects.get_object()[name].get_object().get("/Subtype") == "/Image"
                   for name in xobjects.get_object())
    except Exception:
        return True  # a damaged resource dictionary: say what might be missing


def paged_document(pages: list[str], *, doc_id: str, source: str, title: str,
                   ocr_pages: Sequence[int] = (), joins: Sequence[str] = ()) -> Document:
    """Pages joined by a blank line, ``page_starts`` at each page, and a section starting at
    each page's first paragraph: how a PDF is laid out for the chunkers. ``joins[i]``, when
    not a blank line, is what joins page i to page i - 1 because a paragraph runs on over the
    page break (a space, a line break, or nothing): that paragraph is one segment across
    the break, and page i starts no section of its own."""
    text, page_starts = "", []
    segments: list[Segment] = []
    for number, page_text in enumerate(pages):
        join = (joins[number] if number < len(joins) else "\n\n") if number else ""
        runs_on = bool(number) and not join.strip() and "\n\n" not in join and bool(segments) \
            and segments[-1].end == len(text) and page_text[:1].strip() != ""
        if number:
            text += join if runs_on else "\n\n"
        page_starts.append(len(text))
        base = len(text)
        text += page_text
        for k, (s, e) in enumerate(splitting.paragraphs(page_text, 0, len(page_text))):
            if k == 0 and runs_on:
                last = segments[-1]
                segments[-1] = Segment(last.start, base + e, last.kind, last.heading, last.starts_section)
            else:
                segments.append(Segment(base + s, base + e, "paragraph", starts_section=(k == 0 and not runs_on)))
    return Document(doc_id=doc_id, source=source, kind="pdf", text=text, title=title, segments=segments,
                    page_starts=page_starts, metadata={"pages": len(pages)}, ocr_pages=tuple(ocr_pages))


class JsonlLoader:
    """A corpus: one JSON object a line with ``id`` (or ``_id``), ``text``, optional ``title``;
    other fields become metadata. Bad lines are dropped with a warning naming the line."""

    kind = "jsonl"
    suffixes: tuple[str, ...] = (".jsonl", ".ndjson")

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        text, note = _read(path, data)
        docs: list[Document] = []
        warnings: list[str] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                warnings.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            except RecursionError:
                warnings.append(f"line {number}: JSON nested too deeply")
                continue
            except ValueError as exc:  # e.g. an integer of more than 4,300 digits
                warnings.append(f"line {number}: not valid JSON ({exc})")
                continue
            if not isinstance(record, dict):
                warnings.append(f"line {number}: not a JSON object")
                continue
            rid = record.get("id", record.get("_id"))
            if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
                warnings.append(f"line {number}: no 'id' (a string or number)")
                continue
            rid = _unicode(str(rid))
            body, title = record.get("text"), record.get("title") or ""
            if body is None:  # no 'text' at all reads like an empty one: the title stands in
                body = ""
            if not isinstance(body, str) or not isinstance(title, str):
                warnings.append(f"line {number}: 'text' and 'title' must be strings")
                continue
            body, title = _clean(body), _clean(title).strip()  # cleaned first: "\u0000" is no text
            if not body.strip():
                if not title:
                    warnings.append(f"line {number}: record {rid!r} has no text")
                    continue
                body = title
            if rid in seen:
                warnings.append(f"line {number}: duplicate id {rid!r} (first on line {seen[rid]}); skipped")
                continue
            seen[rid] = number
            meta = _flatten({k: v for k, v in record.items() if k not in ("id", "_id", "text", "title")})
            docs.append(Document(doc_id=rid, source=str(path), kind=self.kind, text=body, title=title,
                                 metadata=meta))
        return Loaded(docs, warnings, notes=[note] if note else [])


def _unicode(text: str) -> str:
    """``text`` with any lone surrogate replaced (JSON can spell one: "\\udc00")."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Metadata a vector store can hold: scalars, with nested objects as dotted keys and
    lists as JSON text. Numbers a store cannot hold as numbers (NaN, infinities, integers
    beyond 64 bits) are kept as text."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = _unicode(f"{prefix}{key}")
        if isinstance(value, dict):
            if prefix:  # one level of nesting is kept; deeper levels become JSON
                out[name] = _unicode(json.dumps(value, ensure_ascii=False))
            else:
                out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = _unicode(json.dumps(value, ensure_ascii=False))
        elif isinstance(value, str):
            out[name] = _unicode(value)
        elif isinstance(value, float) and not math.isfinite(value):
            out[name] = str(value)
        elif isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            out[name] = str(value)
        elif value is not None:
            out[name] = value
    return out
