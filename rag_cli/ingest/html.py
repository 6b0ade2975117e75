"""HTML: the page's main content as the same Segment stream the Markdown loader makes.

The DOM is written out as Markdown-like text (``## Heading`` lines, ``- item`` lists, ``> ``
quotes, fenced code, pipe tables), block by block with a blank line between, so that a page and
the Markdown of the same content give nearly the same chunks and the structure chunker keeps
tables and code whole where they fit. Navigation, scripts, styles, forms and hidden elements are
dropped; ``<main>`` (else ``<article>``) is kept alone when it holds a good part of the text.

Every walk over the tree is iterative or bounded (``MAX_NESTING``): a page of 100,000 nested
elements is read, not a RecursionError.
"""

from __future__ import annotations

import codecs
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_cli.errors import DocumentError
from rag_cli.ingest.loaders import Loaded, _clean, _flatten, _not_binary, _unicode, decode_text, read_bytes
from rag_cli.models import Document, Segment

# Elements whose content is never the page's text.
_DROP = frozenset({"script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
                   "button", "select", "textarea", "object", "embed", "canvas", "video", "audio", "map",
                   "title", "meta", "link", "base"})
# Not <head> as a whole: libxml2 knows no HTML5 elements, and leaves a <main> or <article> that
# comes before any <body> element inside <head>.
_PAGE_FRAME = frozenset({"header", "footer"})  # dropped outside <main> and <article> (the site's, not the post's)
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
_DROP_CLASSES = frozenset({"mw-editsection", "headerlink"})  # Wikipedia's [edit], Sphinx's ¶ anchors
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_LISTS = frozenset({"ul", "ol", "dl", "menu"})
# Elements that end the running paragraph (the rest are inline: their text joins it).
_BLOCKS = frozenset({
    "address", "article", "aside", "head", "blockquote", "body", "caption", "center", "dd", "details", "dialog",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
    "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li", "main", "menu", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "search", "noframes", "frameset",
})
# Lists and quotes nested deeper than this are written as plain lines (Markdown reads 100 levels).
MAX_NESTING = 40
_MAX_COLSPAN = 20  # empty cells written for a colspan: alignment only, never a blow-up
_WS = re.compile(r"\s+")
_CODE_LANG = re.compile(r"(?:^|\s)(?:language|lang|highlight|sourceCode)-([\w+#.-]+)")
_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([-\w.:]+)", re.I)
_XML_ENCODING = re.compile(rb"^\s*<\?xml\b[^>]*?encoding\s*=\s*[\"']([-\w.:]+)[\"']", re.I)
# What an .html that is not text really is: a clear reason instead of "binary file".
_SIGNATURES = ((b"%PDF-", "a PDF"), (b"PK\x03\x04", "a zip archive"), (b"\x89PNG", "a PNG image"),
               (b"GIF8", "a GIF image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "gzip-compressed"),
               (b"\x7fELF", "a program"))


@dataclass
class Block:
    kind: str  # heading | paragraph | code | table | list | quote
    text: str
    level: int = 0  # headings: 1-6
    name: str = ""  # headings: the text in the heading path
    where: int = 0  # 2: inside <main>, 1: inside <article>, 0: elsewhere


@dataclass
class Page:
    blocks: list[Block]
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class HtmlLoader:
    """HTML pages: the main content, its headings as sections, tables, code, lists and quotes as
    blocks of their own (laid out as Markdown would have them)."""

    kind = "html"
    suffixes: tuple[str, ...] = (".html", ".htm", ".xhtml")

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        raw = read_bytes(path) if data is None else data
        if not raw.strip():
            return Loaded([])
        text, notes = decode_html(raw)
        page = parse_page(text)
        doc = page_document(page, doc_id=doc_id, source=str(path), kind=self.kind,
                            default_title=_unicode(path.stem))
        return Loaded([doc] if doc else [], notes=notes)


# -- character sets -----------------------------------------------------------------------

def _repair_as_cp1252(exc: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: bytes that are not UTF-8 read as Windows-1252 (Latin-1 for its
    five undefined bytes): a UTF-8 page with a pasted-in Windows paragraph reads right."""
    assert isinstance(exc, UnicodeDecodeError)
    bad = exc.object[exc.start:exc.end]
    return "".join(bytes([b]).decode("cp1252", "strict") if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
                   else chr(b) for b in bad), exc.end


codecs.register_error("rag-cp1252", _repair_as_cp1252)


def _declared(head: bytes) -> str | None:
    found = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
    return found.group(1).decode("ascii", "replace").lower() if found else None


def decode_html(data: bytes) -> tuple[str, list[str]]:
    """The page's text and notes: from its byte-order mark, else its declared charset (meta or XML
    declaration), else UTF-8, else a guess (charset-normalizer) that the notes mention."""
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            raise DocumentError(f"not HTML: the file is {what} (wrong file extension?)")
    head = data[:8192]
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        text, note = decode_text(data)  # BOMs, UTF-16 without one, NULs of a binary file
        return text, [note] if note else []
    declared, notes = _declared(head), []
    codec = None
    if declared:
        try:
            codec = codecs.lookup(declared).name
        except LookupError:
            notes.append(f"unknown charset {declared!r} declared; ignored")
        # As browsers do (WHATWG Encoding): Latin-1 and ASCII labels mean Windows-1252, and a
        # UTF-16 label on a page that is readable as bytes is wrong.
        if codec in ("latin-1", "iso8859-1", "ascii"):
            codec = "cp1252"
        elif codec and codec.startswith("utf-16"):
            codec = "utf-8"
    if codec:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            if codec == "utf-8":
                text = data.decode("utf-8", "rag-cp1252")
                notes.append(f"not valid UTF-8 as declared (byte {exc.start}); those bytes read as Windows-1252")
            else:
                text = data.decode(codec, "replace")
                notes.append(f"not valid {declared} as declared (byte {exc.start}); bad bytes replaced")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text, guess = _guess(data)
            notes.append(f"no charset declared and not UTF-8; read as {guess} (a guess)")
    return _clean(_not_binary(text)), notes


def _guess(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    if best is not None and best.encoding:
        try:
            return data.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


# -- the DOM to blocks ------------------------------------------------------------------------

def parse_page(text: str) -> Page:
    """The blocks of a page's main content, its title and what its <meta> tags say."""
    import warnings

    from bs4 import BeautifulSoup

    with warnings.catch_warnings():
        # XHTML (an EPUB chapter, an .xhtml page) is read as HTML on purpose: lenient, and its tags
        # are the same; bs4 would warn about it (and about text that looks like a URL or file name).
        warnings.simplefilter("ignore")
        try:
            soup = BeautifulSoup(text, "lxml")
        except Exception:  # lxml missing or refusing the input: the standard library's parser
            soup = BeautifulSoup(text, "html.parser")
    title = ""
    if soup.title is not None:
        title = _WS.sub(" ", soup.title.get_text(" ")).strip()
    metadata: dict[str, Any] = {}
    root = soup.find("html")
    lang = root.get("lang") if _is_tag(root) else None  # type: ignore[union-attr]
    if isinstance(lang, str) and lang.strip():
        metadata["language"] = lang.strip()
    for meta in soup.find_all("meta", attrs={"name": True, "content": True}, limit=200):
        name = str(meta.get("name", "")).lower()
        if name in ("author", "description", "keywords") and str(meta.get("content", "")).strip():
            metadata.setdefault(name, _WS.sub(" ", str(meta["content"])).strip())
    body = soup.body if soup.body is not None and soup.head is None else soup
    token = _HOLDERS.set(_Holders(_holders(body, list(_HEADINGS)), _holders(body, ["table"])))
    try:
        blocks = list(_Walker().blocks(body))
    finally:
        _HOLDERS.reset(token)
    return Page(_main_content(blocks), title=title, metadata=metadata)


def _main_content(blocks: list[Block]) -> list[Block]:
    """The blocks of <main> when they hold a third of the text, else those of <article>, else all."""
    total = sum(len(b.text) for b in blocks)
    for where in (2, 1):
        inside = [b for b in blocks if b.where >= where]
        if inside and sum(len(b.text) for b in inside) * 3 >= total:
            return inside
    return blocks


def _is_tag(node: Any) -> bool:
    return getattr(node, "name", None) is not None


def _skipped(node: Any, in_content: bool) -> bool:
    """A text node that is not text (comments, doctypes), or an element that is no content."""
    from bs4 import NavigableString

    if not _is_tag(node):
        # Comment, Doctype, Declaration, ProcessingInstruction... are NavigableString subclasses.
        return type(node) is not NavigableString and type(node).__name__ != "CData"
    name = node.name.lower()
    if name in _DROP or (name in _PAGE_FRAME and not in_content):
        return True
    attrs = node.attrs
    if not attrs:
        return False
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    if str(attrs.get("role", "")).lower() in _DROP_ROLES and name not in ("main", "article"):
        return True
    classes = attrs.get("class")
    if classes and not _DROP_CLASSES.isdisjoint(classes if isinstance(classes, list) else str(classes).split()):
        return True
    style = attrs.get("style")
    return bool(style and _HIDDEN_STYLE.search(str(style)))


@dataclass(frozen=True)
class _Holders:
    """The ids of the elements that hold a heading, or a table, somewhere below them: found once
    per page by walking up from each heading and table (stopping at an element already marked),
    so that asking it of every element of a 100,000-deep nest is not quadratic."""

    heading: frozenset[int] = frozenset()
    table: frozenset[int] = frozenset()


_HOLDERS: contextvars.ContextVar[_Holders | None] = contextvars.ContextVar("rag_html_holders", default=None)
_NO_HOLDERS = _Holders()


def _holding() -> _Holders:
    return _HOLDERS.get() or _NO_HOLDERS


def _holders(root: Any, names: list[str]) -> frozenset[int]:
    marked: set[int] = set()
    for element in root.find_all(names):
        parent = element.parent
        while parent is not None and id(parent) not in marked:
            marked.add(id(parent))
            parent = parent.parent
    return frozenset(marked)


def _layout_table(table: Any) -> bool:
    """A table used for layout (a nested table, headings or a role saying so): read as a container."""
    if str(table.get("role", "")).lower() in ("presentation", "none"):
        return True
    holders = _holding()
    return id(table) in holders.heading or id(table) in holders.table


_FLUSH = object()


class _Walker:
    """Blocks of a subtree, in document order, with an explicit stack (no recursion)."""

    def blocks(self, root: Any) -> Iterator[Block]:
        inline: list[str] = []
        inline_where = 0  # where the running paragraph started

        def add(piece: str, where: int) -> None:
            nonlocal inline_where
            if not inline:
                inline_where = where
            inline.append(piece)

        def flush() -> Iterator[Block]:
            text = _inline_text(inline)
            inline.clear()
            if text:
                yield Block("paragraph", text, where=inline_where)

        stack: list[Any] = [(root, 0)]
        while stack:
            item = stack.pop()
            if item is _FLUSH:
                yield from flush()
                continue
            node, inside = item
            if _skipped(node, inside > 0):
                continue
            if not _is_tag(node):
                add(_WS.sub(" ", str(node)), inside)
                continue
            name = node.name.lower()
            if name == "br":
                add("\n", inside)
                continue
            if name == "code":
                add(_inline_code(node), inside)
                continue
            if name in ("img", "hr", "wbr", "input"):
                if name == "hr":
                    yield from flush()
                continue
            leaf = self._leaf(node, name)
            if leaf is not None or name in _BLOCKS:
                yield from flush()
            if leaf is not None:
                for block in leaf:
                    block.where = inside
                    yield block
                continue
            if name == "main" or str(node.get("role", "")).lower() == "main":
                inside = 2
            elif name == "article" and inside < 1:
                inside = 1
            if name in _BLOCKS:
                stack.append(_FLUSH)
            stack.extend((child, inside) for child in reversed(node.contents))
        yield from flush()

    def _leaf(self, node: Any, name: str) -> list[Block] | None:
        """The blocks of an element written as a whole (headings, code, tables, lists, quotes),
        or None for a container whose children are walked."""
        if name in _HEADINGS:
            heading = _inline_text(_inline_pieces(node, in_heading=True)).replace("\n", " ")
            if not heading:
                return []
            level = _HEADINGS[name]
            return [Block("heading", "#" * level + " " + heading, level=level, name=heading)]
        if name == "pre":
            code = _code_block(node)
            return [Block("code", code)] if code else []
        if name == "table" and not _layout_table(node):
            return _table_blocks(node)
        if name in _LISTS and id(node) not in _holding().heading:
            lines = _list_lines(node, 0)
            return [Block("list", "\n".join(lines))] if lines else []
        if name == "blockquote":
            lines = _flow_lines(node, 1)
            return [Block("quote", "\n".join("> " + ln if ln else ">" for ln in lines))] if lines else []
        return None


# -- writing elements as text -----------------------------------------------------------------

def _inline_text(pieces: list[str]) -> str:
    """Inline text as a browser shows it: runs of whitespace one space, <br> a line break."""
    lines = [_WS.sub(" ", line).strip() for line in "".join(pieces).split("\n")]
    return "\n".join(line for line in lines if line)


def _inline_pieces(node: Any, *, in_heading: bool = False) -> list[str]:
    """The text pieces of an element's subtree (iterative): text as is, "\\n" for <br> and
    between blocks, inline code in backticks. In a heading, a link that is one symbol (a ¶ or #
    anchor) is left out."""
    pieces: list[str] = []
    stack: list[Any] = list(reversed(node.contents))
    while stack:
        item = stack.pop()
        if type(item) is str:  # a break between blocks, pushed below
            pieces.append("\n")
            continue
        if _skipped(item, True):
            continue
        if not _is_tag(item):
            pieces.append(_WS.sub(" ", str(item)))
            continue
        name = item.name.lower()
        if name == "br":
            pieces.append("\n")
        elif name == "code":
            pieces.append(_inline_code(item))
        elif in_heading and name == "a" and len(item.get_text().strip()) <= 1:
            continue
        elif name in _BLOCKS:
            stack.append("\n")
            stack.extend(reversed(item.contents))
            stack.append("\n")
        else:
            stack.extend(reversed(item.contents))
    return pieces


def _inline_code(node: Any) -> str:
    code = _WS.sub(" ", node.get_text()).strip()
    if not code:
        return ""
    fence = "``" if "`" in code else "`"
    return f" {fence}{code}{fence} " if code.startswith("`") or code.endswith("`") else f"{fence}{code}{fence}"


def _code_block(pre: Any) -> str:
    """A <pre> as a fenced block, its language from a language-*/lang-*/highlight-* class."""
    pieces: list[str] = []
    stack: list[Any] = list(reversed(pre.contents))
    while stack:
        item = stack.pop()
        if _skipped(item, True):
            continue
        if not _is_tag(item):
            pieces.append(str(item))
        elif item.name.lower() == "br":
            pieces.append("\n")
        else:
            stack.extend(reversed(item.contents))
    code = "".join(pieces).removeprefix("\n").rstrip()
    if not code.strip():
        return ""
    lang = ""
    for holder in (pre, pre.find("code"), pre.parent, getattr(pre.parent, "parent", None)):
        classes = holder.get("class") if holder is not None and _is_tag(holder) else None
        found = _CODE_LANG.search(" ".join(classes) if isinstance(classes, list) else str(classes or ""))
        if found:
            lang = found.group(1)
            break
    longest = max((len(m.group(0)) for m in re.finditer(r"^[ \t]*`{3,}", code, re.M)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{code}\n{fence}"


def _cell_text(cell: Any) -> str:
    return " ".join(_inline_text(_inline_pieces(cell)).split("\n")).replace("|", "\\|")


def _rows(table: Any) -> Iterator[Any]:
    for child in table.children:
        if not _is_tag(child):
            continue
        name = child.name.lower()
        if name == "tr":
            yield child
        elif name in ("thead", "tbody", "tfoot"):
            yield from (row for row in child.children if _is_tag(row) and row.name.lower() == "tr")


def _table_blocks(table: Any) -> list[Block]:
    """A data table as a pipe table (its first row the header), its caption a paragraph before it."""
    out: list[Block] = []
    caption = table.find("caption", recursive=False)
    if caption is not None:
        text = _inline_text(_inline_pieces(caption)).replace("\n", " ")
        if text:
            out.append(Block("paragraph", text))
    rows: list[list[str]] = []
    for row in _rows(table):
        cells: list[str] = []
        for cell in row.children:
            if not _is_tag(cell) or cell.name.lower() not in ("td", "th") or _skipped(cell, True):
                continue
            cells.append(_cell_text(cell))
            try:
                span = int(str(cell.get("colspan", "1")).strip() or 1)
            except ValueError:
                span = 1
            cells.extend([""] * (min(max(span, 1), _MAX_COLSPAN) - 1))
        if any(cells):
            rows.append(cells)
    if not rows:
        return out
    width = max(len(r) for r in rows)
    lines = []
    for k, cells in enumerate(rows):
        cells = cells + [""] * (width - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append("|" + "---|" * width)
    out.append(Block("table", "\n".join(lines)))
    return out


def _list_lines(node: Any, depth: int) -> list[str]:
    """A list as Markdown lines: "- " or "N. " items, nested lists indented under their item;
    <dl> terms as lines and their definitions after ": "."""
    name = node.name.lower()
    lines: list[str] = []
    number = 1
    if name == "ol":
        try:
            number = max(-10**9, min(10**9, int(str(node.get("start", "1")).strip())))
        except ValueError:
            number = 1
    for child in node.children:
        if _skipped(child, True):
            continue
        if not _is_tag(child):
            text = _WS.sub(" ", str(child)).strip()
            if text:
                lines.append("- " + text)
            continue
        child_name = child.name.lower()
        if name == "dl" and child_name in ("dt", "dd"):
            marker = "" if child_name == "dt" else ": "
        elif child_name == "li":
            marker = f"{number}. " if name == "ol" else "- "
            number += 1
        elif child_name in _LISTS and depth < MAX_NESTING:  # a list right inside a list (invalid, common)
            lines.extend("  " + ln for ln in _list_lines(child, depth + 1))
            continue
        else:
            marker = "- "
        body = _flow_lines(child, depth + 1)
        if not body:
            continue
        pad = " " * len(marker)
        lines.append(marker + body[0])
        lines.extend(pad + ln if ln else "" for ln in body[1:])
    return lines


def _flow_lines(node: Any, depth: int) -> list[str]:
    """The lines of an element's content, as Markdown: inline text, nested lists and quotes
    (below MAX_NESTING), code lines kept; each block its own line."""
    lines: list[str] = []
    inline: list[str] = []

    def flush() -> None:
        text = _inline_text(inline)
        inline.clear()
        if text:
            lines.extend(text.split("\n"))

    stack: list[Any] = list(reversed(node.contents))
    while stack:
        item = stack.pop()
        if item is _FLUSH:
            flush()
            continue
        if _skipped(item, True):
            continue
        if not _is_tag(item):
            inline.append(_WS.sub(" ", str(item)))
            continue
        name = item.name.lower()
        if name == "br":
            inline.append("\n")
        elif name == "code":
            inline.append(_inline_code(item))
        elif name == "pre":
            flush()
            code = _code_block(item)
            if code:
                lines.extend(code.split("\n"))
        elif name in _LISTS and depth < MAX_NESTING:
            flush()
            lines.extend(_list_lines(item, depth + 1))
        elif name == "blockquote" and depth < MAX_NESTING:
            flush()
            lines.extend("> " + ln if ln else ">" for ln in _flow_lines(item, depth + 1))
        elif name == "table" and not _layout_table(item):
            flush()
            for block in _table_blocks(item):
                lines.extend(block.text.split("\n"))
        elif name in _BLOCKS:
            flush()
            stack.append(_FLUSH)
            stack.extend(reversed(item.contents))
        else:
            stack.extend(reversed(item.contents))
    flush()
    return lines


# -- blocks to a Document -------------------------------------------------------------------

def page_document(page: Page, *, doc_id: str, source: str, kind: str, default_title: str,
                  top: tuple[str, ...] = ()) -> Document | None:
    """The Document of a page's blocks: blank lines between blocks, heading paths as Markdown's
    (under ``top``, for an EPUB chapter). None when the page has no text."""
    text, segments = layout(page.blocks, top=top)
    if not text.strip():
        return None
    first_h1 = next((b.name for b in page.blocks if b.kind == "heading" and b.level == 1), "")
    title = _unicode(page.title or first_h1 or default_title)
    return Document(doc_id=doc_id, source=source, kind=kind, text=text, title=title, segments=segments,
                    metadata=_flatten(page.metadata))


def layout(blocks: list[Block], *, top: tuple[str, ...] = (), base: int = 0) -> tuple[str, list[Segment]]:
    """Text and segments of ``blocks`` (offsets from ``base``); text is cleaned (no \\r, NUL or lone
    surrogates) block by block, so the offsets hold."""
    parts: list[str] = []
    segments: list[Segment] = []
    stack: list[tuple[int, str]] = []
    pos = base
    for block in blocks:
        body = _clean(block.text).strip("\n")
        if not body.strip():
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        if block.kind == "heading":
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, _clean(block.name)))
            heading = top + tuple(n for _, n in stack)
            segments.append(Segment(pos, pos + len(body), "heading", heading, starts_section=True))
        else:
            segments.append(Segment(pos, pos + len(body), block.kind, top + tuple(n for _, n in stack)))
        parts.append(body)
        pos += len(body)
    return "".join(parts), segments
