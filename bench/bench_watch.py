"""`rag index --watch`: from saving a file to finding its new text, and the watcher's idle CPU.

For each corpus (the samples; the SQuAD articles of ../shared/eval/squad/docs), copied to a temporary
folder and indexed with the bundled MiniLM by the installed `rag index`, it starts
`rag index FOLDER --watch --json` and then, ROUNDS times, writes a new file holding a unique
phrase and measures

  * save -> batch: until the watcher prints the batch line (the batch is committed);
  * save -> found: until the library's search (``api.Index(settings, serve=False).search``, in this
    process, with the bundled model loaded once) returns a chunk holding the phrase; the same
    search `rag ask --retrieve-only` runs, without the cost of starting a process per poll;

and, before the edits, the watcher's CPU seconds (user + system, from /proc) over IDLE seconds.

    python bench/bench_watch.py [--rounds 5] [--idle 20]
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
SQUAD = REPO.parent / "shared" / "eval" / "squad" / "docs"
RAG = str(Path(sys.executable).with_name("rag"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(name: str, source: Path, rounds: int, idle: float, embedder: object) -> dict[str, float]:
    from rag_cli.api import Index
    from rag_cli.config import load_settings

    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        docs = work / "docs"
        shutil.copytree(source, docs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"HF_HUB_OFFLINE": "1"}
        subprocess.run([RAG, "index", str(docs)], cwd=work, env=env, check=True, capture_output=True)
        proc = subprocess.Popen([RAG, "index", "--watch", "--json"], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # the first pass (nothing to do)
        files = len([p for p in docs.rglob("*") if p.is_file()])  # before the notes this adds
        time.sleep(2)
        before = cpu_seconds(proc.pid)
        time.sleep(idle)
        idle_cpu = cpu_seconds(proc.pid) - before
        settings = load_settings(work, env={})
        to_batch, to_found = [], []
        for i in range(rounds):
            phrase = f"the quetzal{i} ledger glows umber{i}"
            t0 = time.perf_counter()
            (docs / f"bench-note-{i}.md").write_text(f"# Note {i}\n\nIn this note {phrase} at dawn.\n")
            line = json.loads(proc.stdout.readline())
            to_batch.append(time.perf_counter() - t0)
            assert line["files"]["added"] == 1, line
            while not any(phrase in h.text for h in
                          Index(settings, serve=False, embedder=embedder).search(phrase, k=5)):  # type: ignore[arg-type]
                time.sleep(0.02)
            to_found.append(time.perf_counter() - t0)
            time.sleep(1)
        proc.terminate()
        proc.wait(60)
        result = {"files": files, "save_to_batch_s": statistics.median(to_batch),
                  "save_to_found_s": statistics.median(to_found), "idle_cpu_s": idle_cpu, "idle_s": idle,
                  "exit_code": proc.returncode}
        print(f"{name:8} {files:4d} files  save->batch {result['save_to_batch_s']:.2f} s  "
              f"save->found {result['save_to_found_s']:.2f} s  (medians of {rounds})  "
              f"idle CPU {idle_cpu:.2f} s over {idle:.0f} s  exit {proc.returncode}", flush=True)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    from rag_cli.config import EmbeddingSettings
    from rag_cli.store.embedders import embedder_from_settings

    embedder = embedder_from_settings(EmbeddingSettings(model="bundled"))
    embedder.warm_up()
    corpora = [("samples", REPO / "samples")] + ([("squad", SQUAD)] if SQUAD.is_dir() else [])
    for name, source in corpora:
        bench(name, source, args.rounds, args.idle, embedder)


if __name__ == "__main__":
    main()
