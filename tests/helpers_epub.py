"""EPUB files written from known chapters (zipfile only), for the loader and nasty-file tests."""

from __future__ import annotations

import io
import zipfile

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def chapter(title: str, *paragraphs: str, heading: str = "h1") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    head = f"<{heading}>{title}</{heading}>" if title else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
            f"<title>{title}</title></head><body>{head}{body}</body></html>")


def epub_bytes(chapters: dict[str, str], *, toc: dict[str, str] | None = None, omit: tuple[str, ...] = (),
               extra: dict[str, bytes | str] | None = None, title: str = "The Quince Book",
               creators: tuple[str, ...] = ("Ada Orchard",), language: str = "en", date: str = "2021-05-04") -> bytes:
    """An EPUB 3 with ``chapters`` ({file name: XHTML}) in spine order, a nav document whose
    entries are ``toc`` ({file name: title}; default: none), files in ``omit`` left out of the
    archive (but still in the manifest and spine), and ``extra`` files added as they are."""
    toc = toc or {}
    items = "".join(f'<item id="c{k}" href="{name}" media-type="application/xhtml+xml"/>'
                    for k, name in enumerate(chapters))
    spine = "".join(f'<itemref idref="c{k}"/>' for k in range(len(chapters)))
    creators_xml = "".join(f"<dc:creator>{c}</dc:creator>" for c in creators)
    opf = f"""<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:1234</dc:identifier><dc:title>{title}</dc:title>{creators_xml}
    <dc:language>{language}</dc:language><dc:date>{date}</dc:date>
  </metadata>
  <manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>{items}</manifest>
  <spine>{spine}</spine>
</package>"""
    links = "".join(f'<li><a href="{name}">{t}</a></li>' for name, t in toc.items())
    nav = (f'<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
           f'xmlns:epub="http://www.idpf.org/2007/ops"><body><nav epub:type="toc"><ol>{links}</ol></nav></body></html>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml", CONTAINER)
        zf.writestr("OEBPS/content.opf", opf)
        zf.writestr("OEBPS/nav.xhtml", nav)
        for name, xhtml in chapters.items():
            if name not in omit:
                zf.writestr(f"OEBPS/{name}", xhtml)
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return out.getvalue()
