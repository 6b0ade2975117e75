"""`rag ask` while `rag index` writes (issue 9): what the reader pays for sharing the embedded
Chroma folder with a writer, now that every call into it takes turns on `.rag/chroma.lock`.

    python bench/bench_concurrency.py [--abstracts 2000] [--repeat 7]

Indexes the samples, then starts `rag index` on the samples plus the first N SciFact abstracts
and, while it writes, runs `rag ask --retrieve-only --json` as fresh processes one after
another; then the same questions on the finished, idle index. Prints the medians, the ratio,
how many asks failed (there must be none), and the writer's own time against a run with no
reader. Wall-clock figures; run it on an otherwise idle machine (2 cores here: the reader and
the writer also compete for the CPU, which is most of the difference).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SCIFACT = REPO.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"
QUESTIONS = ["How often should I feed my starter?", "What temperature should the oven be?",
             "Aspirin inhibits the production of PGE2.", "Exercise increases bone density."]


def corpus(folder: Path, abstracts: int) -> Path:
    shutil.copytree(SAMPLES, folder)
    with open(SCIFACT) as f, open(folder / "scifact.jsonl", "w") as out:
        for _, line in zip(range(abstracts), f):
            out.write(line)
    return folder


def rag(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag_cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def timed_ask(question: str, cwd: Path, env: dict[str, str]) -> tuple[float, str | None]:
    """Seconds, and the error of an ask that failed (None when it answered)."""
    started = time.perf_counter()
    done = rag(["ask", "--retrieve-only", "--json", question], cwd, env)
    return time.perf_counter() - started, None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--abstracts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7, help="asks on the idle index")
    args = parser.parse_args()
    if not SCIFACT.exists():
        sys.exit(f"{SCIFACT} is not there")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_SERVE_USE": "never"}
    with tempfile.TemporaryDirectory(prefix="rag-bench-concurrency-") as tmp:
        base = Path(tmp)
        docs = corpus(base / "docs", args.abstracts)

        alone = base / "alone"
        alone.mkdir()
        assert rag(["index", str(docs / "guides")], alone, env).returncode == 0
        started = time.perf_counter()
        assert rag(["index", str(docs)], alone, env).returncode == 0
        writer_alone = time.perf_counter() - started

        work = base / "work"
        work.mkdir()
        assert rag(["index", str(docs / "guides")], work, env).returncode == 0  # something to answer from
        started = time.perf_counter()
        writer = subprocess.Popen([sys.executable, "-m", "rag_cli", "index", str(docs)], cwd=work, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        during: list[float] = []
        failures: list[str] = []
        while writer.poll() is None:
            seconds, error = timed_ask(QUESTIONS[len(during) % len(QUESTIONS)], work, env)
            if writer.poll() is None:  # only asks that ran wholly while the writer wrote
                during.append(seconds)
            if error:
                failures.append(error)
        writer_busy = time.perf_counter() - started
        if writer.returncode != 0:
            sys.exit(f"rag index failed: {writer.stderr.read() if writer.stderr else ''}")
        idle = [timed_ask(QUESTIONS[i % len(QUESTIONS)], work, env)[0] for i in range(args.repeat)]

    print(f"corpus: samples + {args.abstracts} SciFact abstracts")
    print(f"rag ask --retrieve-only while rag index writes: median {statistics.median(during):.2f} s "
          f"({len(during)} asks, max {max(during):.2f} s, {len(failures)} failed)")
    print(f"rag ask --retrieve-only on the idle index:      median {statistics.median(idle):.2f} s ({len(idle)} asks)")
    print(f"ratio while writing / idle: {statistics.median(during) / statistics.median(idle):.2f}x")
    print(f"rag index alone {writer_alone:.1f} s; with asks running beside it {writer_busy:.1f} s "
          f"({writer_busy / writer_alone:.2f}x)")
    for error in failures:
        print(f"failed ask: {error.strip()}")


if __name__ == "__main__":
    main()
