"""What the PDF bounds cost (index.pdf_max_elements, index.pdf_max_tokens, index.pdf_max_stream_mb):
time and peak memory to read real filings, and synthetic PDFs at each bound.

    python bench/bench_pdf_limits.py [../shared/eval/sec10q/docs] [--repeat 3] [--quick]

Each read is a fresh child process (`PdfLoader.load`, pypdf's parse and text extraction included)
that reports its wall time and its peak RSS (VmHWM) above what it held before the read (the
file's bytes and the imports). For the filings: the median over `--repeat` reads with rag-cli's bounds and with
pypdf 7's own (100,000 elements), and their ratio; then one `rag index` of the folder (hash
embedder: parsing, not the model, is measured). Then the synthetic pages of
tests/test_pdf_limits.py: a TJ array of 150,000 elements (the shape pypdf 7 alone refuses), each
bound just reached, and an array ten times the bound (refused: how long a hostile file holds the
reader). `--quick` skips the pages at the bounds (they take ~1.5 minutes). Wall-clock figures: run
it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_DOCS = REPO.parent / "shared" / "eval" / "sec10q" / "docs"
PYPDF_OWN = (100_000, 2_000_000, 75)  # pypdf 7's bounds, as (elements, tokens, stream MB)


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process, in MiB. Not ru_maxrss: Linux carries that
    over fork and exec, so a child would report the bench's own peak."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def child(path: str, elements: int, tokens: int, stream_mb: int) -> None:
    """One read, in this (child) process: prints {seconds, peak_mb, chars, warnings | error}."""
    import pypdf  # noqa: F401  (imported before the baseline)

    from rag_cli.errors import DocumentError
    from rag_cli.ingest.loaders import PdfLimits, PdfLoader

    data = Path(path).read_bytes()
    before = memory_mb("VmRSS")
    started = time.perf_counter()
    out: dict = {}
    try:
        loaded = PdfLoader(PdfLimits(elements, tokens, stream_mb)).load(Path(path), Path(path).name, data)
        out = {"chars": sum(len(d.text) for d in loaded.documents), "warnings": loaded.warnings}
    except DocumentError as exc:
        out = {"error": exc.reason}
    out["seconds"] = time.perf_counter() - started
    out["peak_mb"] = memory_mb("VmHWM") - before
    print(json.dumps(out))


def index_child(target: str) -> None:
    """`rag index TARGET --json` in this process; its peak memory goes to stderr as its last line."""
    import atexit
    import runpy

    atexit.register(lambda: print(f"peak_mb {memory_mb('VmHWM'):.1f}", file=sys.stderr))
    sys.argv = ["rag", "index", target, "--json"]
    runpy.run_module("rag_cli", run_name="__main__")


def read(path: Path, bounds: tuple[int, int, int]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(path), *map(str, bounds)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the child failed on {path}:\n{done.stderr}")
    return json.loads(done.stdout)


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def filings(docs: Path, repeat: int, ours: tuple[int, int, int]) -> None:
    pdfs = sorted(docs.glob("*.pdf"))
    print(f"{len(pdfs)} filings in {docs}; median of {repeat} reads each, rag-cli's bounds vs pypdf's own")
    print(f"{'filing':<20} {'pages':>5} {'chars':>8} {'s (ours)':>9} {'s (pypdf)':>10} {'ratio':>6} "
          f"{'peak MB (ours)':>15} {'peak MB (pypdf)':>16}")
    totals = []
    for pdf in pdfs:
        runs = {b: [read(pdf, b) for _ in range(repeat)] for b in (ours, PYPDF_OWN)}
        assert all("error" not in r and not r["warnings"] for rs in runs.values() for r in rs), runs
        from pypdf import PdfReader

        s_ours, s_pypdf = median(runs[ours], "seconds"), median(runs[PYPDF_OWN], "seconds")
        totals.append(s_ours)
        print(f"{pdf.stem:<20} {len(PdfReader(pdf).pages):>5} {runs[ours][0]['chars']:>8,} {s_ours:>9.2f} "
              f"{s_pypdf:>10.2f} {s_ours / s_pypdf:>6.2f} {median(runs[ours], 'peak_mb'):>15.1f} "
              f"{median(runs[PYPDF_OWN], 'peak_mb'):>16.1f}")
    print(f"median read per filing: {statistics.median(totals):.2f} s (max {max(totals):.2f} s)")

    with tempfile.TemporaryDirectory(prefix="rag-bench-pdf-") as work:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_NO_SERVE": "1", "RAG_EMBEDDING_BACKEND": "hash"}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--index", str(docs.resolve())], cwd=work, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"rag index failed ({done.returncode}):\n{done.stderr}")
        report = json.loads(done.stdout)
        peak = float(done.stderr.strip().splitlines()[-1].split()[1])
        print(f"rag index of the folder (hash embedder): {wall:.1f} s wall, load {report['timings']['load']:.1f} s, "
              f"{report['chunks']['total']} chunks, {sum(report['files'].values())} files, "
              f"{len(report['problems'])} problems; peak RSS {peak:.0f} MB")


def synthetic(ours: tuple[int, int, int], quick: bool) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from test_pdf_limits import FIRST_PAGE, big_font_pdf, kerned, many_shows, raw_pdf, shown

    elements, tokens, stream_mb = ours
    # (what the page holds, how many elements, tokens or bytes that is, the PDF)
    pages = [
        ("TJ array, 150,000 elements (pypdf 7 alone refuses it)", 150_000,
         lambda: raw_pdf([kerned(150_000)], compress=True)),
        ("/W of a 65,535-glyph font (196,605 elements)", 196_605, lambda: big_font_pdf(65_535, "Net sales rose.")),
        (f"TJ array, 10x the bound ({10 * elements:,}: refused)", elements,  # parsed up to the bound
         lambda: raw_pdf([kerned(10 * elements)], compress=True)),
    ]
    if not quick:
        pages[2:2] = [
            (f"TJ array at the bound ({elements - 1:,} elements)", elements,
             lambda: raw_pdf([kerned(elements - 1)], compress=True)),
            (f"dictionary at the bound ({elements:,} entries)", elements,
             lambda: raw_pdf([shown(FIRST_PAGE)], page_entries=b"/PieceInfo << " + b" ".join(
                 b"/k%d %d" % (k, k) for k in range(elements)) + b" >>", compress=True)),
            (f"content stream at the bound (~{tokens:,} tokens)", tokens,
             lambda: raw_pdf([many_shows(tokens - 16)], compress=True)),
            (f"one stream of {stream_mb - 1} MB decoded (the bound: {stream_mb} MB)", (stream_mb - 1) * 1_000_000,
             lambda: raw_pdf([shown("quince " * ((stream_mb - 1) * 1_000_000 // 7))], compress=True)),
        ]
    print(f"\nsynthetic pages, rag-cli's bounds (elements {elements:,}, tokens {tokens:,}, stream {stream_mb} MB)")
    print(f"{'page':<58} {'file KB':>8} {'s':>7} {'peak MB':>8} {'B each':>7}  outcome   (B each: peak bytes per "
          "element, token or byte)")
    with tempfile.TemporaryDirectory(prefix="rag-bench-pdf-") as tmp:
        for label, count, build in pages:
            path = Path(tmp) / "page.pdf"
            path.write_bytes(build())
            got = read(path, ours)
            outcome = got.get("error") or "; ".join(got["warnings"]) or f"read, {got['chars']:,} characters"
            print(f"{label:<58} {path.stat().st_size / 1024:>8.0f} {got['seconds']:>7.2f} {got['peak_mb']:>8.0f} "
                  f"{got['peak_mb'] * 2**20 / count:>7.0f}  {outcome}")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], *map(int, sys.argv[3:6]))
        return
    if sys.argv[1:2] == ["--index"]:
        index_child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("docs", type=Path, nargs="?", default=DEFAULT_DOCS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the synthetic pages at the bounds")
    args = parser.parse_args()
    from rag_cli.ingest.loaders import PdfLimits

    limits = PdfLimits()
    ours = (limits.max_elements, limits.max_tokens, limits.max_stream_mb)
    if args.docs.is_dir():
        filings(args.docs, args.repeat, ours)
    else:
        print(f"{args.docs}: no such folder; synthetic pages only")
    synthetic(ours, args.quick)


if __name__ == "__main__":
    main()
