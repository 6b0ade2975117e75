"""HTML and EPUB loaders: the page's main content with its structure (as Markdown would have
it), character sets, books in spine order with their metadata, and their bad files."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from unittest import mock

import pytest

from helpers_epub import chapter, epub_bytes
from helpers_ingest import assert_chunk_invariants, markdown_document, real_counter
from indexing_helpers import invoke
from rag_cli.errors import DocumentError
from rag_cli.ingest import epub as epub_module
from rag_cli.ingest.chunkers import make_chunker
from rag_cli.ingest.epub import EpubLoader
from rag_cli.ingest.html import HtmlLoader
from rag_cli.models import Document

NO_SERVE = {"RAG_NO_SERVE": "1"}

DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Installing — Widgetry 2.1 documentation</title><meta name="author" content="The Widgetry team">
<script>window.dataLayer = []; function track() {}</script><style>body { font-family: sans-serif; }</style>
</head><body>
<header class="site-header"><a href="/">Widgetry</a><form><input name="q"><button>Search</button></form></header>
<nav class="sidebar"><ul><li><a href="intro.html">Introduction</a></li><li>Configuration</li></ul></nav>
<main>
<h1>Installing<a class="headerlink" href="#installing">¶</a></h1>
<p>Widgetry runs on Python 3.10 or newer. Install it from PyPI with pip, or build it from source.</p>
<h2 id="pip">With pip<a href="#pip">#</a></h2>
<p>The quickest way is a virtual environment:</p>
<div class="highlight-shell"><div class="highlight"><pre><span class="gp">$ </span>python -m venv .venv
<span class="gp">$ </span>pip install widgetry
</pre></div></div>
<p>Check it with <code>widgetry --version</code>.</p>
<h2>Supported platforms</h2>
<table><thead><tr><th>Platform</th><th>Python</th></tr></thead>
<tbody><tr><td>Linux x86-64</td><td>3.10–3.13</td></tr><tr><td>Windows</td><td>3.10–3.12</td></tr></tbody></table>
<h2>From source</h2>
<ol><li>Clone the repository.</li><li>Install a C compiler:<ul><li>gcc on Linux</li><li>Xcode on macOS</li></ul>
</li></ol>
<blockquote><p>Building takes a minute.</p></blockquote>
<div style="display:none">Hidden tracking text.</div><p hidden>Also hidden.</p>
</main>
<aside><h3>On this page</h3><ul><li>With pip</li></ul></aside>
<footer><p>© 2024 Widgetry contributors.</p></footer><script src="search.js"></script>
</body></html>"""

# The same content, as its author would have written it in Markdown.
DOCS_MARKDOWN = """# Installing

Widgetry runs on Python 3.10 or newer. Install it from PyPI with pip, or build it from source.

## With pip

The quickest way is a virtual environment:

```shell
$ python -m venv .venv
$ pip install widgetry
```

Check it with `widgetry --version`.

## Supported platforms

| Platform | Python |
|---|---|
| Linux x86-64 | 3.10–3.13 |
| Windows | 3.10–3.12 |

## From source

1. Clone the repository.
2. Install a C compiler:
   - gcc on Linux
   - Xcode on macOS

> Building takes a minute.
"""


def load_html(tmp_path: Path, content: str | bytes, name: str = "page.html"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return HtmlLoader().load(path, name)


def only(loaded) -> Document:
    assert len(loaded.documents) == 1
    return loaded.documents[0]


def kinds_and_headings(doc: Document) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(s.kind, s.heading, s.starts_section) for s in doc.segments]


# -- HTML: structure ---------------------------------------------------------------------------

def test_html_docs_page_reads_as_its_markdown(tmp_path):
    loaded = load_html(tmp_path, DOCS_PAGE)
    doc = only(loaded)
    assert doc.kind == "html" and doc.title == "Installing — Widgetry 2.1 documentation"
    assert doc.metadata == {"language": "en", "author": "The Widgetry team"}
    assert loaded.notes == [] and loaded.warnings == []
    assert doc.text == DOCS_MARKDOWN.strip()
    markdown = markdown_document(DOCS_MARKDOWN)
    assert kinds_and_headings(doc) == kinds_and_headings(markdown)


@pytest.mark.parametrize("gone", ["Widgetry contributors", "Introduction", "Search", "On this page", "dataLayer",
                                  "font-family", "Hidden tracking", "Also hidden", "¶"])
def test_html_drops_navigation_scripts_styles_and_hidden_text(tmp_path, gone):
    assert gone not in only(load_html(tmp_path, DOCS_PAGE)).text


def test_html_chunks_are_the_markdown_chunks(tmp_path):
    doc = only(load_html(tmp_path, DOCS_PAGE))
    chunker = make_chunker("structure", real_counter(), size=64, overlap=8)
    chunks = chunker.chunk(doc)
    assert_chunk_invariants(doc, chunks, real_counter(), chunker.size)
    md_chunks = chunker.chunk(markdown_document(DOCS_MARKDOWN))
    assert [(c.text, c.heading) for c in chunks] == [(c.text, c.heading) for c in md_chunks]
    table = next(c for c in chunks if "| Platform |" in c.text)
    assert "| Windows | 3.10–3.12 |" in table.text, "the table is one chunk"
    code = next(c for c in chunks if "```shell" in c.text)
    assert code.text.count("```") == 2, "the code block is one chunk"


BLOG = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">
<title>Why we moved to SQLite | Ada's blog</title></head><body>
<div id="top"><a href="/">Ada's blog</a></div>
<article><header><h1>Why we moved to SQLite</h1><p>Posted on 3 March 2024</p></header>
<p>For years our service ran on a PostgreSQL server that cost more than the rest of the stack together.</p>
<h2>The numbers</h2><p>Reads were 99% of the traffic: \x93simple\x94 was enough.</p>
</article>
<section class="comments"><h3>3 comments</h3><p>Bob: great post!</p></section>
<footer>Powered by a static site generator.</footer></body></html>"""


def test_html_blog_post_keeps_the_article_with_its_own_header(tmp_path):
    doc = only(load_html(tmp_path, BLOG.encode("latin-1")))
    assert doc.text.startswith("# Why we moved to SQLite\n\nPosted on 3 March 2024")
    assert "\u201csimple\u201d" in doc.text  # the declared windows-1252
    assert "Bob" not in doc.text and "static site" not in doc.text and "Ada's blog" not in doc.text
    assert [s.heading for s in doc.segments if s.kind == "heading"] == [
        ("Why we moved to SQLite",), ("Why we moved to SQLite", "The numbers")]


WIKI = """<html><head><meta charset="utf-8"><title>Quince - Wikipedia</title></head><body>
<main id="content"><h1>Quince</h1>
<p>The <b>quince</b> is the sole member of the genus <i>Cydonia</i>.<sup><a href="#c1">[1]</a></sup></p>
<div class="toc" role="navigation"><h2>Contents</h2><ul><li>Production</li></ul></div>
<h2><span>Production</span><span class="mw-editsection">[<a>edit</a>]</span></h2>
<table class="wikitable"><caption>Quince production, 2020</caption>
<tr><th>Country</th><th>Tonnes</th></tr><tr><td>Turkey</td><td>180,000</td></tr>
<tr><td colspan="2">Total | world</td></tr></table>
<h3>Cultivars</h3><dl><dt>Vranja</dt><dd>a Serbian cultivar</dd></dl>
<table><tr><td><h4>Layout cell</h4><p>A paragraph laid out by a table.</p></td></tr></table>
</main></body></html>"""


def test_html_wikipedia_like_article_with_tables(tmp_path):
    doc = only(load_html(tmp_path, WIKI))
    assert "[edit]" not in doc.text and "Contents" not in doc.text
    table = next(doc.text[s.start:s.end] for s in doc.segments if s.kind == "table")
    assert table == "| Country | Tonnes |\n|---|---|\n| Turkey | 180,000 |\n| Total \\| world |  |"
    caption = doc.segments[[s.kind for s in doc.segments].index("table") - 1]
    assert doc.text[caption.start:caption.end] == "Quince production, 2020"
    assert "Vranja\n: a Serbian cultivar" in doc.text
    layout = next(s for s in doc.segments if s.kind == "heading" and "Layout" in doc.text[s.start:s.end])
    assert layout.heading == ("Quince", "Production", "Cultivars", "Layout cell"), "a layout table is a container"
    assert "A paragraph laid out by a table." in doc.text


def test_html_content_before_any_body_tag_is_read(tmp_path):
    # libxml2 knows no HTML5 elements: it leaves this <main> inside <head>.
    doc = only(load_html(tmp_path, "<title>Feijoa</title><main><h1>Feijoa</h1><p>Feijoas fall when ripe.</p></main>"))
    assert doc.title == "Feijoa" and doc.text == "# Feijoa\n\nFeijoas fall when ripe."


def test_html_without_title_takes_the_first_h1_then_the_file_name(tmp_path):
    assert only(load_html(tmp_path, "<h1>Heading one</h1><p>Body.</p>")).title == "Heading one"
    assert only(load_html(tmp_path, "<p>Body only.</p>", "notes.htm")).title == "notes"


def test_html_code_fence_grows_past_backticks_inside_and_keeps_the_language(tmp_path):
    doc = only(load_html(tmp_path, '<pre><code class="language-markdown">```\ninner\n```</code></pre>'))
    assert doc.text == "````markdown\n```\ninner\n```\n````"
    assert [s.kind for s in doc.segments] == ["code"]


def test_html_main_that_holds_little_of_the_text_is_not_alone(tmp_path):
    page = "<body><main><p>Tiny.</p></main><div>" + "<p>The real content sits outside main.</p>" * 5 + "</div></body>"
    doc = only(load_html(tmp_path, page))
    assert "Tiny." in doc.text and "outside main" in doc.text


# -- HTML: character sets -----------------------------------------------------------------------

@pytest.mark.parametrize("declaration, encoding", [
    ('<meta charset="iso-8859-1">', "latin-1"),
    ('<meta http-equiv="content-type" content="text/html; charset=koi8-r">', "koi8-r"),
    ('<?xml version="1.0" encoding="windows-1251"?>', "cp1251"),
])
def test_html_declared_charsets(tmp_path, declaration, encoding):
    words = "Привет, мир" if "koi8" in encoding or "1251" in encoding else "Crème brûlée"
    loaded = load_html(tmp_path, f"{declaration}<p>{words}</p>".encode(encoding))
    assert only(loaded).text == words and loaded.notes == []


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le"])
def test_html_byte_order_marks_and_utf16(tmp_path, encoding):
    loaded = load_html(tmp_path, "<p>Grüße aus Köln</p>".encode(encoding))
    assert only(loaded).text == "Grüße aus Köln"


def test_html_mixed_encodings_are_repaired_with_a_note(tmp_path):
    data = '<meta charset="utf-8"><p>café '.encode() + b"na\xefve \x93quoted\x94</p>"
    loaded = load_html(tmp_path, data)
    assert only(loaded).text == "café naïve \u201cquoted\u201d"
    assert len(loaded.notes) == 1 and "not valid UTF-8 as declared" in loaded.notes[0]


def test_html_undeclared_non_utf8_is_guessed_with_a_note(tmp_path):
    loaded = load_html(tmp_path, "<p>Größe, Köln, schön, Grüße.</p>".encode("latin-1"))
    assert only(loaded).text == "Größe, Köln, schön, Grüße."
    assert loaded.notes and "a guess" in loaded.notes[0]


# -- HTML: bad files ----------------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "the file is a PDF"),
    (b"PK\x03\x04" + bytes(100), "zip archive"),
    (bytes(range(256)) * 8, "binary file"),
])
def test_html_that_is_not_text_is_a_document_error(tmp_path, content, reason):
    with pytest.raises(DocumentError, match=reason):
        load_html(tmp_path, content)


@pytest.mark.parametrize("opening, closing", [("<div>", "</div>"), ("<ul><li>", ""), ("<blockquote>", ""),
                                              ("<b>", ""), ("<table><tr><td>", "")])
def test_html_nested_100k_levels_is_read_without_recursion(tmp_path, opening, closing):
    page = "<body>" + opening * 100_000 + "deep words" + closing * 100_000 + "<h2>After</h2><p>the end</p>"
    doc = only(load_html(tmp_path, page))
    assert "deep words" in doc.text and "After" in doc.text and doc.text.endswith("the end")
    if opening not in ("<table><tr><td>", "<blockquote>"):  # an unclosed cell or quote holds the rest of the page
        assert doc.segments[-2].heading == ("After",)


def test_html_huge_table_is_one_table_block_cut_between_rows(tmp_path):
    rows = "".join(f"<tr><td>row {i}</td><td>value {i * 7}</td><td colspan=100000>x</td></tr>" for i in range(20_000))
    t0 = time.perf_counter()
    doc = only(load_html(tmp_path, f"<h1>Big</h1><table>{rows}</table>"))
    seconds = time.perf_counter() - t0
    assert [s.kind for s in doc.segments] == ["heading", "table"]
    table = doc.segments[1]
    assert doc.text[table.start:table.end].count("\n") == 20_000  # header, separator, 19,999 rows: a line each
    assert len(doc.text) < 3_000_000, "a colspan writes a bounded number of empty cells"
    chunker = make_chunker("structure", real_counter(), size=128, overlap=0)
    chunks = chunker.chunk(doc)
    assert all(c.text.startswith("|") and c.text.endswith("|") for c in chunks[1:]), "cut between rows"
    assert seconds < 60


# -- EPUB ---------------------------------------------------------------------------------------

BOOK = {
    "one.xhtml": chapter("Planting", "Quinces like full sun and deep soil.", "Water young trees weekly."),
    "two.xhtml": chapter("", "A chapter without a heading, about pruning in late winter."),
    "three.xhtml": ('<html xmlns="http://www.w3.org/1999/xhtml"><body><h2>Harvest</h2><p>Pick in October.</p>'
                    "<h3>Storage</h3><p>Keep them cool and dry.</p></body></html>"),
}
TOC = {"one.xhtml": "Chapter 1. Planting", "two.xhtml": "Chapter 2. Pruning"}


def load_epub(tmp_path: Path, data: bytes, name: str = "book.epub"):
    path = tmp_path / name
    path.write_bytes(data)
    return EpubLoader().load(path, name)


def test_epub_chapters_in_spine_order_under_their_titles(tmp_path):
    loaded = load_epub(tmp_path, epub_bytes(BOOK, toc=TOC))
    doc = only(loaded)
    assert loaded.warnings == [] and doc.kind == "epub" and doc.doc_id == "book.epub"
    assert doc.title == "The Quince Book"
    assert doc.metadata == {"title": "The Quince Book", "author": "Ada Orchard", "language": "en",
                            "date": "2021-05-04", "chapters": 3}
    assert doc.text.index("full sun") < doc.text.index("pruning") < doc.text.index("October")
    by_text = {doc.text[s.start:s.end]: s for s in doc.segments}
    assert by_text["# Planting"].heading == ("Planting",)  # the TOC's "Chapter 1. Planting" is the same chapter
    pruning = by_text["A chapter without a heading, about pruning in late winter."]
    assert pruning.heading == ("Chapter 2. Pruning",) and pruning.starts_section
    assert by_text["Keep them cool and dry."].heading == ("Harvest", "Storage")
    assert doc.page_starts == []


def test_epub_several_authors_are_one_field(tmp_path):
    doc = only(load_epub(tmp_path, epub_bytes(BOOK, creators=("Ada Orchard", "Bo Grove"))))
    assert doc.metadata["author"] == "Ada Orchard; Bo Grove"


def test_epub_missing_spine_item_is_a_warning_and_the_rest_is_kept(tmp_path):
    loaded = load_epub(tmp_path, epub_bytes(BOOK, toc=TOC, omit=("two.xhtml",)))
    doc = only(loaded)
    assert loaded.warnings == ["chapter 'two.xhtml' (spine item 2) is missing from the archive; skipped"]
    assert "full sun" in doc.text and "October" in doc.text and "pruning" not in doc.text
    assert doc.metadata["chapters"] == 2


ENCRYPTION = ('<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
              'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
              '<enc:EncryptionMethod Algorithm="{algorithm}"/><enc:CipherData>'
              '<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>')


@pytest.mark.parametrize("extra, reason", [
    ({"META-INF/rights.xml": "<rights/>"}, "DRM-protected (META-INF/rights.xml"),
    ({"META-INF/encryption.xml": ENCRYPTION.format(algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                                                   uri="OEBPS/one.xhtml")},
     "DRM-protected (META-INF/encryption.xml lists 'OEBPS/one.xhtml' as encrypted)"),
])
def test_epub_with_drm_is_a_document_error(tmp_path, extra, reason):
    with pytest.raises(DocumentError) as info:
        load_epub(tmp_path, epub_bytes(BOOK, extra=extra))
    assert info.value.reason.startswith(reason)


def test_epub_with_obfuscated_fonts_only_is_read(tmp_path):
    extra = {"META-INF/encryption.xml": ENCRYPTION.format(algorithm="http://www.idpf.org/2008/embedding",
                                                          uri="OEBPS/font.otf"), "OEBPS/font.otf": b"\x00" * 10}
    assert "full sun" in only(load_epub(tmp_path, epub_bytes(BOOK, extra=extra))).text


@pytest.mark.parametrize("cut", ["half", "tail"])
def test_truncated_epub_is_a_document_error(tmp_path, cut):
    data = epub_bytes(BOOK)
    with pytest.raises(DocumentError, match="corrupt or truncated EPUB"):
        load_epub(tmp_path, data[: len(data) // 2] if cut == "half" else data[:-10])


@pytest.mark.parametrize("content", [b"Just some notes, saved with the wrong extension.\n", b"<html><p>x</p></html>"])
def test_epub_that_is_not_a_zip_is_a_document_error(tmp_path, content):
    with pytest.raises(DocumentError, match="not an EPUB: not a zip archive"):
        load_epub(tmp_path, content)


def test_zip_without_a_package_is_a_document_error(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("readme.txt", "not a book")
    with pytest.raises(DocumentError, match="not a valid EPUB: META-INF/container.xml is missing"):
        load_epub(tmp_path, out.getvalue())


def test_epub_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    bomb = epub_bytes(BOOK, extra={"OEBPS/padding.bin": bytes(3_000_000)})
    assert len(bomb) < 100_000  # zeros compress a thousandfold
    with mock.patch.object(epub_module, "MAX_UNCOMPRESSED_MB", 2), \
            mock.patch("zipfile.ZipFile.read", side_effect=AssertionError("nothing may be unpacked")):
        with pytest.raises(DocumentError, match="unpacks to 3 MB, more than the 2 MB allowed"):
            load_epub(tmp_path, bomb)


# -- through the commands ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["page.html", "book.epub"])
def test_chunk_preview_of_html_and_epub(tmp_path, name):
    (tmp_path / "page.html").write_text(DOCS_PAGE)
    (tmp_path / "book.epub").write_bytes(epub_bytes(BOOK, toc=TOC))
    result = invoke(["chunk-preview", "--json", name], tmp_path)
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert preview["documents"] == 1 and preview["chunks"]
    assert all(c["page_start"] is None and c["heading"] for c in preview["chunks"])
    plain = invoke(["chunk-preview", name], tmp_path)
    assert plain.exit_code == 0 and " > " in plain.stdout or "Installing" in plain.stdout


def test_index_filter_by_type_and_author_and_cite_by_heading(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.html").write_text(DOCS_PAGE)
    (docs / "book.epub").write_bytes(epub_bytes(BOOK, toc=TOC))
    (docs / "other.epub").write_bytes(epub_bytes({"x.xhtml": chapter("Medlars", "Medlars ripen after frost.")},
                                                 creators=("Cy Hedge",), title="Medlars"))
    result = invoke(["index", "docs", "--json"], tmp_path, **NO_SERVE)
    assert result.exit_code == 0, result.output
    asked = invoke(["ask", "--retrieve-only", "--json", "--where", "author=Ada Orchard", "When to pick quinces?"],
                   tmp_path, **NO_SERVE)
    assert asked.exit_code == 0, asked.output
    passages = json.loads(asked.stdout)["passages"]
    assert passages and {p["doc_id"] for p in passages} == {"book.epub"}
    typed = invoke(["ask", "--retrieve-only", "--json", "--where", "type=html", "pip install widgetry"],
                   tmp_path, **NO_SERVE)
    passages = json.loads(typed.stdout)["passages"]
    assert passages and {p["doc_id"] for p in passages} == {"page.html"}
    plain = invoke(["ask", "--retrieve-only", "--where", "type=html", "pip install widgetry"], tmp_path, **NO_SERVE)
    assert "page.html · Installing > With pip" in plain.stdout, plain.stdout
