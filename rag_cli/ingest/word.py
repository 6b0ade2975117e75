"""Word documents (.docx): the body's blocks in order, laid out as the Markdown loader's text.

The text of a .docx is written the way a Markdown file of the same document would read:
headings as ``#`` lines (their level from the style: Heading 1-9, Title above Heading 1, or a
style's outline level), paragraphs separated by blank lines, list items as ``-`` / ``1.`` lines (indented two
spaces a level), tables as ``| a | b |`` rows (one line a row: the chunker cuts a big table
between rows), quotes as ``>`` lines and code as a fenced block. Each block is a ``Segment`` of
the same kind as the Markdown loader's, under its heading path, so the structure chunker treats
both alike.

Kept: paragraphs and tables in body order (content controls and text boxes included), text in
hyperlinks, fields and tracked insertions, footnotes and endnotes (a ``[^N]`` mark, ``[^eN]`` for
an endnote, where they are referenced; their text at the end, under a "Notes" heading, footnotes
then endnotes, in the order they are first referenced). Left out: page headers and footers (boilerplate
repeated on every page), comments, deleted text, images.

The file is checked before python-docx reads it: what it really is when it is not a .docx (an
old .doc, a password-protected file, HTML, RTF, OpenDocument), a damaged zip, and how much it
unpacks to (``MAX_DOCUMENT_XML_BYTES``, ``MAX_PACKAGE_BYTES``: a zip bomb is refused unread).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rag_cli.errors import DocumentError
from rag_cli.ingest.loaders import Loaded, _clean, _flatten, _unicode, read_bytes
from rag_cli.models import Document, Segment

# word/document.xml is the body's text with its markup: a 1,000-page report is ~20 MB, a table of
# 20,000 rows ~25 MB. lxml holds a parsed tree at several times its size, so beyond this the file
# is refused before it is unpacked.
MAX_DOCUMENT_XML_BYTES = 128 * 1024 * 1024
# python-docx reads every part of the package (images included) into memory.
MAX_PACKAGE_BYTES = 512 * 1024 * 1024

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_T, _TAB, _BR, _CR = _W + "t", _W + "tab", _W + "br", _W + "cr"
_P, _TBL, _TR, _TC = _W + "p", _W + "tbl", _W + "tr", _W + "tc"
_SDT, _SDT_CONTENT, _CUSTOM_XML = _W + "sdt", _W + "sdtContent", _W + "customXml"
_TXBX = _W + "txbxContent"
_FOOTNOTE_REF, _ENDNOTE_REF = _W + "footnoteReference", _W + "endnoteReference"
_VAL, _ID = _W + "val", _W + "id"
# Subtrees whose text is not the paragraph's: properties, deleted or moved-away text, the fallback
# copy of a drawing (mc:Choice holds the same text box), a text box's own paragraphs (read apart).
_SKIP = frozenset({_W + "pPr", _W + "rPr", _W + "del", _W + "moveFrom", _MC + "Fallback", _TXBX,
                   _W + "instrText", _W + "delText"})
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADING_STYLE = re.compile(r"^heading ([1-9])$")
_LIST_LEVEL_STYLE = re.compile(r"^list\b.*?([2-9])$")
_CODE_STYLE = re.compile(r"code|preformatted|macro|verbatim|listing")
_BULLET_FORMATS = frozenset({"bullet", "none", ""})


@dataclass
class _Style:
    name: str
    based_on: str | None = None
    outline: int | None = None  # 0-8 (9 is body text)
    num: tuple[str, int] | None = None  # (numId, ilvl) from the style's own numbering


@dataclass
class _Block:
    kind: str  # heading | paragraph | list | quote | code | table
    text: str
    level: int = 0  # a heading's level


@dataclass
class _Notes:
    """Footnote or endnote marks in order of first reference: the note's id -> its number."""

    prefix: str = ""  # "e" for endnotes: their marks are [^e1], [^e2]... apart from the footnotes'
    order: dict[str, int] = field(default_factory=dict)

    def mark(self, note_id: str) -> str:
        return f"[^{self.prefix}{self.order.setdefault(note_id, len(self.order) + 1)}]"


class DocxLoader:
    """Word .docx via python-docx: headings give sections and the heading path; lists, tables,
    quotes and code are blocks of their own, as in Markdown."""

    kind = "docx"
    suffixes: tuple[str, ...] = (".docx",)

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        data = read_bytes(path) if data is None else data
        if not data.strip():
            return Loaded([])
        _check_package(data)
        try:
            import docx
            from docx.opc.constants import RELATIONSHIP_TYPE as RT

            document = docx.Document(io.BytesIO(data))
            reader = _Reader(document)
            blocks = reader.body_blocks(document.element.body)
            warnings: list[str] = []
            notes = [block for rel_type, marks, what in ((RT.FOOTNOTES, reader.footnotes, "footnotes"),
                                                         (RT.ENDNOTES, reader.endnotes, "endnotes"))
                     for block in reader.note_blocks(document, rel_type, marks, what, warnings)]
            if notes:  # one section: two small ones would merge into a chunk under neither heading
                blocks.append(_Block("heading", "Notes", 1))
                blocks.extend(notes)
            metadata, core_title = _core_properties(document, warnings)
            alt_chunks = len(document.element.body.findall(".//" + _W + "altChunk"))
        except DocumentError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise DocumentError(f"corrupt .docx (damaged zip archive: {_line(exc)})") from None
        except KeyError as exc:
            raise DocumentError(f"corrupt .docx (a part it names is missing: {_line(exc)})") from None
        except ValueError as exc:  # python-docx: "file '...' is not a Word file, content type is '...'"
            raise DocumentError(f"not a Word .docx document ({_line(exc)})") from None
        except Exception as exc:  # python-docx and lxml raise many types on damaged packages
            if type(exc).__name__ == "XMLSyntaxError":  # lxml's, named: lxml has no type information here
                raise DocumentError(f"corrupt .docx (its XML does not parse: {_line(exc)})") from None
            raise DocumentError(f"corrupt or unreadable .docx ({type(exc).__name__}: {_line(exc)})") from None
        if not any(block.text.strip() for block in blocks):
            if alt_chunks:
                raise DocumentError("its text is an embedded HTML or RTF part (altChunk) that only Word converts: "
                                    "open it in Word and save it as .docx again")
            return Loaded([], warnings)
        if alt_chunks:
            warnings.append(f"{alt_chunks} embedded HTML/RTF part(s) (altChunk) not read: open the file in Word "
                            "and save it again to include them")
        first_heading = next((b.text for b in blocks if b.kind == "heading" and b.level <= 1), "")
        doc = _document(blocks, doc_id=doc_id, source=str(path),
                        title=core_title or first_heading or _unicode(path.stem), metadata=metadata)
        return Loaded([doc], warnings)


def _check_package(data: bytes) -> None:
    """A DocumentError naming what the file is when it is not a .docx we should unpack."""
    if data.startswith(_OLE_MAGIC):  # an OLE compound file: an encrypted .docx or an old Office format
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise DocumentError("password-protected (encrypted) .docx: remove the password in Word "
                                "(File > Info > Protect Document) to index it")
        if "WordDocument".encode("utf-16-le") in data:
            raise DocumentError("a Word 97-2003 .doc file, not .docx: save it as .docx")
        raise DocumentError("an OLE compound file (an old Office format), not .docx")
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"{\\rtf"):
        raise DocumentError("an RTF file, not .docx: save it as .docx or rename it .rtf")
    if head.startswith(b"mime-version:") or b"multipart/related" in head[:1024]:
        raise DocumentError("a single-file web page (MHTML), not .docx: save it as .docx from Word")
    if head.startswith(b"<") and (b"<html" in head or b"<!doctype html" in head or b"<body" in head):
        raise DocumentError("an HTML file named .docx, not a Word document: save it as .docx from Word, "
                            "or rename it .html")
    if not data.startswith(b"PK"):
        raise DocumentError("not a .docx (not a zip archive)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            if "mimetype" in infos and b"opendocument" in archive.read("mimetype")[:100]:
                raise DocumentError("an OpenDocument (.odt) file, not .docx: save it as .docx")
    except zipfile.BadZipFile as exc:
        raise DocumentError(f"truncated or corrupt .docx (not a complete zip archive: {_line(exc)})") from None
    if "word/document.xml" not in infos and "[Content_Types].xml" not in infos:
        raise DocumentError("a zip archive, not a Word document (no word/document.xml)")
    main = infos.get("word/document.xml")
    if main is not None and main.file_size > MAX_DOCUMENT_XML_BYTES:
        raise DocumentError(f"word/document.xml unpacks to {main.file_size:,} bytes, more than the "
                            f"{MAX_DOCUMENT_XML_BYTES // 2**20} MB this tool reads (a zip bomb?)")
    total = sum(info.file_size for info in infos.values())
    if total > MAX_PACKAGE_BYTES:
        raise DocumentError(f"unpacks to {total:,} bytes, more than the {MAX_PACKAGE_BYTES // 2**20} MB "
                            "this tool reads (a zip bomb?)")


class _Reader:
    """The blocks of one document's body, with what styles and numbering say about them."""

    def __init__(self, document: Any) -> None:
        self.styles: dict[str, _Style] = {}
        self.default_style: str | None = None
        for el in document.styles.element.iterchildren(_W + "style"):
            if el.get(_W + "type") != "paragraph" or el.get(_W + "styleId") is None:
                continue
            sid = el.get(_W + "styleId")
            name = _val(el.find(_W + "name")) or sid
            based = _val(el.find(_W + "basedOn"))
            ppr = el.find(_W + "pPr")
            self.styles[sid] = _Style(name.strip().lower(), based, _outline(ppr), _numbering(ppr))
            if el.get(_W + "default") in ("1", "true", "on"):
                self.default_style = sid
        self.formats = _number_formats(document)
        self.counters: dict[tuple[str, int], int] = {}
        self.footnotes, self.endnotes = _Notes(), _Notes("e")

    # -- the body ---------------------------------------------------------------------------
    def body_blocks(self, container: Any, headings: bool = True) -> list[_Block]:
        blocks: list[_Block] = []
        for el in _block_children(container):
            if el.tag == _TBL:
                rows = _table_rows(el, self)
                if rows:
                    blocks.append(_Block("table", _table_text(rows)))
                continue
            text, boxes = self.paragraph_text(el)
            text = text.strip()
            if text:
                blocks.append(self.classify(el, text, headings))
            for box in boxes:  # a text box's paragraphs follow the one that anchors it
                blocks.extend(self.body_blocks(box, headings=False))
        return blocks

    def classify(self, p: Any, text: str, headings: bool) -> _Block:
        ppr = p.find(_W + "pPr")
        sid = _val(ppr.find(_W + "pStyle")) if ppr is not None else None
        chain = self._chain(sid or self.default_style)
        name = chain[0].name if chain else ""
        level = self._heading_level(name, ppr, chain) if headings else None
        if level is not None:
            return _Block("heading", " ".join(text.split()), level)
        num = _numbering(ppr) or next((s.num for s in chain if s.num), None)
        if num is not None and num[0] == "0":  # numId 0: numbering switched off for this paragraph
            num = None
        if num is not None or name.startswith("list"):
            return _Block("list", self._list_item(name, num, " ".join(text.split())))
        if "quote" in name:
            return _Block("quote", text)
        if _CODE_STYLE.search(name):
            return _Block("code", text)
        return _Block("paragraph", text)

    def _chain(self, sid: str | None) -> list[_Style]:
        chain: list[_Style] = []
        seen: set[str] = set()
        while sid and sid in self.styles and sid not in seen:  # basedOn can loop in a damaged file
            seen.add(sid)
            chain.append(self.styles[sid])
            sid = self.styles[sid].based_on
        return chain

    @staticmethod
    def _heading_level(name: str, ppr: Any, chain: list[_Style]) -> int | None:
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        if name == "title":  # above Heading 1: a document's Title and its chapters make a path
            return 0
        outline = _outline(ppr)
        if outline is None:
            outline = next((s.outline for s in chain if s.outline is not None), None)
        return outline + 1 if outline is not None and 0 <= outline <= 8 else None

    def _list_item(self, name: str, num: tuple[str, int] | None, text: str) -> str:
        ilvl = num[1] if num else 0
        numbered_style = _LIST_LEVEL_STYLE.match(name)  # "List Bullet 2": the second level
        if numbered_style and not ilvl:
            ilvl = int(numbered_style.group(1)) - 1
        fmt = self.formats.get(num, "") if num else ("decimal" if "number" in name else "bullet")
        indent = "  " * min(ilvl, 8)
        if fmt in _BULLET_FORMATS:
            return f"{indent}- {text}"
        key = num or ("style:" + name, ilvl)
        self.counters[key] = self.counters.get(key, 0) + 1
        for (other, deeper), _ in list(self.counters.items()):  # a new item restarts the levels below it
            if other == key[0] and deeper > ilvl:
                del self.counters[(other, deeper)]
        return f"{indent}{self.counters[key]}. {text}"

    def paragraph_text(self, p: Any) -> tuple[str, list[Any]]:
        """The paragraph's visible text (runs, hyperlinks, fields, insertions; note marks) and the
        text boxes anchored in it, read apart."""
        out: list[str] = []
        boxes: list[Any] = []
        stack = [iter(p)]
        while stack:
            el = next(stack[-1], None)
            if el is None:
                stack.pop()
                continue
            tag = el.tag
            if not isinstance(tag, str):  # an XML comment or processing instruction
                continue
            if tag == _T:
                out.append(el.text or "")
            elif tag == _TAB:
                out.append("\t")
            elif tag in (_BR, _CR):
                out.append("\n")
            elif tag == _W + "noBreakHyphen":
                out.append("-")
            elif tag == _FOOTNOTE_REF and el.get(_ID):
                out.append(self.footnotes.mark(el.get(_ID)))
            elif tag == _ENDNOTE_REF and el.get(_ID):
                out.append(self.endnotes.mark(el.get(_ID)))
            elif tag == _TXBX:
                boxes.append(el)
            elif tag == _P:  # a paragraph nested in a run (rare): its own line
                out.append("\n")
                stack.append(iter(el))
            elif tag not in _SKIP and len(el):
                stack.append(iter(el))
        return _clean("".join(out)), boxes

    # -- footnotes and endnotes ---------------------------------------------------------------
    def note_blocks(self, document: Any, rel_type: str, notes: _Notes, what: str,
                    warnings: list[str]) -> list[_Block]:
        """The notes referenced in the body, in reference order, a paragraph each."""
        if not notes.order:
            return []
        part = next((rel.target_part for rel in document.part.rels.values()
                     if rel.reltype == rel_type and not rel.is_external), None)
        if part is None:
            warnings.append(f"{what} are referenced but the file has no {what} part")
            return []
        from docx.oxml import parse_xml

        if len(part.blob) > MAX_DOCUMENT_XML_BYTES:
            warnings.append(f"{what} not read: their part is over {MAX_DOCUMENT_XML_BYTES // 2**20} MB")
            return []
        root = parse_xml(part.blob)
        texts: dict[str, str] = {}
        for note in root:
            if isinstance(note.tag, str) and note.get(_ID) in notes.order and not note.get(_W + "type"):
                paragraphs = [self.paragraph_text(p)[0].strip() for p in _block_children(note) if p.tag == _P]
                texts[note.get(_ID)] = " ".join(" ".join(t.split()) for t in paragraphs if t)
        lines = [f"[^{notes.prefix}{number}]: {texts[nid]}" for nid, number in notes.order.items() if texts.get(nid)]
        return [_Block("paragraph", line) for line in lines]


def _block_children(container: Any) -> list[Any]:
    """The paragraphs and tables of a body, cell, note or text box in order, inside content
    controls and custom XML too."""
    out: list[Any] = []
    stack = [iter(container)]
    while stack:
        el = next(stack[-1], None)
        if el is None:
            stack.pop()
        elif el.tag in (_P, _TBL):
            out.append(el)
        elif el.tag in (_SDT, _SDT_CONTENT, _CUSTOM_XML, _W + "ins"):
            stack.append(iter(el))
    return out


def _table_rows(tbl: Any, reader: _Reader) -> list[list[str]]:
    """Cell texts a row; a merged cell once (a vertically merged one is blank below its first
    row); a table inside a cell flattened into that cell's text."""
    rows: list[list[str]] = []
    for tr in _descend(tbl, _TR):
        cells: list[str] = []
        for tc in _descend(tr, _TC):
            merge = tc.find(f"{_W}tcPr/{_W}vMerge")
            if merge is not None and merge.get(_VAL) != "restart":
                cells.append("")
                continue
            cells.append(_cell_text(tc, reader))
        if any(cells):
            rows.append(cells)
    return rows


def _descend(parent: Any, tag: str) -> list[Any]:
    """Children of ``parent`` with ``tag``, looking inside content controls and custom XML."""
    out: list[Any] = []
    for el in parent:
        if el.tag == tag:
            out.append(el)
        elif el.tag in (_SDT, _SDT_CONTENT, _CUSTOM_XML):
            out.extend(_descend(el, tag))
    return out


def _cell_text(tc: Any, reader: _Reader) -> str:
    parts: list[str] = []
    for el in _block_children(tc):
        if el.tag == _TBL:
            parts.extend("; ".join(", ".join(c for c in row if c) for row in _table_rows(el, reader)).split("\n"))
        else:
            text, boxes = reader.paragraph_text(el)
            parts.append(text)
            parts.extend(reader.paragraph_text(p)[0] for box in boxes for p in _block_children(box) if p.tag == _P)
    return " ".join(" ".join(parts).split()).replace("|", "\\|")


def _table_text(rows: list[list[str]]) -> str:
    """As a Markdown table: the first row, a separator, then one line a row."""
    width = max(len(row) for row in rows)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines.extend("| " + " | ".join(row) + " |" for row in rows[1:])
    return "\n".join(lines)


def _document(blocks: list[_Block], *, doc_id: str, source: str, title: str, metadata: dict[str, Any]) -> Document:
    """Blocks joined by blank lines into the text, with a Segment each; consecutive list items,
    quote and code paragraphs make one block."""
    merged: list[_Block] = []
    for block in blocks:
        if merged and block.kind in ("list", "quote", "code") and merged[-1].kind == block.kind:
            merged[-1].text += "\n" + block.text
        else:
            merged.append(_Block(block.kind, block.text, block.level))
    pieces: list[str] = []
    segments: list[Segment] = []
    stack: list[tuple[int, str]] = []
    pos = 0
    for block in merged:
        if block.kind == "heading":
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text))
            text = "#" * max(1, min(block.level, 6)) + " " + block.text
        elif block.kind == "quote":
            text = "\n".join("> " + line if line.strip() else ">" for line in block.text.split("\n"))
        elif block.kind == "code":
            text = "```\n" + block.text + "\n```"
        else:
            text = block.text
        if pieces:
            pieces.append("\n\n")
            pos += 2
        path = tuple(name for _, name in stack)
        segments.append(Segment(pos, pos + len(text), block.kind, path, starts_section=block.kind == "heading"))
        pieces.append(text)
        pos += len(text)
    return Document(doc_id=doc_id, source=source, kind=DocxLoader.kind, text="".join(pieces) + "\n", title=title,
                    segments=segments, metadata=metadata)


def _core_properties(document: Any, warnings: list[str]) -> tuple[dict[str, Any], str]:
    """Document metadata from the core properties, and the core title. Dates are numbers
    (YYYYMMDD), so that ``--where created>=20240101`` compares them."""
    try:
        props = document.core_properties
        values: dict[str, Any] = {
            "title": props.title, "author": props.author, "last_modified_by": props.last_modified_by,
            "subject": props.subject, "keywords": props.keywords, "category": props.category,
            "created": props.created, "last_modified": props.modified,
        }
    except Exception as exc:  # a damaged docProps/core.xml costs the metadata, not the text
        warnings.append(f"document properties not read ({type(exc).__name__})")
        return {}, ""
    meta: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, datetime):
            meta[key] = value.year * 10_000 + value.month * 100 + value.day
        elif isinstance(value, str) and value.strip():
            meta[key] = " ".join(_clean(value).split())
    return _flatten(meta), str(meta.get("title", ""))


def _line(exc: BaseException) -> str:
    """An exception's message on one line (a reason is one line), at most 200 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"


def _val(el: Any) -> str | None:
    return el.get(_VAL) if el is not None else None


def _outline(ppr: Any) -> int | None:
    value = _val(ppr.find(_W + "outlineLvl")) if ppr is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _numbering(ppr: Any) -> tuple[str, int] | None:
    if ppr is None:
        return None
    numpr = ppr.find(_W + "numPr")
    if numpr is None:
        return None
    num_id = _val(numpr.find(_W + "numId"))
    try:
        ilvl = int(_val(numpr.find(_W + "ilvl")) or 0)
    except ValueError:
        ilvl = 0
    return (num_id or "", max(0, min(ilvl, 8))) if num_id is not None or numpr.find(_W + "ilvl") is not None else None


def _number_formats(document: Any) -> dict[tuple[str, int], str]:
    """(numId, level) -> the level's number format (bullet, decimal, lowerLetter...)."""
    try:
        root = document.part.numbering_part.element
    except Exception:  # no numbering part: lists by style name only
        return {}
    abstract: dict[str, dict[int, str]] = {}
    for el in root.iterchildren(_W + "abstractNum"):
        levels: dict[int, str] = {}
        for lvl in el.iterchildren(_W + "lvl"):
            try:
                levels[int(lvl.get(_W + "ilvl") or 0)] = _val(lvl.find(_W + "numFmt")) or ""
            except ValueError:
                continue
        abstract[el.get(_W + "abstractNumId") or ""] = levels
    formats: dict[tuple[str, int], str] = {}
    for el in root.iterchildren(_W + "num"):
        levels = abstract.get(_val(el.find(_W + "abstractNumId")) or "", {})
        for ilvl, fmt in levels.items():
            formats[(el.get(_W + "numId") or "", ilvl)] = fmt
    return formats
