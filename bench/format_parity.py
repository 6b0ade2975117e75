"""Format parity, measured (issue 19): the same text in another container must retrieve as well.

    python bench/format_parity.py [--formats markdown,html,docx,epub,pdf,pdf-ocr] [--limit N]
                                  [--data ../shared/eval] [--work .bench-work/parity] [--skip-build]

The 16 SQuAD articles (DATA/squad/docs/*.md) are written, with real libraries, into
WORK/<format>/ as HTML (markdown-it-py; a full page with <title>, and a <nav> and a <footer>
around <main>), DOCX (python-docx: Heading N, List Bullet / List Number, Word tables), EPUB
(ebooklib: one book per article, one chapter per top-level section, i.e. split at each level-1
or level-2 heading; the SQuAD articles have only their title heading, so each book is one
chapter; a nav page and an NCX table of contents) and PDF (reportlab: DejaVu Sans, headings in
bold and larger, paragraphs wrapped, page breaks where the text falls). `pdf-ocr` is the PDF
folder with three articles (OCR_ARTICLES) replaced by image-only PDFs: their text PDF pages
rendered with pypdfium2 at OCR_DPI and written back by Pillow with no text layer.

The question file's relevant ids are the Markdown file names; each format gets a copy of the
questions with the same stem and its own suffix (WORK/questions-<format>.jsonl), as `rag eval`
compares ids exactly (a document id is the file's path relative to the indexed folder). Only
the answerable questions are used: the 200 unanswerable ones have no relevant article and count
in neither recall@5 nor context recall@5.

Each format is then indexed (`rag index --rebuild`, default settings: an empty .rag.toml in
WORK/index/<format>/) and evaluated with `rag eval --retrieval-only` on the same questions,
both run as `python -m rag_cli` of this interpreter (so PYTHONPATH=/tmp/wt-x runs that tree's
code). The table shows document recall@5 (`recall@5`), context recall@5 (`context_recall@5`,
the gold answer in the top-5 chunks), their difference to Markdown, and the share of chunks
with a heading path (the `heading` metadata beside each vector). A format whose suffix no
loader reads (rag_cli.ingest.formats.SUPPORTED_SUFFIXES) is "no loader"; for pdf-ocr, scanned
PDFs that yield no chunks are "no loader" too. `pdf-ocr` is scored on the questions about its
three scanned articles, beside the text PDF on the same questions.

--limit N evaluates a fixed sample of N answerable questions (random.Random(SAMPLE_SEED), the
same for every format; default 1,000; --limit 0: all 4,306, which takes about 2.5 minutes of
`rag eval` per format on 2 shared cores, beside about 1.5 minutes of indexing). pdf-ocr is always
asked all 338 questions about its three articles, whatever --limit says.

Targets, printed as PASS or FAIL (never asserted): recall@5 and context recall@5 no more than 0.01 below Markdown's; a
heading path on at least 95% of the chunks of HTML, DOCX and EPUB; pdf-ocr's context recall@5
no more than 0.05 below the text PDF's on the OCR'd articles' questions.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("markdown", "html", "docx", "epub", "pdf", "pdf-ocr")
SUFFIX = {"markdown": ".md", "html": ".html", "docx": ".docx", "epub": ".epub", "pdf": ".pdf", "pdf-ocr": ".pdf"}
HEADING_FORMATS = ("html", "docx", "epub")  # the heading-path target
OCR_ARTICLES = ("08_Sky__United_Kingdom_", "09_Victoria__Australia_", "13_1973_oil_crisis")  # the three shortest
OCR_DPI = 200
SAMPLE_SEED = 19  # --limit: random.Random(SAMPLE_SEED).sample of the answerable questions, in file order
DEFAULT_LIMIT = 1000  # of 4,306: a 0.01 tolerance is 10 questions; all of them add ~110 s of eval per format
RECALL_TOLERANCE, HEADING_SHARE, OCR_TOLERANCE = 0.01, 0.95, 0.05
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


# -- Markdown as blocks ------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """One block of a Markdown file, as the writers need it."""

    kind: str  # heading | paragraph | bullets | numbers | table | code
    text: str = ""
    level: int = 0  # headings
    items: tuple[str, ...] = ()  # lists
    rows: tuple[tuple[str, ...], ...] = ()  # tables, the header row first


@dataclass
class Article:
    stem: str
    title: str
    markdown: str
    blocks: list[Block] = field(default_factory=list)


def _markdown_it() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _inline_text(token: Any) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts).strip()


def parse_markdown(text: str, stem: str) -> Article:
    """The blocks of a Markdown text (inline markup reduced to its text); the title is the first
    level-1 heading, else the file's stem."""
    tokens = _markdown_it().parse(text)
    blocks: list[Block] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            blocks.append(Block("heading", _inline_text(tokens[i + 1]), level=int(tok.tag[1:])))
            i += 3
        elif tok.type == "paragraph_open":
            blocks.append(Block("paragraph", _inline_text(tokens[i + 1])))
            i += 3
        elif tok.type in ("bullet_list_open", "ordered_list_open"):
            close, depth, items = tok.type.replace("_open", "_close"), 1, []
            i += 1
            while depth:  # nested lists are flattened into their parent's items
                if tokens[i].type == tok.type:
                    depth += 1
                elif tokens[i].type == close:
                    depth -= 1
                elif tokens[i].type == "inline":
                    items.append(_inline_text(tokens[i]))
                i += 1
            blocks.append(Block("bullets" if tok.type.startswith("bullet") else "numbers", items=tuple(items)))
        elif tok.type == "table_open":
            rows: list[tuple[str, ...]] = []
            row: list[str] = []
            i += 1
            while tokens[i].type != "table_close":
                if tokens[i].type == "tr_close":
                    rows.append(tuple(row))
                    row = []
                elif tokens[i].type == "inline":
                    row.append(_inline_text(tokens[i]))
                i += 1
            blocks.append(Block("table", rows=tuple(rows)))
            i += 1
        elif tok.type in ("fence", "code_block"):
            blocks.append(Block("code", tok.content.rstrip("\n")))
            i += 1
        else:
            i += 1
    title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), stem)
    return Article(stem, title, text, blocks)


def read_article(path: Path) -> Article:
    return parse_markdown(path.read_text(encoding="utf-8"), path.stem)


# -- writers -------------------------------------------------------------------------------------

def _blocks_html(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif b.kind == "paragraph":
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind in ("bullets", "numbers"):
            tag = "ul" if b.kind == "bullets" else "ol"
            out.append(f"<{tag}>" + "".join(f"<li>{html.escape(x)}</li>" for x in b.items) + f"</{tag}>")
        elif b.kind == "table":
            head, *body = b.rows or ((),)
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "code":
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    return "\n".join(out)


def write_html(article: Article, path: Path) -> None:
    """A whole page: <title>, site navigation and footer around the article's <main>."""
    body = _markdown_it().render(article.markdown)
    title = html.escape(article.title)
    path.write_text(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Example Encyclopedia</title>
<link rel="stylesheet" href="/static/site.css">
</head>
<body>
<nav class="site-nav">
<a href="/">Home</a> <a href="/random">Random article</a> <a href="/about">About</a>
<form action="/search"><input name="q" placeholder="Search the encyclopedia"></form>
</nav>
<main>
<article>
{body}</article>
</main>
<footer>
<p>Text is available under the Creative Commons Attribution-ShareAlike License.</p>
<p><a href="/privacy">Privacy policy</a> <a href="/contact">Contact us</a></p>
</footer>
</body>
</html>
""", encoding="utf-8")


def write_docx(article: Article, path: Path) -> None:
    """Headings as Heading N, paragraphs, List Bullet / List Number items, Word tables."""
    import docx

    document = docx.Document()
    document.core_properties.title = article.title
    for b in article.blocks:
        if b.kind == "heading":
            document.add_heading(b.text, level=min(b.level, 9))
        elif b.kind == "paragraph":
            document.add_paragraph(b.text)
        elif b.kind in ("bullets", "numbers"):
            style = "List Bullet" if b.kind == "bullets" else "List Number"
            for item in b.items:
                document.add_paragraph(item, style=style)
        elif b.kind == "table" and b.rows:
            table = document.add_table(rows=len(b.rows), cols=max(len(r) for r in b.rows))
            table.style = "Table Grid"
            for r, row in enumerate(b.rows):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        elif b.kind == "code":
            run = document.add_paragraph().add_run(b.text)
            run.font.name = "Courier New"
    document.save(str(path))


def chapters(article: Article) -> list[list[Block]]:
    """The article cut at each level-1 or level-2 heading (the top-level sections): a chapter each."""
    out: list[list[Block]] = []
    for b in article.blocks:
        if not out or (b.kind == "heading" and b.level <= 2 and out[-1]):
            out.append([])
        out[-1].append(b)
    return [c for c in out if c]


def write_epub(article: Article, path: Path) -> None:
    """One book per article, one XHTML chapter per top-level section, a nav page and an NCX."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"squad-{article.stem}")
    book.set_title(article.title)
    book.set_language("en")
    book.add_author("Wikipedia contributors")
    items = []
    for number, blocks in enumerate(chapters(article), start=1):
        name = blocks[0].text if blocks[0].kind == "heading" else f"{article.title} ({number})"
        chapter = epub.EpubHtml(title=name, file_name=f"chapter_{number:02d}.xhtml", lang="en")
        chapter.content = f"<html><head><title>{html.escape(name)}</title></head><body>" \
                          f"{_blocks_html(blocks)}</body></html>"
        book.add_item(chapter)
        items.append(chapter)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]  # as ebooklib's own example: the table of contents is read first
    epub.write_epub(str(path), book)


def _pdf_fonts() -> tuple[str, str]:
    """DejaVu Sans (all the articles' scripts), else the built-in Helvetica (Latin-1 only)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    if not (regular.exists() and bold.exists()):
        return "Helvetica", "Helvetica-Bold"
    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
    return "DejaVuSans", "DejaVuSans-Bold"


def write_pdf(article: Article, path: Path) -> None:
    """A4, headings in bold and larger, paragraphs wrapped, pages broken where the text falls."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import ListFlowable, ListItem, Paragraph, Preformatted, SimpleDocTemplate, Spacer, Table

    regular, bold = _pdf_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=10.5, leading=14, spaceAfter=6)
    headings = {level: ParagraphStyle(f"h{level}", fontName=bold, fontSize=size, leading=size * 1.25,
                                      spaceBefore=10, spaceAfter=6)
                for level, size in zip(range(1, 7), (20, 16, 14, 12, 11, 11))}
    flow: list[Any] = []
    for b in article.blocks:
        if b.kind == "heading":
            flow.append(Paragraph(html.escape(b.text), headings[min(b.level, 6)]))
        elif b.kind == "paragraph":
            flow.append(Paragraph(html.escape(b.text), body))
        elif b.kind in ("bullets", "numbers"):
            flow.append(ListFlowable([ListItem(Paragraph(html.escape(x), body)) for x in b.items],
                                     bulletType="bullet" if b.kind == "bullets" else "1", bulletFontName=regular))
        elif b.kind == "table" and b.rows:
            flow.append(Table([[Paragraph(html.escape(c), body) for c in row] for row in b.rows]))
            flow.append(Spacer(1, 6))
        elif b.kind == "code":
            flow.append(Preformatted(b.text, body))
    doc = SimpleDocTemplate(str(path), pagesize=A4, title=article.title, author="Wikipedia contributors",
                            leftMargin=2.2 * cm, rightMargin=2.2 * cm, topMargin=2 * cm, bottomMargin=2 * cm)
    doc.build(flow)


def write_scanned_pdf(text_pdf: Path, path: Path, dpi: int = OCR_DPI) -> int:
    """The pages of ``text_pdf`` as images only (rendered by pypdfium2; no text layer); the page count."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(text_pdf))
    try:
        images = [pdf[i].render(scale=dpi / 72).to_pil().convert("L") for i in range(len(pdf))]
    finally:
        pdf.close()
    images[0].save(str(path), "PDF", save_all=True, append_images=images[1:], resolution=float(dpi))
    return len(images)


WRITERS = {"html": write_html, "docx": write_docx, "epub": write_epub, "pdf": write_pdf}


def build(docs: Path, work: Path, formats: Sequence[str]) -> None:
    """Every article of ``docs`` into WORK/<format>/ (the folders are written afresh)."""
    articles = [read_article(p) for p in sorted(docs.glob("*.md"))]
    for fmt in formats:
        started = time.perf_counter()
        folder = work / fmt
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for article in articles:
            target = folder / (article.stem + SUFFIX[fmt])
            if fmt == "markdown":
                target.write_text(article.markdown, encoding="utf-8")
            elif fmt == "pdf-ocr":
                text_pdf = work / "pdf" / target.name
                if not text_pdf.exists():
                    write_pdf(article, text_pdf)
                if article.stem in OCR_ARTICLES:
                    write_scanned_pdf(text_pdf, target)
                else:
                    shutil.copyfile(text_pdf, target)
            else:
                WRITERS[fmt](article, target)
        print(f"wrote {len(articles)} {fmt} files into {folder} ({time.perf_counter() - started:.1f} s)", flush=True)


# -- questions -----------------------------------------------------------------------------------

def read_questions(path: Path) -> list[dict[str, Any]]:
    """The answerable questions (those with a relevant article), in file order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("answerable", True) and r.get("relevant")]


def sample(rows: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """A fixed sample of ``limit`` rows (0: all), in file order."""
    if not 0 < limit < len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(SAMPLE_SEED).sample(range(len(rows)), limit))]


def write_questions(rows: Sequence[dict[str, Any]], suffix: str, path: Path,
                    only: Sequence[str] | None = None) -> int:
    """The questions with relevant ids renamed to ``suffix`` (same stem); ``only``: of these stems."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            stems = [Path(r).stem for r in row["relevant"]]
            if only is not None and not any(s in only for s in stems):
                continue
            out.write(json.dumps({**row, "relevant": [s + suffix for s in stems]}, ensure_ascii=False) + "\n")
            count += 1
    return count


# -- indexing and evaluation ----------------------------------------------------------------------

@dataclass
class Result:
    fmt: str
    files: int
    status: str = "ok"  # ok | no loader | failed: ...
    docs: int = 0
    chunks: int = 0
    with_heading: int = 0
    questions: int = 0
    recall5: float | None = None
    context5: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def heading_share(self) -> float | None:
        return self.with_heading / self.chunks if self.chunks else None


def rag(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The tool as a subprocess of this interpreter (PYTHONPATH chooses the code)."""
    return subprocess.run([sys.executable, "-m", "rag_cli", *args], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def evaluate(questions: Path, cwd: Path, out: Path) -> dict[str, Any]:
    done = rag(["eval", str(questions), "--retrieval-only", "--k", "5", "--out", str(out)], cwd)
    if done.returncode != 0:
        raise RuntimeError(f"rag eval exited {done.returncode}: {done.stderr.strip()[-400:]}")
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def stored_chunks(cwd: Path) -> list[dict[str, Any]]:
    """The metadata stored beside every chunk of the index in ``cwd``."""
    from rag_cli.config import load_settings
    from rag_cli.index_record import open_index

    _, _, metas = open_index(load_settings(cwd)).store().all_chunks()
    return metas


def index_and_evaluate(fmt: str, work: Path, rows: Sequence[dict[str, Any]],
                       ocr_rows: Sequence[dict[str, Any]]) -> Result:
    from rag_cli.ingest.formats import SUPPORTED_SUFFIXES

    folder = work / fmt
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    result = Result(fmt, len(files))
    if not files:
        result.status = "failed: no files (run without --skip-build)"
        return result
    if SUFFIX[fmt] not in SUPPORTED_SUFFIXES:
        result.status = "no loader"
        return result
    started = time.perf_counter()
    cwd = work / "index" / fmt
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    (cwd / ".rag.toml").write_text("# the defaults, the same for every format\n", encoding="utf-8")
    done = rag(["index", str(folder.resolve()), "--rebuild"], cwd)
    if done.returncode not in (0, 3):  # 3: some files not indexed (a scanned PDF without OCR)
        result.status = f"failed: rag index exited {done.returncode}: {done.stderr.strip()[-300:]}"
        return result
    metas = stored_chunks(cwd)
    indexed = {m["doc_id"] for m in metas}
    result.docs, result.chunks = len(indexed), len(metas)
    result.with_heading = sum(1 for m in metas if m.get("heading"))
    suffix = SUFFIX[fmt]
    if fmt == "pdf-ocr":
        scanned = {s + suffix for s in OCR_ARTICLES}
        if not scanned & indexed:
            result.status = "no loader"  # the PDF loader reads no text from a page image
            return result
        qfile = work / "questions-pdf-ocr.jsonl"
        result.questions = write_questions(ocr_rows, suffix, qfile, only=OCR_ARTICLES)
        report = evaluate(qfile, cwd, work / "report-pdf-ocr.json")
        text_cwd = work / "index" / "pdf"
        if (text_cwd / ".rag").is_dir():  # the text PDF's index on the same questions
            text = evaluate(qfile, text_cwd, work / "report-pdf-on-ocr-questions.json")
            result.extra["text_pdf_context5"] = text["metrics"].get("context_recall@5")
            result.extra["text_pdf_recall5"] = text["metrics"].get("recall@5")
    else:
        qfile = work / f"questions-{fmt}.jsonl"
        result.questions = write_questions(rows, suffix, qfile)
        report = evaluate(qfile, cwd, work / f"report-{fmt}.json")
    result.recall5 = report["metrics"].get("recall@5")
    result.context5 = report["metrics"].get("context_recall@5")
    result.seconds = time.perf_counter() - started
    return result


# -- the table -----------------------------------------------------------------------------------

def _num(value: float | None, signed: bool = False) -> str:
    return "" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _diff(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def verdicts(results: Sequence[Result]) -> list[str]:
    by = {r.fmt: r for r in results}
    md = by.get("markdown")
    out = []
    for r in results:
        if r.fmt in ("markdown", "pdf-ocr"):
            continue
        if r.status != "ok":
            out.append(f"{r.fmt}: {r.status}, no verdict")
            continue
        if md is not None and md.status == "ok":
            pairs = (("recall@5", r.recall5, md.recall5), ("context recall@5", r.context5, md.context5))
            for name, value, base in pairs:
                d = _diff(value, base)
                ok = d is not None and d >= -RECALL_TOLERANCE
                out.append(f"{'PASS' if ok else 'FAIL'}  {r.fmt}: {name} {_num(value)} vs Markdown {_num(base)} "
                           f"({_num(d, True)}; allowed -{RECALL_TOLERANCE})")
        if r.fmt in HEADING_FORMATS:
            share = r.heading_share or 0.0
            out.append(f"{'PASS' if share >= HEADING_SHARE else 'FAIL'}  {r.fmt}: heading path on {share:.1%} "
                       f"of chunks (target >= {HEADING_SHARE:.0%})")
    ocr = by.get("pdf-ocr")
    if ocr is not None:
        base = ocr.extra.get("text_pdf_context5")
        if ocr.status != "ok":
            out.append(f"pdf-ocr: {ocr.status}, no verdict")
        elif base is None:
            out.append("pdf-ocr: no text PDF index to compare with (add pdf to --formats)")
        else:
            d = _diff(ocr.context5, base)
            ok = d is not None and d >= -OCR_TOLERANCE
            out.append(f"{'PASS' if ok else 'FAIL'}  pdf-ocr: context recall@5 {_num(ocr.context5)} vs text PDF "
                       f"{_num(base)} on the same {ocr.questions} questions ({_num(d, True)}; allowed "
                       f"-{OCR_TOLERANCE})")
    return out


def table(results: Sequence[Result]) -> str:
    md = next((r for r in results if r.fmt == "markdown" and r.status == "ok"), None)
    lines = ["| format | files | indexed | chunks | questions | recall@5 | context recall@5 | Δ recall@5 | "
             "Δ context recall@5 | heading path |", "| --- " * 10 + "|"]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.fmt} | {r.files} | {r.status} | | | | | | | |")
            continue
        if r.fmt == "pdf-ocr":  # its own questions: the difference is to the text PDF on them
            d_r = _diff(r.recall5, r.extra.get("text_pdf_recall5"))
            d_c = _diff(r.context5, r.extra.get("text_pdf_context5"))
            note = " (vs text PDF)"
        else:
            d_r = _diff(r.recall5, md.recall5) if md and r is not md else None
            d_c = _diff(r.context5, md.context5) if md and r is not md else None
            note = ""
        share = r.heading_share
        lines.append(f"| {r.fmt} | {r.files} | {r.docs} | {r.chunks} | {r.questions} | {_num(r.recall5)} | "
                     f"{_num(r.context5)} | {_num(d_r, True)}{note if d_r is not None else ''} | "
                     f"{_num(d_c, True)}{note if d_c is not None else ''} | "
                     f"{'' if share is None else f'{share:.1%}'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {','.join(FORMATS)}")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"a fixed seeded sample of N questions; 0: all 4,306 (default: {DEFAULT_LIMIT})")
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=here / ".bench-work" / "parity")
    parser.add_argument("--skip-build", action="store_true", help="keep the files written by an earlier run")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if "markdown" not in formats:
        formats.insert(0, "markdown")  # every difference is to Markdown
    if "pdf-ocr" in formats and "pdf" not in formats:
        formats.insert(formats.index("pdf-ocr"), "pdf")  # the OCR target compares with the text PDF
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.skip_build:
        build(args.data / "squad" / "docs", work, formats)
    every = read_questions(args.data / "squad" / "questions.jsonl")
    rows = sample(every, args.limit)
    import rag_cli

    print(f"rag_cli {rag_cli.__version__} from {Path(rag_cli.__file__).parent}; {len(rows)} questions", flush=True)
    results = []
    for fmt in formats:
        result = index_and_evaluate(fmt, work, rows, every)
        print(f"{fmt}: {result.status}, {result.chunks} chunks, {result.seconds:.0f} s", flush=True)
        results.append(result)
    print()
    print(table(results))
    print()
    print("\n".join(verdicts(results)))
    summary = [{**vars(r), "heading_share": r.heading_share} for r in results]
    (work / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\n{time.perf_counter() - started:.0f} s in all; results in {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
