"""Indexing speed against the budgets of issue 7: medians and ratios, never pass/fail asserts.

    python bench/bench_indexing_speed.py                     # (a) throughput and (b) 1,000 unchanged files
    python bench/bench_indexing_speed.py --corpus DIR --repeat 3
    python bench/bench_indexing_speed.py --only throughput   # or: unchanged, scifact, peer
    python bench/bench_indexing_speed.py --scifact           # + (c) peak RSS of a full SciFact index (~15 min)
    python bench/bench_indexing_speed.py --peer              # + (d) `llm embed-multi` on the same records

(a) throughput: the whole indexing run (``index_paths`` into a fresh index, with the model
    already loaded) against raw ``SentenceTransformer.encode`` of exactly the chunk texts the
    run embedded, same batch size, same process, runs interleaved. The indexer embeds as
    `rag index` does: with the cached ONNX export of the model when there is one (``--runtime
    torch``: with the same SentenceTransformer object that raw encode uses).
    Budget: the run keeps >= 85% of raw encode's chunks/s.
(b) 1,000 small unchanged Markdown/text files: median wall time of fresh `rag index` processes
    (start-up included, as a user runs it). Budget: <= 2 s.
(c) peak RSS (max resident set) of a fresh `rag index` of SciFact's 5,183 abstracts, with its RSS
    sampled over the run to show whether it grows. Budget: < 2 GiB.
(d) `llm embed-multi` (simonw/llm with the llm-sentence-transformers plugin and the bundled
    MiniLM folder) against `rag index` on the same records. They do different work: llm embeds
    each record whole (truncated at the model's 256 tokens), rag chunks it (every token embedded,
    plus a title header per chunk) and also writes a keyword index; tokens/s compares the model
    work. The plugin is not a dependency of rag-cli: install it apart (see ``peer_hint``).

The machine is shared: each figure is a median, and ratios are taken per interleaved pair.
Each part is a ``measure_*`` function returning a dict; ``measure()`` runs the parts asked for and
``report()`` prints them (bench/speed.py calls both).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "eval"
SCIFACT = EVAL / "scifact" / "corpus.jsonl"
DEFAULT_SUBSET = 400  # SciFact abstracts in the default throughput corpus (~1,000 chunks, ~1 min)
BUDGET_RATIO, BUDGET_UNCHANGED_S, BUDGET_RSS_MIB = 0.85, 2.0, 2048

sys.path.insert(0, str(ROOT))


def _runtime_env() -> str:
    """The environment variable of the setting that picks torch or the ONNX export."""
    from rag_cli.config import EmbeddingSettings

    fields = getattr(EmbeddingSettings, "__dataclass_fields__", {})
    return "RAG_EMBEDDING_RUNTIME" if "runtime" in fields else "RAG_EMBEDDING_QUERY_RUNTIME"


RUNTIME_ENV = _runtime_env()


def _rag_command() -> list[str]:
    """The installed `rag` script beside this Python (as a user runs it), else ``python -m rag_cli``."""
    script = Path(sys.executable).with_name("rag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rag_cli"]


def _env() -> dict[str, str]:
    # Default settings only (but the runtime the bench was asked for).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k == RUNTIME_ENV}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def scifact_subset(n: int, folder: Path) -> Path:
    """The first ``n`` SciFact abstracts as a JSONL file in ``folder`` (a fixed, repeatable corpus)."""
    out = folder / f"scifact-{n}.jsonl"
    with SCIFACT.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for _, line in zip(range(n), src):
            dst.write(line)
    return out


# -- (a) throughput ---------------------------------------------------------------------------

class _Recording:
    """An embedder that remembers every text it was asked to embed (the chunks of a run)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def embed_documents(self, texts: Sequence[str]) -> Any:
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts)


def corpus_or_subset(corpus: Path | None, records: int, scratch: Path) -> tuple[Path, str]:
    """``corpus`` and its name, or (without one) the first ``records`` SciFact abstracts."""
    if corpus is not None:
        return corpus, str(corpus)
    return scifact_subset(records, scratch), f"the first {records} SciFact abstracts"


def padded_tokens(calls: list[list[str]], batch_size: int, count: Any) -> int:
    """Token positions the model computes for these ``encode`` calls: sentence-transformers sorts
    each call's texts by length in characters and pads each batch to its longest text (+2 special
    tokens). The same figure for the real tokens shows the work padding adds, free of timing noise."""
    total = 0
    for texts in calls:
        ordered = sorted(texts, key=len, reverse=True)
        for i in range(0, len(ordered), batch_size):
            batch = ordered[i:i + batch_size]
            total += len(batch) * (max(count(batch)) + 2)
    return total


def measure_throughput(corpus: Path | None = None, repeat: int = 3, runtime: str = "auto") -> dict[str, Any]:
    """Chunks/s of whole indexing runs and of raw ``encode`` on the same chunk texts, interleaved.

    ``runtime``: "auto" gives the indexer an embedder of its own, as `rag index` builds it: it embeds
    with the cached ONNX export of the model when there is one (loading torch makes one), else with
    sentence-transformers; "torch" makes it use the very SentenceTransformer object that raw encode
    times."""
    from rag_cli.config import load_settings
    from rag_cli.indexer import Indexer, index_paths

    scratch = Path(tempfile.mkdtemp(prefix="rag-speed-"))
    try:
        corpus, name = corpus_or_subset(corpus, DEFAULT_SUBSET, scratch)
        settings = load_settings(scratch, env={}, flags={})
        batch_size = settings.embedding.batch_size
        raw_embedder = Indexer(settings).embedder
        (getattr(raw_embedder, "load_torch", None) or raw_embedder.warm_up)()  # type: ignore[attr-defined]
        model = raw_embedder._model  # type: ignore[attr-defined]  # a SentenceTransformer
        model.encode(["warm up the kernels"] * batch_size, batch_size=batch_size)
        embedder = raw_embedder if runtime == "torch" else Indexer(settings).embedder
        embedder.embed_documents(["warm up the kernels"] * batch_size)  # loads whichever runtime it uses
        used = "torch" if getattr(embedder, "_model", None) is not None else "onnx"
        recording = _Recording(embedder)

        def run_index(k: int) -> dict[str, Any]:
            work = scratch / f"run{k}"
            work.mkdir()
            s = load_settings(work, env={}, flags={})
            c0, t0 = time.process_time(), time.perf_counter()
            report = index_paths(s, [corpus], embedder=recording if k == 0 else embedder)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            shutil.rmtree(work, ignore_errors=True)
            return {"wall": wall, "cpu": cpu, "chunks": report.chunks_written,
                    "timings": {k: round(v, 2) for k, v in report.timings.items()}}

        def run_raw(texts: list[str]) -> dict[str, Any]:
            c0, t0 = time.process_time(), time.perf_counter()
            model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
            return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "chunks": len(texts)}

        pairs = []
        for k in range(repeat):
            if k % 2 == 0:  # ABBA order: drift in the machine's load hits both sides alike
                idx = run_index(k)
                raw = run_raw(recording.texts)
            else:
                raw = run_raw(recording.texts)
                idx = run_index(k)
            pairs.append((idx, raw))
            print(f"  pair {k + 1}/{repeat}: index {idx['chunks'] / idx['wall']:.1f} chunks/s "
                  f"({idx['wall']:.1f} s; {idx['timings']}), raw encode {raw['chunks'] / raw['wall']:.1f} chunks/s "
                  f"({raw['wall']:.1f} s)", flush=True)
        texts = recording.texts
        chunks = len(texts)
        assert all(p[0]["chunks"] == chunks for p in pairs), "runs embedded different chunk sets"
        counter = Indexer(settings).counter
        real = sum(counter.count_many(texts)) + 2 * chunks
        index_cps = [chunks / p[0]["wall"] for p in pairs]
        raw_cps = [chunks / p[1]["wall"] for p in pairs]
        return {
            "corpus": name, "chunks": chunks, "batch_size": batch_size, "repeat": repeat, "runtime": used,
            "index_chunks_per_s": statistics.median(index_cps),
            "raw_chunks_per_s": statistics.median(raw_cps),
            "ratio": statistics.median(i / r for i, r in zip(index_cps, raw_cps)),
            "ratio_cpu": statistics.median(p[1]["cpu"] / p[0]["cpu"] for p in pairs),
            "index_seconds": statistics.median(p[0]["wall"] for p in pairs),
            "raw_seconds": statistics.median(p[1]["wall"] for p in pairs),
            "timings": sorted((p[0] for p in pairs), key=lambda run: run["wall"])[len(pairs) // 2]["timings"],
            "pairs": [{"index_chunks_per_s": i, "raw_chunks_per_s": r} for i, r in zip(index_cps, raw_cps)],
            "padding_raw": padded_tokens([texts], batch_size, counter.count_many) / real,
            "padding_index": padded_tokens(recording.calls, batch_size, counter.count_many) / real,
            "budget_ratio": BUDGET_RATIO,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- (b) 1,000 unchanged files -----------------------------------------------------------------

_WORDS = ("sourdough starter flour water salt oven crust crumb proof knead yeast rye wheat spelt hydration "
          "levain autolyse fold shape score bake steam dough bowl banneton temperature hours overnight fridge "
          "recipe note garden tomato basil compost seed soil sun rain harvest invoice meeting project budget "
          "deadline review release server backup disk network laptop python script test deploy log error").split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
    return " ".join(words).capitalize() + rng.choice(".!?.")


def make_small_files(folder: Path, n: int = 1000, seed: int = 7) -> Path:
    """``n`` small, varied Markdown and text notes (headings, lists, code, paragraphs) in subfolders."""
    rng = random.Random(seed)
    for i in range(n):
        sub = folder / f"area{i % 10}" / f"topic{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 3 == 2:
            body = "\n\n".join(" ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
                               for _ in range(rng.randint(1, 3)))
            (sub / f"note{i:04d}.txt").write_text(body + "\n", encoding="utf-8")
            continue
        parts = [f"# {_sentence(rng)[:-1]}"]
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            if kind < 0.2:
                parts.append("\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(2, 4))))
            elif kind < 0.3:
                parts.append("```\n" + "\n".join(f"{rng.choice(_WORDS)} = {rng.randint(0, 99)}"
                                                  for _ in range(3)) + "\n```")
            elif kind < 0.45:
                parts.append(f"## {_sentence(rng)[:-1]}")
            parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        (sub / f"note{i:04d}.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return folder


def _rag_index(target: Path, workdir: Path, extra: Sequence[str] = ()) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([*_rag_command(), "index", str(target), "--json", *extra], cwd=workdir,
                          capture_output=True, text=True, env=_env())
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise RuntimeError(f"rag index failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout)


def measure_unchanged(files: int = 1000, repeat: int = 5) -> dict[str, Any]:
    """Median wall time of fresh `rag index` processes over ``files`` unchanged small files."""
    scratch = Path(tempfile.mkdtemp(prefix="rag-unchanged-"))
    try:
        docs = make_small_files(scratch / "notes", files)
        work = scratch / "work"
        work.mkdir()
        first_wall, first = _rag_index(docs, work)
        print(f"  first run: {first_wall:.1f} s, {first['chunks']['total']} chunks", flush=True)
        walls, seconds = [], []
        for _ in range(repeat):
            wall, report = _rag_index(docs, work)
            if report["chunks"]["written"] or report["files"]["unchanged"] != files:
                raise RuntimeError(f"the re-run was not unchanged: {report['files']}, {report['chunks']}")
            walls.append(wall)
            seconds.append(report["seconds"])
        return {"files": files, "chunks": first["chunks"]["total"], "first_run_s": first_wall, "repeat": repeat,
                "median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
                "indexer_median_s": statistics.median(seconds), "budget_s": BUDGET_UNCHANGED_S}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- (c) peak memory on SciFact -----------------------------------------------------------------

def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_scifact_memory(corpus: Path = SCIFACT) -> dict[str, Any]:
    """Max RSS of one fresh `rag index` of ``corpus`` (os.wait4: this child only), RSS sampled every second."""
    scratch = Path(tempfile.mkdtemp(prefix="rag-scifact-"))
    try:
        out = scratch / "report.json"
        with out.open("w") as stdout:
            started = time.perf_counter()
            proc = subprocess.Popen([*_rag_command(), "index", str(corpus), "--json"], cwd=scratch, stdout=stdout,
                                    stderr=subprocess.DEVNULL, env=_env())
            samples: list[tuple[float, float]] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(1.0):
                    rss = _rss_mib(proc.pid)
                    if rss is not None:
                        samples.append((time.perf_counter() - started, rss))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            done.set()
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 3):
            raise RuntimeError(f"rag index exited {proc.returncode}")
        report = json.loads(out.read_text())
        quarters = {}
        for q in (0.25, 0.5, 0.75, 1.0):
            upto = [r for t, r in samples if t <= q * wall]
            quarters[f"{int(q * 100)}%"] = round(max(upto), 1) if upto else None
        return {"corpus": str(corpus), "chunks": report["chunks"]["total"], "wall_s": wall,
                "chunks_per_s": report["chunks"]["total"] / wall, "timings": report["timings"],
                "max_rss_mib": usage.ru_maxrss / 1024, "rss_by_time_mib": quarters, "budget_mib": BUDGET_RSS_MIB}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- (d) peer: llm embed-multi ------------------------------------------------------------------

def peer_hint() -> str:
    return ("install the plugin beside (not into) rag-cli's venv, e.g.:\n"
            "    python -m venv /tmp/llmpeer\n"
            "    echo $(python -c 'import site; print(site.getsitepackages()[0])') \\\n"
            "        > /tmp/llmpeer/lib/python3.11/site-packages/rag_venv.pth\n"
            "    /tmp/llmpeer/bin/pip install --no-deps llm-sentence-transformers einops\n"
            "then: python bench/bench_indexing_speed.py --peer --llm-python /tmp/llmpeer/bin/python\n"
            "(or set LLM_PEER_PYTHON=/tmp/llmpeer/bin/python, e.g. for bench/speed.py --peer)")


def _llm_with_plugin(python: str) -> bool:
    done = subprocess.run([python, "-m", "llm", "plugins"], capture_output=True, text=True, env=_env())
    return done.returncode == 0 and "llm-sentence-transformers" in done.stdout


def measure_peer(corpus: Path | None = None, llm_python: str | None = None, records: int = 200) -> dict[str, Any]:
    """`llm embed-multi` vs a fresh `rag index` on a JSONL corpus (id, title, text; default: the first
    ``records`` SciFact abstracts).

    Both runs are fresh processes loading the same model folder; wall time includes start-up."""
    from rag_cli.config import load_settings
    from rag_cli.ingest.tokens import load_token_counter
    from rag_cli.model_files import resolve_embedding_model

    python = llm_python or sys.executable
    if not _llm_with_plugin(python):
        return {"skipped": "llm-sentence-transformers is not installed for " + python + "; " + peer_hint()}
    scratch = Path(tempfile.mkdtemp(prefix="rag-peer-"))
    try:
        corpus, name = corpus_or_subset(corpus, records, scratch)
        settings = load_settings(scratch, env={}, flags={})
        files = resolve_embedding_model(settings.embedding.model, settings.base_dir)
        env = {**_env(), "LLM_USER_PATH": str(scratch / "llm-user")}
        # The plugin registers a model by name and passes it to SentenceTransformer(), which takes a folder.
        subprocess.run([python, "-m", "llm", "sentence-transformers", "register", str(files.path), "--lazy",
                        "--alias", "minilm-local"], check=True, env=env, capture_output=True, text=True)
        rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
        items = scratch / "items.nl"
        # llm embeds every column but the first (the id): title and text, as rag sees them.
        items.write_text("".join(json.dumps({"id": r["id"], "title": r.get("title", ""), "text": r["text"]}) + "\n"
                                 for r in rows), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run([python, "-m", "llm", "embed-multi", "items", str(items), "--format", "nl", "-m", "minilm-local",
                        "-d", str(scratch / "llm.db")], check=True, env=env, capture_output=True, text=True)
        llm_wall = time.perf_counter() - started
        counter = load_token_counter(settings.embedding.model, str(settings.base_dir))
        cap = files.max_seq_length - 2
        llm_tokens = sum(min(n, cap) for n in counter.count_many([f"{r.get('title', '')} {r['text']}" for r in rows]))
        work = scratch / "rag"
        work.mkdir()
        rag_wall, report = _rag_index(corpus, work)
        rag_chunks = report["chunks"]["total"]
        from rag_cli.store.chroma import ChromaStore

        store = ChromaStore(work / ".rag" / "chroma")
        _, _, metas = store.all_chunks()
        rag_tokens = sum(int(m.get("tokens", 0)) for m in metas)
        return {"corpus": name, "records": len(rows),
                "llm_wall_s": llm_wall, "llm_items_per_s": len(rows) / llm_wall, "llm_tokens": llm_tokens,
                "llm_tokens_per_s": llm_tokens / llm_wall,
                "rag_wall_s": rag_wall, "rag_chunks": rag_chunks, "rag_chunks_per_s": rag_chunks / rag_wall,
                "rag_records_per_s": len(rows) / rag_wall, "rag_tokens": rag_tokens,
                "rag_tokens_per_s": rag_tokens / rag_wall}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the command --------------------------------------------------------------------------------

def _verdict(ok: bool) -> str:
    return "within budget" if ok else "OVER BUDGET"


PARTS = ("throughput", "unchanged", "scifact", "peer")


def measure(*, scifact: bool = False, peer: bool = False, parts: Sequence[str] | None = None,
            corpus: Path | None = None, repeat: int = 3, files: int = 1000, reruns: int = 5, runtime: str = "auto",
            llm_python: str | None = None, peer_records: int = 200, show: bool = False) -> dict[str, Any]:
    """Every part asked for ((a) and (b) by default; ``scifact`` and ``peer`` add (c) and (d)),
    as {part: result}; ``show`` prints each part as soon as it is measured."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if runtime == "torch":
        os.environ[RUNTIME_ENV] = "torch"  # for the `rag index` subprocesses
    parts = list(parts or ["throughput", "unchanged"] + ["scifact"] * scifact + ["peer"] * peer)
    results: dict[str, Any] = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count(), "runtime": runtime}
    jobs = {
        "throughput": lambda: measure_throughput(corpus, repeat, runtime),
        "unchanged": lambda: measure_unchanged(files, reruns),
        "scifact": measure_scifact_memory,
        "peer": lambda: measure_peer(llm_python=llm_python or os.environ.get("LLM_PEER_PYTHON"),
                                     records=peer_records),
    }
    for part in PARTS:
        if part in parts:
            if show:
                print(_TITLES[part], flush=True)
            results[part] = jobs[part]()
            if show:
                _report_part(part, results[part], runtime)
    return results


_TITLES = {
    "throughput": "(a) throughput: whole indexing run vs raw SentenceTransformer.encode, same chunks",
    "unchanged": "(b) unchanged small files, fresh `rag index` processes",
    "scifact": "(c) peak memory of a full SciFact index (fresh process; ~15 min)",
    "peer": "(d) peer: llm embed-multi vs rag index, same records, fresh processes",
}


def report(results: dict[str, Any]) -> None:
    """Print what ``measure`` returned."""
    print(f"\nIndexing ({results.get('cpus')} CPUs, load average {results.get('load_average', 0):.1f} at start)")
    for part in PARTS:
        if part in results:
            print(_TITLES[part])
            _report_part(part, results[part], results.get("runtime", "auto"))


def _report_part(part: str, r: dict[str, Any], runtime: str) -> None:
    if part == "throughput":
        print(f"  {r['corpus']}: {r['chunks']} chunks, batch size {r['batch_size']}, median of {r['repeat']}; "
              f"the indexer embedded with {r['runtime']}")
        print(f"  indexing {r['index_chunks_per_s']:.1f} chunks/s ({r['index_seconds']:.1f} s), raw encode "
              f"{r['raw_chunks_per_s']:.1f} chunks/s ({r['raw_seconds']:.1f} s)")
        print(f"  ratio {r['ratio']:.2f} (wall, paired), {r['ratio_cpu']:.2f} (CPU time); budget >= "
              f"{BUDGET_RATIO:.2f}: {_verdict(r['ratio'] >= BUDGET_RATIO)}")
        print(f"  model work, token positions per real token as sentence-transformers batches each call (padding; "
              f"no timing noise): raw encode {r['padding_raw']:.3f}, indexing {r['padding_index']:.3f}")
        print(f"  stage seconds of the median run: {r['timings']}\n", flush=True)
    elif part == "unchanged":
        print(f"  {r['files']} files ({r['chunks']} chunks): median {r['median_s']:.2f} s wall over {r['repeat']} "
              f"re-runs (min {r['min_s']:.2f}, max {r['max_s']:.2f}; {r['indexer_median_s']:.2f} s inside the "
              f"indexer); budget <= {BUDGET_UNCHANGED_S:.1f} s: {_verdict(r['median_s'] <= BUDGET_UNCHANGED_S)}\n",
              flush=True)
    elif part == "scifact":
        print(f"  {r['chunks']} chunks in {r['wall_s']:.0f} s ({r['chunks_per_s']:.1f} chunks/s); stages "
              f"{r['timings']}")
        print(f"  max RSS {r['max_rss_mib']:.0f} MiB; RSS by elapsed time {r['rss_by_time_mib']}; budget < "
              f"{BUDGET_RSS_MIB} MiB: {_verdict(r['max_rss_mib'] < BUDGET_RSS_MIB)}\n", flush=True)
    elif "skipped" in r:
        print(f"  skipped: {r['skipped']}\n")
    else:
        print(f"  {r['corpus']} ({r['records']} records); wall times include each tool's start-up and model load;"
              f" rag embeds with {'torch' if runtime == 'torch' else 'its cached ONNX export if any'}, "
              "llm with sentence-transformers")
        print(f"  llm embed-multi: {r['llm_wall_s']:.1f} s, {r['llm_items_per_s']:.1f} records/s, "
              f"{r['llm_tokens_per_s']:.0f} tokens/s (each record whole, cut at the model's limit)")
        print(f"  rag index:       {r['rag_wall_s']:.1f} s, {r['rag_records_per_s']:.1f} records/s, "
              f"{r['rag_chunks_per_s']:.1f} chunks/s ({r['rag_chunks']} chunks), {r['rag_tokens_per_s']:.0f} "
              f"tokens/s")
        print(f"  rag/llm wall time {r['rag_wall_s'] / r['llm_wall_s']:.2f}; tokens/s ratio "
              f"{r['rag_tokens_per_s'] / r['llm_tokens_per_s']:.2f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="throughput corpus (default: the first "
                        f"{DEFAULT_SUBSET} SciFact abstracts)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved index/encode pairs (default 3)")
    parser.add_argument("--files", type=int, default=1000, help="small files for the unchanged re-run")
    parser.add_argument("--reruns", type=int, default=5, help="unchanged fresh-process re-runs (default 5)")
    parser.add_argument("--scifact", action="store_true", help="also (c): peak RSS of a full SciFact index")
    parser.add_argument("--peer", action="store_true", help="also (d): llm embed-multi on the same records")
    parser.add_argument("--peer-records", type=int, default=200, help="SciFact abstracts for (d) (default 200)")
    parser.add_argument("--llm-python", help="the Python that has llm and llm-sentence-transformers "
                        "(default: $LLM_PEER_PYTHON, else this one)")
    parser.add_argument("--runtime", choices=("auto", "torch"), default="auto",
                        help="how the indexer embeds: auto (as `rag index`: the cached ONNX export when there is "
                        "one) or torch (sentence-transformers), for every part")
    parser.add_argument("--only", choices=PARTS, help="run one part only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n")
    results = measure(scifact=args.scifact, peer=args.peer, parts=[args.only] if args.only else None,
                      corpus=args.corpus, repeat=args.repeat, files=args.files, reruns=args.reruns,
                      runtime=args.runtime, llm_python=args.llm_python, peer_records=args.peer_records, show=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
