"""Crashes and concurrency: `rag index` killed with SIGKILL at exact points of a run on real
documents (the samples and SciFact abstracts), `rag ask` while `rag index` writes, two
`rag index` runs at once.

The kills come from rag_cli.testing.failpoints (the process kills itself on entering, or
leaving, the Nth call of a function), so every point is hit on every machine, however loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_cli.index_dir import IndexPaths
from rag_cli.store.keyword import KeywordIndex
from tests.conftest import SAMPLES, SHARED_EVAL
from tests.indexing_helpers import index_state, settings_in

pytestmark = pytest.mark.slow

ENV = {**os.environ, "RAG_EMBEDDING_BACKEND": "hash", "HF_HUB_OFFLINE": "1", "RAG_SERVE_USE": "never"}
QUESTION = "How often should I feed my sourdough starter?"

# (failpoint, what it interrupts). Counts are per run.
KILL_POINTS = [
    ("rag_cli.ingest.manifest:Manifest.register_chunks:1", "registering the first group's chunk ids"),
    ("rag_cli.store.chroma:ChromaStore.upsert_raw:1", "before the first vectors are written"),
    ("rag_cli.store.chroma:ChromaStore.upsert_raw:3:after", "between two upserts of a group"),
    ("rag_cli.indexer:Indexer._embed_and_upsert:2", "before the second group is embedded"),
    ("rag_cli.store.chroma:ChromaStore.delete:1:after", "after stale chunks left the store, before the manifest"),
    ("rag_cli.ingest.manifest:Manifest.put_file:4:after", "between files being marked done"),
    ("rag_cli.indexer:Indexer._load_and_chunk:5", "in the reader thread, mid-walk"),
    ("rag_cli.store.keyword:KeywordIndex.build:1:after", "after the keyword index is built, before it is saved"),
    ("rag_cli.store.keyword:KeywordIndex.save:1", "before the keyword index is saved"),
]
UPDATE_POINTS = [
    ("rag_cli.store.chroma:ChromaStore.delete:1", "removing a deleted file's chunks"),
    ("rag_cli.store.chroma:ChromaStore.upsert_raw:1:after", "after the changed file's new vectors"),
    ("rag_cli.store.chroma:ChromaStore.delete:2", "before the changed file's stale chunks go"),
    ("rag_cli.ingest.manifest:Manifest.set_meta:2", "before the run's final stamp"),
]


def corpus(folder: Path, abstracts: int = 300) -> Path:
    """The sample documents and the first SciFact abstracts, as a JSONL corpus."""
    shutil.copytree(SAMPLES, folder)
    source = SHARED_EVAL / "scifact" / "corpus.jsonl"
    if not source.exists():
        pytest.skip(f"{source} is not there")
    with open(source) as f, open(folder / "scifact.jsonl", "w") as out:
        for _, line in zip(range(abstracts), f):
            out.write(line)
    return folder


def rag(args: list[str], cwd: Path, *failpoints: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rag_cli.testing.failpoints", *failpoints, "--", *args] if failpoints \
        else [sys.executable, "-m", "rag_cli", *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def ask_works(cwd: Path) -> None:
    """`rag ask --retrieve-only` answers from what was committed: every passage is in the store."""
    result = rag(["ask", "--retrieve-only", "--json", QUESTION], cwd)
    assert result.returncode == 0, result.stderr
    stored = set(index_state(settings_in(cwd), complete=False))
    assert {p["chunk_id"] for p in json.loads(result.stdout)["passages"]} <= stored


def finish_and_compare(cwd: Path, clean: dict[str, str]) -> None:
    result = rag(["index"], cwd)
    assert result.returncode == 0, result.stderr
    assert index_state(settings_in(cwd)) == clean  # exactly a clean run's chunks: no duplicate, no orphan
    keyword = KeywordIndex.load(IndexPaths(cwd / ".rag").keyword)
    assert keyword is not None and sorted(keyword.ids) == sorted(clean)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("crash-clean")
    docs = corpus(base / "docs")
    work = base / "work"
    work.mkdir()
    result = rag(["index", str(docs)], work)
    assert result.returncode == 0, result.stderr
    return docs, index_state(settings_in(work))


@pytest.mark.parametrize("failpoint,where", KILL_POINTS, ids=[w for _, w in KILL_POINTS])
def test_a_first_run_killed_anywhere_is_completed_by_the_next(tmp_path: Path, clean_run, failpoint: str,
                                                              where: str) -> None:
    docs, clean = clean_run
    killed = rag(["index", str(docs)], tmp_path, failpoint)
    assert killed.returncode == -9, f"{where}: the failpoint was not reached ({killed.returncode}) {killed.stderr}"
    index_state(settings_in(tmp_path), complete=False)  # opens; the manifest knows every stored chunk
    ask_works(tmp_path)
    finish_and_compare(tmp_path, clean)


@pytest.fixture(scope="module")
def updated_corpus(tmp_path_factory: pytest.TempPathFactory, clean_run) -> tuple[Path, dict[str, str]]:
    """The corpus after an edit, a deletion and an addition, and a clean index of it."""
    docs, _ = clean_run
    base = tmp_path_factory.mktemp("crash-updated")
    changed = base / "docs"
    shutil.copytree(docs, changed)
    change(changed)
    work = base / "work"
    work.mkdir()
    assert rag(["index", str(changed)], work).returncode == 0
    return changed, index_state(settings_in(work))


def change(docs: Path) -> None:
    (docs / "faq.txt").unlink()
    starter = docs / "guides" / "starter.md"
    starter.write_text(starter.read_text().replace("starter", "levain") + "\n\n## Storage\n\nKeep it cold.\n")
    (docs / "guides" / "new.md").write_text("# Rye\n\nRye flour ferments faster than wheat.\n")


@pytest.mark.parametrize("failpoint,where", UPDATE_POINTS, ids=[w for _, w in UPDATE_POINTS])
def test_an_update_killed_anywhere_is_completed_by_the_next(tmp_path: Path, clean_run, updated_corpus,
                                                             failpoint: str, where: str) -> None:
    docs, _ = clean_run
    changed, clean = updated_corpus
    mine = tmp_path / "docs"
    shutil.copytree(docs, mine)
    work = tmp_path / "work"
    work.mkdir()
    assert rag(["index", str(mine)], work).returncode == 0
    change(mine)
    for src in (changed / "guides" / "starter.md", changed / "guides" / "new.md"):  # the same bytes and mtimes
        shutil.copy2(src, mine / "guides" / src.name)
    killed = rag(["index"], work, failpoint)
    assert killed.returncode == -9, f"{where}: the failpoint was not reached ({killed.returncode}) {killed.stderr}"
    ask_works(work)
    finish_and_compare(work, {k: v for k, v in clean.items()})


def test_ask_while_index_writes_answers_from_committed_state(tmp_path: Path) -> None:
    docs = corpus(tmp_path / "docs", abstracts=2000)
    work = tmp_path / "work"
    work.mkdir()
    assert rag(["index", str(docs / "guides")], work).returncode == 0  # something to answer from at once
    writer = subprocess.Popen([sys.executable, "-m", "rag_cli", "index", str(docs)], cwd=work, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answered = 0
    try:
        while writer.poll() is None and answered < 8:
            ask_works(work)
            answered += 1
    finally:
        _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert answered >= 1
    ask_works(work)


def test_two_index_runs_at_once_never_corrupt_the_index(tmp_path: Path, clean_run) -> None:
    docs, clean = clean_run
    runs = [subprocess.Popen([sys.executable, "-m", "rag_cli", "index", str(docs), "--wait", "300"], cwd=tmp_path,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(400), r.stderr.read()) for r in runs]
    assert all(code == 0 for code, _ in results), results
    assert any("waiting for another" in err for _, err in results)
    assert index_state(settings_in(tmp_path)) == clean
    refused = subprocess.Popen([sys.executable, "-m", "rag_cli", "index", str(docs), "--rebuild"], cwd=tmp_path,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = rag(["index", str(docs)], tmp_path)  # without --wait: refused at once while the first holds the lock
    refused.wait(300)
    assert second.returncode in (0, 7), second.stderr
    assert index_state(settings_in(tmp_path)) == clean
