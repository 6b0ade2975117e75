"""Warm mode: what `rag serve` costs a question, against the issue's budgets.

    python bench/bench_serve.py [FOLDER] [--repeat 20]

FOLDER is where you run `rag` (the folder holding `.rag/` or `.rag.toml`), or an index folder
itself; without one, the samples are indexed into a temporary folder first. The script starts
`rag serve` there, waits until it is ready, measures, and stops it. Each figure is the median
(and p95) of ``repeat`` runs, the questions taken in turn:

- ``retrieve_round_trip``: `rag ask --retrieve-only`'s client call through the server, from this
  process (connect, request, search, answer, parse). Budget 50 ms.
- ``retrieve_command``: the whole `rag ask --retrieve-only` command as a fresh process through
  the server (Python start-up, the CLI, the round trip). No budget; shown beside
  ``cold_retrieve_command`` (the same with RAG_NO_SERVE=1, a few runs) for scale.
- ``ask_overhead``: a served `rag ask` (answer cache off) minus the model's own generation time
  (the Answer's ``timings.generate``). Budget 100 ms. Split into ``ask_transport`` (round trip
  minus the server's ``timings.total``) and ``ask_pipeline`` (retrieval, narrowing, packing and
  the checks: ``total`` minus ``generate``; ``ask_narrow`` is its narrowing part), which an
  in-process `rag ask` pays as well.
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
sys.path.insert(0, str(REPO))

QUESTIONS = (
    "How often should I feed my starter?",
    "What temperature should the oven be for the country loaf?",
    "How long does the dough rest before shaping?",
    "What flour does the starter need?",
    "Why did my loaf come out dense?",
)
BUDGETS = {"retrieve_round_trip": 0.050, "ask_overhead": 0.100}


def _env(index: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAG_NO_SERVE",)}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if index is not None:
        env["RAG_INDEX_PATH"] = str(index)
    return env


def _workdir(folder: Path) -> tuple[Path, Path | None]:
    """(where to run `rag`, the index folder when FOLDER is one)."""
    folder = folder.resolve()
    if (folder / "manifest.sqlite3").is_file():
        return folder.parent, folder
    return folder, None


def _stats(values: list[float], budget: float | None = None) -> dict[str, float | None]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    median = statistics.median(ordered)
    return {"median": median, "p95": p95, "n": len(values), "budget": budget,
            "ratio": median / budget if budget else None}


def measure(index_folder: Path, repeat: int, *, cold_runs: int = 3) -> dict[str, dict[str, float | None]]:
    """Start `rag serve` on ``index_folder`` (see the module docstring), measure, stop it."""
    workdir, index = _workdir(index_folder)
    env = _env(index)
    from rag_cli.config import load_settings
    from rag_cli.serve import client

    settings = load_settings(workdir, env=env)
    rag = [sys.executable, "-m", "rag_cli"]
    server = subprocess.Popen([*rag, "serve"], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not client.status(settings).ready:
            if server.poll() is not None:
                raise SystemExit(f"rag serve exited {server.returncode}: {server.stderr.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("rag serve did not get ready in 300 s")
            time.sleep(0.1)

        def served(question: str, retrieve_only: bool):
            started = time.perf_counter()
            got = client.ask_served(settings, question, where=[], model=None, retrieve_only=retrieve_only,
                                    use_cache=False)
            if got is None:
                raise SystemExit("the server did not answer (busy, or settings it cannot serve)")
            return time.perf_counter() - started, got.answer

        for q in QUESTIONS:  # the first run of each path loads lazily-built parts
            served(q, True)
        served(QUESTIONS[0], False)

        round_trips = [served(QUESTIONS[i % len(QUESTIONS)], True)[0] for i in range(repeat)]

        def command(i: int, extra_env: dict[str, str]) -> float:
            started = time.perf_counter()
            done = subprocess.run([*rag, "ask", "--retrieve-only", QUESTIONS[i % len(QUESTIONS)]], cwd=workdir,
                                  env={**env, **extra_env}, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"rag ask failed: {done.stderr}")
            return time.perf_counter() - started

        commands = [command(i, {}) for i in range(repeat)]
        cold = [command(i, {"RAG_NO_SERVE": "1"}) for i in range(cold_runs)]

        overhead, transport, pipeline, narrow, generate = [], [], [], [], []
        for i in range(repeat):
            seconds, answer = served(QUESTIONS[i % len(QUESTIONS)], False)
            t = answer.timings
            overhead.append(seconds - t.get("generate", 0.0))
            transport.append(seconds - t["total"])
            pipeline.append(t["total"] - t.get("generate", 0.0))
            narrow.append(t.get("narrow", 0.0))
            generate.append(t.get("generate", 0.0))
    finally:
        subprocess.run([*rag, "serve", "--stop"], cwd=workdir, env=env, capture_output=True)
        server.wait(timeout=60)
    return {
        "retrieve_round_trip": _stats(round_trips, BUDGETS["retrieve_round_trip"]),
        "retrieve_command": _stats(commands),
        "cold_retrieve_command": _stats(cold),
        "ask_overhead": _stats(overhead, BUDGETS["ask_overhead"]),
        "ask_transport": _stats(transport),
        "ask_pipeline": _stats(pipeline),
        "ask_narrow": _stats(narrow),
        "generate": _stats(generate),
    }


def report(results: dict[str, dict[str, float | None]]) -> None:
    print(f"{'measure':<24} {'median':>9} {'p95':>9} {'budget':>9} {'ratio':>7}  n")
    for name, s in results.items():
        budget = f"{1000 * s['budget']:.0f} ms" if s["budget"] else "-"
        ratio = f"{s['ratio']:.2f}" if s["ratio"] is not None else "-"
        print(f"{name:<24} {1000 * s['median']:>6.1f} ms {1000 * s['p95']:>6.1f} ms {budget:>9} {ratio:>7}  {s['n']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="where to run rag (or an index folder)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    temp = None
    folder = args.folder
    if folder is None:
        temp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        shutil.copytree(REPO / "samples", temp / "docs")
        subprocess.run([sys.executable, "-m", "rag_cli", "index", str(temp / "docs")], cwd=temp, env=_env(None),
                       check=True, capture_output=True)
        folder = temp
    try:
        report(measure(folder, args.repeat))
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
