"""OCR speed and accuracy on image-only PDF pages made from known text (index.ocr, ingest/ocr.py).

Each case is a letter-size page rendered by Pillow at 150 DPI from a known text and saved as an
image-only PDF; PdfLoader(ocr_mode="force") reads it back. Printed per case: seconds for the page
(render + recognise + reading order, the engine already made), wall clock and the process's CPU
time (on a shared machine the CPU seconds say more than the wall clock), the character error rate (CER:
edit distance / reference length, whitespace collapsed to single spaces), the same without any
spaces (CER-ns: the characters read, whether or not the words were kept apart) and the word
error rate (WER: edit distance over words / reference words; a line read without its spaces is
one wrong word per reference word), medians over --repeat runs; then the medians over all cases.

    python bench/bench_ocr.py [--repeat 3] [--cases NAME,...] [--show]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

FONTS = "/usr/share/fonts/truetype/dejavu/"
TEXT = ("Scanned pages reach the index through optical character recognition. The engine finds each "
        "line of text, reads it, and the loader puts the lines back in reading order before the "
        "chunker cuts them. Invoice 4471 was paid on 12 March 2024 for 318.50 euros. Zebras graze "
        "near the river at dawn while the herons wait in the reeds. A quarterly report shows "
        "revenue growth of seven percent over the year before.")


def wrap(text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def page(columns: int, font_file: str, size: int, *, rotate: float = 0.0, noise: float = 0.0):
    """(image, reference text) of one 150 DPI letter page."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    width, height, margin, gutter = 1275, 1650, 110, 60
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONTS + font_file, size)
    column_width = (width - 2 * margin - (columns - 1) * gutter) // columns
    reference = []
    words = TEXT.split()
    per_column = len(words) // columns + 1
    for c in range(columns):
        text = " ".join(words[c * per_column:(c + 1) * per_column])
        reference.append(text)
        x = margin + c * (column_width + gutter)
        for i, line in enumerate(wrap(text, font, column_width)):
            draw.text((x, margin + i * int(size * 1.5)), line, fill=0, font=font)
    if rotate:
        image = image.rotate(rotate, expand=False, fillcolor=255, resample=Image.BICUBIC)
    if noise:
        rng = random.Random(7)
        pixels = image.load()
        for _ in range(int(width * height * noise)):
            x, y = rng.randrange(width), rng.randrange(height)
            pixels[x, y] = rng.choice((0, 90, 255))
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    return image, " ".join(reference)


CASES = {
    "sans-11pt": dict(columns=1, font_file="DejaVuSans.ttf", size=23),
    "serif-11pt": dict(columns=1, font_file="DejaVuSerif.ttf", size=23),
    "sans-8pt": dict(columns=1, font_file="DejaVuSans.ttf", size=17),
    "mono-14pt": dict(columns=1, font_file="DejaVuSansMono.ttf", size=29),
    "two-columns": dict(columns=2, font_file="DejaVuSerif.ttf", size=21),
    "scan-rotated-noisy": dict(columns=1, font_file="DejaVuSans.ttf", size=23, rotate=1.2, noise=0.01),
}


def distance(a: Sequence[str], b: Sequence[str]) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(got: str, reference: str) -> float:
    got, reference = " ".join(got.split()), " ".join(reference.split())
    return distance(got, reference) / max(1, len(reference))


def cer_no_spaces(got: str, reference: str) -> float:
    got, reference = "".join(got.split()), "".join(reference.split())
    return distance(got, reference) / max(1, len(reference))


def wer(got: str, reference: str) -> float:
    return distance(got.split(), reference.split()) / max(1, len(reference.split()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--show", action="store_true", help="print the text read from each page")
    args = parser.parse_args()

    from rag_cli.ingest import ocr
    from rag_cli.ingest.loaders import PdfLoader

    t0 = time.perf_counter()
    with ocr.PDFIUM_LOCK, ocr._ENGINE_LOCK:
        ocr._engine()
    print(f"engine made in {time.perf_counter() - t0:.2f} s")
    loader = PdfLoader(ocr_mode="force")
    print(f"{'case':<22} {'s/page':>7} {'cpu s':>7} {'CER':>7} {'CER-ns':>7} {'WER':>7}")
    seconds_all: list[float] = []
    cpu_all: list[float] = []
    rates_all: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            image, reference = page(**CASES[name])  # type: ignore[arg-type]
            out = io.BytesIO()
            image.save(out, "PDF", resolution=150)
            path = Path(tmp) / f"{name}.pdf"
            path.write_bytes(out.getvalue())
            times, cpu, rates = [], [], []
            for _ in range(args.repeat):
                t, c = time.perf_counter(), time.process_time()
                loaded = loader.load(path, path.name, out.getvalue())
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                text = loaded.documents[0].text if loaded.documents else ""
                rates.append((cer(text, reference), cer_no_spaces(text, reference), wer(text, reference)))
            seconds, cpu_seconds = statistics.median(times), statistics.median(cpu)
            medians = tuple(statistics.median(r[i] for r in rates) for i in range(3))
            seconds_all.append(seconds)
            cpu_all.append(cpu_seconds)
            rates_all.append(medians)  # type: ignore[arg-type]
            print(f"{name:<22} {seconds:>7.2f} {cpu_seconds:>7.2f} " + " ".join(f"{m:>7.3f}" for m in medians),
                  flush=True)
            if args.show:
                print(text)
    overall = [statistics.median(r[i] for r in rates_all) for i in range(3)]
    print(f"{'median':<22} {statistics.median(seconds_all):>7.2f} {statistics.median(cpu_all):>7.2f} "
          + " ".join(f"{m:>7.3f}" for m in overall))


if __name__ == "__main__":
    main()
