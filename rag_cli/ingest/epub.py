"""EPUB: one Document per book, its chapters in spine order, each through the HTML path.

ebooklib reads the package (metadata, manifest, spine, table of contents) from a zip archive that
this module has checked first: its size (``MAX_UNCOMPRESSED_MB``, ``MAX_ENTRIES``: a zip bomb is
refused before anything is decompressed) and DRM (``META-INF/encryption.xml`` listing encrypted
content, ``rights.xml``, ``sinf.xml``). A chapter missing from the archive is a warning; the
rest of the book is read. The chapter's title (from the table of contents, else its first
heading) tops the heading path of its blocks, and each chapter starts a section.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rag_cli.errors import DocumentError
from rag_cli.ingest.html import decode_html, layout, parse_page
from rag_cli.ingest.loaders import Loaded, _clean, _flatten, _unicode, read_bytes
from rag_cli.models import Document

# What one EPUB may hold, uncompressed: far above real books (a novel is a few MB, an illustrated
# book a few hundred), far below what a zip bomb expands to. The declared sizes are checked before
# anything is read, and zipfile stops a member at its declared size.
MAX_UNCOMPRESSED_MB = 512
MAX_ENTRIES = 20_000
# Font obfuscation (IDPF, Adobe) mangles embedded fonts only: not DRM, the text is readable.
_FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
_ENC_NS = "http://www.w3.org/2001/04/xmlenc#"
_WS = re.compile(r"\s+")
_MISSING_NCX = (b'<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap/></ncx>')
_MISSING_XHTML = b'<html xmlns="http://www.w3.org/1999/xhtml"><body><nav id="toc"><ol></ol></nav></body></html>'


class EpubLoader:
    """EPUB books: chapters in spine order as one document, its metadata filterable with --where."""

    kind = "epub"
    suffixes: tuple[str, ...] = (".epub",)

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Loaded:
        raw = read_bytes(path) if data is None else data
        if not raw:
            return Loaded([])
        archive = _open_zip(raw)
        _check_size(archive)
        _check_drm(archive)
        book, missing = _read_package(archive, raw)
        warnings: list[str] = []
        notes: list[str] = []
        titles = _toc_titles(book)
        parts: list[str] = []
        segments: list[Any] = []
        pos = 0
        chapters = 0
        for number, (idref, _linear) in enumerate(book.spine, start=1):
            item = book.get_item_with_id(idref)
            if item is None:
                warnings.append(f"spine item {number} ({_unicode(str(idref))!r}) is not in the manifest; skipped")
                continue
            name = posixpath.normpath(item.get_name())
            if name in missing:
                warnings.append(f"chapter {_unicode(name)!r} (spine item {number}) is missing from the archive; "
                                "skipped")
                continue
            if type(item).__name__ == "EpubNav" or not name.lower().endswith((".xhtml", ".html", ".htm", ".xml")):
                continue  # the table of contents, or an image in the spine
            try:
                text, chapter_notes = decode_html(item.get_content())
                page = parse_page(text)
            except DocumentError as exc:
                warnings.append(f"chapter {_unicode(name)!r}: not read ({exc.reason})")
                continue
            notes.extend(f"chapter {_unicode(name)!r}: {note}" for note in chapter_notes[:1])
            blocks = page.blocks
            first = next((b.name for b in blocks if b.kind == "heading"), "")
            title = titles.get(name) or first
            # "Chapter 1. Planting" over a first heading "Planting" would say it twice.
            top = (_unicode(title),) if title and not (first and _norm(first) in _norm(title)) else ()
            base = pos + (2 if parts else 0)
            text, chapter_segments = layout(blocks, top=top, base=base)
            if not text.strip():
                continue
            if parts:
                parts.append("\n\n")
            parts.append(text)
            pos = base + len(text)
            # A chapter never runs on into the last one's section.
            chapter_segments[0] = dataclasses.replace(chapter_segments[0], starts_section=True)
            segments.extend(chapter_segments)
            chapters += 1
        if not parts:
            if warnings:
                raise DocumentError(f"no chapter could be read ({warnings[0]})")
            return Loaded([])
        metadata = _book_metadata(book)
        metadata["chapters"] = chapters
        doc = Document(doc_id=doc_id, source=str(path), kind=self.kind, text="".join(parts),
                       title=_unicode(metadata.get("title") or path.stem), segments=segments,
                       metadata=_flatten(metadata))
        return Loaded([doc], warnings, notes)


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().casefold()


def _open_zip(raw: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        if raw.startswith(b"PK"):
            raise DocumentError(f"corrupt or truncated EPUB: the zip archive cannot be read ({exc})") from None
        raise DocumentError("not an EPUB: not a zip archive (wrong file extension?)") from None


def _check_size(archive: zipfile.ZipFile) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise DocumentError(f"EPUB not read: more than {MAX_ENTRIES:,} files in the archive")
    total = sum(info.file_size for info in infos)
    if total > MAX_UNCOMPRESSED_MB * 1_000_000:
        raise DocumentError(f"EPUB not read: it unpacks to {total / 1e6:,.0f} MB, more than the "
                            f"{MAX_UNCOMPRESSED_MB:,} MB allowed (a zip bomb?)")
    if any(info.flag_bits & 0x1 for info in infos):
        raise DocumentError("DRM-protected (password-encrypted zip entries): the text cannot be read")


def _check_drm(archive: zipfile.ZipFile) -> None:
    names = {name.lower(): name for name in archive.namelist()}
    if "meta-inf/rights.xml" in names:
        raise DocumentError("DRM-protected (META-INF/rights.xml: Adobe ADEPT): the text cannot be read")
    if "meta-inf/sinf.xml" in names:
        raise DocumentError("DRM-protected (META-INF/sinf.xml: Apple FairPlay): the text cannot be read")
    if "meta-inf/encryption.xml" not in names:
        return
    from lxml import etree

    encrypted: list[str] = []
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
        root = etree.fromstring(archive.read(names["meta-inf/encryption.xml"]), parser)
        for data in root.iter(f"{{{_ENC_NS}}}EncryptedData") if root is not None else ():
            method = data.find(f"{{{_ENC_NS}}}EncryptionMethod")
            algorithm = method.get("Algorithm", "") if method is not None else ""
            if algorithm in _FONT_OBFUSCATION:
                continue
            ref = data.find(f".//{{{_ENC_NS}}}CipherReference")
            encrypted.append(ref.get("URI", "?") if ref is not None else "?")
    except Exception:
        raise DocumentError("DRM-protected (META-INF/encryption.xml cannot be read): "
                            "the text cannot be read") from None
    if encrypted:
        more = f" and {len(encrypted) - 1} more" if len(encrypted) > 1 else ""
        raise DocumentError(f"DRM-protected (META-INF/encryption.xml lists {_unicode(encrypted[0])!r}{more} as "
                            "encrypted): the text cannot be read")


def _read_package(archive: zipfile.ZipFile, raw: bytes) -> tuple[Any, set[str]]:
    """ebooklib's book, and the manifest files missing from the archive (read as placeholders)."""
    import warnings

    from ebooklib import epub

    present = set(archive.namelist())
    missing: set[str] = set()

    class Reader(epub.EpubReader):
        def read_file(self, name: str) -> bytes:
            name = posixpath.normpath(name)
            if name in present:
                return archive.read(name)
            decoded = unquote(name)
            if decoded in present:
                return archive.read(decoded)
            if name == "META-INF/container.xml" or name == self.opf_file:
                raise KeyError(name)
            missing.add(posixpath.relpath(name, self.opf_dir or "."))
            return _MISSING_NCX if name.lower().endswith(".ncx") else _MISSING_XHTML

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = Reader(io.BytesIO(raw), {"ignore_ncx": True})
            book = reader.load()
    except KeyError as exc:
        raise DocumentError(f"not a valid EPUB: {_unicode(str(exc.args[0] if exc.args else exc))} is missing "
                            "from the archive") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DocumentError(f"corrupt or truncated EPUB: a file in it cannot be unpacked ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # ebooklib and lxml raise many types on a damaged package
        reason = _clean(str(exc)).replace("\n", " ")[:200]
        raise DocumentError(f"not a valid EPUB ({type(exc).__name__}: {reason})") from None
    if not book.spine:
        raise DocumentError("not a valid EPUB: its package lists no chapters (an empty spine)")
    return book, missing


def _toc_titles(book: Any) -> dict[str, str]:
    """The table of contents' title of each file (its first entry), by file name in the package."""
    titles: dict[str, str] = {}
    stack: list[Any] = list(reversed(book.toc if isinstance(book.toc, (list, tuple)) else []))
    seen = 0
    while stack and seen < 100_000:
        seen += 1
        entry = stack.pop()
        if isinstance(entry, tuple) and len(entry) == 2:
            stack.extend(reversed(list(entry[1]) if isinstance(entry[1], (list, tuple)) else []))
            entry = entry[0]
        elif isinstance(entry, list):
            stack.extend(reversed(entry))
            continue
        href, title = getattr(entry, "href", None), getattr(entry, "title", None)
        if isinstance(href, str) and isinstance(title, str) and title.strip():
            name = posixpath.normpath(unquote(href.split("#", 1)[0]))
            titles.setdefault(name, _WS.sub(" ", title).strip())
    return titles


def _book_metadata(book: Any) -> dict[str, Any]:
    """Dublin Core title, creators (as author), language, date and publisher, as plain strings."""
    out: dict[str, Any] = {}
    for field, key in (("title", "title"), ("creator", "author"), ("language", "language"), ("date", "date"),
                       ("publisher", "publisher")):
        try:
            values = [_WS.sub(" ", str(v)).strip() for v, _ in book.get_metadata("DC", field) if v]
        except Exception:
            values = []
        values = [_clean(v) for v in values if v]
        if values:
            out[key] = values[0] if key in ("title", "date") else "; ".join(dict.fromkeys(values))
    return out
