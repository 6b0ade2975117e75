"""Paragraphs of a PDF page, rebuilt from where its lines sit.

pypdf gives a page's text as lines, one per line of the page, with no sign of where a
paragraph ends: the chunkers would see a page as one block, cut it between sentences, and
a word split at a line end ("exam-" / "ple") would be two words. Here each line keeps its
baseline and font size (pypdf's ``visitor_text``, whose pieces add up to the very text
``extract_text`` returns), and a page's text is rebuilt from them:

- a paragraph ends where the gap to the next line is clearly more than the page's usual
  line spacing for that font size, where the font size changes (a heading), where the next
  line is not below (a new column, a table's header cells), or after a short line ending a
  sentence (paragraphs set without space between them);
- inside a paragraph a line that runs to the margin ("full", by its length against the
  page's long lines of that size) is joined to the next with a space, a hyphen at its end
  before a lower-case letter dropped (``de-hyphenation``, common compound prefixes kept);
  a short line (a table row, a list item, an address) keeps its line break.

:func:`runs_on` says whether a page's last paragraph continues at the top of the next
page, so the loader can keep it one paragraph across the page break.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# In the manifest's read_with beside index.ocr: a change to how pages are rebuilt here takes a
# new value, so that PDFs indexed before are read again (their chunks re-embedded where changed).
READ_KEY = "layout=paragraphs-1"
SIZE_CHANGE = 0.12  # relative: a larger difference between two lines' font sizes ends a paragraph
GAP_FACTOR = 1.3  # a baseline gap over this many times the usual line spacing ends a paragraph
FULL_LINE = 0.8  # a line at least this share of the page's long lines (same size) runs to the margin
# A page's last line this long, not ending a sentence, runs on to the next page (lengths in
# characters are a rough measure of width: a line of capitals and long names wraps early).
RUNS_ON_LINE = 0.6
# ... and one that ends a sentence runs on when it is this long: a page break falls far more
# often inside a paragraph (at a sentence end about one line in eight) than after a last line
# that happens to fill the measure.
RUNS_ON_SENTENCE = 0.9
_TERMINAL = re.compile(r"[.!?:…][\"'”’)\]]*$")
_STARTS_BLOCK = re.compile(r"[A-Z0-9\"'“‘(\[•·▪◦●\-–—*]")
_HYPHENATED = re.compile(r"(?<=[^\W\d_])[-\u00ad]$")
_LIST_ITEM = re.compile(r"([•·▪◦●■□➢►‣⁃*–—-]|\(?(\d{1,3}|[a-zA-Z]|[ivxlc]{1,5})[.)])\s")
_NUMBER = re.compile(r"^[($€£]*[-+]?\d[\d,.]*%?\)?$")
# Kept when a line ends in them and a hyphen: "self-" / "aware" is "self-aware", not "selfaware".
_PREFIXES = frozenset("self well non co ex cross all half long short high low full first second third "
                      "one two three four five year multi pre post anti pro semi".split())


@dataclass(frozen=True)
class Line:
    """One line of a page as pypdf extracted it, with where it sits (page space: y grows upwards)."""

    text: str
    y: float  # baseline
    size: float  # font size, as drawn (the text and page matrices applied)


@dataclass(frozen=True)
class Joint:
    """What joins two lines: ``text`` ("\\n\\n" between paragraphs, "\\n", " " or "") after
    the first line, less its last character when ``drop_hyphen``."""

    text: str
    drop_hyphen: bool = False


@dataclass(frozen=True)
class PageLayout:
    """A page's rebuilt text, and what :func:`runs_on` needs of its first and last lines."""

    text: str
    first: Line | None = None
    last: Line | None = None
    last_fill: float = 0.0  # the last line's length, as a share of the page's long lines of its size
    first_alone: bool = False  # the first paragraph is one short line (a running header?)


def extract_lines(page: Any, clean: Callable[[str], str]) -> tuple[str, list[Line] | None]:
    """The page's text (``extract_text``, through ``clean``) and its lines, or None for the
    lines when pypdf's pieces do not add up to that text (then only the text can be trusted)."""
    pieces: list[tuple[str, float, float]] = []

    def visit(text: Any, cm: Any, tm: Any, _font: Any, size: Any) -> None:
        if not text:
            return
        try:
            m = _mult(tm, cm)
            pieces.append((str(text), m[5], float(size) * math.hypot(m[2], m[3])))
        except (TypeError, ValueError, IndexError):
            pieces.append((str(text), math.nan, math.nan))

    raw = page.extract_text(visitor_text=visit) or ""
    if "".join(p[0] for p in pieces) != raw:
        return clean(raw), None
    lines: list[Line] = []
    text, y, size, weight = "", math.nan, math.nan, 0
    for piece, py, psize in pieces:
        parts = clean(piece).split("\n")
        for k, part in enumerate(parts):
            if k:
                lines.append(Line(text, y, size))
                text, y, size, weight = "", math.nan, math.nan, 0
            text += part
            visible = len(part.strip())
            if visible > weight:  # the line sits where most of its text does
                y, size, weight = py, psize, visible
    lines.append(Line(text, y, size))
    return "\n".join(line.text for line in lines), lines


def _mult(m: Any, n: Any) -> tuple[float, ...]:
    """``m`` x ``n``, two PDF matrices as six numbers."""
    a, b, c, d, e, f = (float(v) for v in m[:6])
    a2, b2, c2, d2, e2, f2 = (float(v) for v in n[:6])
    return (a * a2 + b * c2, a * b2 + b * d2, c * a2 + d * c2, c * b2 + d * d2,
            e * a2 + f * c2 + e2, e * b2 + f * d2 + f2)


def rebuild(lines: list[Line]) -> PageLayout:
    """The page's text with a blank line between paragraphs and the lines of a paragraph
    joined (see the module docstring); every non-space character of ``lines`` is kept but a
    hyphen dropped at a line end."""
    lines = [Line(line.text.strip(), line.y, line.size) for line in lines]
    leading, widths = _measures(lines)
    out: list[str] = []
    blocks: list[list[int]] = []  # the lines of each paragraph
    prev: Line | None = None
    pending = ""  # what goes between the previous line and this one
    for i, line in enumerate(lines):
        if not line.text:
            if prev is not None:
                pending = "\n\n"  # an empty line in pypdf's text (a form XObject, a gap): keep it a break
            continue
        if prev is None:
            blocks.append([i])
        else:
            joint = Joint(pending) if pending else _joint(prev, line, leading, widths)
            if joint.text == "\n\n":
                blocks.append([i])
            else:
                blocks[-1].append(i)
            if joint.drop_hyphen:  # the word goes on
                out[-1] = out[-1][:-1]
            out.append(joint.text)
        out.append(line.text)
        prev, pending = line, ""
    if not blocks:
        return PageLayout("")
    first, last = lines[blocks[0][0]], lines[blocks[-1][-1]]
    return PageLayout("".join(out), first, last, last_fill=_fill(last, widths),
                      first_alone=len(blocks[0]) == 1 and not _full(first, widths))


def runs_on(page: PageLayout, following: PageLayout) -> Joint | None:
    """What joins ``page``'s text to ``following``'s when its last paragraph continues at the
    top of the next page, else None: the page break is a paragraph break."""
    a, b = page.last, following.first
    if a is None or b is None or not _same_size(a.size, b.size):
        return None
    if page.last_fill < (RUNS_ON_SENTENCE if _TERMINAL.search(a.text) else RUNS_ON_LINE):
        return None
    if following.first_alone and not b.text[:1].islower():
        return None  # a line on its own at the top of the page: a running header, a heading
    return _wrap(a.text, b.text)


def _measures(lines: list[Line]) -> tuple[dict[float, float], dict[float, float]]:
    """The usual baseline gap and long-line length on this page, per font size (rounded)."""
    gaps: dict[float, list[float]] = {}
    lengths: dict[float, list[int]] = {}
    previous: Line | None = None
    for line in lines:
        if not line.text or math.isnan(line.size):
            continue
        key = _size_key(line.size)
        lengths.setdefault(key, []).append(len(line.text))
        if previous is not None and _same_size(previous.size, line.size):
            gap = previous.y - line.y
            if 0.5 * line.size < gap < 3 * line.size:
                gaps.setdefault(key, []).append(gap)
        previous = line
    leading = {key: statistics.median(values) for key, values in gaps.items()}
    widths = {}
    for key, values in lengths.items():
        values.sort()
        widths[key] = float(values[min(len(values) - 1, int(0.9 * len(values)))])
    return leading, widths


def _joint(a: Line, b: Line, leading: dict[float, float], widths: dict[float, float]) -> Joint:
    """What goes between consecutive lines ``a`` and ``b`` of a page: a blank line (a new
    paragraph), a line break (a short line inside one), a space, or nothing (a hyphenated word)."""
    if math.isnan(a.y) or math.isnan(b.y) or math.isnan(a.size) or math.isnan(b.size):
        return Joint("\n")  # no position: keep pypdf's line as it was
    if not _same_size(a.size, b.size):
        return Joint("\n\n")
    gap = a.y - b.y
    usual = leading.get(_size_key(b.size), 1.2 * b.size)
    if gap < 0.5 * b.size or gap > GAP_FACTOR * usual:
        return Joint("\n\n")
    if not _full(a, widths) or _numeric(a.text) or _LIST_ITEM.match(b.text):
        if _TERMINAL.search(a.text) and _STARTS_BLOCK.match(b.text):
            return Joint("\n\n")  # a sentence that stops short of the margin: its paragraph ends
        return Joint("\n")  # a table row, an address line, the line before a list item
    return _wrap(a.text, b.text)


def _wrap(a: str, b: str) -> Joint:
    """How a line ending ``a`` that ran to the margin joins the next, ``b``."""
    if _HYPHENATED.search(a) and b[:1].islower():
        if a.endswith("\u00ad"):
            return Joint("", drop_hyphen=True)  # a soft hyphen only ever marks where a word may break
        word = re.split(r"[\W\d_]+", a[:-1])[-1].lower()
        return Joint("", drop_hyphen=word not in _PREFIXES)  # "self-" + "aware" is "self-aware"
    return Joint(" ")


def _full(line: Line, widths: dict[float, float]) -> bool:
    return _fill(line, widths) >= FULL_LINE


def _fill(line: Line, widths: dict[float, float]) -> float:
    """The line's length as a share of the page's long lines of its size (0: unknown)."""
    width = 0.0 if math.isnan(line.size) else widths.get(_size_key(line.size), 0.0)
    return len(line.text) / width if width > 0 else 0.0


def _numeric(text: str) -> bool:
    """A table row: several numbers, and numbers a good share of its words."""
    words = text.split()
    numbers = sum(1 for w in words if _NUMBER.match(w))
    return numbers >= 3 and numbers >= 0.3 * len(words)


def _same_size(a: float, b: float) -> bool:
    return abs(a - b) <= SIZE_CHANGE * max(a, b, 1e-9)


def _size_key(size: float) -> float:
    return round(size * 2) / 2
