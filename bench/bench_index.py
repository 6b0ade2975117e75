"""Indexing speed: a first full run and repeated unchanged re-runs, through the real `rag` command.

    python bench/bench_index.py ../shared/eval/squad/docs [--repeat 5] [--keep DIR]

Prints the first run's time and chunk throughput, and the median of the unchanged re-runs
(each a fresh process, so start-up is included, as a user would see it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rag_index(target: Path, workdir: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rag_cli", "index", str(target.resolve()), "--json"], cwd=workdir,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        sys.exit(f"rag index failed ({done.returncode}):\n{done.stderr}")
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="index into this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="rag-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    first_wall, first = rag_index(args.corpus, workdir)
    files = sum(first["files"].values())
    chunks = first["chunks"]["total"]
    t = first["timings"]
    print(f"corpus: {args.corpus}  files: {files}  chunks: {chunks}")
    print(f"first run: {first_wall:.1f} s wall ({first['seconds']:.1f} s in the indexer; load {t['load']:.1f} s, "
          f"chunk {t['chunk']:.1f} s, embed {t['embed']:.1f} s, write {t['write']:.1f} s); "
          f"{chunks / max(first['seconds'], 1e-9):.1f} chunks/s")
    reruns = []
    for _ in range(args.repeat):
        wall, report = rag_index(args.corpus, workdir)
        assert report["chunks"]["written"] == 0, "an unchanged re-run embedded chunks"
        reruns.append(wall)
    print(f"unchanged re-run: median {statistics.median(reruns):.2f} s wall over {args.repeat} runs "
          f"(min {min(reruns):.2f}, max {max(reruns):.2f}); embedded 0 chunks")


if __name__ == "__main__":
    main()
