"""Sharing an index (issue 8): what moving the index to a Chroma server and the model to a
llama.cpp server costs and saves, on this machine.

    python bench/bench_sharing.py [--scifact] [--repeat 5] [--only store|llm]

store: index a corpus locally (the samples, or SciFact's 5,183 abstracts with --scifact), copy it
       to a fresh `chroma run` with `rag index --to` (nothing embedded again) and again (nothing
       sent), then time `rag ask --retrieve-only` as fresh processes: embedded index, server
       index from a folder that already holds the keyword index, and the first question of a new
       reader (which downloads the chunks to build it).
llm:   `rag ask` (fresh processes) with the bundled model in-process, and through a warm
       `python -m llama_cpp.server` serving the same GGUF (llm.url, prompt_style = completion).

Figures are wall-clock medians; run it on an otherwise idle machine. Servers listen on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
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
             "How long is the bulk fermentation?", "What is autolyse?", "How much salt goes into the loaf?",
             "Can I use whole wheat flour?", "Why did my loaf come out flat?"]
SCIFACT_QUESTIONS = ["0-dimensional biomaterials show inductive properties.", "ALDH1 expression is associated with "
                     "poorer prognosis for breast cancer primary tumors.", "Aspirin inhibits the production of "
                     "PGE2.", "Cataract and trachoma are the primary cause of blindness in Southeast Asia.",
                     "Exercise increases bone density.", "Vitamin D deficiency is linked to obesity.",
                     "Smoking causes lung cancer."]


def run(args: list[str], cwd: Path, env: dict[str, str], *, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rag_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        sys.exit(f"rag {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done.stdout


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_store(work: Path, scifact: bool, repeat: int) -> dict[str, float]:
    from rag_cli.testing.chroma_server import ChromaServer

    corpus = SCIFACT if scifact else SAMPLES
    questions = SCIFACT_QUESTIONS if scifact else QUESTIONS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_SERVE_USE": "never", "RAG_EMBEDDING_CACHE": "false"}
    project = work / "project"
    project.mkdir()
    out: dict[str, float] = {}
    out["index (embeds everything), s"], report = run(["index", str(corpus), "--json"], project, env, ok=(0, 3))
    out["chunks"] = json.loads(report)["chunks"]["total"]
    with ChromaServer(work / "chroma") as server:
        shared = {**env, "RAG_STORE_URL": server.url}
        out["index --to (copy), s"], _ = run(["index", "--to", server.url], project, env)
        out["index --to again (nothing sent), s"], _ = run(["index", "--to", server.url], project, env)
        out["index on the server, nothing changed, s"], _ = run(["index"], project, shared)
        reader = work / "reader"
        reader.mkdir()
        out["first ask of a new reader (builds its keyword index), s"], _ = run(
            ["ask", "--retrieve-only", questions[0]], reader, shared)
        for label, cwd, e in (("embedded", project, env), ("server", reader, shared)):
            times = [run(["ask", "--retrieve-only", q], cwd, e)[0] for q in (questions * repeat)[:max(repeat, 3)]]
            out[f"ask --retrieve-only, {label} index (median), s"] = median(times)
        out["ratio server/embedded ask"] = (out["ask --retrieve-only, server index (median), s"]
                                            / out["ask --retrieve-only, embedded index (median), s"])
        out["ratio copy/index"] = out["index --to (copy), s"] / out["index (embeds everything), s"]
    return out


def bench_llm(work: Path, repeat: int) -> dict[str, float]:
    from rag_cli.model_files import resolve_gguf
    from rag_cli.testing.chroma_server import free_port

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_SERVE_USE": "never", "RAG_ASK_CACHE": "false"}
    project = work / "llm"
    project.mkdir()
    run(["index", str(SAMPLES)], project, env)
    gguf = resolve_gguf("bundled")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                               "--port", str(port), "--n_ctx", "2048"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        served = {**env, "RAG_LLM_URL": f"http://127.0.0.1:{port}/v1", "RAG_LLM_PROMPT_STYLE": "completion"}
        asks = (QUESTIONS * repeat)[:max(repeat, 3)]
        run(["ask", asks[0]], project, served, ok=(0, 6))  # the server's first prompt
        for label, e in (("in-process model", env), ("llama_cpp.server", served)):
            out[f"ask, {label} (median), s"] = median([run(["ask", q], project, e, ok=(0, 6))[0] for q in asks])
        down = {**served, "RAG_LLM_URL": f"http://127.0.0.1:{free_port()}/v1", "RAG_LLM_BREAKER_FAILURES": "0"}
        out["ask, server down: passages and exit 9 (median), s"] = median(
            [run(["ask", q], project, down, ok=(9,))[0] for q in asks[:3]])
    finally:
        server.terminate()
        server.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact", action="store_true", help="the store part on SciFact's 5,183 abstracts")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("store", "llm"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-sharing-"))
    os.environ.setdefault("RAG_CACHE_DIR", str(Path.home() / ".cache" / "rag-cli"))
    try:
        results: dict[str, float] = {}
        if args.only in (None, "store"):
            results.update(bench_store(work, args.scifact, args.repeat))
        if args.only in (None, "llm"):
            results.update(bench_llm(work, args.repeat))
        width = max(len(k) for k in results)
        for key, value in results.items():
            print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
