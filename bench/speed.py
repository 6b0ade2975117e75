"""Speed against the budgets of issue 7, in one command: start-up of each command as a fresh
process, the warm server, and indexing.

    python bench/speed.py [--repeat 7] [--only startup|serve|indexing] [--scifact] [--peer]

Start-up runs the installed `rag` (a fresh process each time, as a shell loop would) in a folder
where the sample documents are indexed, and prints the median, p90 and the ratio to the budget
of each command. The warm-server and indexing parts come from bench/bench_serve.py and
bench/bench_indexing_speed.py (each also runs alone). Figures are wall-clock medians on this
machine; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
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
QUESTION = "How often should I feed my starter?"
NO_VECTOR_CACHE = {"RAG_EMBEDDING_CACHE": "false"}  # every run embeds as for a question never asked

# (label, arguments, extra environment, budget in seconds)
STARTUP = (
    ("rag --help", ["--help"], {}, 0.3),
    ("rag config", ["config"], {}, 0.3),
    ("rag chunk-preview", ["chunk-preview", str(SAMPLES / "guides" / "starter.md")], {}, 0.3),
    ("rag ask --retrieve-only (cold, new question)", ["ask", "--retrieve-only", QUESTION], NO_VECTOR_CACHE, 1.0),
    ("rag ask --retrieve-only (cold, asked before)", ["ask", "--retrieve-only", QUESTION], {}, 1.0),
    ("rag ask (cold, default model, new question)", ["ask", "--no-cache", QUESTION], NO_VECTOR_CACHE, 2.5),
    ("rag ask (cold, default model, asked before)", ["ask", "--no-cache", QUESTION], {}, 2.5),
)


def rag(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rag_cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"rag {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def summary(times: list[float], budget: float) -> dict[str, float]:
    ordered = sorted(times)
    return {"median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "budget": budget, "ratio": statistics.median(ordered) / budget}


def measure_startup(repeat: int, workdir: Path | None = None) -> dict[str, dict[str, float]]:
    """Median wall time of each start-up command (fresh processes) in a folder with the samples
    indexed. Any `rag serve` is kept out of it (RAG_SERVE_USE=never): this is the cold path.
    "New question" runs turn the vector cache off, so each embeds the question and the sentences
    it narrows to as a question never asked before would; "asked before" runs use the cache
    (`--no-cache` turns off only the answer cache: the model still generates)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="rag-speed-"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAG_SERVE_USE="never")
    if not (workdir / ".rag").is_dir():
        rag(["index", str(SAMPLES)], workdir, env)  # exports the query model too, on a first run
    results = {}
    for label, args, extra, budget in STARTUP:
        run_env = {**env, **extra}
        rag(args, workdir, run_env)  # not counted: the OS file cache is warm, as for any later run
        results[label] = summary([rag(args, workdir, run_env) for _ in range(repeat)], budget)
    return results


def print_table(title: str, rows: dict[str, dict[str, float]], unit: str = "s") -> None:
    print(f"\n{title}")
    print("| what | median | p90 | budget | median / budget |\n| --- | --- | --- | --- | --- |")
    scale = 1000.0 if unit == "ms" else 1.0
    for label, r in rows.items():
        print(f"| {label} | {r['median'] * scale:.{0 if unit == 'ms' else 2}f} {unit} | "
              f"{r['p90'] * scale:.{0 if unit == 'ms' else 2}f} {unit} | {r['budget'] * scale:g} {unit} | "
              f"{r['ratio']:.2f} |")


def _bench_module(name: str):
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=("startup", "serve", "indexing"))
    parser.add_argument("--scifact", action="store_true", help="indexing: also peak memory on all of SciFact (~15 min)")
    parser.add_argument("--peer", action="store_true", help="indexing: also `llm embed-multi` on the same corpus")
    args = parser.parse_args()
    if shutil.which("rag") is None:
        sys.exit("install rag-cli first: pip install -e .")
    workdir = Path(tempfile.mkdtemp(prefix="rag-speed-"))
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; repeat {args.repeat}")
    if args.only in (None, "startup"):
        print_table("Start-up (fresh process each run; samples indexed)", measure_startup(args.repeat, workdir))
    if args.only in (None, "serve"):
        serve = _bench_module("bench_serve")
        if serve is None:
            print("\n(bench/bench_serve.py is missing: no warm-server figures)")
        else:
            serve.report(serve.measure(workdir, max(20, args.repeat)))
    if args.only in (None, "indexing"):
        indexing = _bench_module("bench_indexing_speed")
        if indexing is None:
            print("\n(bench/bench_indexing_speed.py is missing: no indexing figures)")
        else:
            indexing.report(indexing.measure(scifact=args.scifact, peer=args.peer))


if __name__ == "__main__":
    main()
