"""Word files for the tests, written with python-docx (and zipfile for what it cannot write:
footnotes, damaged and hostile packages). Nothing binary is committed."""

from __future__ import annotations

import copy
import datetime as dt
import io
import zipfile
from pathlib import Path

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def docx_bytes(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _hyperlink(paragraph, text: str) -> None:
    from docx.oxml import OxmlElement

    link = OxmlElement("w:hyperlink")
    run = OxmlElement("w:r")
    t = OxmlElement("w:t")
    t.text = text
    run.append(t)
    link.append(run)
    paragraph._p.append(link)


def _note_reference(paragraph, kind: str, note_id: int) -> None:
    from docx.oxml import OxmlElement

    run = OxmlElement("w:r")
    ref = OxmlElement(f"w:{kind}Reference")
    ref.set(f"{{{W_NS}}}id", str(note_id))
    run.append(ref)
    paragraph._p.append(run)


def structured_docx(*, author: str = "Jane Doe", title: str = "Quince handbook", footnotes: bool = True) -> bytes:
    """A document with a Title, headings on three levels, lists, a table with merged cells and a
    nested table, a quote, code, a hyperlink, a footnote and an endnote, page header and footer."""
    import docx

    d = docx.Document()
    props = d.core_properties
    props.author, props.title, props.subject, props.keywords = author, title, "Orchards", "quince, medlar"
    props.last_modified_by = "John Roe"
    props.created, props.modified = dt.datetime(2023, 5, 6, 10, 0), dt.datetime(2024, 2, 1, 9, 30)
    section = d.sections[0]
    section.header.paragraphs[0].text = "CONFIDENTIAL page header"
    section.footer.paragraphs[0].text = "Page footer boilerplate"
    d.add_paragraph("Quince handbook", style="Title")
    d.add_paragraph("Quinces are hard, fragrant fruit.")
    d.add_heading("Growing", level=1)
    intro = d.add_paragraph("Plant quinces in autumn, in a sheltered spot.")
    if footnotes:
        _note_reference(intro, "footnote", 1)
    d.add_heading("Soil", level=2)
    d.add_paragraph("Deep loam suits them best.")
    d.add_paragraph("Loam", style="List Bullet")
    d.add_paragraph("Good drainage", style="List Bullet 2")
    d.add_heading("Pruning", level=3)
    d.add_paragraph("Remove dead wood", style="List Number")
    d.add_paragraph("Thin crowded shoots", style="List Number")
    table = d.add_table(rows=3, cols=3)
    for i, row in enumerate(["variety yield notes", "Vranja 41 early", "Meech 12 late"]):
        for j, word in enumerate(row.split()):
            table.cell(i, j).text = word
    table.cell(1, 2).merge(table.cell(2, 2))  # a vertical merge: the text once
    inner = table.cell(2, 0).add_table(rows=1, cols=2)
    inner.cell(0, 0).text, inner.cell(0, 1).text = "nested", "cell"
    d.add_paragraph("A quince in the hand is worth two on the tree.", style="Quote")
    d.add_heading("Harvest", level=1)
    link = d.add_paragraph("Read ")
    _hyperlink(link, "the medlar society's guide")
    link.add_run(" before picking.")
    if footnotes:
        _note_reference(link, "endnote", 2)
    code = d.add_paragraph("ripe = colour == 'gold'")
    code.style = d.styles.add_style("Code Block", 1)  # a custom style named like code
    d.add_paragraph("Store them apart from apples.")
    data = docx_bytes(d)
    return with_notes(data) if footnotes else data


FOOTNOTES_XML = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:{{kind}}s xmlns:w="{W_NS}">
<w:{{kind}} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{{kind}}>
<w:{{kind}} w:id="{{nid}}"><w:p><w:r><w:t>{{text}}</w:t></w:r></w:p></w:{{kind}}>
</w:{{kind}}s>"""


def with_notes(data: bytes) -> bytes:
    """``data`` with a footnotes part (note 1) and an endnotes part (note 2), as Word writes them:
    a part each, a relationship from the document and a content type."""
    notes = {"footnote": (1, "Quinces need a cold winter to fruit."),
             "endnote": (2, "The society was founded in 1911.")}
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "[Content_Types].xml":
                extra = "".join(
                    f'<Override PartName="/word/{k}s.xml" ContentType="application/vnd.openxmlformats-'
                    f'officedocument.wordprocessingml.{k}s+xml"/>' for k in notes)
                body = body.replace(b"</Types>", extra.encode() + b"</Types>")
            elif info.filename == "word/_rels/document.xml.rels":
                extra = "".join(
                    f'<Relationship Id="rIdNote{k}" Type="http://schemas.openxmlformats.org/officeDocument/'
                    f'2006/relationships/{k}s" Target="{k}s.xml"/>' for k in notes)
                body = body.replace(b"</Relationships>", extra.encode() + b"</Relationships>")
            dst.writestr(info, body)
        for kind, (nid, text) in notes.items():
            dst.writestr(f"word/{kind}s.xml", FOOTNOTES_XML.format(kind=kind, nid=nid, text=text))
    return out.getvalue()


def table_docx(rows: int, *, cols: int = 3) -> bytes:
    """A heading and one table of ``rows`` rows (the rows copied in XML: python-docx's add_row
    on a table this long takes minutes)."""
    import docx

    d = docx.Document()
    d.core_properties.title = "Ledger"
    d.add_heading("Ledger", level=1)
    table = d.add_table(rows=1, cols=cols)
    for j in range(cols):
        table.cell(0, j).text = f"column{j}"
    template = table.rows[0]._tr
    tbl = table._tbl
    for i in range(1, rows):
        tr = copy.deepcopy(template)
        for j, t in enumerate(tr.iter(f"{{{W_NS}}}t")):
            t.text = f"row{i} cell{j} value{(i * 7 + j) % 997}"
        tbl.append(tr)
    return docx_bytes(d)


def simple_docx(*paragraphs: str, title: str = "") -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = title
    for text in paragraphs:
        d.add_paragraph(text)
    return docx_bytes(d)


def zip_bomb_docx(document_xml_bytes: int) -> bytes:
    """A real .docx whose word/document.xml is padded with whitespace to ``document_xml_bytes``
    (it compresses ~1000:1), written a megabyte at a time."""
    good = zipfile.ZipFile(io.BytesIO(simple_docx("A small paragraph.")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in good.infolist():
            body = good.read(info.filename)
            if info.filename != "word/document.xml":
                dst.writestr(info.filename, body)
                continue
            head, tail = body.split(b"<w:body>")
            with dst.open("word/document.xml", "w", force_zip64=True) as fh:
                fh.write(head + b"<w:body>")
                pad = document_xml_bytes - len(body)
                block = b" " * (1 << 20)
                while pad > 0:
                    fh.write(block[:pad])
                    pad -= len(block)
                fh.write(tail)
    return out.getvalue()


def compound_file(*stream_names: str) -> bytes:
    """The start of an OLE compound file (Word 97-2003 .doc, or an encrypted .docx, which Office
    writes as one): its signature and a directory sector naming the streams, UTF-16 as in the
    format. Enough for a reader that looks at what the file is; not a complete compound file."""
    header = OLE_MAGIC + bytes(504)
    entries = b""
    for name in ("Root Entry", *stream_names):
        raw = name.encode("utf-16-le") + b"\x00\x00"
        entries += raw + bytes(64 - len(raw)) + len(raw).to_bytes(2, "little") + bytes(62)
    return header + entries + bytes(-len(entries) % 512)


ENCRYPTED_DOCX = ("EncryptionInfo", "EncryptedPackage", "\x06DataSpaces")
WORD_97_DOC = ("WordDocument", "1Table", "\x05SummaryInformation")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
