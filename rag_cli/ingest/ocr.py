"""OCR of PDF pages without a text layer (index.ocr): render with pypdfium2, read with RapidOCR.

Both come with the ``ocr`` extra (``pip install 'rag-cli[ocr]'``) and are imported only when a
page needs recognising. RapidOCR's wheel carries its ONNX models (detection, direction,
recognition; the direction model is not used): nothing is downloaded. Its CTC decoding is
replaced by SpacingDecoder, which keeps English words apart. One engine per process, made on first use; calls to it are
serialised by a lock (the indexer's reader thread, `rag serve`'s watcher and a test may share it).

The page text is rebuilt from the recognised boxes in reading order (``reading_order``): columns
and bands are split where no box crosses (a recursive XY-cut), boxes of one band are grouped
into lines by their vertical overlap, lines into paragraphs by the gaps between them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("auto", "off", "force")
EXTRA_HINT = "install the OCR extra (pip install 'rag-cli[ocr]') or set index.ocr = \"off\""
DPI = 200  # the page is rendered at this resolution...
MAX_SIDE = 2200  # ...but its longer side at most this many pixels (RapidOCR's own bound is 2000)
# Text is found on the page scaled to this longer side, and read from the full-size page. RapidOCR's
# default finds it at full size (its shorter side at least 736 px): three times the pixels, and on
# a page of 8 pt print its boxes lost a whole line (bench/bench_ocr.py; docs/speed.md#ocr).
DETECT_SIDE = 1280
# Under auto, a page with a text layer this short is recognised when images cover most of it:
# a scan with a stamp ("Scanned by ..."), a page number, or a few words of a bad OCR layer.
FEW_CHARS = 20
IMAGE_COVER = 0.5  # of the page's area
# The recogniser's model (trained mostly on Chinese) often reads an English line without its
# spaces ("Invoicenumber4471isoverdue."): a space is put between two characters when a frame
# between them gives the space class this probability or more, though the blank wins there.
# Measured on bench/bench_ocr.py's pages: 0.01 and 0.005 give the same words, 0.002 splits words.
SPACE_PROB = 0.006

log = logging.getLogger(__name__)


class OcrUnavailable(Exception):
    """The OCR extra is not installed, or cannot load (opencv without libGL.so.1)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def available() -> bool:
    """Whether the extra's packages are installed (without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("rapidocr_onnxruntime", "pypdfium2"))
    except (ImportError, ValueError):  # a sys.modules entry set to None (tests), or a broken one
        return False


# In the read key: a change to what a recognised page reads as (the decoder, tidy) takes a new
# value, so that PDFs read with the extra before are read again (chunks re-embedded where changed).
TEXT_RULES = 2


def read_key(mode: str) -> str:
    """What the manifest records for a PDF read under ``mode``: a PDF read under another key is
    read again though unchanged (another mode, the extra installed since, new TEXT_RULES)."""
    if mode == "off":
        return "ocr=off"
    return f"ocr={mode}.{TEXT_RULES}" if available() else "ocr=unavailable"


def pdfium() -> Any:
    """The pypdfium2 module, or OcrUnavailable."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise OcrUnavailable(_why(exc)) from None
    return pypdfium2


def _why(exc: ImportError) -> str:
    if "libGL" in str(exc) or "lib" in str(exc) and ".so" in str(exc):
        return (f"the OCR extra cannot load ({exc}): install the library it names (Debian, Ubuntu: apt install "
                "libgl1 libglib2.0-0) or set index.ocr = \"off\"")
    return EXTRA_HINT


# -- the engine -------------------------------------------------------------------------

_ENGINE: Any = None
_ENGINE_LOCK = threading.Lock()  # making the engine, and every call to it
# pdfium is not thread-safe: a file's pages are looked at and rendered under this lock.
PDFIUM_LOCK = threading.RLock()


def _engine() -> Any:
    """The process's RapidOCR engine; the caller holds _ENGINE_LOCK."""
    global _ENGINE
    if _ENGINE is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OcrUnavailable(_why(exc)) from None
        # No angle classifier: it turned short upright lines upside down (read as "S", then dropped
        # below text_score), while a page scanned upside down is rare and its cost is a re-scan.
        _ENGINE = RapidOCR(max_side_len=MAX_SIDE, det_limit_type="max", det_limit_side_len=DETECT_SIDE,
                           use_cls=False)
        # Its logger prints every message on stderr, with a handler of its own.
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        _decode_spaces(_ENGINE)
    return _ENGINE


def _decode_spaces(engine: Any) -> None:
    """Replace the recogniser's CTC decoder by SpacingDecoder, if it is where rapidocr_onnxruntime
    1.4 keeps it (text_rec.postprocess_op, its character list ending with the space class)."""
    rec = getattr(engine, "text_rec", None)
    characters = getattr(getattr(rec, "postprocess_op", None), "character", None)
    if rec is None or not characters or characters[-1] != " ":
        log.debug("RapidOCR's decoder not found: its spaces are kept as they are")
        return
    rec.postprocess_op = SpacingDecoder(list(characters))


class SpacingDecoder:
    """Greedy CTC decoding, as RapidOCR's CTCLabelDecode (a frame's most likely class; repeats
    merged, blanks dropped), which also puts back the spaces the most likely class leaves out:
    one between two characters when a frame from the first to the second gives the space class
    at least SPACE_PROB. ``characters``: the class names, blank first, the space last."""

    def __init__(self, characters: Sequence[str]) -> None:
        self.character = list(characters)
        self.space = len(self.character) - 1

    def __call__(self, preds: Any, return_word_box: bool = False, **kwargs: Any) -> list[tuple[str, float]]:
        """(text, mean probability of its characters) for each line of ``preds`` (lines, frames, classes)."""
        import numpy as np

        out = []
        for frames in preds:
            best = frames.argmax(axis=1)
            keep = best != 0
            keep[1:] &= best[1:] != best[:-1]
            cols = np.flatnonzero(keep)
            text: list[str] = []
            for n, col in enumerate(cols):
                ch = self.character[best[col]]
                if n and ch != " " and text[-1] != " " and frames[cols[n - 1]:col + 1, self.space].max() >= SPACE_PROB:
                    text.append(" ")
                text.append(ch)
            score = float(frames[cols, best[cols]].mean()) if len(cols) else 0.0
            out.append(("".join(text), score))
        return out


@dataclass(frozen=True)
class Box:
    """One recognised piece of text and its bounding rectangle in pixels (y grows downwards)."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def recognise(image: Any) -> list[Box]:
    """The text boxes RapidOCR finds in ``image`` (a numpy array, grey or RGB)."""
    with _ENGINE_LOCK:
        engine = _engine()
        result, _ = engine(image)
    boxes = []
    for item in result or ():
        quad, text = item[0], str(item[1])
        xs, ys = [float(p[0]) for p in quad], [float(p[1]) for p in quad]
        if is_text(text):
            boxes.append(Box(min(xs), min(ys), max(xs), max(ys), tidy(text.strip())))
    return boxes


# A number as printed: a digit first, then digits, separators and the letters a recogniser reads
# for a zero (o, O), with no letter on either side ("9o%", "1o0,o00"; not "O2", "CO2", "10os").
_NUMBER = re.compile(r"(?<![^\W\d_])\d[\doO.,]*(?![^\W\d_])")
_DECIMAL_GAP = re.compile(r"(?<=\d)\. (?=\d)")  # "26. 7%": the point's gap read as a space
_DEGREE_GAP = re.compile(r"° (?=[CFK]\b)")  # "32 ° C": a unit's letter kept with its degree sign
_COMMA_NO_GAP = re.compile(r",(?=[^\W\d_])")  # "dollars,oil": a comma's space the decoder missed


def tidy(text: str) -> str:
    """The recogniser's systematic misreadings of one box, put right where the page cannot mean
    anything else: o/O inside a number is a zero, a decimal point has no space after it, a degree
    sign keeps its unit, and a comma before a letter is followed by a space (printed prose has one;
    a comma between digits is a thousands separator and is kept)."""
    text = _NUMBER.sub(lambda m: m.group().replace("o", "0").replace("O", "0"), text)
    text = _DECIMAL_GAP.sub(".", text)
    text = _DEGREE_GAP.sub("°", text)
    return _COMMA_NO_GAP.sub(", ", text)


def is_text(text: str) -> bool:
    """Whether a recognised box holds text: at least one letter or digit. The recogniser reads
    shapes as glyphs ("■" for a filled square, "|" for a rule): a page of drawings alone then
    has no text, and is reported as such rather than indexed as a chunk of symbols."""
    return any(ch.isalnum() for ch in text)


# -- reading order ----------------------------------------------------------------------

def reading_order(boxes: Sequence[Box]) -> str:
    """The page text: top to bottom, left to right, columns one after the other; lines joined
    by a newline, paragraphs (a gap taller than a line, another column) by a blank line."""
    if not boxes:
        return ""
    unit = statistics.median(b.height for b in boxes) or 1.0
    paragraphs: list[list[str]] = []
    last_bottom: float | None = None
    for block in _blocks(list(boxes), unit):
        for line in _lines(block):
            top, bottom = min(b.y0 for b in line), max(b.y1 for b in line)
            # A gap taller than most of a line, or a line above the last one (the next column).
            if last_bottom is None or top - last_bottom > 0.8 * unit or top < last_bottom - 0.5 * unit:
                paragraphs.append([])
            paragraphs[-1].append(" ".join(b.text for b in sorted(line, key=lambda b: b.x0)))
            last_bottom = bottom
    return "\n\n".join("\n".join(p) for p in paragraphs)


def _gaps(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(where, width) of each gap between the union of ``spans``."""
    out = []
    spans = sorted(spans)
    reach = spans[0][1]
    for lo, hi in spans[1:]:
        if lo > reach:
            out.append(((reach + lo) / 2, lo - reach))
        reach = max(reach, hi)
    return out


def _column_cut(boxes: list[Box], unit: float) -> list[list[Box]]:
    """[left, right] at the widest gutter (at least a line high wide, crossed by no box) that
    leaves at least two lines on each side, or []: a box alone beside others is part of their line."""
    for where, width in sorted(_gaps([(b.x0, b.x1) for b in boxes]), key=lambda g: -g[1]):
        if width < unit:
            break
        left, right = [b for b in boxes if b.x0 <= where], [b for b in boxes if b.x0 > where]
        if len(_lines(left)) > 1 and len(_lines(right)) > 1:
            return [left, right]
    return []


def _blocks(boxes: list[Box], unit: float) -> Iterator[list[Box]]:
    """XY-cut: a vertical cut (a gutter at least a line high wide that no box crosses) first,
    left side before right; else cuts at the widest horizontal gaps, top before bottom."""
    stack = [boxes]
    while stack:
        group = stack.pop()
        if len(group) > 1 and len(_lines(group)) > 1:  # the boxes of one line are read left to right
            columns = _column_cut(group, unit)
            if columns:
                stack.extend(reversed(columns))
                continue
            horizontal = _gaps([(b.y0, b.y1) for b in group])
            widest = max((g[1] for g in horizontal), default=0.0)
            cuts = [g[0] for g in horizontal if g[1] >= 0.8 * widest and g[1] > 0.25 * unit]
            if cuts:
                bands: list[list[Box]] = [[] for _ in range(len(cuts) + 1)]
                for b in group:
                    bands[sum(1 for c in cuts if b.y0 > c)].append(b)
                stack.extend(reversed([band for band in bands if band]))
                continue
        yield group


def _lines(boxes: list[Box]) -> list[list[Box]]:
    """Boxes grouped into lines: a box joins a line it overlaps vertically by half its height."""
    lines: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: (b.y0, b.x0)):
        for line in lines:
            top, bottom = min(b.y0 for b in line), max(b.y1 for b in line)
            if min(bottom, box.y1) - max(top, box.y0) >= 0.5 * min(box.height, bottom - top):
                line.append(box)
                break
        else:
            lines.append([box])
    return sorted(lines, key=lambda line: min(b.y0 for b in line))


# -- pages ------------------------------------------------------------------------------

def should_recognise(mode: str, layer_text: str, page: Any | None) -> bool:
    """The rule for one page. ``page`` is its pypdfium2 page (None without the extra).

    force: every page that shows anything. auto: a page without a text layer that shows
    anything, and a page whose text layer has fewer than FEW_CHARS characters (not counting
    spaces) while images cover at least IMAGE_COVER of it. off: none."""
    if mode == "off":
        return False
    chars = sum(1 for ch in layer_text if not ch.isspace())
    if mode == "auto" and chars >= FEW_CHARS:
        return False
    if page is None:
        return chars == 0
    if not _shows_anything(page):
        return False
    return mode == "force" or chars == 0 or image_cover(page) >= IMAGE_COVER


def _shows_anything(page: Any) -> bool:
    return next(iter(page.get_objects(max_depth=1)), None) is not None


def image_cover(page: Any) -> float:
    """The part of ``page``'s area its images cover (their bounds clipped to the page, summed, at most 1)."""
    raw = pdfium().raw
    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return 0.0
    left, bottom, right, top = 0.0, 0.0, float(width), float(height)
    covered = 0.0
    for obj in page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE], max_depth=5):
        x0, y0, x1, y1 = obj.get_bounds()
        w, h = min(x1, right) - max(x0, left), min(y1, top) - max(y0, bottom)
        if w > 0 and h > 0:
            covered += w * h
    return min(1.0, covered / (width * height))


def render(page: Any) -> Any:
    """The page as a grey numpy image, at DPI with its longer side at most MAX_SIDE pixels."""
    width, height = page.get_size()
    scale = min(DPI / 72, MAX_SIDE / max(width, height, 1.0))
    return page.render(scale=scale, grayscale=True).to_numpy()


def page_text(page: Any) -> str:
    """The recognised text of one pypdfium2 page, in reading order."""
    return reading_order(recognise(render(page)))


def images_decode(page: Any) -> bool:
    """Whether every image of ``page`` decodes (a page OCR found nothing on: a damaged image?)."""
    raw = pdfium().raw
    for obj in page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE], max_depth=5):
        try:
            bitmap = obj.get_bitmap()
            if bitmap.width == 0 or bitmap.height == 0:
                return False
        except Exception:
            return False
    return True


# -- progress ---------------------------------------------------------------------------

# (file, page number, pages done, pages to do): called with done=0 before the first page of a
# file, then after each page. A context variable, so it reaches the loader on the reader thread
# without going through the Loader protocol; set by whoever runs the loader (the indexer).
OnPage = Callable[[str, int, int, int], None]
_ON_PAGE: contextvars.ContextVar[OnPage | None] = contextvars.ContextVar("rag_ocr_on_page", default=None)


@contextlib.contextmanager
def reporting(on_page: OnPage | None) -> Iterator[None]:
    """Report the pages recognised in this context (this thread) to ``on_page``."""
    token = _ON_PAGE.set(on_page)
    try:
        yield
    finally:
        _ON_PAGE.reset(token)


def report(source: str, page: int, done: int, total: int) -> None:
    on_page = _ON_PAGE.get()
    if on_page is not None:
        try:
            on_page(source, page, done, total)
        except Exception:  # a progress display must not lose a page
            log.debug("OCR progress callback failed", exc_info=True)
